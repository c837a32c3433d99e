"""The start-up floor of any MONAI-based torch trainer on this machine: fresh interpreters that only import.

    python benchmarks/startup_floor.py [--repeats 5]

Each step runs in a new process N times (interleaved); the figure is launch to the end of the step's code
(the child prints `time.time()`; interpreter exit is not counted), median over the runs: an empty interpreter,
`import torch`, `import torch, monai`, that plus a torch optimizer used once (which imports `torch._dynamo`: every
optimizer does), and the same two with medlab's imports (`medlab.training` imports MONAI without jsonschema's
optional IRI checker, see `medlab.utils.import_monai`). A MONAI-based trainer cannot reach its first step before
the optimizer lines; compare them with GaNDLF's start-up median (`run.py --startup`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

STEP = 'p = torch.zeros(1, requires_grad=True); o = torch.optim.Adam([p]); p.sum().backward(); o.step()'
STEPS = {
    'python (empty)': 'pass',
    'import torch': 'import torch',
    'import torch, monai': 'import torch, monai',
    'import torch, monai + first optimizer step': 'import torch, monai; ' + STEP,
    'import medlab.training (medlab, MONAI, pandas, ...)': 'import medlab.training',
    'import medlab.training + first optimizer step': 'import medlab.training, torch; ' + STEP,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=int, default=5)
    a = p.parse_args()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    times = {k: [] for k in STEPS}
    for _ in range(a.repeats):
        for name, code in STEPS.items():
            t = time.time()
            out = subprocess.run([sys.executable, '-c', code + '; import time; print(time.time())'], check=True, env=env,
                                 capture_output=True, text=True).stdout
            times[name].append(float(out.split()[-1]) - t)
    for name, ts in times.items():
        print(f'{statistics.median(ts):6.2f} s  (min {min(ts):.2f}, max {max(ts):.2f})  {name}')


if __name__ == '__main__':
    main()
