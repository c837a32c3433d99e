"""A time (or step) budget sizes a run's epochs (issue 24): `max_steps` to the exact epochs, `minutes` to the speed
measured on the first epoch (a fake clock here: no wall time is asserted), the cosine schedule rebuilt to end at
min_lr on the last chosen epoch, an end on time that leaves a finished run, and a resume that keeps the chosen epochs."""
import math
import threading
import time

import pytest

import medlab
from medlab.engine.budget import TimeBudget
from medlab.engine.callbacks import Callback
from medlab.engine.run import RunFolder
from medlab.engine.training import Trainer
from conftest import tiny_config

STEP, VALIDATION = 10.0, 5.0   # fake seconds a training step and a validation take


def budget_config(tmp_path, budget: dict, **changes):
    "Four training subjects in batches of 1: four steps an epoch; a cosine schedule down to 1e-4."
    return tiny_config(tmp_path, num_epochs=changes.pop('num_epochs', 50), batch_size=1, budget=budget, learning_rate=0.01, patience=100,
                       scheduler={'type': 'cosine', 'min_lr': 1e-4}, **changes)


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that moves STEP seconds in each training step and VALIDATION in each validation (plus `jump[epoch]`),
    starting now so that the `start` event's real time lies a few milliseconds behind it."""
    now, jump = [time.time()], {}
    step, validate = Trainer.train_step, Trainer.validate
    def timed_step(self, batch):
        now[0] += STEP; return step(self, batch)
    def timed_validate(self, epoch, train_row):
        now[0] += VALIDATION + jump.get(epoch, 0.0); return validate(self, epoch, train_row)
    monkeypatch.setattr(Trainer, 'train_step', timed_step)
    monkeypatch.setattr(Trainer, 'validate', timed_validate)
    monkeypatch.setattr(TimeBudget, 'clock', staticmethod(lambda: now[0]))
    return jump


def budget_events(run_dir) -> list[dict]:
    return [e for e in RunFolder(run_dir).events() if e['event'] == 'budget']


def test_max_steps_gives_the_exact_epochs_and_a_finished_run_is_done(tmp_path):
    "10 steps of 4 an epoch: 3 epochs, though num_epochs says 1; a second train() of the same config trains nothing."
    cfg = budget_config(tmp_path, {'max_steps': 10}, num_epochs=1)
    lines = []
    class Lines(Callback):
        def on_epoch_end(self, trainer, record): lines.append(record.line)
    result = medlab.train(cfg, callbacks=[Lines()])
    run = RunFolder(result.output_dir)
    assert (result.epochs_run, result.num_epochs) == (3, 3)
    assert lines[0].startswith('epoch 1/3: ') and lines[-1].endswith(' (budget 10 steps)')   # the line says why 3
    assert list(run.logs('training').epoch) == [1, 2, 3]
    assert run.metrics()['budget'] == {'max_steps': 10, 'epochs': 3, 'ended_on_time': False}
    [event] = budget_events(run.path)
    assert (event['epochs'], event['reason'], event['config_num_epochs']) == (3, 'steps', 1)
    starts = sum(e['event'] == 'start' for e in run.events())
    again = medlab.train(budget_config(tmp_path, {'max_steps': 10}, num_epochs=1))
    assert again.epochs_run == 3 and sum(e['event'] == 'start' for e in run.events()) == starts   # already done: no new session


def test_minutes_budget_sizes_the_epochs_and_rebuilds_the_cosine(tmp_path, fake_clock):
    """Epoch 1: 4 steps of 10 s (measured from step 2) and 5 s of validation = 45 s an epoch, 45 s spent; 5 min leave
    255 s: 5 more epochs, 6 in all; the cosine over 6 epochs ends at min_lr after epoch 6."""
    result = medlab.train(budget_config(tmp_path, {'minutes': 5}))
    run = RunFolder(result.output_dir)
    assert (result.epochs_run, result.num_epochs) == (6, 6)
    [event] = budget_events(run.path)
    assert (event['epochs'], event['reason'], event['config_num_epochs']) == (6, 'planned', 50)
    assert event['seconds_per_step'] == pytest.approx(STEP) and event['seconds_per_epoch'] == pytest.approx(45.0)
    rates = list(run.logs('training').learning_rate)
    assert rates == pytest.approx([1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)], rel=1e-9)
    latest = run.checkpoint('latest')
    assert latest['scheduler']['T_max'] == 6 and latest['scheduler']['_last_lr'][0] == pytest.approx(1e-4, rel=1e-9)
    assert latest['config']['num_epochs'] == 6
    assert run.finished and run.metrics()['budget'] == {'minutes': 5.0, 'epochs': 6, 'ended_on_time': False}


