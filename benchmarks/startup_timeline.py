"""Where medlab's start-up goes: timestamps of its phases up to the first training step, in one process.

    python benchmarks/startup_timeline.py [CONFIG] [--runs 3]

CONFIG defaults to `_work/runs/seg3d/medlab_defaults/config.yaml` (written by `run.py --workload seg3d`). Each run
is a fresh interpreter (one thread, like run.py's `--threads 1`) that imports torch, then medlab's training module,
wraps `load_split`, `build_model` and `build_optimizer` to print when each starts and ends, and stops at the first
`train_step` (nothing is trained; the run folder goes to a temporary directory). Seconds are since the
interpreter started running this script, so add ~0.03 s of interpreter start to compare with run.py's start-up.
The optimizer line includes the wait for `torch._dynamo`, which medlab imports in a background thread from the
start of `train` (see nbs/11_training.ipynb).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import sys, time
T0 = time.time()
def mark(what): print(f'{time.time() - T0:6.2f} {what}', flush=True)
import torch; mark('import torch')
import medlab
from medlab import training; mark('import medlab.training')
def timed(name):
    fn = getattr(training, name)
    def wrapper(*a, **k):
        mark(f'> {name}'); out = fn(*a, **k); mark(f'< {name}'); return out
    setattr(training, name, wrapper)
for name in ('load_split', 'build_model', 'build_optimizer'): timed(name)
class FirstStep(Exception): pass
def first_step(self, batch): mark('first training step'); raise FirstStep
training.Trainer.train_step = first_step
cfg = medlab.load_config(sys.argv[1], output_dir=sys.argv[2])
try: medlab.train(cfg, resume=False)
except FirstStep: pass
'''


def main():
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', default=str(here / '_work' / 'runs' / 'seg3d' / 'medlab_defaults' / 'config.yaml'))
    p.add_argument('--runs', type=int, default=3)
    a = p.parse_args()
    if not Path(a.config).exists():
        p.error(f'{a.config} does not exist: run `python benchmarks/run.py --workload seg3d --systems medlab_defaults` '
                'once (it writes it), or give a medlab YAML')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MEDLAB_HEADLESS': '1'}
    for r in range(a.runs):
        with tempfile.TemporaryDirectory() as out:
            lines = subprocess.run([sys.executable, '-c', CHILD, a.config, out], env=env, capture_output=True,
                                   text=True, check=True).stdout.splitlines()
        print(f'run {r + 1}: ' + ' | '.join(l.strip() for l in lines))


if __name__ == '__main__':
    main()
