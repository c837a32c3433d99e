"""Fault injection: each bad input or fault of the hardening issue gets its clear error (or the safe behaviour), and
nothing outside the run folder changes; a run SIGKILLed at a dozen points resumes to the results of a run that was
never stopped."""
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch

import medlab
from medlab.io import read_image, to_array, write_image
from medlab.run import CheckpointError, RunFolder, RunLockedError, save_checkpoint
from medlab.training import TrainingDiverged
from conftest import ROOT, run_template, write_yaml

HERE = Path(__file__).resolve().parent


def snapshot(folder: Path, skip: Path) -> dict:
    "Every file below `folder` (outside `skip`) with its size and modification time."
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file() and skip not in p.parents}


def refused(tmp_path, cfg: dict, exc=Exception) -> str:
    "Train `cfg` from a YAML, expecting `exc`: its message, after checking that no training started and nothing outside the run folder changed."
    before = snapshot(tmp_path, tmp_path / 'run')
    path = write_yaml(tmp_path / 'c.yaml', cfg)
    with pytest.raises(exc) as info: medlab.train(medlab.load_config(path))
    assert not (tmp_path / 'run' / 'model_initial.pt').exists()
    after = snapshot(tmp_path, tmp_path / 'run')
    assert {k: v for k, v in after.items() if not k.endswith('c.yaml')} == {k: v for k, v in before.items() if not k.endswith('c.yaml')}
    return str(info.value)


def with_rows(csv: Path, name: str, **changes) -> str:
    "A copy of the manifest with some cells changed: {(row, column): value}."
    df = pd.read_csv(csv)
    for (row, col), value in changes.get('cells', {}).items(): df.loc[row, col] = value
    df.to_csv(csv.parent / name, index=False)
    return str(csv.parent / name)


