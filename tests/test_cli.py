"""The `medlab` command line: every subcommand through the installed console script, its output and exit status."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

import medlab
from conftest import ROOT, shared_data, write_yaml

MEDLAB = str(Path(sys.executable).parent / 'medlab')


def medlab_cli(*args, cwd=None):
    return subprocess.run([MEDLAB, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


def test_help_lists_every_subcommand_and_each_has_its_own():
    out = medlab_cli('--help')
    assert out.returncode == 0
    names = ['anonymize', 'convert', 'construct-csv', 'split-csv', 'preprocess', 'train', 'kfold', 'infer', 'cam', 'export', 'run',
             'verify-install', 'recover-config', 'mine-patches', 'deidentify-slide', 'federated', 'plan']
    for name in names:
        assert f'  {name} ' in out.stdout, name
        sub = medlab_cli(name, '--help')
        assert sub.returncode == 0 and sub.stdout.startswith(f'usage: medlab {name}'), (name, sub.stdout[:200], sub.stderr[-300:])


def test_exit_codes_and_one_line_errors(tmp_path):
    assert medlab_cli().returncode == 2
    typo = medlab_cli('trian')
    assert typo.returncode == 2 and "did you mean 'train'" in typo.stderr
    assert medlab_cli('train').returncode == 2                                  # its config is missing
    (tmp_path / 'bad.yaml').write_text('lerning_rate: 0.1\n')
    bad = medlab_cli('train', tmp_path / 'bad.yaml')
    assert bad.returncode == 1 and "did you mean 'learning_rate'" in bad.stderr and 'Traceback' not in bad.stderr
    debug = medlab_cli('train', tmp_path / 'bad.yaml', '--debug')
    assert debug.returncode == 1 and 'Traceback' in debug.stderr


def test_prepare_train_export_infer_recover_through_the_cli(tmp_path):
    "Folders -> manifest -> split -> pre-processing on disk -> train -> export -> infer -> recover-config, each a subcommand."
    data = medlab.make_sample_data(tmp_path / 'sample', n_subjects=8, size=32)
    tree = tmp_path / 'tree'
    for row in pd.read_csv(data).itertuples():  # one folder per subject, as scanners' exports are arranged
        (tree / row.SubjectID).mkdir(parents=True)
        for src, name in ((row.Channel_0, 'image_t1.nii.gz'), (row.Label, 'image_seg.nii.gz')):
            (tree / row.SubjectID / name).write_bytes((data.parent / src).read_bytes())
    out = medlab_cli('construct-csv', tree, tmp_path / 'data.csv', '--channels', '*t1.nii.gz', '--label', '*seg.nii.gz')
    assert out.returncode == 0, out.stderr
    assert len(pd.read_csv(tmp_path / 'data.csv')) == 8
    cfg = write_yaml(tmp_path / 'c.yaml', {'data_csv': 'data.csv', 'output_dir': 'run', 'patch_size': [32, 32], 'num_epochs': 2,
                                            'batch_size': 4, 'model': {'class_list': [0, 1, 2], 'base_filters': 4},
                                            'nested_training': {'testing': -4, 'validation': -3}, 'export': {'enabled': False},
                                            'data_preprocessing': {'resample': {'resolution': 1.6}}})
    split = medlab_cli('split-csv', cfg, tmp_path / 'split')
    assert split.returncode == 0, split.stderr
    assert sorted(p.name for p in (tmp_path / 'split').iterdir()) == ['testing.csv', 'training.csv', 'validation.csv']
    pre = medlab_cli('preprocess', cfg, tmp_path / 'pre', '--workers', '2')
    assert pre.returncode == 0, pre.stderr
    first = pd.read_csv(tmp_path / 'pre' / 'data.csv').Channel_0[0]
    assert sitk.ReadImage(str(tmp_path / 'pre' / first)).GetSize() == (16, 16)
    train = medlab_cli('train', cfg)
    assert train.returncode == 0, train.stderr[-2000:]
    assert 'best epoch' in train.stdout and (tmp_path / 'run' / 'model_best.pt').is_file()
    export = medlab_cli('export', tmp_path / 'run')
    assert export.returncode == 0 and (tmp_path / 'run' / 'export').is_dir(), export.stderr[-2000:]
    infer = medlab_cli('infer', tmp_path / 'run', tmp_path / 'split' / 'testing.csv', tmp_path / 'pred')
    assert infer.returncode == 0, infer.stderr[-2000:]
    assert len(list((tmp_path / 'pred').glob('*_prediction.nii.gz'))) == 2
    maps = medlab_cli('cam', tmp_path / 'run', tmp_path / 'split' / 'testing.csv', tmp_path / 'maps')
    assert maps.returncode == 0 and '2 map(s)' in maps.stdout, maps.stderr[-2000:]
    folds = medlab_cli('kfold', cfg, '--output-dir', tmp_path / 'kfold', '--workers', '2')
    assert folds.returncode == 0, folds.stderr[-2000:]
    assert (tmp_path / 'kfold' / 'summary.csv').is_file()
    trained = medlab.RunFolder(tmp_path / 'run').config()   # its paths are stored relative to the run folder
    (tmp_path / 'run' / 'config.yaml').rename(tmp_path / 'config.yaml.bak')  # recover it from the checkpoint
    rec = medlab_cli('recover-config', tmp_path / 'run', tmp_path / 'recovered.yaml')
    assert rec.returncode == 0, rec.stderr
    assert medlab.load_config(tmp_path / 'recovered.yaml') == trained


def test_run_any_template_and_verify_install(tmp_path):
    data = medlab.make_sample_data(tmp_path / 'sample', n_subjects=6, size=32)
    cfg = write_yaml(tmp_path / 'c.yaml', {'patch_size': [32, 32], 'num_epochs': 1, 'batch_size': 4, 'export': {'enabled': False},
                                            'model': {'class_list': [0, 1, 2], 'base_filters': 4}})
    out = medlab_cli('run', 'train', tmp_path / 'executed.ipynb', '-p', 'config', cfg, '-p', 'data_csv', data,
                     '-p', 'output_dir', tmp_path / 'run')
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / 'executed.ipynb').is_file() and (tmp_path / 'run' / 'metrics.json').is_file()
    check = medlab_cli('verify-install')
    assert check.returncode == 0 and 'a unet step on cpu: ok' in check.stdout, check.stderr[-1000:]


def test_anonymize_and_convert_the_real_series(tmp_path):
    "The 196-slice MR series: de-identified into a new folder (input untouched), then converted to one NIfTI with its geometry."
    series = shared_data('dicom', 'dcm_qa_deident')
    before = {p.name: p.stat().st_mtime_ns for p in series.iterdir()}
    out = medlab_cli('anonymize', series, tmp_path / 'anon', '--shift-days', '-30', '--mapping', tmp_path / 'private' / 'map.csv')
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(list((tmp_path / 'anon').rglob('*.dcm'))) == 196 and (tmp_path / 'private' / 'map.csv').is_file()
    assert {p.name: p.stat().st_mtime_ns for p in series.iterdir()} == before
    into_input = medlab_cli('anonymize', series, series / 'out')
    assert into_input.returncode == 1 and 'Traceback' not in into_input.stderr
    conv = medlab_cli('convert', tmp_path / 'anon', tmp_path / 'nifti')
    assert conv.returncode == 0, conv.stderr[-2000:]
    nifti = sorted((tmp_path / 'nifti').glob('*.nii.gz'))
    assert len(nifti) == 1
    img = sitk.ReadImage(str(nifti[0]))
    assert img.GetSize() == (256, 256, 196) and img.GetSpacing() == pytest.approx((1.0547, 1.0547, 1.2), abs=1e-3)
    empty = medlab_cli('convert', tmp_path / 'private', tmp_path / 'none')
    assert empty.returncode == 1 and 'DICOM' in empty.stderr


def test_prepare_template_headless(tmp_path):
    "templates/prepare.ipynb under papermill: the real series de-identified, converted and listed in a manifest, shown in the notebook."
    from conftest import run_template
    import nbformat
    series = shared_data('dicom', 'dcm_qa_deident')
    nb = run_template('prepare', tmp_path, dicom_dir=str(series), output_dir=str(tmp_path / 'prepared'), shift_days=-10)
    subjects = medlab.read_manifest(tmp_path / 'prepared' / 'data.csv', target=False)
    assert len(subjects) == 1 and sitk.ReadImage(subjects[0].channels[0]).GetSize() == (256, 256, 196)
    assert (tmp_path / 'prepared' / 'anonymized' / 'burned_in_report.csv').is_file()
    outputs = [o for c in nbformat.read(nb, 4).cells for o in c.get('outputs', [])]
    assert any('image/png' in o.get('data', {}) for o in outputs)
