"""3D sliding-window inference: medlab, a plain MONAI reference and GaNDLF 0.1.5 on the same volume, in one invocation.

    python benchmarks/inference.py --threads 1                        # everything: ~4 min (+3 min once, to train the run folders)
    python benchmarks/inference.py --threads 1 --repeats 5 --systems medlab,monai
    python benchmarks/inference.py --threads 1 --overlap 0            # the seg3d config's own overlap (8 windows)
    python benchmarks/inference.py --threads 1 --retrain              # train the two run folders again

What is timed, each row in its own subprocess (so that each peak memory is that row's alone):

- `medlab`: `predictor = medlab.load_run(run)` once, then `predictor.predict(image)` (reads the NIfTI, pre-processes as
  the run's config says, MONAI's `sliding_window_inference`, softmax, argmax; a `Prediction` in memory, nothing written).
- `medlab_csv`: `medlab.predict(run, csv, out)` per call: loads the run, checks the CSV's subjects, predicts, writes the
  mask (NIfTI, int16, gzipped) and `predictions.csv`. The CSV has no `Label` column, so nothing is scored.
- `monai`: the reference an expert writes with MONAI alone: the same BasicUNet (built by hand, `model_best.pt` loaded
  with `torch.load(..., weights_only=True)['model']`) once, then per call: SimpleITK read, `NormalizeIntensity` as the
  config's `normalize` says, `sliding_window_inference` with the same roi, overlap, sw_batch_size and blend mode,
  softmax, argmax; nothing written.
- `monai_write`: the same per call plus building the network, loading the weights and writing the mask with SimpleITK
  (int16, gzipped, the input's geometry): the like-for-like of `medlab_csv` and GaNDLF.
- `gandlf`: GaNDLF 0.1.5's own inference, `GANDLF.cli.main_run(csv, config, model_dir, train_mode=False, ...)` (what
  `gandlf run -c CFG -i CSV -m MODEL_DIR --infer` calls after parsing its arguments; the child imports GaNDLF's CLI
  module first, as `gandlf` does), run with GaNDLF's venv python: per call it parses the config, builds its Lightning
  trainer, data module and network, loads `unet_best.pth.tar`, reads the volume (TorchIO, in a DataLoader worker
  process), runs TorchIO's GridSampler/GridAggregator over the patches and writes the mask.

Every child makes one cold call (the first after its imports and, for `medlab`/`monai`, after loading the weights) and
then `--repeats` warm calls; the table gives the cold call, the median warm call, and how long from the process's
launch to the end of its first call (imports included: what one command-line prediction costs). The child times the
phases by wrapping functions (`Stopwatch`: read, sliding window, network forward, post-processing, write; GaNDLF: its
grid-sampler function, its forward, its writer, weight loading, set-up), so that what each system spends outside the
network is visible. The parent samples the child's process tree every 0.1 s (RSS of the process plus the private pages
of its children, as run.py's `peak_rss_dedup_mb`) and takes the child's own peak (`ru_maxrss` from `os.wait4`).

The run folders (`_work/runs/inference/overlap_<voxels>/{medlab,gandlf}`, trained once per overlap and reused while
their config is unchanged; `--retrain` to redo):
- medlab: `medlab.train` for 1 epoch on the seg3d workload (benchmarks/workloads.py, 9 + 3 subjects of 96^3) with
  run.py's seg3d settings (BasicUNet, 16 base filters, instance norm, patch 64^3, batch 2) plus `data_preprocessing:
  {normalize}` and `inference_mechanism: {grid_aggregator_overlap: average, patch_overlap: --overlap}`.
- GaNDLF: `gandlf run -t` for 1 epoch on the same data with run.py's seg3d GaNDLF config (its `unet`, base_filters 16,
  instance norm, patch 64^3, batch 2) and the same pre-processing and inference mechanism.
The volume predicted: one seeded 128^3 float32 volume made like the seg3d workload's (`_work/data/infer3d/`).
Results: `_work/results/inference_<time>.json` and a printed table. See benchmarks/README.md, "Inference (3D sliding window)".

This file is also the children: `--child SYSTEM` (run by the parent; `gandlf` with GaNDLF's venv python), which is why
its top level imports only the standard library and each function imports what it needs.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / '_work'
RUNS = WORK / 'runs' / 'inference'  # one folder per overlap: overlap_<voxels>/<system>
DATA = WORK / 'data' / 'infer3d'
GANDLF_PYTHON = WORK / 'gandlf-venv' / 'bin' / 'python'
SYSTEMS = ('medlab', 'medlab_csv', 'monai', 'monai_write', 'gandlf')
SUBJECT = 'infer3d_000'


# ---------------------------------------------------------------------------------------------------------------
# Timing inside a child
# ---------------------------------------------------------------------------------------------------------------

class Stopwatch:
    "Seconds spent in (and calls of) timed functions, summed per label until `take`."
    def __init__(self): self.seconds, self.calls = defaultdict(float), defaultdict(int)

    def timed(self, fn, label: str):
        "`fn` that adds the seconds of each call to `label`."
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try: return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
        return timed

    def wrap(self, owner, name: str, label: str):
        "Replace `owner.name` (a method of a class, or a function or class of a module) with a timed call of it."
        setattr(owner, name, self.timed(getattr(owner, name), label))

    def take(self) -> dict:
        "The seconds and calls so far, per label; then start again from zero."
        out = {k: round(v, 4) for k, v in self.seconds.items()} | {f'{k}_calls': v for k, v in self.calls.items()}
        self.seconds.clear(); self.calls.clear()
        return out


def timed_calls(call, repeats: int, watch: Stopwatch) -> list[dict]:
    "One cold call of `call()` and then `repeats` warm ones: for each its seconds, its phases, and when it ended."
    out = []
    for i in range(repeats + 1):
        watch.take()
        start = time.perf_counter()
        call()
        out.append({'call': i, 'seconds': time.perf_counter() - start, 'ended': time.time(), **watch.take()})
    return out


def child_report(a, imported: float, calls: list[dict], **extra):
    "Write the child's result JSON (times since the parent's launch of this process, every call's phases)."
    import torch
    launch = float(os.environ['INFER_LAUNCH'])
    result = {'import_s': imported - launch, 'first_result_s': calls[0]['ended'] - launch, 'calls': calls,
              'torch_threads': torch.get_num_threads(), **extra}
    Path(a.result).write_text(json.dumps(result, indent=1, default=str))


# ---------------------------------------------------------------------------------------------------------------
# The children: one per row of the table
# ---------------------------------------------------------------------------------------------------------------

def child_medlab(a):
    "`medlab.load_run(run)` once, then `predictor.predict(image)`; saves the last prediction for the comparison."
    import medlab
    import medlab.predictor as mp  # what medlab.load_run imports; its classes are timed
    import numpy as np
    imported = time.time()
    watch = Stopwatch()
    for name, label in (('logits', 'sliding_window'), ('forward', 'forward'), ('prediction', 'post')):
        watch.wrap(mp.Predictor, name, label)
    watch.wrap(mp.SubjectReader, '__call__', 'read')  # read the NIfTI and pre-process (normalize)
    start = time.perf_counter()
    predictor = medlab.load_run(a.run)
    load_s = time.perf_counter() - start
    last = {}
    calls = timed_calls(lambda: last.update(p=predictor.predict(a.image)), a.repeats, watch)
    p = last['p']
    np.save(Path(a.out) / 'labels.npy', np.asarray(p.labels, np.uint8))
    np.save(Path(a.out) / 'probabilities.npy', p.probabilities.astype(np.float32))
    child_report(a, imported, calls, load_s=load_s, parameters=sum(t.numel() for t in predictor.model.parameters()),
                 patch=list(predictor.patch_size), overlap_voxels=predictor.overlap, blend=predictor.blend,
                 sw_batch_size=predictor.cfg.batch_size)


def child_medlab_csv(a):
    "`medlab.predict(run, csv, out)` per call: load, check, predict, write."
    import medlab
    import medlab.infer as mi  # what medlab.predict imports; its functions are timed
    import medlab.predictor as mp
    import medlab.tasks as mt
    imported = time.time()
    watch = Stopwatch()
    for name, label in (('logits', 'sliding_window'), ('forward', 'forward'), ('prediction', 'post')):
        watch.wrap(mp.Predictor, name, label)
    watch.wrap(mp.SubjectReader, '__call__', 'read')
    watch.wrap(mi, 'load_predictors', 'load')
    watch.wrap(mi, 'check_subjects', 'check')
    watch.wrap(mt.Segmentation, 'write', 'write')
    calls = timed_calls(lambda: medlab.predict(a.run, a.csv, a.out), a.repeats, watch)
    child_report(a, imported, calls)


def child_monai(a, write: bool = False):
    """The plain MONAI reference: BasicUNet with the run's weights, SimpleITK read, the config's normalisation,
    `sliding_window_inference`, softmax, argmax. `write`: per call also build the network, load its weights and write
    the mask with SimpleITK."""
    import numpy as np
    import SimpleITK as sitk
    import torch
    import yaml
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet
    from monai.transforms import NormalizeIntensity
    imported = time.time()
    cfg = yaml.safe_load((Path(a.run) / 'config.yaml').read_text())
    m, mechanism, f = cfg['model'], cfg['inference_mechanism'], cfg['model']['base_filters']
    if set(cfg['data_preprocessing']) - {'normalize'} or m['norm_type'] != 'instance' or cfg['data_postprocessing']:
        raise SystemExit('the MONAI reference knows only `normalize`, instance norm and no post-processing')
    roi = tuple(cfg['patch_size'][:3])
    overlap = mechanism['patch_overlap'] / min(roi)  # the config counts voxels, MONAI a fraction of the window
    mode = 'gaussian' if mechanism['grid_aggregator_overlap'] == 'gaussian' else 'constant'  # constant = average
    normalize = NormalizeIntensity(channel_wise=True) if 'normalize' in cfg['data_preprocessing'] else None
    watch = Stopwatch()

    def load() -> torch.nn.Module:
        net = BasicUNet(spatial_dims=3, in_channels=m['num_channels'], out_channels=len(m['class_list']),
                        features=(f, f, 2 * f, 4 * f, 8 * f, f), norm=('instance', {'affine': True}))
        net.load_state_dict(torch.load(Path(a.run) / 'model_best.pt', map_location='cpu', weights_only=True)['model'])
        return net.eval()

    def read(path: str) -> tuple[torch.Tensor, sitk.Image]:
        "(1, 1, x, y, z) normalised, and the image (for its geometry)."
        img = sitk.ReadImage(path)
        arr = np.ascontiguousarray(sitk.GetArrayFromImage(img).astype(np.float32).T)[None]
        if normalize is not None: arr = np.asarray(normalize(arr), dtype=np.float32)
        return torch.as_tensor(arr)[None], img

    def write_mask(labels: np.ndarray, img: sitk.Image):
        out = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.int16).T))
        out.CopyInformation(img)
        sitk.WriteImage(out, str(Path(a.out) / f'{SUBJECT}_prediction.nii.gz'), useCompression=True)

    load, read, write_mask = watch.timed(load, 'load'), watch.timed(read, 'read'), watch.timed(write_mask, 'write')
    sliding_window = watch.timed(sliding_window_inference, 'sliding_window')

    def post(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        "Probabilities (C, x, y, z) and labels (x, y, z) as class values."
        probabilities = torch.softmax(logits, 1)
        return probabilities[0].numpy(), np.asarray(m['class_list'])[probabilities.argmax(1)[0].numpy()]
    post = watch.timed(post, 'post')

    @torch.no_grad()
    def predict(net: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, sitk.Image]:
        "Probabilities, labels and the input image."
        image, img = read(a.image)
        logits = sliding_window(image, roi, cfg['batch_size'], watch.timed(net, 'forward'), overlap=overlap, mode=mode)
        return (*post(logits), img)

    start = time.perf_counter()
    net = None if write else load()
    load_s = None if write else time.perf_counter() - start
    last = {}

    def call():
        last['p'] = predict(load() if write else net)
        if write: write_mask(last['p'][1], last['p'][2])
    calls = timed_calls(call, a.repeats, watch)
    if not write:
        np.save(Path(a.out) / 'labels.npy', last['p'][1].astype(np.uint8))
        np.save(Path(a.out) / 'probabilities.npy', last['p'][0].astype(np.float32))
    child_report(a, imported, calls, load_s=load_s, roi=roi, overlap_fraction=overlap, mode=mode)


def child_gandlf(a):
    """GaNDLF 0.1.5's inference, `main_run(csv, config, model_dir, train_mode=False)` per call (what `gandlf run ...
    --infer` runs), in GaNDLF's venv. It writes the mask to `<model_dir>/output_inference/<subject>/` (it ignores the
    output folder it is given for that)."""
    from GANDLF.entrypoints.cli_tool import gandlf  # noqa: F401  (what the `gandlf` command imports)
    from GANDLF.cli import main_run
    import GANDLF.inference_manager as im
    import GANDLF.models.lightning_module as lm
    imported = time.time()
    watch = Stopwatch()
    module = lm.GandlfLightningModule
    for name, label in (('_get_predictions_on_subject_using_grid_sampler', 'sliding_window'), ('forward', 'forward'),
                        ('_save_predictions_for_segmentation_subject', 'write'),
                        ('_try_to_load_model_inference_start', 'load')):
        watch.wrap(module, name, label)
    watch.wrap(im, 'GandlfLightningModule', 'build')       # its network, loss and metrics
    watch.wrap(im, 'GandlfInferenceDatamodule', 'setup')   # the subjects' TorchIO dataset
    parameters = {}
    original_init = module.__init__

    def init(self, params, *args, **kwargs):  # keep the network for its parameter count
        original_init(self, params, *args, **kwargs)
        parameters['n'] = sum(t.numel() for t in self.model.parameters())
    module.__init__ = init
    calls = timed_calls(lambda: main_run(data_csv=a.csv, config_file=a.config, model_dir=a.run, train_mode=False,
                                         resume=False, reset=False, output_dir=a.out), a.repeats, watch)
    child_report(a, imported, calls, parameters=parameters.get('n'))


CHILDREN = {'medlab': child_medlab, 'medlab_csv': child_medlab_csv, 'monai': child_monai,
            'monai_write': functools.partial(child_monai, write=True), 'gandlf': child_gandlf}


# ---------------------------------------------------------------------------------------------------------------
# The parent: data, the two trained runs, one subprocess per row, the table
# ---------------------------------------------------------------------------------------------------------------

def make_volume(size: int) -> tuple[Path, Path]:
    """One seeded size^3 float32 volume made like the seg3d workload's (2-5 bright ellipsoids on a smooth noisy
    background) and its mask; `infer_<size>.csv` names the image only (SubjectID, Channel_0), so no system scores it."""
    import numpy as np
    import workloads
    DATA.mkdir(parents=True, exist_ok=True)
    image, csv = DATA / f'{SUBJECT}_{size}_image.nii.gz', DATA / f'infer_{size}.csv'
    if not image.exists():
        rng = np.random.default_rng([0, size])
        img, mask = workloads.make_subject(rng, (size,) * 3, int(rng.integers(2, 6)), workloads.WORKLOADS['seg3d']['radius'])
        workloads.write(img, image); workloads.write(mask, DATA / f'{SUBJECT}_{size}_label.nii.gz')
    csv.write_text(f'SubjectID,Channel_0\n{SUBJECT},{image}\n')
    return image, csv


def settings(overlap: int) -> dict:
    "What both trained runs share beyond run.py's seg3d settings: 1 epoch, z-score pre-processing, the inference mechanism."
    return dict(num_epochs=1, data_preprocessing={'normalize': None},
                inference_mechanism={'grid_aggregator_overlap': 'average', 'patch_overlap': overlap})


def medlab_config(data: Path, run_dir: Path, overlap: int) -> str:
    "The medlab run's YAML text: run.py's seg3d settings (run.COMMON + run.SETTINGS['seg3d']) and `settings`."
    import run
    import yaml
    extra = settings(overlap) | {'data_preprocessing': {'normalize': {}}}
    cfg = {'data_csv': {'training': str(data / 'train.csv'), 'validation': str(data / 'val.csv')},
           'output_dir': str(run_dir), **run.COMMON, **run.SETTINGS['seg3d'], **extra,
           'save_output': False, 'accelerator': 'cpu'}
    return yaml.safe_dump(cfg, sort_keys=False)


def gandlf_config(runs: Path, overlap: int) -> str:
    "GaNDLF's YAML text: run.py's seg3d GaNDLF config (gandlf_configs/gandlf_seg3d.yaml with the shared settings) and `settings`."
    import run
    import yaml
    base = runs / 'gandlf' / 'base'  # run.py writes its config there; ours is written beside it by `train_once`
    base.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(run.write_gandlf_config('seg3d', base, 1).read_text())
    cfg.update(settings(overlap), save_output=False)
    return yaml.safe_dump(cfg, sort_keys=False)


def train_once(folder: Path, config_text: str, command: list[str], done: Path, threads: int, retrain: bool) -> Path:
    """Train a run folder with `command` ('{config}' stands for the config written into `folder`) unless a training
    with the same config finished already (`done` exists). Returns the config's path."""
    name = folder.name
    path = folder / ('gandlf_config.yaml' if name == 'gandlf' else 'config.yaml')
    stamp = folder / 'trained_with.yaml'
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text)  # also when reusing: GaNDLF's inference reads it
    if not retrain and done.exists() and stamp.exists() and stamp.read_text() == config_text: return path
    print(f'training the {name} run folder for 1 epoch (once) ...', flush=True)
    stamp.unlink(missing_ok=True)
    start = time.time()
    with open(folder / 'train_stdout.txt', 'w') as so, open(folder / 'train_stderr.txt', 'w') as se:
        subprocess.run([c.replace('{config}', str(path)) for c in command], check=True, stdout=so, stderr=se,
                       env=child_env(threads), cwd=str(ROOT))
    stamp.write_text(config_text)
    print(f'  trained in {time.time() - start:.0f} s', flush=True)
    return path


def train_runs(runs: Path, overlap: int, threads: int, retrain: bool) -> dict[str, Path]:
    "The medlab run folder, GaNDLF's model folder and its config (trained for 1 epoch on seg3d when missing or out of date)."
    import run
    import workloads
    data = workloads.generate('seg3d')
    medlab_run, gandlf_model = runs / 'medlab' / 'run', runs / 'gandlf' / 'model'
    train_once(runs / 'medlab', medlab_config(data, medlab_run, overlap),
               [sys.executable, '-c', 'import medlab, sys; medlab.train(medlab.load_config(sys.argv[1]), resume=False)', '{config}'],
               medlab_run / 'model_best.pt', threads, retrain)
    run.ensure_gandlf()
    config = train_once(runs / 'gandlf', gandlf_config(runs, overlap),
                        [str(GANDLF_PYTHON.with_name('gandlf')), 'run', '-c', '{config}', '-i',
                         f"{data / 'train.csv'},{data / 'val.csv'}", '-m', str(gandlf_model), '-t', '--reset'],
                        gandlf_model / 'unet_best.pth.tar', threads, retrain)
    return {'medlab': medlab_run, 'gandlf': gandlf_model, 'gandlf_config': config}


def child_env(threads: int, **extra) -> dict:
    "The environment of every subprocess: the same OMP/MKL threads for all (torch reads them at start-up)."
    return {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads), 'MEDLAB_HEADLESS': '1',
            'PYTHONUNBUFFERED': '1', **extra}


def sample_memory(pid: int, stop: threading.Event, peak: dict):
    "Until `stop`: the largest RSS of the process tree of `pid`, summed and deduplicated (run.py's measures), every 0.1 s."
    import psutil
    import run
    try: proc = psutil.Process(pid)
    except psutil.NoSuchProcess: return
    last_dedup = 0.0
    while not stop.is_set():
        peak['summed'] = max(peak.get('summed', 0), run.tree_rss(proc))
        if time.time() - last_dedup >= 0.3:  # smaps costs more
            peak['dedup'], last_dedup = max(peak.get('dedup', 0), run.tree_rss_dedup(proc)), time.time()
        stop.wait(0.1)


def run_child(system: str, a, runs: Path, paths: dict, image: Path, csv: Path) -> dict:
    """Run one row's child process; its result JSON plus the wall time from launch to exit and its peak memory: the
    sampled tree (`peak_rss_dedup_mb`, `peak_rss_summed_mb`) and `ru_maxrss` of the child and any waited-for
    descendant (`maxrss_mb`, from `os.wait4`)."""
    folder = runs / system
    out = folder / 'out'
    out.mkdir(parents=True, exist_ok=True)
    result = folder / 'result.json'
    result.unlink(missing_ok=True)
    run_path = paths['gandlf'] if system == 'gandlf' else paths['medlab']
    python = str(GANDLF_PYTHON) if system == 'gandlf' else sys.executable
    command = [python, str(Path(__file__).resolve()), '--child', system, '--run', str(run_path), '--image', str(image),
               '--csv', str(csv), '--out', str(out), '--config', str(paths['gandlf_config']), '--repeats', str(a.repeats),
               '--result', str(result)]
    load_before = os.getloadavg()[0]
    with open(folder / 'stdout.txt', 'w') as so, open(folder / 'stderr.txt', 'w') as se:
        launch = time.time()
        child = subprocess.Popen(command, stdout=so, stderr=se, cwd=str(ROOT), env=child_env(a.threads, INFER_LAUNCH=repr(launch)))
        stop, peak = threading.Event(), {}
        sampler = threading.Thread(target=sample_memory, args=(child.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage: its peak RSS
        wall = time.time() - launch
        child.returncode = os.waitstatus_to_exitcode(status)
        stop.set(); sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f'{system} failed (exit {child.returncode}); see {folder}/stderr.txt:\n' + (folder / 'stderr.txt').read_text()[-3000:])
    return {'system': system, **json.loads(result.read_text()), 'process_wall_s': wall,
            'peak_rss_dedup_mb': peak.get('dedup', 0) / 2**20, 'peak_rss_summed_mb': peak.get('summed', 0) / 2**20,
            'maxrss_mb': usage.ru_maxrss / 1024, 'loadavg_1min_before': load_before, 'loadavg_1min_after': os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------------------------------
# Figures, agreement, table
# ---------------------------------------------------------------------------------------------------------------

PHASES = ('load', 'setup', 'build', 'check', 'read', 'sliding_window', 'forward', 'post', 'write')
COLUMNS = ('import_s', 'load_s', 'cold_s', 'warm_s', 'forward_s', 'outside_network_s', 'first_result_s', 'process_wall_s',
           'peak_rss_dedup_mb', 'maxrss_mb', 'load_1min')
# (numerator, denominator): like for like first (predict in memory; load + predict + write per call)
RATIOS = (('medlab', 'monai'), ('medlab_csv', 'monai_write'), ('medlab_csv', 'gandlf'), ('medlab', 'gandlf'))


def windows(size: int, patch: int, overlap: int) -> int:
    "Windows over a size^3 volume, patch^3 each, neighbours sharing `overlap` voxels (MONAI's and TorchIO's grid alike)."
    per_axis = 1 if size <= patch else -(-(size - patch) // (patch - overlap)) + 1
    return per_axis ** 3


def summarise(raw: dict, n_windows: int) -> dict:
    "One row: the cold call, medians of the warm calls and of each phase in them, and the network's share."
    warm = raw['calls'][1:] or raw['calls']
    median = lambda key: statistics.median(c.get(key, 0.0) for c in warm)  # noqa: E731
    phases = {p: median(p) for p in PHASES if any(p in c for c in raw['calls'])}
    row = {'system': raw['system'], 'import_s': raw['import_s'], 'load_s': raw.get('load_s'),
           'cold_s': raw['calls'][0]['seconds'], 'warm_s': median('seconds'), 'forward_s': phases.get('forward'),
           'first_result_s': raw['first_result_s'], 'process_wall_s': raw['process_wall_s'],
           'peak_rss_dedup_mb': raw['peak_rss_dedup_mb'], 'maxrss_mb': raw['maxrss_mb'],
           'load_1min': max(raw['loadavg_1min_before'], raw['loadavg_1min_after']),  # ~1: the benchmark alone
           'warm_calls_s': [round(c['seconds'], 3) for c in warm], 'phases_s': phases,
           'forward_calls': raw['calls'][-1].get('forward_calls'), 'torch_threads': raw['torch_threads']}
    row['outside_network_s'] = row['warm_s'] - row['forward_s'] if row['forward_s'] is not None else None
    row['forward_s_per_window'] = row['forward_s'] / n_windows if row['forward_s'] is not None else None
    return row


def agreement(a_dir: Path, b_dir: Path) -> dict | None:
    "How far medlab's prediction is from the MONAI reference's: differing labels and the largest probability difference."
    import numpy as np
    if not all((d / 'labels.npy').exists() for d in (a_dir, b_dir)): return None
    la, lb = np.load(a_dir / 'labels.npy'), np.load(b_dir / 'labels.npy')
    pa, pb = np.load(a_dir / 'probabilities.npy'), np.load(b_dir / 'probabilities.npy')
    return {'voxels': int(la.size), 'labels_differing': int((la != lb).sum()), 'shape': list(la.shape),
            'max_abs_probability_difference': float(np.abs(pa - pb).max()), 'foreground_fraction': float((la != 0).mean())}


def table(rows: list[dict]) -> str:
    "The main table, the warm call's phases, and the ratios (medlab / reference) that exist among the rows."
    import pandas as pd
    fmt = lambda v: f'{v:.3f}' if abs(v) < 10 else f'{v:.1f}'  # noqa: E731
    df = pd.DataFrame(rows).set_index('system')
    text = df[list(COLUMNS)].astype(float).to_string(float_format=fmt, na_rep='-')
    phases = pd.DataFrame({r['system']: r['phases_s'] for r in rows}).T.reindex(columns=PHASES).dropna(axis=1, how='all')
    text += '\n\nwarm call, median seconds per phase (sliding_window includes forward):\n' + phases.to_string(float_format=fmt, na_rep='-')
    pairs = [(a, b) for a, b in RATIOS if a in df.index and b in df.index]
    if pairs:
        cols = ['cold_s', 'warm_s', 'forward_s', 'outside_network_s', 'first_result_s', 'peak_rss_dedup_mb']
        ratios = pd.DataFrame({f'{a}/{b}': df.loc[a, cols].astype(float) / df.loc[b, cols].astype(float) for a, b in pairs}).T
        text += '\n\nratios:\n' + ratios.to_string(float_format=lambda v: f'{v:.2f}', na_rep='-')
    return text


def written_masks(runs: Path, paths: dict, image: Path, systems: list[str]) -> dict:
    "For each system that writes a mask: its file, size and pixel type, and whether it lies on the input's grid."
    import SimpleITK as sitk
    files = {'medlab_csv': runs / 'medlab_csv' / 'out' / f'{SUBJECT}_prediction.nii.gz',
             'monai_write': runs / 'monai_write' / 'out' / f'{SUBJECT}_prediction.nii.gz',
             'gandlf': paths['gandlf'] / 'output_inference' / SUBJECT / f'{SUBJECT}_seg_process_rank_0.nii.gz'}
    ref, out = sitk.ReadImage(str(image)), {}
    for system in [s for s in systems if s in files]:
        mask = sitk.ReadImage(str(files[system]))
        same = mask.GetSize() == ref.GetSize() and all(
            max(abs(x - y) for x, y in zip(getattr(mask, g)(), getattr(ref, g)())) < 1e-4 for g in ('GetSpacing', 'GetOrigin', 'GetDirection'))
        out[system] = {'file': str(files[system]), 'size': mask.GetSize(), 'pixel_type': mask.GetPixelIDTypeAsString(),
                       'on_input_grid': same, 'bytes': files[system].stat().st_size}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--systems', default=','.join(SYSTEMS), help=f'comma-separated, of {",".join(SYSTEMS)}')
    p.add_argument('--repeats', type=int, default=3, help='warm calls per system after the cold one (median reported)')
    p.add_argument('--threads', type=int, default=1, help='OMP/MKL threads of every system (1 when anything else runs)')
    p.add_argument('--size', type=int, default=128, help='side of the cubic volume predicted')
    p.add_argument('--overlap', type=int, default=32, help='voxels shared by neighbouring 64^3 windows (patch_overlap)')
    p.add_argument('--retrain', action='store_true', help='train the two run folders again')
    for name in ('child', 'run', 'image', 'csv', 'out', 'config', 'result'): p.add_argument(f'--{name}', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return CHILDREN[a.child](a)
    systems = [s.strip() for s in a.systems.split(',') if s.strip()]
    if bad := [s for s in systems if s not in SYSTEMS]: p.error(f'unknown systems {bad}')
    sys.path.insert(0, str(HERE))  # run.py and workloads.py
    import run
    runs = RUNS / f'overlap_{a.overlap}'
    paths = train_runs(runs, a.overlap, a.threads, a.retrain)
    image, csv = make_volume(a.size)
    patch = run.SETTINGS['seg3d']['patch_size'][0]
    n_windows = windows(a.size, patch, a.overlap)
    rows, raws = [], []
    for system in systems:
        print(f'running {system} ...', flush=True)
        raws.append(run_child(system, a, runs, paths, image, csv))
        rows.append(summarise(raws[-1], n_windows))
        print(f"  cold {rows[-1]['cold_s']:.2f} s, warm {rows[-1]['warm_s']:.2f} s, peak {rows[-1]['peak_rss_dedup_mb']:.0f} MB", flush=True)
    same = agreement(runs / 'medlab' / 'out', runs / 'monai' / 'out') if {'medlab', 'monai'} <= set(systems) else None
    masks = written_masks(runs, paths, image, systems)
    report = (f'{a.size}^3 float32 volume, patch {patch}^3, overlap {a.overlap} voxels ({n_windows} windows), blend average, '
              f'sw_batch_size {run.SETTINGS["seg3d"]["batch_size"]} (GaNDLF: 1, fixed), {a.threads} thread(s), '
              f'{a.repeats} warm calls after a cold one\n' + table(rows)
              + (f'\n\nmedlab against the MONAI reference: {same}' if same else '')
              + ''.join(f"\nmask written by {s}: {m['size']} {m['pixel_type']}, on the input's grid: {m['on_input_grid']}"
                        for s, m in masks.items()))
    print(report)
    (WORK / 'results').mkdir(parents=True, exist_ok=True)
    path = WORK / 'results' / f"inference_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({'command': ' '.join(sys.argv), 'size': a.size, 'patch': patch, 'overlap': a.overlap,
                                'windows': n_windows, 'threads': a.threads, 'repeats': a.repeats, 'cpus': os.cpu_count(),
                                'runs': {k: str(v) for k, v in paths.items()}, 'rows': rows, 'agreement': same,
                                'masks': masks, 'raw': raws, 'table': report}, indent=1, default=str))
    print(f'results: {path}')


if __name__ == '__main__':
    main()
