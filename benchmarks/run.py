"""Run medlab, a plain MONAI loop and GaNDLF 0.1.5 on one seeded workload and compare them.

    python benchmarks/run.py --workload seg2d|seg3d|cls2d [--systems medlab_api,medlab_defaults,medlab_papermill,monai,gandlf] [--epochs N] [--threads 1] [--repeats N]
    python benchmarks/run.py --workload seg3d --startup 5 [--systems ...]   # start-up only: each system 5 times, stopped at its first step

`--repeats N` runs the systems N times (interleaved: all systems once, then again) and reports the median of every
figure; `--startup N` runs each system N times (interleaved) only until its first training step and reports the
median, min and max start-up and the peak memory until then.

Each system runs as a subprocess on the same data, the same split CSVs and the same settings (one
medlab YAML per system, differing only in output_dir). While it runs the process tree's resident
memory is summed every 0.1 s. For medlab, the poller also copies `predictions/validation/` each time
a new row appears in `logs_validation.csv` (medlab overwrites that folder every epoch), so every
epoch's predictions can be scored. GaNDLF runs from its own venv (`benchmarks/_work/gandlf-venv`, built by
`benchmarks/setup_gandlf.sh` when missing) through `gandlf_probe.py`, which is `gandlf run` plus timestamps at
GaNDLF's hooks; it writes every epoch's validation masks itself (`save_output: true`). cls2d (classification) is
scored by balanced accuracy from each epoch's predicted classes: medlab's and the MONAI loop's `predictions.csv`,
and for GaNDLF (whose own classification predictions file holds no class) the probe's `probe_predictions.csv`. Everything is written under benchmarks/_work/ (git-ignored):
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
    # GaNDLF's cls2d config: vgg11 with 16 base filters, batch norm, whole 64x64 images, cross-entropy
    'cls2d': dict(model=dict(dimension=2, architecture='vgg11', num_channels=1, class_list=[0, 1], base_filters=16,
                             norm_type='batch'),
                  patch_size=[64, 64], batch_size=8, q_samples_per_volume=1, num_epochs=5,
                  loss_function='cel', metrics=['balanced_accuracy', 'accuracy']),
}
COMMON = dict(learning_rate=0.001, patience=100, optimizer='adam', loss_function='dc', metrics=['dice'],
              q_max_length=64, patch_sampler='uniform', save_output=True, seed=0)
QUALITY = {'seg2d': 0.90, 'seg3d': 0.85, 'cls2d': 0.90}  # foreground Dice (seg) / balanced accuracy (cls2d) for time to quality
# The quality measure the benchmark scores from the written validation predictions: its short name in the JSON
# (`final_<m>`, `best_<m>`, per epoch `<m>` and the system's own `own_<m>`) and medlab's log column for it.
MEASURE = {'seg2d': ('dice', 'dice'), 'seg3d': ('dice', 'dice'), 'cls2d': ('bacc', 'balanced_accuracy')}
SEED = 0  # the training seed of every system (--seed); the data are always generated with seed 0
SYSTEMS = ('medlab_api', 'medlab_defaults', 'medlab_papermill', 'monai', 'gandlf')
GANDLF_VENV = WORK / 'gandlf-venv'
GANDLF_CONFIGS = HERE / 'gandlf_configs'  # copies of ../shared/bench/gandlf_*.yaml (relative to the project) (GaNDLF 0.1.5 configs that train)
GANDLF_BASE = {}  # workload -> the shared GaNDLF config it starts from, when not its own name (scaling.py adds its sizes)
# GaNDLF's own validation figure kept as `own_<m>` (not comparable: see README); the cls2d column is checked below
GANDLF_OWN = {'seg2d': 'val_dice', 'seg3d': 'val_dice', 'cls2d': 'val_balanced_accuracy'}


def defaults_settings(workload: str) -> dict:
    """What `medlab_defaults` is told: the data's shape and classes, the patch, batch and sampling budget, epochs;
    everything else (architecture, normalisation, loss, sampler, learning rate) is medlab's default. Classification
    (cls2d) also names the architecture (medlab's default `unet` is a segmentation network; it has no default
    classifier) and the loss `cel` (medlab's default loss is for segmentation)."""
    st = SETTINGS[workload]
    model = {k: st['model'][k] for k in ('dimension', 'num_channels', 'class_list')}
    extra = {}
    if workload == 'cls2d':
        model['architecture'] = st['model']['architecture']
        extra['loss_function'] = st['loss_function']
    return dict(model=model, **{k: st[k] for k in ('patch_size', 'batch_size', 'q_samples_per_volume', 'num_epochs')},
                **extra, metrics=list(st.get('metrics', ['dice'])), save_output=True, seed=0)


def write_config(workload: str, data: Path, run_dir: Path, epochs: int | None, defaults: bool = False) -> Path:
    settings = defaults_settings(workload) if defaults else {**COMMON, **SETTINGS[workload]}
    cfg = {'data_csv': {'training': str(data / 'train.csv'), 'validation': str(data / 'val.csv'),
                        'testing': str(data / 'test.csv')},
           'output_dir': str(run_dir / 'out'), **settings}
    if epochs: cfg['num_epochs'] = epochs
    cfg['seed'] = SEED
    cfg['export'] = {'enabled': False}  # training is compared here; no other system exports (benchmarks/export.py times that)
    path = run_dir / 'config.yaml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_gandlf_config(workload: str, run_dir: Path, epochs: int | None) -> Path:
    """GaNDLF's config for the workload: the shared GaNDLF YAML with the harness's shared settings written over it
    (so all systems train with the same numbers) and `save_output: true` (validation masks every epoch in
    `output_validation/epoch_<e>/<subject>/`). The split comes from the harness's CSVs (`-i train,val,test`), so
    GaNDLF's `nested_training` is unused. cls2d keeps `save_output: false` (see gandlf_probe.py)."""
    cfg = yaml.safe_load((GANDLF_CONFIGS / f"gandlf_{GANDLF_BASE.get(workload, workload)}.yaml").read_text())
    st = {**COMMON, **SETTINGS[workload]}
    for k in ('dimension', 'architecture', 'num_channels', 'class_list', 'base_filters', 'norm_type'):
        cfg['model'][k] = st['model'][k]
    cfg['patch_size'] = list(st['patch_size']) + ([1] if st['model']['dimension'] == 2 else [])
    cfg.update(batch_size=st['batch_size'], q_samples_per_volume=st['q_samples_per_volume'],
               num_epochs=epochs or st['num_epochs'], learning_rate=COMMON['learning_rate'],
               patience=COMMON['patience'], optimizer=COMMON['optimizer'], loss_function=st['loss_function'],
               q_max_length=COMMON['q_max_length'], patch_sampler=COMMON['patch_sampler'],
               # GaNDLF 0.1.5 classification with save_output crashes (it takes its segmentation branch and saves a
               # 0-d "mask"); its validation classes come from gandlf_probe.py's probe_predictions.csv instead
               save_output=workload != 'cls2d')
    path = run_dir / 'gandlf_config.yaml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ensure_gandlf():
    "Build GaNDLF's own venv with benchmarks/setup_gandlf.sh when it is missing (several minutes, ~6 GB)."
    if (GANDLF_VENV / '.complete').exists() and (GANDLF_VENV / 'bin' / 'python').exists(): return
    print(f'building GaNDLF venv at {GANDLF_VENV} (benchmarks/setup_gandlf.sh) ...', flush=True)
    subprocess.run(['bash', str(HERE / 'setup_gandlf.sh')], check=True, env={**os.environ, 'GANDLF_VENV': str(GANDLF_VENV)})


def command(system: str, cfg: Path, run_dir: Path, data: Path | None = None) -> list[str]:
    py = sys.executable
    if system in ('medlab_api', 'medlab_defaults'):
        return [py, '-c', 'import medlab, sys; medlab.train(medlab.load_config(sys.argv[1]), resume=False)', str(cfg)]
    if system == 'medlab_papermill':
        exe = Path(py).with_name('papermill')
        return [str(exe), str(ROOT / 'templates' / 'train.ipynb'), str(run_dir / 'executed.ipynb'), '--cwd',
                str(ROOT / 'templates'), '-p', 'config', str(cfg), '-p', 'resume', 'False']
    if system == 'monai':
        return [py, str(HERE / 'monai_loop.py'), '--config', str(cfg), '--out', str(run_dir / 'out')]
    if system == 'gandlf':  # = gandlf run -c CFG -i train.csv,val.csv,test.csv -m OUT -t --reset (+ timestamps)
        csvs = ','.join(str(data / f'{n}.csv') for n in ('train', 'val', 'test'))
        return [str(GANDLF_VENV / 'bin' / 'python'), str(HERE / 'gandlf_probe.py'), 'run', '-c', str(cfg), '-i', csvs,
                '-m', str(run_dir / 'out'), '-t', '--reset']
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


def private_bytes(pid: int) -> int:
    "USS of a process: its private pages (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup); 0 if gone."
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            return sum(int(l.split()[1]) * 1024 for l in f if l.startswith(('Private_Clean:', 'Private_Dirty:')))
    except (FileNotFoundError, ProcessLookupError, PermissionError): return 0


def tree_rss_dedup(proc: psutil.Process) -> int:
    """RSS of the process plus only the private pages (USS) of its descendants. Summed RSS counts twice the pages a
    forked child shares with its parent (GaNDLF's DataLoader worker shares ~1.8 GB of imports that way); this
    counts them once. It undercounts a child's shared-library pages that no ancestor maps (papermill's kernel)."""
    try: total, kids = proc.memory_info().rss, proc.children(recursive=True)
    except psutil.NoSuchProcess: return 0
    return total + sum(private_bytes(k.pid) for k in kids)


def first_step_logged(system: str, run_dir: Path) -> float | None:
    "The time (time.time()) the system logged for its first training step, once it has; else None."
    path = {'gandlf': run_dir / 'events.jsonl', 'monai': run_dir / 'out' / 'log.jsonl'}.get(system, run_dir / 'out' / 'events.jsonl')
    try: lines = path.read_text().splitlines()
    except FileNotFoundError: return None
    for line in lines:
        try: e = json.loads(line)
        except json.JSONDecodeError: continue  # a line being written
        if e.get('event') == 'first_step': return e.get('t', e.get('time'))
    return None


def kill_tree(proc: psutil.Process):
    "Kill a process and all its descendants."
    try: procs = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess: return
    for p in procs:
        try: p.kill()
        except psutil.NoSuchProcess: pass
    psutil.wait_procs(procs, timeout=10)


def run_system(system: str, workload: str, data: Path, epochs: int | None, threads: int | None,
               until_first_step: bool = False, tag: str = '') -> dict:
    """Launch one system, poll it, and return its raw timings (absolute times from time.time()). With
    `until_first_step` it is killed as soon as it has logged its first training step (start-up runs)."""
    run_dir = WORK / 'runs' / workload / (system + tag)
    shutil.rmtree(run_dir, ignore_errors=True); run_dir.mkdir(parents=True)
    cfg = write_config(workload, data, run_dir, epochs, defaults=system == 'medlab_defaults')
    if system == 'gandlf': cfg = write_gandlf_config(workload, run_dir, epochs)
    out = run_dir / 'out'
    medlab = system.startswith('medlab')
    env = {**os.environ, 'MEDLAB_HEADLESS': '1', 'PYTHONUNBUFFERED': '1', 'GANDLF_PROBE_LOG': str(run_dir / 'events.jsonl'),
           'GANDLF_PROBE_SEED': str(SEED)}
    if threads:  # torch reads these at start-up; the same for every system
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    with open(run_dir / 'stdout.txt', 'w') as so, open(run_dir / 'stderr.txt', 'w') as se:
        launch = time.time()
        popen = subprocess.Popen(command(system, cfg, run_dir, data), stdout=so, stderr=se, env=env, cwd=str(ROOT))
        proc, peak, peak_t, seen, epoch_t, timeline = psutil.Process(popen.pid), 0, None, 0, {}, []
        peak_dedup, last_dedup = 0, 0.0
        while popen.poll() is None:
            rss = tree_rss(proc)
            if rss > peak: peak, peak_t = rss, time.time()
            if time.time() - last_dedup >= 0.3:  # reading smaps costs more: every 0.3 s
                peak_dedup, last_dedup = max(peak_dedup, tree_rss_dedup(proc)), time.time()
            if not timeline or time.time() - launch - timeline[-1][0] >= 1.0:  # ~1 s resolution, for the JSON
                timeline.append((round(time.time() - launch, 2), round(rss / 2**20, 1)))
            if until_first_step and (t_first := first_step_logged(system, run_dir)):
                kill_tree(proc); popen.wait()
                return {'system': system, 'run_dir': str(run_dir), 'launch': launch, 'first_step': t_first,
                        'startup_s': t_first - launch, 'peak_rss_mb': peak / 2**20, 'peak_rss_dedup_mb': peak_dedup / 2**20,
                        'loadavg_1min_before': load_before, 'loadavg_1min_after': os.getloadavg()[0]}
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
    return {'system': system, 'run_dir': str(run_dir), 'launch': launch, 'end': end, 'peak_rss_mb': peak / 2**20,
            'peak_rss_at_s': peak_t - launch if peak_t else None, 'rss_timeline_mb': timeline,
            'peak_rss_dedup_mb': peak_dedup / 2**20, 'first_step': first_step_logged(system, run_dir),
            'loadavg_1min_before': load_before, 'loadavg_1min_after': os.getloadavg()[0],
            **read_epochs(system, workload, run_dir, epoch_t)}


def read_epochs(system: str, workload: str, run_dir: Path, epoch_t: dict[int, float]) -> dict:
    """Each epoch's train and validation seconds, the system's own score, the time its validation result appeared
    (`t`) and the folder of its validation predictions, from the system's own logs. `epoch_t`: when the poller saw
    medlab's log rows (medlab's logs carry durations, not times)."""
    m, col = MEASURE[workload]
    out = run_dir / 'out'
    if system.startswith('medlab'):
        tr, va = pd.read_csv(out / 'logs_training.csv'), pd.read_csv(out / 'logs_validation.csv')
        return {'epochs': [{'epoch': int(e), 'train_seconds': float(ts), 'val_seconds': float(vs), f'own_{m}': float(d),
                            't': epoch_t.get(int(e)), 'pred_dir': str(run_dir / 'snap' / f'epoch_{int(e)}')}
                           for e, ts, vs, d in zip(va.epoch, tr.seconds, va.seconds, va[col])]}
    if system == 'gandlf':
        events = [json.loads(l) for l in (run_dir / 'events.jsonl').read_text().splitlines()]
        at = lambda name: {e['epoch']: e['t'] for e in events if e['event'] == name}  # noqa: E731
        t0, v0, v1 = at('train_epoch_start'), at('val_start'), at('val_end')
        va = pd.read_csv(out / 'logs_validation.csv')
        own_col = GANDLF_OWN[workload]
        own = dict(zip(va.epoch_no, va[own_col])) if own_col in va else {}
        # GaNDLF counts epochs from 0; the harness from 1. Its own Dice is soft and averages the background in.
        return {'events': events,
                'epochs': [{'epoch': e + 1, 'train_seconds': v0[e] - t0[e], 'val_seconds': v1[e] - v0[e],
                            f'own_{m}': float(own[e]) if e in own else None, 't': v1[e],
                            'pred_dir': str(out / 'output_validation' / f'epoch_{e}')} for e in sorted(v1)]}
    events = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]  # the MONAI loop
    return {'epochs': [{'epoch': e['epoch'], 'train_seconds': e['train_seconds'], 'val_seconds': e['val_seconds'],
                        f'own_{m}': e[m], 't': e['t'], 'pred_dir': str(out / 'predictions' / f"epoch_{e['epoch']}")}
                       for e in events if e['event'] == 'epoch']}


