"""The notebook experience of training: the on_epoch/stop hooks, interrupts that say where they stopped, reruns that say
what they did, run folders that travel, and what the executed train template holds (short errors, one line per
epoch, no control codes, the summary at the top)."""
import re
import shutil
import threading

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest

import medlab
from medlab.errors import user_message
from medlab.run import RunFolder
from medlab.training import Trainer, TrainingInterrupted
from conftest import tiny_config as tiny, run_template, write_yaml


def training_logs(run) -> list[pd.DataFrame]:
    return [RunFolder(run).logs(k).drop(columns='seconds') for k in ('training', 'validation')]


def test_on_epoch_reports_and_stop_ends_a_run_that_resumes(tmp_path, capsys):
    "Stop set from on_epoch after epoch 1 of 3: the run stops there and says so; a new train() resumes to epoch 3 with the logs of a run never stopped."
    cfg, infos, stop = tiny(tmp_path), [], threading.Event()
    def on_epoch(info):
        infos.append(info)
        if info['epoch'] == 1: stop.set()
    result = medlab.train(cfg, on_epoch=on_epoch, stop=stop)
    assert result.stopped and result.epochs_run == 1 and result.stopped_at == 'stopped before epoch 2 of 3; run again to resume from epoch 2'
    assert result.summary().loc['stopped', 'value'] == result.stopped_at
    info = infos[0]
    assert {'epoch', 'num_epochs', 'train', 'validation', 'seconds', 'eta_seconds', 'output_dir', 'curves'} <= set(info)
    assert (info['epoch'], info['num_epochs'], info['train']['epoch'], info['validation']['epoch']) == (1, 3, 1, 1)
    assert info['eta_seconds'] == pytest.approx(2 * info['seconds']) and info['seconds'] > 0
    assert info['curves'] == str(tmp_path / 'run' / 'training_curves.png') and (tmp_path / 'run' / 'training_curves.png').stat().st_size > 5000
    run = RunFolder(tmp_path / 'run')
    assert [e['event'] for e in run.events()][-2:] == ['epoch', 'stopped'] and not run.finished
    assert run.checkpoint('latest')['epoch'] == 1 and 'optimizer' in run.checkpoint('latest')
    assert not (tmp_path / 'run' / 'metrics.json').exists()
    capsys.readouterr()
    again = medlab.train(cfg)
    assert capsys.readouterr().out.splitlines()[0] == f"{tmp_path / 'run'}: resuming at epoch 2 of 3"
    assert again.epochs_run == 3 and not again.stopped and run.finished
    straight = medlab.train(cfg.model_copy(update={'output_dir': str(tmp_path / 'straight')}))
    for a, b in zip(training_logs(tmp_path / 'run'), training_logs(tmp_path / 'straight')): pd.testing.assert_frame_equal(a, b)
    assert again.best == {**straight.best, 'seconds': again.best['seconds']}


