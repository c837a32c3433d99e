"""Seconds per training step (forward, cross-entropy, backward, Adam step) of every architecture in medlab's catalog,
built as a config with default widths (`base_filters` 16, batch norm) builds it: 2D on a batch of 4 1x128x128 images,
3D on a batch of 1 1x64x64x64 volume, two classes; the median of a few steps after one warm-up step.

    python benchmarks/architectures.py [--threads 1] [--steps 3] [--archs unet,vgg11] [--dims 2,3]

Prints a table (seconds per step, trainable parameters) and writes it, row by row as each case ends, to
`benchmarks/_work/results/architectures.csv`, and as markdown to `architectures.md` beside it.
"""
import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medlab import catalog
from medlab.config import ModelConfig
from medlab.models import build_model, count_parameters

SHAPES = {2: (4, 1, 128, 128), 3: (1, 1, 64, 64, 64)}  # batch, channels, sides
RESULTS = Path(__file__).resolve().parent / '_work' / 'results'


def step_seconds(name: str, dim: int, steps: int) -> tuple[list[float], int]:
    "Seconds of each timed training step of `name` in `dim`D, and its trainable parameters."
    torch.manual_seed(0)
    info = catalog.ARCHITECTURES[name]
    net = build_model(ModelConfig(architecture=name, dimension=dim, num_channels=1, class_list=[0, 1])).train()
    shape = SHAPES[dim]
    x = torch.randn(shape)
    target = torch.randint(0, 2, (shape[0], *shape[2:]) if info.task == 'segmentation' else (shape[0],))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not kept
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), target).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times[1:], count_parameters(net)


def markdown(rows: list[dict]) -> str:
    "The rows as a markdown table, one line per architecture, 2D and 3D side by side."
    by_name = {}
    for r in rows: by_name.setdefault(r['architecture'], {})[int(r['dimension'])] = r
    cell = lambda r, key: '' if r is None else r[key]
    lines = ['| architecture | 2D s/step | 2D parameters | 3D s/step | 3D parameters |', '|---|---:|---:|---:|---:|']
    for name, dims in by_name.items():
        r2, r3 = dims.get(2), dims.get(3)
        lines.append(f"| {name} | {cell(r2, 'seconds')} | {cell(r2, 'parameters')} | {cell(r3, 'seconds')} | {cell(r3, 'parameters')} |")
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=1, help='torch threads (1 when anything else runs on the machine)')
    p.add_argument('--steps', type=int, default=3, help='timed steps after the warm-up; the median is reported')
    p.add_argument('--archs', default='', help='comma-separated names (default: every architecture in the catalog)')
    p.add_argument('--dims', default='2,3')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.archs.split(',') if args.archs else list(catalog.ARCHITECTURES)
    dims = [int(d) for d in args.dims.split(',')]
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), '
          f'load {os.getloadavg()[0]:.1f}', flush=True)
    rows = []
    with open(RESULTS / 'architectures.csv', 'w', newline='') as f:
        out = csv.DictWriter(f, ['architecture', 'dimension', 'seconds', 'parameters', 'steps', 'load'])
        out.writeheader()
        for name in names:
            for dim in (d for d in dims if d in catalog.ARCHITECTURES[name].dimensions):
                times, params = step_seconds(name, dim, args.steps)
                row = dict(architecture=name, dimension=dim, seconds=f'{statistics.median(times):.3f}', parameters=f'{params:,}',
                           steps=' '.join(f'{t:.3f}' for t in times), load=f'{os.getloadavg()[0]:.1f}')
                rows.append(row)
                out.writerow(row); f.flush()
                print(f"{name:15s} {dim}D {row['seconds']:>8s} s/step {row['parameters']:>13s} parameters  (steps {row['steps']}; load {row['load']})", flush=True)
    table = markdown(rows)
    (RESULTS / 'architectures.md').write_text(table + '\n')
    print(table)


if __name__ == '__main__':
    main()