def foreground_dice(pred_dir: str, data: Path) -> float | None:
    "Mean over validation subjects of the foreground Dice of the written mask (!= 0) against the label (!= 0)."
    scores = []
    for row in pd.read_csv(data / 'val.csv').itertuples():
        p = Path(pred_dir) / f'{row.SubjectID}_prediction.nii.gz'
        if not p.exists():  # GaNDLF: <epoch dir>/<subject>/<subject>_seg_process_rank_0.nii.gz
            p = Path(pred_dir) / row.SubjectID / f'{row.SubjectID}_seg_process_rank_0.nii.gz'
        if not p.exists(): return None
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(p))) != 0
        gt = sitk.GetArrayFromImage(sitk.ReadImage(row.Label)) != 0
        if pred.shape != gt.shape:  # a 2D image written as (x, y, 1): drop unit axes only, never reorder
            pred = pred.squeeze()
            if pred.shape != gt.squeeze().shape: raise ValueError(f'{p}: shape {pred.shape} against label {gt.shape}')
            pred = pred.reshape(gt.shape)
        denom = pred.sum() + gt.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (pred & gt).sum() / denom)
    return float(np.mean(scores))


def balanced_accuracy(pred_dir: str, data: Path) -> float | None:
    """Balanced accuracy (mean over classes of the fraction of that class's validation subjects predicted as it)
    of the written predicted classes: `predictions.csv` (medlab, monai loop: SubjectID, prediction = class value)
    or `probe_predictions.csv` (GaNDLF, written by gandlf_probe.py: GaNDLF's own `output_predictions.csv` holds
    the largest probability, not the class). None when any validation subject has no prediction."""
    d = Path(pred_dir)
    p = next((d / n for n in ('predictions.csv', 'probe_predictions.csv') if (d / n).exists()), None)
    if p is None: return None
    pred = dict(zip(*pd.read_csv(p)[['SubjectID', 'prediction']].values.T))
    truth = pd.read_csv(data / 'val.csv')
    if any(s not in pred for s in truth.SubjectID): return None
    got = np.array([int(round(float(pred[s]))) for s in truth.SubjectID])
    want = truth.ValueToPredict.astype(int).to_numpy()
    return float(np.mean([(got[want == c] == c).mean() for c in np.unique(want)]))


