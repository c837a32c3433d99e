"""Patch mining speed and memory on a large generated slide: `medlab.mine_patches` against a plain tiffslide loop.

    python benchmarks/histology.py                     # 20000 x 20000 slide, 256-px patches at level 0 (~3 min here)
    python benchmarks/histology.py --size 10000 --workers 2 --repeats 3

The slide (`medlab.make_sample_slide`, JPEG tiles, MPP 0.5, seed 0; written once to benchmarks/_work/data/histology/)
is mined on the same grid (256-pixel patches at level 0, no overlap) by:

- `medlab`: `mine_patches(..., store='png')` (tissue mask on the thumbnail, block reads, the patch filter, PNG
  writing, `--workers` threads) and `mine_patches(..., store='slide')` (the same without writing PNGs);
- `loop`: the plain reference a user would write: `TiffSlide.read_region` at every grid position, the same patch
  filter on each patch, and the same PNG writing for the patches kept (`loop_nowrite`: without writing).

Each run is a child process (imports included in nothing but its own timer) whose peak RSS (`ru_maxrss`) is read
from the child itself. Prints patches kept per second, the ratio medlab/loop, and peak RSS against the goal (1.5 GB);
saves benchmarks/_work/results/histology.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOAL_RSS_MB = 1536


def child(kind: str, slide: str, out: str, workers: int, patch: int, min_tissue: float) -> dict:
    "One run, in this (child) process: the seconds, patches kept and peak RSS."
    import resource
    import numpy as np
    from PIL import Image
    import skimage.filters, skimage.morphology, tiffslide   # imported before the timer in both kinds
    from medlab.mining import PatchFilter, mine_patches
    start = time.perf_counter()
    if kind.startswith('medlab'):
        store = 'slide' if kind == 'medlab_nowrite' else 'png'
        r = mine_patches(slide, out, patch, workers=workers, store=store, min_tissue=min_tissue, result=True)
        kept, candidates, grid = r.kept, r.candidates, None
    else:
        import tiffslide
        s = tiffslide.TiffSlide(slide)
        W, H = s.dimensions
        keep, kept, grid = PatchFilter(), 0, 0
        Path(out).mkdir(parents=True, exist_ok=True)
        for y in range(0, H - patch + 1, patch):
            for x in range(0, W - patch + 1, patch):
                grid += 1
                p = np.asarray(s.read_region((x, y), 0, (patch, patch)).convert('RGB'))
                if keep(p):
                    kept += 1
                    if kind == 'loop': Image.fromarray(p).save(f'{out}/p_{x}_{y}.png', compress_level=1)
        candidates = grid
    seconds = time.perf_counter() - start
    return {'kind': kind, 'seconds': seconds, 'kept': kept, 'read': candidates, 'grid': grid,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(kind: str, slide: Path, work: Path, workers: int, patch: int, min_tissue: float) -> dict:
    out = work / kind
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, __file__, '--child', kind, '--slide', str(slide), '--out', str(out),
                          '--workers', str(workers), '--patch', str(patch), '--min-tissue', str(min_tissue)], capture_output=True, text=True)
    if res.returncode: raise RuntimeError(f'{kind} failed:\n{res.stderr[-3000:]}')
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=20000, help='slide side in pixels')
    p.add_argument('--patch', type=int, default=256)
    p.add_argument('--workers', type=int, default=2, help="mine_patches' threads")
    p.add_argument('--repeats', type=int, default=1)
    p.add_argument('--min-tissue', type=float, default=0.3, help="mine_patches' min_tissue (0.3: the patch filter's own tissue threshold)")
    p.add_argument('--kinds', default='medlab,loop,medlab_nowrite,loop_nowrite')
    p.add_argument('--child', help=argparse.SUPPRESS)
    p.add_argument('--slide', help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.slide, args.out, args.workers, args.patch, args.min_tissue))); return
    from medlab.slides import make_sample_slide
    data = HERE / '_work' / 'data' / 'histology'
    slide = data / f'large_{args.size}.tif'
    if not slide.exists():
        start = time.perf_counter()
        make_sample_slide(slide, size=args.size, seed=0)
        print(f'wrote {slide} ({slide.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - start:.1f} s')
    work = Path(tempfile.mkdtemp(prefix='medlab_histology_bench_'))
    runs = []
    try:
        for _ in range(args.repeats):                         # interleaved, so load on the machine hits every kind alike
            for kind in args.kinds.split(','): runs.append(run_child(kind, slide, work, args.workers, args.patch, args.min_tissue))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: {f: statistics.median(r[f] for r in runs if r['kind'] == k) for f in ('seconds', 'kept', 'read', 'peak_rss_mb')}
           for k in dict.fromkeys(r['kind'] for r in runs)}
    print(f'{args.size} x {args.size} slide, {args.patch}-px patches at level 0, {args.workers} worker thread(s), '
          f'median of {args.repeats}, {os.cpu_count()} CPUs')
    print(f'{"":16s} {"seconds":>8s} {"read":>6s} {"kept":>6s} {"kept/s":>8s} {"peak RSS":>9s}')
    for k, m in med.items():
        print(f'{k:16s} {m["seconds"]:8.1f} {m["read"]:6.0f} {m["kept"]:6.0f} {m["kept"] / m["seconds"]:8.1f} {m["peak_rss_mb"]:7.0f} MB')
    for a, b in (('medlab', 'loop'), ('medlab_nowrite', 'loop_nowrite')):
        if a in med and b in med:
            ratio = (med[a]['kept'] / med[a]['seconds']) / (med[b]['kept'] / med[b]['seconds'])
            print(f'{a} / {b}: {ratio:.2f}x patches per second')
    worst = max(m['peak_rss_mb'] for k, m in med.items() if k.startswith('medlab'))
    print(f'peak RSS while mining: {worst:.0f} MB (goal < {GOAL_RSS_MB} MB): {"MET" if worst < GOAL_RSS_MB else "MISSED"}')
    out = HERE / '_work' / 'results' / 'histology.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'size': args.size, 'patch': args.patch, 'workers': args.workers, 'cpus': os.cpu_count(),
                               'machine': platform.platform(), 'runs': runs, 'medians': med}, indent=1))


if __name__ == '__main__':
    main()
