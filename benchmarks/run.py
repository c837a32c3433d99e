"""Run medlab and a plain MONAI loop on one seeded workload and compare them.

    python benchmarks/run.py --workload seg2d [--systems medlab_api,medlab_papermill,monai] [--epochs N]

Each system runs as a subprocess on the same data, the same split CSVs and the same settings (one
medlab YAML per system, differing only in output_dir). While it runs the process tree's resident
memory is summed every 0.1 s. For medlab, the poller also copies `predictions/validation/` each time
a new row appears in `logs_validation.csv` (medlab overwrites that folder every epoch), so every
epoch's predictions can be scored. Everything is written under benchmarks/_work/ (git-ignored):
data in `_work/data/<workload>`, runs in `_work/runs/<workload>/<system>`, results in
`_work/results/<workload>_<time>.json`. See benchmarks/README.md for what each column means.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import SimpleITK as sitk
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / '_work'
sys.path.insert(0, str(HERE))
import workloads  # noqa: E402

# Shared training settings (bench/README.md); the medlab YAML carries them to every system.
SETTINGS = {
    'seg2d': dict(model=dict(dimension=2, architecture='unet', num_channels=1, class_list=[0, 1], base_filters=16,
                             norm_type='instance'),
                  patch_size=[128, 128], batch_size=8, q_samples_per_volume=8, num_epochs=5),
    'seg3d': dict(model=dict(dimension=3, architecture='unet', num_channels=1, class_list=[0, 1], base_filters=16,
                             norm_type='instance'),
                  patch_size=[64, 64, 64], batch_size=2, q_samples_per_volume=4, num_epochs=3),
}
COMMON = dict(learning_rate=0.001, patience=100, optimizer='adam', loss_function='dc', metrics=['dice'],
              q_max_length=64, patch_sampler='uniform', save_output=True, seed=0)
QUALITY = {'seg2d': 0.90, 'seg3d': 0.85}  # foreground Dice for time to quality
SYSTEMS = ('medlab_api', 'medlab_papermill', 'monai')


def write_config(workload: str, data: Path, run_dir: Path, epochs: int | None) -> Path:
    cfg = {'data_csv': {'training': str(data / 'train.csv'), 'validation': str(data / 'val.csv'),
                        'testing': str(data / 'test.csv')},
           'output_dir': str(run_dir / 'out'), **COMMON, **SETTINGS[workload]}
    if epochs: cfg['num_epochs'] = epochs
    path = run_dir / 'config.yaml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(system: str, cfg: Path, run_dir: Path) -> list[str]:
    py = sys.executable
    if system == 'medlab_api':
        return [py, '-c', 'import medlab, sys; medlab.train(medlab.load_config(sys.argv[1]), resume=False)', str(cfg)]
    if system == 'medlab_papermill':
        exe = Path(py).with_name('papermill')
        return [str(exe), str(ROOT / 'templates' / 'train.ipynb'), str(run_dir / 'executed.ipynb'), '--cwd',
                str(ROOT / 'templates'), '-p', 'config', str(cfg), '-p', 'resume', 'False']
    if system == 'monai':
        return [py, str(HERE / 'monai_loop.py'), '--config', str(cfg), '--out', str(run_dir / 'out')]
    raise ValueError(system)


def tree_rss(proc: psutil.Process) -> int:
    "Resident bytes of a process and all its descendants."
    total = 0
    try: procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess: return 0
    for p in procs:
        try: total += p.memory_info().rss
        except psutil.NoSuchProcess: pass
    return total


def run_system(system: str, workload: str, data: Path, epochs: int | None, threads: int | None) -> dict:
    "Launch one system, poll it, and return its raw timings (absolute times from time.time())."
    run_dir = WORK / 'runs' / workload / system
    shutil.rmtree(run_dir, ignore_errors=True); run_dir.mkdir(parents=True)
    cfg = write_config(workload, data, run_dir, epochs)
    out = run_dir / 'out'
    medlab = system.startswith('medlab')
    env = {**os.environ, 'MEDLAB_HEADLESS': '1', 'PYTHONUNBUFFERED': '1'}
    if threads:  # torch reads these at start-up; the same for every system
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    with open(run_dir / 'stdout.txt', 'w') as so, open(run_dir / 'stderr.txt', 'w') as se:
        launch = time.time()
        popen = subprocess.Popen(command(system, cfg, run_dir), stdout=so, stderr=se, env=env, cwd=str(ROOT))
        proc, peak, seen, epoch_t = psutil.Process(popen.pid), 0, 0, {}
        while popen.poll() is None:
            peak = max(peak, tree_rss(proc))
            if medlab:  # snapshot each epoch's predictions as soon as its log row exists
                log = out / 'logs_validation.csv'
                if log.exists():
                    try: n = len(pd.read_csv(log))
                    except Exception: n = seen  # caught mid-write (it is atomic, but be safe)
                    if n > seen:
                        epoch_t[n] = time.time()
                        shutil.copytree(out / 'predictions' / 'validation', run_dir / 'snap' / f'epoch_{n}')
                        seen = n
            time.sleep(0.1)
        end = time.time()
    if popen.returncode != 0:
        raise RuntimeError(f'{system} failed (exit {popen.returncode}); see {run_dir}/stderr.txt:\n'
                           + (run_dir / 'stderr.txt').read_text()[-2000:])
    res = {'system': system, 'run_dir': str(run_dir), 'launch': launch, 'end': end, 'peak_rss_mb': peak / 2**20,
           'loadavg_1min_before': load_before, 'loadavg_1min_after': os.getloadavg()[0]}
    if medlab:
        tr, va = pd.read_csv(out / 'logs_training.csv'), pd.read_csv(out / 'logs_validation.csv')
        res['epochs'] = [{'epoch': int(e), 'train_seconds': float(ts), 'val_seconds': float(vs), 'own_dice': float(d),
                          't': epoch_t.get(int(e)), 'pred_dir': str(run_dir / 'snap' / f'epoch_{int(e)}')}
                         for e, ts, vs, d in zip(va.epoch, tr.seconds, va.seconds, va.dice)]
        res['first_step'] = None  # medlab logs no marker at its first step
    else:
        events = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]
        res['epochs'] = [{'epoch': e['epoch'], 'train_seconds': e['train_seconds'], 'val_seconds': e['val_seconds'],
                          'own_dice': e['dice'], 't': e['t'], 'pred_dir': str(out / 'predictions' / f"epoch_{e['epoch']}")}
                         for e in events if e['event'] == 'epoch']
        res['first_step'] = next(e['t'] for e in events if e['event'] == 'first_step')
    return res


def foreground_dice(pred_dir: str, data: Path) -> float | None:
    "Mean over validation subjects of the foreground Dice of the written mask (!= 0) against the label (!= 0)."
    scores = []
    for row in pd.read_csv(data / 'val.csv').itertuples():
        p = Path(pred_dir) / f'{row.SubjectID}_prediction.nii.gz'
        if not p.exists(): return None
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(p))) != 0
        gt = sitk.GetArrayFromImage(sitk.ReadImage(row.Label)) != 0
        if pred.shape != gt.shape: pred = pred.reshape(gt.shape)
        denom = pred.sum() + gt.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (pred & gt).sum() / denom)
    return float(np.mean(scores))


def summarise(raw: dict, data: Path, threshold: float) -> dict:
    "The benchmark's figures for one system from its raw timings and written predictions."
    launch, eps = raw['launch'], raw['epochs']
    for e in eps: e['dice'] = foreground_dice(e['pred_dir'], data)
    dices = [e['dice'] for e in eps if e['dice'] is not None]
    first = eps[0]
    # launch to the start of epoch 1's training loop, estimated the same way for every system: the time
    # its first validation log row appeared minus epoch 1's logged train and validation seconds. It
    # excludes reading the first volumes (inside epoch 1's train seconds) but includes whatever runs
    # between validation and the log row (medlab: two checkpoint writes), so it is not an exact bound.
    to_epoch1 = first['t'] - launch - first['train_seconds'] - first['val_seconds'] if first['t'] else None
    reached = [e['t'] - launch for e in eps if e['dice'] is not None and e['dice'] >= threshold and e['t']]
    return {
        'system': raw['system'], 'wall_s': raw['end'] - launch, 'peak_rss_mb': raw['peak_rss_mb'],
        'startup_s': raw['first_step'] - launch if raw['first_step'] else None,
        'to_epoch1_s': to_epoch1,
        'train_s_per_epoch': float(np.mean([e['train_seconds'] for e in eps])),
        'val_s_per_epoch': float(np.mean([e['val_seconds'] for e in eps])),
        'last_epoch_end_s': eps[-1]['t'] - launch if eps[-1]['t'] else None,
        'final_dice': dices[-1] if dices else None, 'best_dice': max(dices) if dices else None,
        'time_to_quality_s': min(reached) if reached else None,
        'per_epoch': [{k: e[k] for k in ('epoch', 'train_seconds', 'val_seconds', 'dice', 'own_dice')}
                      | {'t_since_launch': e['t'] - launch if e['t'] else None} for e in eps],
        'run_dir': raw['run_dir'],
        'loadavg_1min_before': raw['loadavg_1min_before'], 'loadavg_1min_after': raw['loadavg_1min_after'],
    }


COLUMNS = ['wall_s', 'startup_s', 'to_epoch1_s', 'train_s_per_epoch', 'val_s_per_epoch', 'last_epoch_end_s',
           'peak_rss_mb', 'final_dice', 'best_dice', 'time_to_quality_s']


def table(rows: list[dict], threshold: float) -> str:
    df = pd.DataFrame(rows).set_index('system')[COLUMNS].astype(float)
    df = df.rename(columns={'time_to_quality_s': f'ttq_s(>={threshold})'})
    text = df.to_string(float_format=lambda v: f'{v:.3f}' if v < 1.5 else f'{v:.1f}', na_rep='-')
    if 'monai' in df.index:
        ref = df.loc['monai']
        ratios = [(s, df.loc[s] / ref) for s in df.index if s != 'monai']
        if ratios:
            r = pd.DataFrame({f'{s}/monai': v for s, v in ratios}).T
            text += '\n\nratios (system / plain MONAI loop):\n' + r.to_string(float_format=lambda v: f'{v:.2f}', na_rep='-')
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workload', default='seg2d', choices=list(SETTINGS))
    p.add_argument('--systems', default='medlab_api,monai', help=f'comma-separated, of {",".join(SYSTEMS)}')
    p.add_argument('--epochs', type=int, help='override the workload\'s number of epochs')
    p.add_argument('--threads', type=int, default=None,
                   help='OMP/MKL threads for every system (default: torch\'s own choice, one per core); '
                        'use 1 when other processes load the machine: 2 threads on 2 busy cores run ~10x slower')
    a = p.parse_args()
    systems = [s.strip() for s in a.systems.split(',') if s.strip()]
    if bad := [s for s in systems if s not in SYSTEMS]: p.error(f'unknown systems {bad}')
    data = workloads.generate(a.workload)
    threshold = QUALITY[a.workload]
    rows = []
    for s in systems:
        print(f'running {s} on {a.workload} ...', flush=True)
        rows.append(summarise(run_system(s, a.workload, data, a.epochs, a.threads), data, threshold))
        print(f"  wall {rows[-1]['wall_s']:.1f}s, final Dice {rows[-1]['final_dice']}", flush=True)
    report = table(rows, threshold)
    print(report)
    WORK.joinpath('results').mkdir(parents=True, exist_ok=True)
    path = WORK / 'results' / f"{a.workload}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({'workload': a.workload, 'threshold': threshold, 'epochs': a.epochs,
                                'cpus': os.cpu_count(), 'threads': a.threads, 'systems': systems,
                                'results': rows, 'table': report}, indent=1))
    print(f'results: {path}')


if __name__ == '__main__':
    main()