SCORE = {'dice': foreground_dice, 'bacc': balanced_accuracy}


def summarise(raw: dict, data: Path, threshold: float, m: str = 'dice') -> dict:
    "The benchmark's figures for one system from its raw timings and written predictions (`m`: MEASURE's name)."
    launch, eps = raw['launch'], raw['epochs']
    for e in eps: e[m] = SCORE[m](e['pred_dir'], data)
    dices = [e[m] for e in eps if e[m] is not None]
    first = eps[0]
    # launch to the start of epoch 1's training loop, estimated the same way for every system: the time
    # its first validation log row appeared minus epoch 1's logged train and validation seconds. It
    # excludes reading the first volumes (inside epoch 1's train seconds) but includes whatever runs
    # between validation and the log row (medlab: two checkpoint writes), so it is not an exact bound.
    to_epoch1 = first['t'] - launch - first['train_seconds'] - first['val_seconds'] if first['t'] else None
    reached = [e['t'] - launch for e in eps if e[m] is not None and e[m] >= threshold and e['t']]
    return {
        'system': raw['system'], 'wall_s': raw['end'] - launch, 'peak_rss_mb': raw['peak_rss_mb'],
        'peak_rss_dedup_mb': raw['peak_rss_dedup_mb'],
        'startup_s': raw['first_step'] - launch if raw['first_step'] else None,
        'to_epoch1_s': to_epoch1,
        'train_s_per_epoch': float(np.mean([e['train_seconds'] for e in eps])),
        'val_s_per_epoch': float(np.mean([e['val_seconds'] for e in eps])),
        'last_epoch_end_s': eps[-1]['t'] - launch if eps[-1]['t'] else None,
        'after_last_epoch_s': raw['end'] - eps[-1]['t'] if eps[-1]['t'] else None,  # test split, plots, exit
        f'final_{m}': dices[-1] if dices else None, f'best_{m}': max(dices) if dices else None,
        'time_to_quality_s': min(reached) if reached else None,
        'per_epoch': [{k: e[k] for k in ('epoch', 'train_seconds', 'val_seconds', m, f'own_{m}')}
                      | {'t_since_launch': e['t'] - launch if e['t'] else None} for e in eps],
        'run_dir': raw['run_dir'], 'peak_rss_at_s': raw['peak_rss_at_s'], 'rss_timeline_mb': raw['rss_timeline_mb'],
        'events': raw.get('events'),
        'loadavg_1min_before': raw['loadavg_1min_before'], 'loadavg_1min_after': raw['loadavg_1min_after'],
    }


