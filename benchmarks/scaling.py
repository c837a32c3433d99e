"""Scaling: peak memory and seconds per epoch as the number of lazily read 3D volumes grows (16, 64, 256 of 128^3).

    python benchmarks/scaling.py [--sizes 16,64,256] [--systems medlab_api,monai] [--threads 1] [--float32]

The data (`_work/data/scale3d`, written once, ~1 GB): 260 subjects of 128^3 voxels, int16 images (as CT and most MR
are stored) with 2-5 bright ellipsoids on a smooth noisy background and uint8 masks, gzipped NIfTI. Every size
trains on the first N subjects (`n<N>/train.csv`) and validates and tests on the same 2 + 2 others, so only the
training set grows. Every system trains one epoch with the same small network and patches, so the epoch is mostly
reading: BasicUNet with 8 base filters and instance norm, 32^3 patches, batch 4, 1 patch per volume, queue 64,
Adam 1e-3, Dice loss, seed 0. Volumes are read from disk when their patches are drawn and never kept
(`in_memory: false`), so the memory a system holds should not grow with N: its figure is the peak of the process
tree (RSS of the process + private pages of its children, as run.py's `peak_rss_dedup_mb`, over the whole run,
validation and test scoring included), and "flat" means the peak at the largest N is within 10 % of the peak at
the smallest; `peak_training_mb` is the largest RSS sample (every ~1 s) between the first step and the end of the
training epoch, which is where N matters. Runs go through run.py's `run_system`, so
start-up, wall time and seconds per epoch are measured the same way as there. Results:
`_work/results/scaling_<time>.json` and a printed table.

GaNDLF 0.1.5 cannot train on int16 images: it feeds them to the network uncast and fails in the first convolution
(`RuntimeError: Input type (short int) and bias type (float) should be the same`). `--float32` writes and uses a
float32 copy of the data (`_work/data/scale3d_f32`, ~2 GB) so GaNDLF can run beside the others.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy.ndimage import zoom

import run

SHAPE, N_MAX, N_VAL, N_TEST = (128, 128, 128), 256, 2, 2
DATA = run.WORK / 'data' / 'scale3d'
DATA_F32 = run.WORK / 'data' / 'scale3d_f32'
SETTINGS = dict(model=dict(dimension=3, architecture='unet', num_channels=1, class_list=[0, 1], base_filters=8,
                           norm_type='instance'),
                patch_size=[32, 32, 32], batch_size=4, q_samples_per_volume=1, num_epochs=1)


def make_volume(i: int, float32: bool = False) -> tuple[str, str]:
    "Write subject i (seeded by its index): int16 (or float32) image and uint8 mask, gzipped NIfTI; returns their paths."
    data = DATA_F32 if float32 else DATA
    img_path, lbl_path = data / 'images' / f'scale3d_{i:03d}_image.nii.gz', data / 'images' / f'scale3d_{i:03d}_label.nii.gz'
    if img_path.exists() and lbl_path.exists(): return str(img_path), str(lbl_path)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([0, i])
    field = zoom(rng.normal(size=(8, 8, 8)), 16, order=1)  # smooth low-frequency background
    img = (field - field.min()) / (np.ptp(field) + 1e-8) * 0.35 + rng.normal(0, 0.1, SHAPE)
    mask = np.zeros(SHAPE, bool)
    grid = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(8, 24, 3)
        c = [rng.uniform(ri + 2, s - ri - 2) for ri, s in zip(r, SHAPE)]
        m = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1.0
        img[m] += rng.uniform(0.5, 0.9); mask |= m
    stored = (img * 1000).astype(np.float32) if float32 else np.round(img * 1000).astype(np.int16)
    for arr, path in ((stored, img_path), (mask.astype(np.uint8), lbl_path)):
        tmp = path.with_name('tmp_' + path.name)
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(arr.T)), str(tmp), useCompression=True)
        tmp.replace(path)
    return str(img_path), str(lbl_path)


def generate(sizes: list[int], float32: bool = False) -> dict[int, Path]:
    "Write the volumes (once, in parallel) and one folder of split CSVs per size; returns {N: folder}."
    data = DATA_F32 if float32 else DATA
    (data / 'images').mkdir(parents=True, exist_ok=True)
    total = N_MAX + N_VAL + N_TEST
    with ProcessPoolExecutor(os.cpu_count()) as pool: paths = list(pool.map(make_volume, range(total), [float32] * total))
    rows = [{'SubjectID': f'scale3d_{i:03d}', 'Channel_0': im, 'Label': lb} for i, (im, lb) in enumerate(paths)]
    folders = {}
    for n in sizes:
        folder = data / f'n{n}'; folder.mkdir(exist_ok=True)
        for name, part in (('train', rows[:n]), ('val', rows[N_MAX:N_MAX + N_VAL]), ('test', rows[N_MAX + N_VAL:])):
            pd.DataFrame(part).to_csv(folder / f'{name}.csv', index=False)
        folders[n] = folder
    return folders


def table(rows: list[dict], systems: list[str], sizes: list[int]) -> str:
    "The figures per system and size, whether each system's memory stays flat, and medlab against the plain loop."
    df = pd.DataFrame(rows)
    df['train_s_per_volume'] = df.train_s_per_epoch / df.n_volumes
    cols = ['startup_s', 'train_s_per_epoch', 'train_s_per_volume', 'val_s_per_epoch', 'wall_s', 'peak_training_mb',
            'peak_rss_dedup_mb', 'final_dice']
    shown = df.set_index(['system', 'n_volumes'])[cols].sort_index()
    report = shown.to_string(float_format=lambda v: f'{v:.3f}' if v < 1.5 else f'{v:.1f}')
    lo, hi = min(sizes), max(sizes)
    report += '\n\nmemory flat (peak at the largest N within 10 % of the smallest):'
    for s in systems:
        a_, b_ = shown.loc[(s, lo), 'peak_rss_dedup_mb'], shown.loc[(s, hi), 'peak_rss_dedup_mb']
        report += f'\n  {s}: {b_:.0f} MB at {hi} / {a_:.0f} MB at {lo} = {b_ / a_:.2f} -> {"FLAT" if b_ / a_ <= 1.10 else "GROWS"}'
        c_, d_ = shown.loc[(s, lo), 'peak_training_mb'], shown.loc[(s, hi), 'peak_training_mb']
        report += f' (training only: {d_:.0f} / {c_:.0f} = {d_ / c_:.2f})'
    if 'monai' in systems:
        report += '\n\nmedlab / plain MONAI loop, per size (train s/epoch, peak dedup):'
        for n in sizes:
            for s in [s for s in systems if s.startswith('medlab')]:
                r = shown.loc[(s, n)] / shown.loc[('monai', n)]
                report += f"\n  {s} N={n}: {r['train_s_per_epoch']:.2f}, {r['peak_rss_dedup_mb']:.2f}"
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', default='16,64,256')
    p.add_argument('--systems', default='medlab_api,monai', help='of medlab_api, medlab_papermill, monai, gandlf')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--float32', action='store_true', help='float32 images (GaNDLF 0.1.5 cannot train on int16 ones)')
    a = p.parse_args()
    sizes = sorted(int(n) for n in a.sizes.split(','))
    if max(sizes) > N_MAX: p.error(f'sizes up to {N_MAX}')
    systems = [s.strip() for s in a.systems.split(',') if s.strip()]
    if 'gandlf' in systems: run.ensure_gandlf()
    t = time.time(); folders = generate(sizes, a.float32)
    print(f'data ready in {time.time() - t:.0f}s: {folders[sizes[0]].parent}', flush=True)
    rows, failed = [], []
    for n in sizes:
        workload = f"scale3d{'_f32' if a.float32 else ''}_{n}"
        run.SETTINGS[workload], run.MEASURE[workload], run.QUALITY[workload] = SETTINGS, ('dice', 'dice'), 0.5
        run.GANDLF_BASE[workload], run.GANDLF_OWN[workload] = 'seg3d', 'val_dice'
        for s in systems:
            print(f'running {s} on {n} volumes ...', flush=True)
            try: res = run.summarise(run.run_system(s, workload, folders[n], None, a.threads), folders[n], 0.5, 'dice')
            except Exception as e:  # one system failing leaves the others' figures
                print(f'  FAILED: {str(e)[:1500]}', flush=True); failed.append((s, n)); continue
            train_end = res['last_epoch_end_s'] - res['val_s_per_epoch']  # one epoch: its validation starts here
            res['peak_training_mb'] = max((mb for t, mb in res['rss_timeline_mb'] if res['startup_s'] <= t <= train_end), default=None)
            rows.append({'n_volumes': n, **res})
            print(f"  train {res['train_s_per_epoch']:.1f} s/epoch, peak {res['peak_rss_dedup_mb']:.0f} MB", flush=True)
    systems = [s for s in systems if not any(f == s for f, _ in failed)]
    rows = [r for r in rows if r['system'] in systems]
    report = table(rows, systems, sizes)
    print(report)
    run.WORK.joinpath('results').mkdir(parents=True, exist_ok=True)
    path = run.WORK / 'results' / f"scaling_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({'sizes': sizes, 'systems': systems, 'float32': a.float32, 'failed': failed, 'threads': a.threads, 'cpus': os.cpu_count(),
                                'settings': SETTINGS, 'results': rows, 'table': report}, indent=1, default=str))
    print(f'results: {path}')


if __name__ == '__main__':
    main()
