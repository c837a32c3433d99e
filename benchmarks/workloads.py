"""Seeded synthetic workloads for the benchmarks (see ../shared/bench/README.md, relative to the project).

seg2d: 40 subjects, 256x256 float32, 3-6 bright ellipses on a smooth noisy background; split 25/7/8.
seg3d: 16 subjects, 96^3, 2-5 bright ellipsoids; split 9/3/4.
cls2d: 200 subjects, 64x64; class 0 one ellipse, class 1 two to four; split 128/32/40 (generated only).

Every workload writes NIfTI files with SimpleITK and one CSV per split (train.csv, val.csv, test.csv)
with absolute paths; segmentation CSVs have `SubjectID,Channel_0,Label`, classification CSVs
`SubjectID,Channel_0,ValueToPredict`. The split is fixed by subject index (seeded, deterministic).

    python benchmarks/workloads.py seg2d [--out benchmarks/_work/data/seg2d] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

HERE = Path(__file__).resolve().parent
WORK = HERE / '_work'

# name: (shape, n subjects, (train, val, test), (min, max) objects, (min, max) radius)
WORKLOADS = {
    'seg2d': dict(shape=(256, 256), split=(25, 7, 8), objects=(3, 6), radius=(10, 32)),
    'seg3d': dict(shape=(96, 96, 96), split=(9, 3, 4), objects=(2, 5), radius=(8, 20)),
    'cls2d': dict(shape=(64, 64), split=(128, 32, 40), objects=None, radius=(5, 12)),
}
SPLIT_NAMES = ('train', 'val', 'test')


def background(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    "A smooth low-frequency field (about 0..0.35) plus white noise (sd 0.1)."
    coarse = gaussian_filter(rng.normal(size=shape), sigma=max(shape) / 8)
    coarse = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-8) * 0.35
    return coarse + rng.normal(0, 0.1, size=shape)


def ellipsoid(rng: np.random.Generator, shape: tuple[int, ...], radius: tuple[int, int]) -> np.ndarray:
    "Boolean mask of one randomly placed, sized and (in 2D) rotated ellipse/ellipsoid inside the image."
    r = rng.uniform(*radius, size=len(shape))
    centre = [rng.uniform(ri + 2, s - ri - 2) for ri, s in zip(r, shape)]
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing='ij')
    d = [g - c for g, c in zip(grids, centre)]
    if len(shape) == 2:
        a = rng.uniform(0, np.pi)
        d = [d[0] * np.cos(a) + d[1] * np.sin(a), -d[0] * np.sin(a) + d[1] * np.cos(a)]
    return sum((di / ri) ** 2 for di, ri in zip(d, r)) <= 1.0


def make_subject(rng: np.random.Generator, shape, n_objects: int, radius) -> tuple[np.ndarray, np.ndarray]:
    "Image (float32) and binary mask (uint8 {0,1}) with `n_objects` bright objects."
    img = background(rng, shape)
    mask = np.zeros(shape, bool)
    for _ in range(n_objects):
        m = ellipsoid(rng, shape, radius)
        img[m] += rng.uniform(0.5, 0.9)  # bright objects; overlapping ones brighter still
        mask |= m
    return img.astype(np.float32), mask.astype(np.uint8)


def write(arr: np.ndarray, path: Path):
    "Write an (x, y[, z]) array as NIfTI with unit spacing (SimpleITK wants z, y, x)."
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(arr.T)), str(path), useCompression=True)


def generate(name: str, out: str | Path | None = None, seed: int = 0, force: bool = False) -> Path:
    "Write workload `name` under `out` (default benchmarks/_work/data/<name>); returns the folder. Idempotent."
    spec = WORKLOADS[name]
    out = Path(out or WORK / 'data' / name).resolve()
    if (out / 'test.csv').exists() and not force: return out
    (out / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, list(WORKLOADS).index(name)])
    n = sum(spec['split'])
    rows = []
    for i in range(n):
        sid = f'{name}_{i:03d}'
        img_path = out / 'images' / f'{sid}_image.nii.gz'
        if spec['objects'] is None:  # classification: class 0 one ellipse, class 1 two to four
            cls = int(i % 2)
            img, _ = make_subject(rng, spec['shape'], 1 if cls == 0 else int(rng.integers(2, 5)), spec['radius'])
            write(img, img_path)
            rows.append({'SubjectID': sid, 'Channel_0': str(img_path), 'ValueToPredict': cls})
        else:
            img, mask = make_subject(rng, spec['shape'], int(rng.integers(spec['objects'][0], spec['objects'][1] + 1)), spec['radius'])
            lbl_path = out / 'images' / f'{sid}_label.nii.gz'
            write(img, img_path); write(mask, lbl_path)
            rows.append({'SubjectID': sid, 'Channel_0': str(img_path), 'Label': str(lbl_path)})
    order = np.random.default_rng(seed).permutation(n)  # seeded split
    start = 0
    for split_name, k in zip(SPLIT_NAMES, spec['split']):
        pd.DataFrame([rows[j] for j in sorted(order[start:start + k])]).to_csv(out / f'{split_name}.csv', index=False)
        start += k
    return out


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('workload', choices=list(WORKLOADS))
    p.add_argument('--out')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true')
    a = p.parse_args()
    print(generate(a.workload, a.out, a.seed, a.force))
