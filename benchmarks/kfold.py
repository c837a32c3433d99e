"""k-fold wall time: the same folds trained with 1 worker and with 2, in one invocation.

    python benchmarks/kfold.py                     # 4 folds of the seg2d sample config, 5 epochs (~4 min here)
    python benchmarks/kfold.py --folds 4 --epochs 5 --workers 1,2

Each fold is a papermill run of templates/train.ipynb in its own process (medlab.kfold's local executor), with the
machine's cores divided among the workers (1 worker: 2 threads per fold here; 2 workers: 1 thread each). For every
setting it prints the wall time, and for the folds (medians): the launch (the fold's process, papermill, the
kernel and its imports, until `train` starts), from `train`'s start to the first training step (data checks, the
network, the first batch), and from the first step to the end (training, validation, test scoring), read from each
fold's events.jsonl. The ratio of the walls is what parallel
folds buy on this machine; the split says what bounds it. Results: benchmarks/_work/results/kfold_*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / '_work'


def fold_phases(run_dir: Path) -> dict:
    "Seconds from the fold's start event to its first step, and from the first step to the end, from events.jsonl."
    events = {e['event']: e['time'] for e in map(json.loads, (run_dir / 'events.jsonl').read_text().splitlines())}
    return {'to_first_step': events['first_step'] - events['start'], 'training': events['finished'] - events['first_step']}


def run_setting(config: Path, out: Path, workers: int) -> dict:
    "One k-fold run into a fresh folder: wall seconds, each fold's seconds and phases."
    import medlab
    start = time.perf_counter()
    result = medlab.kfold(config, output_dir=str(out), workers=workers)
    wall = time.perf_counter() - start
    folds = result.results[result.results.inner != 'fused']
    assert (folds.status == 'trained').all(), folds[['fold', 'status', 'error']]
    phases = [fold_phases(out / f) for f in folds.fold]
    return {'workers': workers, 'wall': wall, 'fold_seconds': folds.seconds.tolist(),
            'to_first_step': [p['to_first_step'] for p in phases], 'training': [p['training'] for p in phases],
            'val_dice': folds.val_dice.tolist()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--folds', type=int, default=4, help='inner folds (nested_training.validation), no test set')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--workers', default='1,2', help='comma-separated worker counts, run in this order')
    a = p.parse_args()
    import medlab
    import yaml
    os.environ['MEDLAB_HEADLESS'] = '1'
    stamp = time.strftime('%Y%m%d-%H%M%S')
    base = WORK / 'kfold' / stamp
    csv = medlab.make_sample_data(base / 'data', dimension=2, n_subjects=24)
    cfg = yaml.safe_load((HERE.parent / 'templates' / 'configs' / 'seg2d_sample.yaml').read_text())
    cfg.update(data_csv=str(csv), num_epochs=a.epochs, nested_training={'testing': 1, 'validation': a.folds})
    config = base / 'kfold.yaml'
    config.write_text(yaml.safe_dump(cfg))
    rows = [run_setting(config, base / f'workers_{w}', int(w)) for w in a.workers.split(',')]
    print(f'\n{a.folds} folds of the seg2d sample config ({a.epochs} epochs, 24 subjects), {os.cpu_count()} cores')
    print(f"{'workers':>7} {'wall s':>8} {'fold s':>7} {'launch s':>9} {'to 1st step s':>14} {'training s':>11} {'val Dice':>9}"
          '   (per fold, medians; launch: process, kernel and imports until train() starts)')
    for r in rows:
        launch = [f - a - t for f, a, t in zip(r['fold_seconds'], r['to_first_step'], r['training'])]
        print(f"{r['workers']:>7} {r['wall']:>8.1f} {statistics.median(r['fold_seconds']):>7.1f} {statistics.median(launch):>9.1f} "
              f"{statistics.median(r['to_first_step']):>14.1f} {statistics.median(r['training']):>11.1f} "
              f"{statistics.mean(r['val_dice']):>9.3f}")
    if len(rows) > 1: print(f"wall ratio {rows[1]['workers']} workers / {rows[0]['workers']}: {rows[1]['wall'] / rows[0]['wall']:.2f}")
    out = WORK / 'results' / f'kfold_{stamp}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'folds': a.folds, 'epochs': a.epochs, 'cpu_count': os.cpu_count(), 'settings': rows}, indent=2))
    print(f'saved {out}')


if __name__ == '__main__':
    main()
