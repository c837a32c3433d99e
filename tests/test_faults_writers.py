"""Writers never overwrite what they did not write: the training run folder (`output_dir`) and `preprocess`'s folder
refuse a folder of someone else's files, clean only medlab's own temporaries, and `preprocess` run again follows its
settings (cases 7 and 8 of the tester's list)."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

import medlab
from medlab import prepare as prepare_module
from medlab.config import config_from_dict
from medlab.crossval import plan_folds
from medlab.run import ForeignFolderError, RunFolder
from conftest import write_yaml


@pytest.fixture
def data(tmp_path):
    "Six 2D sample subjects and a one-epoch config for them."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32)
    cfg = {'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1, 'batch_size': 4,
           'q_samples_per_volume': 1, 'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'export': {'enabled': False}}
    return tmp_path, csv, cfg


def snapshot(folder: Path) -> dict:
    "Every entry below `folder`: each file's bytes and modification time, each folder's name."
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else 'dir' for p in folder.rglob('*')}


# -- 7: a run folder is new, empty, or medlab's own ----------------------------------------------------------------
def test_output_dir_dot_in_a_project_folder_is_refused_and_nothing_there_changes(data):
    "`output_dir: .` beside the user's config.yaml and metrics.json: refused with the folder, its files and the way on."
    tmp, csv, cfg = data
    project = tmp / 'project'
    project.mkdir()
    write_yaml(project / 'config.yaml', {**cfg, 'output_dir': '.'})
    (project / 'metrics.json').write_text('{"my": "results of last week"}\n')
    (project / 'notes').mkdir()
    (project / 'notes' / '.draft.tmp').write_text('an editor backup')
    before = snapshot(project)
    for resume in (True, False):
        with pytest.raises(ForeignFolderError) as info: medlab.train(medlab.load_config(project / 'config.yaml'), resume=resume)
        msg = str(info.value)
        assert f'{project} holds files medlab did not write (config.yaml, metrics.json, notes/)' in msg, msg
        assert 'give an empty folder or a new subfolder as output_dir' in msg and str(project / 'run') in msg, msg
        assert snapshot(project) == before        # no lock, no marker, no temporary removed, no file rewritten


def test_a_user_folder_is_refused_but_a_new_or_empty_one_is_taken(data):
    tmp, csv, cfg = data
    (tmp / 'empty').mkdir()
    assert medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'output_dir': str(tmp / 'empty')}))).epochs_run == 1
    assert (tmp / 'empty' / RunFolder.marker_file).is_file() and RunFolder(tmp / 'empty').owned
    (tmp / 'mine').mkdir()
    (tmp / 'mine' / 'scan.nii.gz').write_bytes(b'not medlab')
    with pytest.raises(ForeignFolderError, match='holds files medlab did not write \\(scan.nii.gz\\)'):
        medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'output_dir': str(tmp / 'mine')})))
    assert sorted(p.name for p in (tmp / 'mine').iterdir()) == ['scan.nii.gz']


def test_stale_cleanup_removes_only_medlabs_temporaries(data):
    "A resume clears what killed medlab writes left (its own file names, its own folders), never the user's `.*.tmp`."
    tmp, csv, cfg = data
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'model': {**cfg['model'], 'save_at_every_epoch': True}})))
    run = tmp / 'run'
    theirs = [run / '.notes.tmp', run / '.my.data.tmp', run / '.analysis.ipynb.k1ll3d.tmp', run / 'analysis' / '.cache.1234.tmp',
              run / 'analysis' / '.config.yaml.x7y8z9ab.tmp']
    ours = [run / '.model_latest.pt.k1ll3d.tmp', run / '.config.yaml.ab_12cd3.tmp', run / 'epochs' / '.model_epoch_2.pt.q1w2e3r4.tmp',
            run / 'predictions' / 'validation' / '.sub005_prediction.nii.gz.zz9yy8xx.tmp']
    for p in theirs + ours:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'half')
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'num_epochs': 2,
                                                                 'model': {**cfg['model'], 'save_at_every_epoch': True}})))
    assert [p.name for p in theirs if not p.exists()] == []
    assert [p.name for p in ours if p.exists()] == []
    assert RunFolder(run).logs('training').epoch.tolist() == [1, 2]   # the folder with the user's extra files resumed


def test_a_run_folder_of_an_earlier_medlab_resumes_and_is_marked(data):
    "A run folder written before the marker existed (its events.jsonl says it is medlab's) still resumes."
    tmp, csv, cfg = data
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', cfg)))
    (tmp / 'run' / RunFolder.marker_file).unlink()
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'num_epochs': 2})))
    assert RunFolder(tmp / 'run').logs('training').epoch.tolist() == [1, 2]
    assert (tmp / 'run' / RunFolder.marker_file).is_file()


def test_kfold_fold_folders_go_through_the_same_check(data):
    tmp, csv, cfg = data
    kcfg = config_from_dict({**cfg, 'nested_training': {'testing': 3, 'validation': -2}})
    fold = tmp / 'kf' / 'outer_0' / 'inner_0'
    fold.mkdir(parents=True)
    (fold / 'notes.txt').write_text('mine')
    with pytest.raises(ForeignFolderError, match=f'{fold} holds files medlab did not write \\(notes.txt\\)'):
        plan_folds(kcfg, tmp / 'kf')
    assert [p.name for p in fold.iterdir()] == ['notes.txt']


# -- 8: preprocess again into the same folder ----------------------------------------------------------------------
def pre_cfg(csv: Path, resolution: float):
    return config_from_dict({'data_csv': str(csv), 'patch_size': [32, 32], 'model': {'class_list': [0, 1, 2]},
                             'data_preprocessing': {'resample': {'resolution': resolution}}})


def sizes(folder: Path) -> dict:
    return {p.name: sitk.ReadImage(str(p)).GetSize() for p in sorted((folder / 'images').glob('*.nii.gz'))}


def test_preprocess_again_with_new_settings_redoes_every_image(data):
    "The old images do not stay under a preprocessing.json that claims the new settings."
    tmp, csv, cfg = data
    out = tmp / 'pre'
    medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1)
    assert set(sizes(out).values()) == {(16, 16)}
    medlab.preprocess(pre_cfg(csv, 3.2), out, workers=1)
    assert set(sizes(out).values()) == {(8, 8)} and len(sizes(out)) == 12
    assert json.loads((out / 'preprocessing.json').read_text())['resample']['resolution'] == 3.2
    assert len(pd.read_csv(out / 'data.csv')) == 6


def test_preprocess_again_with_the_same_settings_redoes_only_what_changed(data):
    tmp, csv, cfg = data
    out = tmp / 'pre'
    medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1)
    times = {p.name: p.stat().st_mtime_ns for p in (out / 'images').iterdir()}
    table = pd.read_csv(csv)
    table.loc[2, 'Channel_0'] = table.loc[3, 'Channel_0']         # one subject's image is now another file
    table.to_csv(tmp / 'data' / 'changed.csv', index=False)
    medlab.preprocess(pre_cfg(tmp / 'data' / 'changed.csv', 1.6), out, workers=1)
    redone = sorted(n for n, t in times.items() if (out / 'images' / n).stat().st_mtime_ns != t)
    assert redone == ['sub002_ch0.nii.gz', 'sub002_label.nii.gz'], redone


def test_an_interrupted_redo_leaves_no_claim(data, monkeypatch):
    "Stopped half-way through new settings: neither preprocessing.json nor data.csv describes the mixed folder; a rerun finishes it."
    tmp, csv, cfg = data
    out = tmp / 'pre'
    medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1)
    original, calls = prepare_module._preprocess_one, []
    def dies_third(job):
        calls.append(job)
        if len(calls) == 3: raise KeyboardInterrupt
        return original(job)
    monkeypatch.setattr(prepare_module, '_preprocess_one', dies_third)
    with pytest.raises(KeyboardInterrupt): medlab.preprocess(pre_cfg(csv, 3.2), out, workers=1)
    assert not (out / 'preprocessing.json').exists() and not (out / 'data.csv').exists()
    monkeypatch.setattr(prepare_module, '_preprocess_one', original)
    medlab.preprocess(pre_cfg(csv, 3.2), out, workers=1)
    assert set(sizes(out).values()) == {(8, 8)}
    assert json.loads((out / 'preprocessing.json').read_text())['resample']['resolution'] == 3.2


def test_preprocess_into_a_folder_of_other_files_is_refused_unless_overwrite(data):
    tmp, csv, cfg = data
    out = tmp / 'mine'
    (out / 'images').mkdir(parents=True)
    (out / 'data.csv').write_text('SubjectID,Channel_0\nx,images/x.nii.gz\n')
    (out / 'images' / 'x.nii.gz').write_bytes(b'mine')
    (out / 'notes.txt').write_text('keep me')
    before = snapshot(out)
    with pytest.raises(ForeignFolderError) as info: medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1)
    assert f'{out} holds files medlab did not write (data.csv, images/, notes.txt)' in str(info.value)
    assert 'overwrite=True' in str(info.value)
    assert snapshot(out) == before
    medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1, overwrite=True)
    assert (out / 'notes.txt').read_text() == 'keep me' and (out / 'images' / 'x.nii.gz').read_bytes() == b'mine'
    assert len(pd.read_csv(out / 'data.csv')) == 6
    medlab.preprocess(pre_cfg(csv, 1.6), out, workers=1)            # now medlab's folder: a rerun needs no overwrite


# -- the k-fold folder and an inference output folder: the same rule ------------------------------------------------
def test_kfold_into_a_folder_of_the_users_files_is_refused_before_any_fold(data):
    "`medlab.kfold` with output_dir a project folder: refused, the user's config.yaml unchanged, no fold planned."
    tmp, csv, cfg = data
    project = tmp / 'kfold_project'
    project.mkdir()
    (project / 'config.yaml').write_text('# the user\'s own config\n')
    before = snapshot(project)
    with pytest.raises(ForeignFolderError, match=f'{project} holds files medlab did not write \\(config.yaml\\)'):
        plan_folds(config_from_dict(cfg), project)
    assert snapshot(project) == before
    jobs = plan_folds(config_from_dict(cfg), tmp / 'kf')          # a new folder: planned and marked
    assert jobs and (tmp / 'kf' / '.medlab-kfold').is_file()
    assert len(plan_folds(config_from_dict(cfg), tmp / 'kf')) == len(jobs)   # planned again into its own folder: fine


def test_predict_never_replaces_the_users_files(data, tmp_path):
    "An inference output folder holding the user's predictions.csv: refused before any prediction is written."
    tmp, csv, cfg = data
    run = medlab.train(config_from_dict(cfg))
    (tmp / 'mine').mkdir()
    (tmp / 'mine' / 'predictions.csv').write_text("the user's table")
    with pytest.raises(ForeignFolderError, match='predictions.csv'): medlab.predict(tmp / 'run', csv, tmp / 'mine')
    assert (tmp / 'mine' / 'predictions.csv').read_text() == "the user's table" and len(list((tmp / 'mine').iterdir())) == 1
    first = medlab.predict(tmp / 'run', csv, tmp / 'out')
    again = medlab.predict(tmp / 'run', csv, tmp / 'out')        # its own folder: a second inference replaces its own files
    assert len(first.predictions) == len(again.predictions) == 6
