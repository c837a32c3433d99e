"""The training loop open to callbacks (issue 21): checkpoints, early stopping, the curves and Stop are callbacks on the
loop's hooks, in a stated order; a callback of one's own sees every hook, the stop lands on the step it was asked at,
and a stopped run resumes to the results of a run that never stopped."""
import threading

import pandas as pd
import pytest
import torch

import medlab
from medlab.engine.callbacks import Callback, EpochRecord, StopWhen
from medlab.engine.run import RunFolder
from medlab.engine.training import Checkpoints, CurvesPNG, EarlyStopping
from conftest import tiny_config


class Recorder(Callback):
    "Notes every hook, the records, and the callbacks the trainer runs."
    def __init__(self): self.calls, self.records, self.names = [], [], []
    def on_fit_start(self, trainer):
        self.calls.append('fit_start'); self.names = [type(c).__name__ for c in trainer.callbacks]
    def on_epoch_start(self, trainer, epoch): self.calls.append(f'epoch_start {epoch}')
    def on_step_end(self, trainer): self.calls.append(f'step {trainer.epoch}.{trainer.step}')
    def on_validation_end(self, trainer, train_row, val_row):
        # after medlab's EarlyStopping and Checkpoints: this epoch's logs and model_latest.pt are written
        latest = trainer.run.checkpoint('latest')['epoch'] if trainer.run.has('latest') else 0
        self.calls.append(f"validation_end {val_row['epoch']} logs {len(trainer.run.logs('validation'))} latest {latest}")
    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch_end {record.epoch} latest {trainer.run.checkpoint('latest')['epoch']}")
        self.records.append(record)
    def on_fit_end(self, trainer, result): self.calls.append('fit_end')


def steps_per_epoch(run, batch_size: int) -> int:
    return -(-len(RunFolder(run).split().training) // batch_size)


def test_every_hook_in_order_with_the_default_callbacks_first(tmp_path):
    "2 epochs: the default callbacks in their stated order; each record holds what the logs hold."
    rec, infos = Recorder(), []
    result = medlab.train(tiny_config(tmp_path, num_epochs=2), callbacks=[rec], on_epoch=infos.append, stop=threading.Event())
    assert rec.names == ['EarlyStopping', 'Checkpoints', 'EventLog', 'ProgressLine', 'CurvesPNG', 'OnEpochFunction',
                         'Recorder', 'StopWhen']
    n = steps_per_epoch(result.output_dir, 4)
    assert n == 1    # 4 training subjects of the 6, batches of 4
    assert rec.calls == ['fit_start',
                         'epoch_start 1', 'step 1.1', 'validation_end 1 logs 1 latest 1', 'epoch_end 1 latest 1',
                         'epoch_start 2', 'step 2.1', 'validation_end 2 logs 2 latest 2', 'epoch_end 2 latest 2', 'fit_end']
    logs = RunFolder(result.output_dir).logs('validation')
    assert [r.epoch for r in rec.records] == [1, 2] and all(isinstance(r, EpochRecord) for r in rec.records)
    assert [r.validation['dice'] for r in rec.records] == pytest.approx(list(logs.dice), rel=1e-12)
    assert [r.validation['loss'] for r in rec.records] == pytest.approx(list(logs.loss), rel=1e-12)
    assert rec.records[-1].best_epoch == result.best_epoch and rec.records[-1].eta_seconds == 0.0
    assert [i['epoch'] for i in infos] == [1, 2] and infos[-1]['curves'] == str(tmp_path / 'run' / 'training_curves.png')


def test_early_stopping_with_patience_1_stops_on_a_plateau(tmp_path):
    "A learning rate of 1e-12 without normalisation layers keeps the weights: dice is the same each epoch, so patience 1 stops after epoch 2."
    cfg = tiny_config(tmp_path, num_epochs=5, patience=1, learning_rate=1e-12,
                      model={'class_list': [0, 1, 2], 'base_filters': 4, 'norm_type': 'none'})
    rec = Recorder()
    result = medlab.train(cfg, callbacks=[rec])
    dice = list(RunFolder(result.output_dir).logs('validation').dice)
    assert dice == [dice[0], dice[0]]                       # the plateau
    assert (result.epochs_run, result.best_epoch, result.stopped_early) == (2, 1, True)
    assert [r.stopped for r in rec.records] == [False, True] and rec.records[-1].eta_seconds == 0.0
    assert RunFolder(result.output_dir).checkpoint('best')['epoch'] == 1
    latest = RunFolder(result.output_dir).checkpoint('latest')
    assert (latest['epoch'], latest['best_epoch'], latest['bad_epochs']) == (2, 1, 1)


def test_stop_when_set_after_step_k_stops_at_step_k_and_resumes_to_the_straight_result(tmp_path):
    "Stop asked at step 2 of epoch 2 (by a callback, before StopWhen looks): the run ends there; a new train() finishes it as a straight run would."
    cfg, stop = tiny_config(tmp_path, batch_size=1), threading.Event()

    class StopAt(Callback):
        def on_step_end(self, trainer):
            if (trainer.epoch, trainer.step) == (2, 2): stop.set()
    result = medlab.train(cfg, stop=stop, callbacks=[StopAt()])
    n = steps_per_epoch(tmp_path / 'run', 1)
    assert n == 4
    assert result.stopped and result.stopped_at == f'stopped during epoch 2 of 3 (after step 2 of {n}); run again to resume from epoch 2'
    run = RunFolder(tmp_path / 'run')
    assert run.events()[-1]['event'] == 'stopped' and (run.events()[-1]['epoch'], run.events()[-1]['step']) == (2, 2)
    assert run.checkpoint('latest')['epoch'] == 1 and len(run.logs('training')) == 1
    again = medlab.train(cfg)
    straight = medlab.train(cfg.model_copy(update={'output_dir': str(tmp_path / 'straight')}))
    assert again.epochs_run == 3 and not again.stopped
    for kind in ('training', 'validation'):
        pd.testing.assert_frame_equal(run.logs(kind).drop(columns='seconds'), RunFolder(tmp_path / 'straight').logs(kind).drop(columns='seconds'))
    assert again.best == {**straight.best, 'seconds': again.best['seconds']}
    mine, theirs = run.checkpoint('latest')['model'], RunFolder(tmp_path / 'straight').checkpoint('latest')['model']
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_the_loop_callbacks_are_callbacks_and_stop_when_needs_no_trainer_method():
    "Checkpoints, early stopping, the curves and Stop are Callback subclasses (a panel can list or replace them)."
    assert all(issubclass(c, Callback) for c in (Checkpoints, CurvesPNG, EarlyStopping, StopWhen))
    assert EarlyStopping('dice', True, 1).every_process and Checkpoints.every_process and StopWhen.every_process
    assert not CurvesPNG.every_process