def test_a_stop_during_an_epoch_keeps_the_last_whole_epoch(tmp_path):
    "Stop set after step 1 of epoch 2: the partial epoch is dropped; model_latest.pt holds epoch 1."
    cfg, stop = tiny(tmp_path, batch_size=2), threading.Event()
    original = Trainer.train_step
    def step(self, batch):
        loss = original(self, batch)
        if self.epoch == 2: stop.set()
        return loss
    Trainer.train_step = step
    try: result = medlab.train(cfg, stop=stop)
    finally: Trainer.train_step = original
    steps = -(-len(RunFolder(tmp_path / 'run').split().training) // 2)
    assert result.stopped_at == f'stopped during epoch 2 of 3 (after step 1 of {steps}); run again to resume from epoch 2'
    assert RunFolder(tmp_path / 'run').checkpoint('latest')['epoch'] == 1
    assert len(RunFolder(tmp_path / 'run').logs('training')) == 1


def test_an_interrupt_says_where_and_the_run_resumes(tmp_path):
    "A KeyboardInterrupt in epoch 2 of 3 becomes TrainingInterrupted naming the epoch; it is one of medlab's short errors."
    cfg = tiny(tmp_path)
    original = Trainer.train_step
    def step(self, batch):
        if self.epoch == 2: raise KeyboardInterrupt
        return original(self, batch)
    Trainer.train_step = step
    try:
        with pytest.raises(TrainingInterrupted) as info: medlab.train(cfg)
    finally: Trainer.train_step = original
    assert isinstance(info.value, KeyboardInterrupt)
    assert str(info.value) == f"{tmp_path / 'run'}: stopped during epoch 2 of 3; run again to resume from epoch 2"
    assert user_message(info.value) == str(info.value)
    run = RunFolder(tmp_path / 'run')
    assert run.events()[-1]['event'] == 'interrupted' and not (tmp_path / 'run' / 'run.lock').exists()
    assert medlab.train(cfg).epochs_run == 3


def test_a_finished_run_says_so_and_more_epochs_continue_it(tmp_path, capsys):
    "Rerunning a finished run prints one line with what to do and trains nothing; raising num_epochs continues from the last epoch."
    cfg = tiny(tmp_path, num_epochs=2)
    first = medlab.train(cfg)
    mtime = (tmp_path / 'run' / 'model_latest.pt').stat().st_mtime_ns
    capsys.readouterr()
    again = medlab.train(cfg.model_copy(update={'num_epochs': 1}))
    assert capsys.readouterr().out == (f"{tmp_path / 'run'} already trained 2 epochs (num_epochs: 1): raise num_epochs to train more, "
                                       'or give resume=False or a new output_dir to start over\n')
    assert again.best == first.best and again.best_epoch == first.best_epoch
    assert (tmp_path / 'run' / 'model_latest.pt').stat().st_mtime_ns == mtime
    assert RunFolder(tmp_path / 'run').config().num_epochs == 2       # config.yaml left as the run was
    more = medlab.train(cfg.model_copy(update={'num_epochs': 3}))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path / 'run'}: resuming at epoch 3 of 3" and out[1].startswith('epoch 3/3: loss ')
    assert more.epochs_run == 3 and list(RunFolder(tmp_path / 'run').logs('validation').epoch) == [1, 2, 3]


def test_a_moved_project_resumes_and_loads(tmp_path):
    "A project folder (data and run) copied elsewhere, the original gone: its run folder resumes and loads there."
    project = tmp_path / 'project'
    cfg = tiny(project, num_epochs=1)
    medlab.train(cfg)
    for name in ('config.yaml', 'split.csv'):
        assert str(project) not in (project / 'run' / name).read_text(), name
    assert 'data_csv: ../data/data.csv\n' in (project / 'run' / 'config.yaml').read_text()
    moved = tmp_path / 'elsewhere' / 'moved'
    shutil.copytree(project, moved)
    shutil.rmtree(project)
    run = RunFolder(moved / 'run')
    cfg = run.config()
    assert (cfg.data_csv, cfg.output_dir) == (str(moved / 'data' / 'data.csv'), str(moved / 'run'))
    assert all(str(moved) in c for s in run.split().subjects for c in s.channels)
    result = medlab.train(cfg.model_copy(update={'num_epochs': 2}))
    assert result.epochs_run == 2 and result.output_dir == str(moved / 'run')
    predictor = medlab.load_run(moved / 'run')
    subject = run.split().validation[0]
    assert predictor.predict(subject).labels.shape == (32, 32)
    # a YAML of the user's own, naming the moved data by its absolute path, resumes the run as well
    own = write_yaml(tmp_path / 'own.yaml', {**cfg.model_dump(mode='json'), 'num_epochs': 3})
    assert medlab.train(medlab.load_config(own)).epochs_run == 3


