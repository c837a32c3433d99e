"""Slide inference memory and speed on a large generated slide: `medlab.infer_slide` against a plain tiffslide loop.

    python benchmarks/slide_inference.py                       # 20000 x 20000 slide, 64-px patches at 1 um/px (~5 min here)
    python benchmarks/slide_inference.py --mpp 2 --stride 32   # coarser, with overlap

The slide is benchmarks/histology.py's (`medlab.make_sample_slide(size=20000, seed=0)`, JPEG tiles, MPP 0.5, a
pyramid; written once to benchmarks/_work/data/histology/). The run: a vgg11 (base_filters 4) trained one epoch on
patches mined at `--mpp` from a small generated slide with its label mask (background, tissue, "tumour"), written
once to benchmarks/_work/runs/slide_inference/. Each row is a child process; imports and loading the run are outside
its timer; peak RSS is the child's own `ru_maxrss`:

- `medlab`: `infer_slide(run, slide, out, mpp=--mpp, stride=--stride)`: tissue mask, the grid, block reads on a
  second thread, the run's pre-processing, the network in batches of 32, the stitched maps written as pyramidal
  TIFFs and PNG overlays.
- `loop`: the plain reference a user would write for the same patches: `TiffSlide.read_region` of each tissue
  patch at the level `infer_slide` reads (shrunk as it shrinks them), the same pre-processing and network in
  batches of 32, scores added into a numpy sum and count of the same output raster; nothing written.

Prints patches per second, the ratio medlab/loop, and peak RSS against the goal (1.5 GB); saves
benchmarks/_work/results/slide_inference.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOAL_RSS_MB = 1536


def child(kind: str, run: str, slide: str, out: str, mpp: float, stride: int | None) -> dict:
    "One run in this (child) process: the seconds, patches and peak RSS."
    import resource
    import numpy as np
    import torch
    import medlab
    from medlab.slide_inference import SlideSum, _outputs, slide_grid, tissue_patches
    from medlab.slides import open_slide, shrink, tissue_mask
    predictor = medlab.load_run(run, device='cpu')
    start = time.perf_counter()
    if kind == 'medlab':
        r = medlab.infer_slide(predictor, slide, out, mpp=mpp, stride=stride)
        patches, grid_patches = r.patches, r.grid_patches
    else:
        import tiffslide
        s, ts = open_slide(slide), tiffslide.TiffSlide(slide)
        patch = predictor.cfg.spatial_patch_size[0]
        grid = slide_grid(s, patch, stride or patch, mpp=mpp)
        cells = tissue_patches(grid, tissue_mask(s, min(4096, max(1024, int(max(s.dimensions) / (patch * grid.downsample) * 4)))), 0.1)
        acc, side = SlideSum(predictor.task.outputs, grid), max(1, round(patch * grid.scale))
        for k in range(0, len(cells), 32):
            batch = cells[k:k + 32]
            arrs = [shrink(np.asarray(ts.read_region(grid.corner(i, j), grid.level, (side, side)).convert('RGB')), (patch, patch))
                    for i, j in batch]
            acc.add(batch, _outputs([predictor], np.stack([a.transpose(2, 1, 0) for a in arrs]).astype(np.float32), grid.output_factor))
        mean = acc.mean()
        patches, grid_patches = len(cells), grid.counts[0] * grid.counts[1]
    seconds = time.perf_counter() - start
    return {'kind': kind, 'seconds': seconds, 'patches': patches, 'grid': grid_patches, 'threads': torch.get_num_threads(),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def trained_run(mpp: float) -> Path:
    "The benchmark's run folder (trained once per --mpp)."
    import medlab
    from medlab.slide_inference import training_rows
    work = HERE / '_work' / 'runs' / 'slide_inference' / f'mpp_{mpp:g}'
    if (work / 'run' / 'model_best.pt').is_file(): return work / 'run'
    shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
    slide = medlab.make_sample_slide(work / 'train_slide.tif', size=2048, mpp=0.5, seed=1, mask=work / 'mask.png')
    csv = medlab.mine_patches(slide, work / 'patches', patch_size=64, mpp=mpp, labels=work / 'mask.png', task='classification')
    training_rows(csv)                  # identical patches once; one slide's patches dealt freely
    medlab.train(medlab.MedlabConfig(
        modality='histo', data_csv=str(csv), output_dir=str(work / 'run'), export={'enabled': False},
        model={'architecture': 'vgg11', 'num_channels': 3, 'class_list': [0, 1, 2], 'base_filters': 4},
        loss_function='cel', metrics=['accuracy'], patch_size=[64, 64], batch_size=16, num_epochs=1, q_samples_per_volume=1,
        nested_training={'testing': 1, 'validation': -5}, data_preprocessing={'normalize_div_by_255': None}))
    return work / 'run'


def run_child(kind: str, run: Path, slide: Path, work: Path, mpp: float, stride: int | None) -> dict:
    out = work / kind
    cmd = [sys.executable, __file__, '--child', kind, '--run', str(run), '--slide', str(slide), '--out', str(out), '--mpp', str(mpp)]
    if stride: cmd += ['--stride', str(stride)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode: raise RuntimeError(f'{kind} failed:\n{res.stderr[-3000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=20000, help='slide side in pixels')
    p.add_argument('--mpp', type=float, default=1.0, help='microns per pixel of the patches (the slide is 0.5 um/px)')
    p.add_argument('--stride', type=int, default=None, help='pixels between patches (default: the patch, 64)')
    p.add_argument('--kinds', default='medlab,loop')
    p.add_argument('--child', help=argparse.SUPPRESS)
    p.add_argument('--run', help=argparse.SUPPRESS)
    p.add_argument('--slide', help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.run, args.slide, args.out, args.mpp, args.stride))); return
    from medlab.slides import make_sample_slide
    slide = HERE / '_work' / 'data' / 'histology' / f'large_{args.size}.tif'
    if not slide.exists():
        start = time.perf_counter()
        make_sample_slide(slide, size=args.size, seed=0)
        print(f'wrote {slide} ({slide.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - start:.1f} s')
    run = trained_run(args.mpp)
    work = Path(tempfile.mkdtemp(prefix='medlab_slide_inference_bench_'))
    try: runs = [run_child(kind, run, slide, work, args.mpp, args.stride) for kind in args.kinds.split(',')]
    finally: shutil.rmtree(work, ignore_errors=True)
    print(f'{args.size} x {args.size} slide (0.5 um/px), 64-px patches at {args.mpp:g} um/px, stride {args.stride or 64}, '
          f'{os.cpu_count()} CPUs, torch threads {runs[0]["threads"]}')
    print(f'{"":8s} {"seconds":>8s} {"grid":>7s} {"patches":>8s} {"patches/s":>10s} {"peak RSS":>9s}')
    for r in runs:
        print(f'{r["kind"]:8s} {r["seconds"]:8.1f} {r["grid"]:7d} {r["patches"]:8d} {r["patches"] / r["seconds"]:10.1f} {r["peak_rss_mb"]:7.0f} MB')
    by = {r['kind']: r for r in runs}
    if 'medlab' in by and 'loop' in by:
        ratio = (by['medlab']['patches'] / by['medlab']['seconds']) / (by['loop']['patches'] / by['loop']['seconds'])
        print(f'medlab / loop: {ratio:.2f}x patches per second (medlab also writes the TIFFs and PNGs)')
    if 'medlab' in by:
        worst = by['medlab']['peak_rss_mb']
        print(f'peak RSS while inferring: {worst:.0f} MB (goal < {GOAL_RSS_MB} MB): {"MET" if worst < GOAL_RSS_MB else "MISSED"}')
    out = HERE / '_work' / 'results' / 'slide_inference.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'size': args.size, 'mpp': args.mpp, 'stride': args.stride, 'cpus': os.cpu_count(),
                               'machine': platform.platform(), 'runs': runs}, indent=1))


if __name__ == '__main__':
    main()