def columns(m: str = 'dice') -> list[str]:
    return ['wall_s', 'startup_s', 'to_epoch1_s', 'train_s_per_epoch', 'val_s_per_epoch', 'last_epoch_end_s', 'after_last_epoch_s',
            'peak_rss_mb', 'peak_rss_dedup_mb', f'final_{m}', f'best_{m}', 'time_to_quality_s']


COLUMNS = columns()


# medlab's goals: (column, reference system, largest allowed ratio medlab / reference, medlab systems it applies to).
# Time to quality is judged on medlab's defaults; the framework's own cost on the same network and settings.
_ALL = ('medlab_api', 'medlab_defaults', 'medlab_papermill')
GOALS = [('time_to_quality_s', 'gandlf', 0.5, ('medlab_defaults',)), ('wall_s', 'monai', 1.1, ('medlab_api',)),
         ('startup_s', 'gandlf', 0.5, _ALL), ('peak_rss_mb', 'gandlf', 0.5, _ALL), ('peak_rss_dedup_mb', 'gandlf', 0.5, _ALL)]


def goals(df: pd.DataFrame) -> list[str]:
    "One line per (medlab system, goal): the ratio and whether it is met; a missing figure says why."
    lines = []
    for s in [s for s in df.index if s.startswith('medlab')]:
        for col, ref, limit, applies in GOALS:
            if ref not in df.index or s not in applies: continue
            a, b = df.loc[s, col], df.loc[ref, col]
            if pd.isna(a) or pd.isna(b):
                verdict = f'cannot tell ({s}: {a}, {ref}: {b}; time to quality is missing when never reached)'
            else:
                verdict = f'{a / b:.2f} -> {"MET" if a / b <= limit else "MISSED"}'
            lines.append(f'  {s}: {col} / {ref} <= {limit}: {verdict}')
    return lines