def test_summary_names_classes_and_plot_has_a_panel_per_metric(tmp_path):
    "The summary's per-class columns are class_list's values; the curves have loss, dice and one panel per class."
    cfg = tiny(tmp_path, num_epochs=2, model={'class_list': [0, 5, 9], 'base_filters': 4})
    csv = tmp_path / 'data' / 'data.csv'
    from medlab.io import read_image, to_array, write_image
    for mask in (csv.parent / 'images').glob('*_mask.nii.gz'):   # labels 1, 2 become 5, 9
        img = read_image(mask); arr = to_array(img); write_image(np.select([arr == 1, arr == 2], [5, 9], 0).astype(arr.dtype), mask, img)
    result = medlab.train(cfg)
    table = result.summary()
    assert list(table.columns) == ['value', 'class 5', 'class 9']
    assert list(table.index[:3]) == ['best epoch', 'epochs', 'time'] and 'testing dice' not in table.index
    assert re.fullmatch(r'\d+(\.\d)? s|\d+ min( \d+ s)?', table.loc['time', 'value'])
    row = result.best
    assert table.loc['validation dice'].tolist() == [round(row['dice'], 4), round(row['dice_5'], 4), round(row['dice_9'], 4)]
    import matplotlib.image
    png = matplotlib.image.imread(tmp_path / 'run' / 'training_curves.png')
    assert png.shape[1] > 4 * png.shape[0] * 0.9      # four panels in a row: loss, dice, dice class 5, dice class 9


# -- the executed template ----------------------------------------------------------------------------------------
def outputs_of(nb_path) -> list:
    return [o for c in nbformat.read(nb_path, 4).cells for o in c.get('outputs', [])]


def output_text(o) -> str:
    if o['output_type'] == 'stream': return o['text']
    if o['output_type'] == 'error': return '\n'.join(o['traceback'])
    return o.get('data', {}).get('text/plain', '')


def strings(obj) -> list[str]:
    "Every string inside an output (its text, each mime type's data, the traceback)."
    if isinstance(obj, str): return [obj]
    if isinstance(obj, dict): return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list): return [s for v in obj for s in strings(v)]
    return []


def test_train_template_headless_record(tmp_path):
    "papermill's executed train notebook: under 30 outputs, no control characters, one line per epoch, the summary at the top."
    cfg = tiny(tmp_path)
    config = write_yaml(tmp_path / 'tiny.yaml', cfg.model_dump(mode='json'))
    nb = run_template('train', tmp_path, config=str(config))
    outputs = outputs_of(nb)
    texts = [output_text(o) for o in outputs]
    assert len(outputs) < 30, len(outputs)
    controls = [s[:200] for o in outputs for s in strings(o) if '\r' in s or '\x1b' in s]
    assert not controls, controls
    epochs = [t for t in texts if t.startswith('epoch 1/3: loss ')]
    assert len(epochs) == 1 and [l.split(':')[0] for l in epochs[0].splitlines()] == ['epoch 1/3', 'epoch 2/3', 'epoch 3/3']
    cells = nbformat.read(nb, 4).cells
    first = next(i for i, c in enumerate(cells) if 'medlab.summary_slot' in c.source)
    top = [output_text(o) for o in cells[first].outputs]
    assert len(top) == 1 and top[0].startswith('Summary') and 'validation dice' in top[0] and 'class 2' in top[0], top
    assert any('image/png' in o.get('data', {}) for o in cells[-1].outputs)    # the validation gallery
    assert (tmp_path / 'run' / 'validation_predictions.png').is_file()


def test_a_medlab_error_is_one_short_message_under_papermill(tmp_path):
    "A missing data CSV: papermill's error and the executed notebook carry the one message (at the top too), no traceback."
    cfg = tiny(tmp_path).model_dump(mode='json')
    config = write_yaml(tmp_path / 'bad.yaml', {**cfg, 'data_csv': str(tmp_path / 'nowhere.csv')})
    with pytest.raises(pm.PapermillExecutionError) as info: run_template('train', tmp_path, config=str(config))
    said = str(info.value)
    assert f'FileNotFoundError: data CSV not found: {tmp_path / "nowhere.csv"} (set data_csv to the manifest)' in said
    assert 'Traceback' not in said and len(said.splitlines()) <= 5, said
    cells = nbformat.read(tmp_path / 'train_executed.ipynb', 4).cells
    first = next(i for i, c in enumerate(cells) if 'medlab.summary_slot' in c.source)
    assert output_text(cells[first].outputs[0]).startswith('Failed\nFileNotFoundError: data CSV not found')
    errors = [o for c in cells for o in c.get('outputs', []) if o['output_type'] == 'error']
    assert len(errors) == 1 and len(errors[0]['traceback']) == 2