def test_a_clock_jump_ends_the_run_on_time_as_a_finished_run(tmp_path, fake_clock):
    """Validation of epoch 3 takes 100 s more: 235 s spent, 78 s an epoch on average, 65 s left: the run ends after
    epoch 3, scored and finished (metrics.json, a `finished` event), not stopped."""
    fake_clock[3] = 100.0
    result = medlab.train(budget_config(tmp_path, {'minutes': 5}))
    run = RunFolder(result.output_dir)
    assert result.epochs_run == 3 and not result.stopped and not result.stopped_early
    assert [(e['epochs'], e['reason']) for e in budget_events(run.path)] == [(6, 'planned'), (3, 'ends on time')]
    assert run.finished and run.metrics()['budget'] == {'minutes': 5.0, 'epochs': 3, 'ended_on_time': True}
    assert run.checkpoint('latest')['epoch'] == 3 and run.checkpoint('latest')['config']['num_epochs'] == 3


class StopAfter(Callback):
    "Set `event` at the end of epoch `epoch` (the panel's Stop)."
    def __init__(self, event: threading.Event, epoch: int): self.event, self.epoch = event, epoch
    def on_epoch_end(self, trainer, record):
        if record.epoch == self.epoch: self.event.set()


def test_a_resumed_budgeted_run_keeps_the_epochs_it_chose(tmp_path, fake_clock):
    "Stopped after epoch 2 of the 6 chosen, resumed on a machine ten times faster: still 6 epochs, no new plan."
    stop = threading.Event()
    first = medlab.train(budget_config(tmp_path, {'minutes': 5}), stop=stop, callbacks=[StopAfter(stop, 2)])
    assert first.stopped and first.epochs_run == 2
    globals()['STEP'] = 1.0                           # the fake steps now take 1 s: a new plan would choose more epochs
    try: result = medlab.train(budget_config(tmp_path, {'minutes': 5}))
    finally: globals()['STEP'] = 10.0
    run = RunFolder(result.output_dir)
    assert (result.epochs_run, result.num_epochs) == (6, 6)
    assert [(e['epochs'], e['reason']) for e in budget_events(run.path)] == [(6, 'planned')]
    assert run.metrics()['budget']['epochs'] == 6
    rates = list(run.logs('training').learning_rate)   # one cosine over the 6 epochs across both sessions
    assert rates == pytest.approx([1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)], rel=1e-9)


class FasterAfter(Callback):
    "From epoch `epoch` on, the fake steps take `step` seconds (the machine's other jobs ended)."
    def __init__(self, epoch: int, step: float): self.epoch, self.step = epoch, step
    def on_epoch_end(self, trainer, record):
        if record.epoch == self.epoch - 1: globals()['STEP'] = self.step


def test_a_faster_machine_lengthens_the_plan_within_the_budget(tmp_path, fake_clock):
    """Steps of 2 s from epoch 2 on (13 s an epoch): the mean of the last three epochs (over 30 s, a tenth of the
    budget) falls (29, 23.7, 13 s); each time the plan would end early even with epochs 5 % longer, it grows to what
    fits: 10, 12, then 20 ending at 292 s of 300."""
    try: result = medlab.train(budget_config(tmp_path, {'minutes': 5}), callbacks=[FasterAfter(2, 2.0)])
    finally: globals()['STEP'] = 10.0
    run = RunFolder(result.output_dir)
    assert [(e['epochs'], e['reason']) for e in budget_events(run.path)] == [(6, 'planned'), (10, 'longer'), (12, 'longer'), (20, 'longer')]
    assert result.epochs_run == 20 and run.metrics()['budget']['ended_on_time'] is False
    rates = list(run.logs('training').learning_rate)
    assert rates[-1] == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * 19 / 20)) / 2, rel=1e-9)   # ends as a cosine over 20
    assert run.checkpoint('latest')['scheduler']['_last_lr'][0] == pytest.approx(1e-4, rel=1e-9)