def table(rows: list[dict], threshold: float, m: str = 'dice') -> str:
    df = pd.DataFrame(rows).set_index('system')[columns(m)].astype(float)
    shown = df.rename(columns={'time_to_quality_s': f'ttq_s(>={threshold})'})
    text = shown.to_string(float_format=lambda v: f'{v:.3f}' if v < 1.5 else f'{v:.1f}', na_rep='-')
    for ref, name in (('monai', 'plain MONAI loop'), ('gandlf', 'GaNDLF 0.1.5')):
        if ref not in shown.index: continue
        ratios = [(s, shown.loc[s] / shown.loc[ref]) for s in shown.index if s != ref and (ref == 'monai' or s.startswith('medlab'))]
        if ratios:
            r = pd.DataFrame({f'{s}/{ref}': v for s, v in ratios}).T
            text += f'\n\nratios (system / {name}):\n' + r.to_string(float_format=lambda v: f'{v:.2f}', na_rep='-')
    if g := goals(df): text += '\n\ngoals:\n' + '\n'.join(g)
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workload', default='seg2d', choices=list(SETTINGS))
    p.add_argument('--systems', default='medlab_api,monai', help=f'comma-separated, of {",".join(SYSTEMS)}')
    p.add_argument('--epochs', type=int, help='override the workload\'s number of epochs')
    p.add_argument('--seed', type=int, default=0, help='training seed of every system (default 0; the data stay the same)')
    p.add_argument('--repeats', type=int, default=1, help='run the systems N times (interleaved) and report medians')
    p.add_argument('--startup', type=int, default=0, metavar='N',
                   help='start-up only: run each system N times (interleaved), each stopped at its first training step')
    p.add_argument('--threads', type=int, default=None,
                   help='OMP/MKL threads for every system (default: torch\'s own choice, one per core); '
                        'use 1 when other processes load the machine: 2 threads on 2 busy cores run ~10x slower')
    a = p.parse_args()
    systems = [s.strip() for s in a.systems.split(',') if s.strip()]
    global SEED
    SEED = a.seed
    if bad := [s for s in systems if s not in SYSTEMS]: p.error(f'unknown systems {bad}')
    if 'gandlf' in systems: ensure_gandlf()
    data = workloads.generate(a.workload)
    threshold, m = QUALITY[a.workload], MEASURE[a.workload][0]
    if a.startup: return startup_runs(a, systems, data)
    runs = []  # every run of every repeat
    for r in range(a.repeats):
        for s in systems:
            print(f'running {s} on {a.workload} (repeat {r + 1}/{a.repeats}) ...', flush=True)
            runs.append(summarise(run_system(s, a.workload, data, a.epochs, a.threads), data, threshold, m) | {'repeat': r})
            print(f"  wall {runs[-1]['wall_s']:.1f}s, start-up {runs[-1]['startup_s']}s, final {m} {runs[-1][f'final_{m}']}", flush=True)
    rows = runs if a.repeats == 1 else medians(runs, systems, m)
    report = table(rows, threshold, m)
    if a.repeats > 1: report = f'medians over {a.repeats} runs per system\n' + report
    print(report)
    save_results(a, systems, {'threshold': threshold, 'repeats': a.repeats, 'results': rows, 'runs': runs, 'table': report})


