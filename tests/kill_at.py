"""Train a YAML with medlab and SIGKILL this process at a chosen point: the fault-injection driver of test_faults.py.

    python tests/kill_at.py CONFIG POINT N     # POINT: step, validation, logs, checkpoint, never

The N-th training step, validation subject, log write or checkpoint write of this process kills it. At a checkpoint
write the kill comes half-way: a temporary file holding part of the checkpoint is left behind, as a power cut or an
OOM kill during `torch.save` would leave it. Nothing here is part of medlab: it only wraps medlab's functions, at the
points the loop calls by attribute at call time: `Trainer.train_step`, `Trainer.validation_step`, `RunFolder.write_logs`
(the loop's own log writes) and the module function `medlab.engine.run.save_checkpoint` (which the `Checkpoints`
callback reaches through `RunFolder.save_checkpoint` and `RunFolder.save_epoch`).
"""
import os
import signal
import sys

import medlab
from medlab.core.utils import atomic_path
from medlab.engine import run as run_module
from medlab.engine import training

config, point, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {'count': 0}


def die_on_nth(fn):
    "`fn`, except that its n-th call kills the process first."
    def wrapper(*args, **kwargs):
        calls['count'] += 1
        if calls['count'] == n: os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapper


def half_written_checkpoint(path, **state):
    "The n-th checkpoint write stops half-way: part of it in the temporary file, then the kill."
    calls['count'] += 1
    if calls['count'] != n: return original_save(path, **state)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b'PK\x03\x04 half of a checkpoint')
        os.kill(os.getpid(), signal.SIGKILL)


if point == 'step': training.Trainer.train_step = die_on_nth(training.Trainer.train_step)
elif point == 'validation': training.Trainer.validation_step = die_on_nth(training.Trainer.validation_step)
elif point == 'logs': run_module.RunFolder.write_logs = die_on_nth(run_module.RunFolder.write_logs)
elif point == 'checkpoint':
    original_save = run_module.save_checkpoint
    run_module.save_checkpoint = half_written_checkpoint
medlab.train(medlab.load_config(config))