# -- 1, 7: what SimpleITK reads without a word ------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [np.float32, np.int16])
def test_a_nifti_cut_to_half_its_bytes_is_refused(data, dtype):
    tmp, csv, cfg = data
    image = read_image(csv.parent / 'images' / 'sub001_ch0.nii.gz')
    write_image((to_array(image) * 100).astype(dtype), tmp / 'whole.nii.gz', image)
    raw = gzip.decompress((tmp / 'whole.nii.gz').read_bytes())
    (tmp / 'half.nii.gz').write_bytes(gzip.compress(raw[:len(raw) // 2]))
    msg = refused(tmp, {**cfg, 'data_csv': with_rows(csv, 'half.csv', cells={(1, 'Channel_0'): str(tmp / 'half.nii.gz')})}, medlab.DataError)
    assert f'line 3 (sub001): Channel_0: {tmp / "half.nii.gz"}: holds' in msg and 'the file was cut short' in msg


def test_nan_in_a_nifti_image_and_mask_and_one_scan_under_two_subjects(data):
    tmp, csv, cfg = data
    for name, source in (('nan_image.nii.gz', 'sub002_ch0.nii.gz'), ('nan_mask.nii.gz', 'sub003_mask.nii.gz')):
        img = read_image(csv.parent / 'images' / source)
        arr = to_array(img); arr[0, 5, 5] = np.nan
        write_image(arr, tmp / name, img)                       # NIfTI keeps the NaN; ITK reads it back as 0
    msg = refused(tmp, {**cfg, 'data_csv': with_rows(csv, 'nan.csv', cells={
        (2, 'Channel_0'): str(tmp / 'nan_image.nii.gz'), (3, 'Label'): str(tmp / 'nan_mask.nii.gz'),
        (5, 'Channel_0'): str(csv.parent / 'images' / 'sub004_ch0.nii.gz')})}, medlab.DataError)
    assert 'line 4 (sub002): Channel_0: ' in msg and 'nan_image.nii.gz: holds 1 NaN or infinite values' in msg
    assert 'line 5 (sub003): Label: ' in msg and 'nan_mask.nii.gz: holds 1 NaN or infinite values' in msg
    assert 'the same image is line 6 (sub004) Channel_0 and line 7 (sub005) Channel_0' in msg


# -- 2: names that lead out of the folder ----------------------------------------------------------------------
def test_a_subject_id_with_a_path_is_refused_and_nothing_is_written_outside(data):
    tmp, csv, cfg = data
    msg = refused(tmp, {**cfg, 'data_csv': with_rows(csv, 'escape.csv', cells={(0, 'SubjectID'): '../../x'})}, medlab.DataError)
    assert "SubjectID '../../x' holds '/', which file names cannot" in msg


# -- 3: two runs, one folder -------------------------------------------------------------------------------------
def test_a_second_run_into_a_busy_folder_is_refused(data):
    tmp, csv, cfg = data
    config = write_yaml(tmp / 'long.yaml', {**cfg, 'num_epochs': 30})
    first = subprocess.Popen([sys.executable, str(HERE / 'kill_at.py'), str(config), 'never', '0'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp / 'run' / 'run.lock'
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline: time.sleep(0.1)
        assert lock.exists(), 'the first run never took the folder'
        with pytest.raises(RunLockedError, match=f'is in use by process {first.pid}'):
            medlab.train(medlab.load_config(config))
    finally: first.kill(); first.wait()
    # the killed holder left its lock; the next run takes it over with a note, and trains
    assert medlab.train(medlab.load_config(config).model_copy(update={'num_epochs': 1}), resume=False).epochs_run == 1
    assert not (tmp / 'run' / 'run.lock').exists()


# -- 4, 6: numbers and config values ---------------------------------------------------------------------------
@pytest.mark.parametrize('change, says', [
    ({'learning_rate': float('inf')}, 'learning_rate: Input should be a finite number'),
    ({'learning_rate': 1e30}, 'learning_rate: Input should be less than or equal to 10'),
    ({'metrics': []}, 'metrics: give at least one metric'),
    ({'seed': -1}, 'seed: Input should be greater than or equal to 0'),
    ({'seed': 10**23}, 'seed: Input should be less than 4294967296'),
    ({'num_epochs': True}, 'num_epochs: expected a number, got true'),
    ({'data_augmentation': {'flip': {'axis': [5]}}}, 'data_augmentation.flip.axis: [5] not an axis of a 2D patch'),
    ({'output_dir': ''}, 'output_dir: give the run folder'),
])
def test_config_values_are_refused_by_key(data, change, says):
    tmp, csv, cfg = data
    assert says in refused(tmp, {**cfg, **change}, medlab.ConfigError)


def test_duplicate_keys_and_billion_laughs_in_yaml(data):
    tmp, csv, cfg = data
    (tmp / 'twice.yaml').write_text(f'data_csv: {csv}\nnum_epochs: 3\nnum_epochs: 30\n')
    with pytest.raises(medlab.ConfigError, match="key 'num_epochs' is given twice"): medlab.load_config(tmp / 'twice.yaml')
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + ''.join(
        f'{c}: &{c} [{",".join(["*" + p] * 9)}]\n' for p, c in zip('abcdefgh', 'bcdefghi'))
    (tmp / 'laughs.yaml').write_text(laughs)
    with pytest.raises(medlab.ConfigError) as info: medlab.load_config(tmp / 'laughs.yaml')
    assert 'anchors and aliases' in str(info.value) and len(str(info.value)) < 1000


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(data):
    "Images that overflow the network after one good epoch: the run stops at the first non-finite loss; nothing NaN is kept."
    tmp, csv, cfg = data
    config = {**cfg, 'num_epochs': 3, 'nested_training': {'testing': 1, 'validation': -3}}
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**config, 'num_epochs': 1})))
    good = RunFolder(tmp / 'run').checkpoint('latest')['model']
    split = RunFolder(tmp / 'run').split()
    for s in split.training:  # the same files, now holding values whose squares overflow float32
        img = read_image(s.channels[0]); write_image(to_array(img) * np.float32(1e37), s.channels[0], img)
    with pytest.raises(TrainingDiverged, match=r'epoch 2, step 1: the loss is nan; the run stopped and model_latest.pt keeps the last good epoch'):
        medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', config)))
    latest = RunFolder(tmp / 'run').checkpoint('latest')
    assert latest['epoch'] == 1 and all(torch.equal(good[k], latest['model'][k]) for k in good)
    assert json.loads((tmp / 'run' / 'metrics.json').read_text(), parse_constant=lambda c: pytest.fail(f'{c} in metrics.json'))
    assert RunFolder(tmp / 'run').events()[-1]['event'] == 'failed'


# -- 5: the data changed under a run -----------------------------------------------------------------------------
def test_resuming_on_a_changed_manifest_is_refused(data):
    tmp, csv, cfg = data
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', cfg)))
    pd.read_csv(csv).head(5).to_csv(csv, index=False)   # 6 subjects cut to 5
    with pytest.raises(RuntimeError, match='was started on another split; the data now give'):
        medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'num_epochs': 2})))
    assert len(RunFolder(tmp / 'run').split().subjects) == 6   # split.csv kept as it was