def save_results(a, systems: list[str], fields: dict, kind: str = ''):
    WORK.joinpath('results').mkdir(parents=True, exist_ok=True)
    path = WORK / 'results' / f"{a.workload}{kind}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({'workload': a.workload, 'seed': a.seed, 'epochs': a.epochs, 'cpus': os.cpu_count(), 'threads': a.threads,
                                'systems': systems, **fields}, indent=1))
    print(f'results: {path}')


def medians(runs: list[dict], systems: list[str], m: str) -> list[dict]:
    "One row per system: the median over its runs of every figure (time to quality: median of those that reached it)."
    rows = []
    for s in systems:
        df = pd.DataFrame([r for r in runs if r['system'] == s])[columns(m)].astype(float)
        rows.append({'system': s, **df.median(skipna=True).to_dict(), 'n_runs': len(df)})
    return rows


def startup_runs(a, systems: list[str], data: Path):
    "Start-up only: each system `a.startup` times (interleaved), stopped at its first step; median, min, max."
    runs = []
    for r in range(a.startup):
        for s in systems:
            res = run_system(s, a.workload, data, a.epochs, a.threads, until_first_step=True)
            runs.append({k: v for k, v in res.items() if k in ('system', 'startup_s', 'peak_rss_mb', 'peak_rss_dedup_mb',
                                                                'loadavg_1min_before')} | {'repeat': r})
            print(f"  {s} run {r + 1}: start-up {res['startup_s']:.2f}s, peak {res['peak_rss_dedup_mb']:.0f} MB", flush=True)
    df = pd.DataFrame(runs)
    stats = df.groupby('system', sort=False).agg(startup_median_s=('startup_s', 'median'), startup_min_s=('startup_s', 'min'),
                                                 startup_max_s=('startup_s', 'max'), runs=('startup_s', 'size'),
                                                 peak_rss_dedup_mb=('peak_rss_dedup_mb', 'median'))
    report = f'start-up to the first training step, {a.workload}, {a.startup} runs per system\n' + stats.to_string(float_format=lambda v: f'{v:.2f}')
    for ref in ('gandlf', 'monai'):
        if ref in stats.index:
            ratio = stats['startup_median_s'] / stats.loc[ref, 'startup_median_s']
            report += f'\n\nmedian start-up / {ref}:\n' + ratio.drop(ref).to_string(float_format=lambda v: f'{v:.2f}')
    if 'gandlf' in stats.index:
        report += '\n\ngoal (start-up <= 0.5x GaNDLF):\n' + '\n'.join(
            f"  {s}: {stats.loc[s, 'startup_median_s'] / stats.loc['gandlf', 'startup_median_s']:.2f} -> "
            f"{'MET' if stats.loc[s, 'startup_median_s'] <= 0.5 * stats.loc['gandlf', 'startup_median_s'] else 'MISSED'}"
            for s in stats.index if s.startswith('medlab'))
    print(report)
    save_results(a, systems, {'startup_runs': a.startup, 'runs': runs, 'table': report}, kind='_startup')


if __name__ == '__main__':
    main()