# -- 8, 9: checkpoints, the disk, the files --------------------------------------------------------------------
def test_damaged_and_malicious_checkpoints_name_the_file_and_the_way_on(data):
    tmp, csv, cfg = data
    medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', cfg)))
    latest = tmp / 'run' / 'model_latest.pt'
    for damage in (lambda b: b[:len(b) // 3], lambda b: b''):
        latest.write_bytes(damage((tmp / 'run' / 'model_best.pt').read_bytes()))
        with pytest.raises(CheckpointError) as info: medlab.train(medlab.load_config(tmp / 'c.yaml'))
        assert str(latest) in str(info.value) and 'start the run over (resume=False' in str(info.value)
    torch.save({'model': {}, 'run_me': os.system}, latest)
    with pytest.raises(CheckpointError) as info: medlab.train(medlab.load_config(tmp / 'c.yaml'))
    assert 'pickled code can run on load' in str(info.value) and 'weights_only=False' not in str(info.value)


def test_a_full_disk_is_said_in_words(tmp_path, monkeypatch):
    "torch's own words for a full disk (seen when a checkpoint write runs out of space) become a sentence with the free space."
    def full(*args, **kwargs): raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 1408 vs 1301')
    monkeypatch.setattr(torch, 'save', full)
    with pytest.raises(OSError, match=f'no space left on the disk of {tmp_path} \\(\\d+ MB free\\) while writing model_latest.pt'):
        save_checkpoint(tmp_path / 'model_latest.pt', epoch=1)
    assert list(tmp_path.iterdir()) == []   # and no temporary file stays behind


def test_stale_temporaries_go_and_files_follow_the_umask(data):
    tmp, csv, cfg = data
    (tmp / 'run').mkdir()
    (tmp / 'run' / '.model_latest.pt.k1ll3d.tmp').write_bytes(b'half')
    old = os.umask(0o027)
    try: medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', cfg)))
    finally: os.umask(old)
    assert not list((tmp / 'run').glob('.*.tmp'))
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp / 'run').iterdir() if p.is_file()} == {oct(0o640)}


def test_an_unknown_papermill_parameter_is_an_error(data):
    tmp, csv, cfg = data
    with pytest.raises(pm.PapermillExecutionError) as info:
        run_template('train', tmp, config=str(write_yaml(tmp / 'c.yaml', cfg)), num_epochs=1)
    assert 'num_epochs: not a parameter of train.ipynb (its parameters: config, data_csv, interactive, output_dir, resume, split)' in str(info.value)
    assert not (tmp / 'run').exists()


# -- SIGKILL at a dozen points, then resume ------------------------------------------------------------------------
# Each process resumes from the last epoch its predecessors finished: the n-th step, validation subject, log write or
# checkpoint write counts from there. 3 steps and 2 validation subjects an epoch: all twelve kills are reached before
# the 10 epochs are over (at most 8 epochs pass between them), in the middle of steps, of validation, between the two
# log writes of an epoch, and half-way through writing the initial, best and latest checkpoints.
KILLS = [('step', 3), ('checkpoint', 1), ('validation', 2), ('logs', 2), ('checkpoint', 3), ('step', 9),
         ('validation', 3), ('checkpoint', 2), ('logs', 3), ('step', 4), ('validation', 1), ('checkpoint', 1)]

def comparable(run: Path) -> dict:
    "What two runs of one config must share: logs (but seconds), metrics (but times and places), weights, test predictions."
    r = RunFolder(run)
    metrics = {k: v for k, v in r.metrics().items() if k not in ('first_step_time', 'output_dir')}
    for part in ('best', 'testing'): metrics[part] = {k: v for k, v in metrics[part].items() if k != 'seconds'}
    weights = {w: {k: v.numpy().tobytes() for k, v in r.checkpoint(w)['model'].items()} for w in ('best', 'latest')}
    return {'logs': [r.logs(k).drop(columns='seconds').to_dict('list') for k in ('training', 'validation')],
            'metrics': metrics, 'weights': weights, 'testing': r.predictions('testing').to_dict('list'),
            'masks': {p.name: p.read_bytes() for p in sorted(r.predictions_dir('testing').glob('*.nii.gz'))}}


def test_sigkill_at_a_dozen_points_resumes_to_the_uninterrupted_result(tmp_path):
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=10, size=32)
    cfg = {'data_csv': str(csv), 'patch_size': [32, 32], 'num_epochs': 10, 'batch_size': 2, 'q_samples_per_volume': 1,
           'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'data_augmentation': {'flip': None, 'noise': None},
           'nested_training': {'testing': -5, 'validation': -4}, 'patience': 10}
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    def run(out: str, point: str, n: int) -> int:
        config = write_yaml(tmp_path / f'{out}.yaml', {**cfg, 'output_dir': str(tmp_path / out)})
        return subprocess.run([sys.executable, str(HERE / 'kill_at.py'), str(config), point, str(n)], env=env,
                              capture_output=True, text=True).returncode
    assert run('straight', 'never', 0) == 0
    reference = comparable(tmp_path / 'straight')
    for point, n in KILLS:
        assert run('killed', point, n) == -9, (point, n)
    assert run('killed', 'never', 0) == 0
    assert comparable(tmp_path / 'killed') == reference
    events = [e['event'] for e in RunFolder(tmp_path / 'killed').events()]
    assert events.count('start') == len(KILLS) + 1 and events[-2:] == ['finished', 'exported']
    assert not list((tmp_path / 'killed').rglob('*.tmp')) and not (tmp_path / 'killed' / 'run.lock').exists()
