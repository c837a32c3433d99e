"""Seconds per class activation map, per method, on images larger than the patch (the map is computed per window and
blended): a 3D 128^3 volume (unet, patch 64^3: 8 windows) and a 2D 512x512 image (unet and vgg11, patch 256: 4 windows).

    python benchmarks/cam_speed.py --threads 1                            # everything, ~6 min here
    python benchmarks/cam_speed.py --threads 1 --cases unet2d,vgg11_2d    # 2D only, ~1 min
    python benchmarks/cam_speed.py --threads 1 --cases unet3d --methods gradcam --repeats 1

Each case's run folder (`_work/runs/cam_speed/<case>`) holds a network with seeded random weights, written as
medlab's notebook tests write one (`RunFolder.write_config`, `save_checkpoint('best', ...)`): the time of a map does not
depend on what the weights learnt. The image: one seeded `medlab.make_sample_data` subject of the case's size
(`_work/data/cam_speed/<case>`). Timed: `medlab.cam(predictor, path, method=m, target=1)` with the predictor loaded once
(`medlab.load_run`), so a call reads the NIfTI, predicts, copies the network and computes and blends the map of every
window at the architecture's default layer; `--repeats` calls (median, min, max).

Occlusion runs MONAI's `OcclusionSensitivity` with medlab's mask (a quarter of the window per side, MONAI's overlap 0.6):
729 forward passes per 64^3 window. It is timed once, in a child process stopped after `--occlusion-limit` seconds; when
stopped, the table gives the estimate (windows x forward batches x the measured seconds of one batch of 8 windows).

Results: `_work/results/cam_speed_<time>.json` and a printed table. See benchmarks/README.md, "Class activation maps".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / '_work'
DATA = WORK / 'data' / 'cam_speed'
RUNS = WORK / 'runs' / 'cam_speed'
RESULTS = WORK / 'results'
METHODS = ('gradcam', 'gradcampp', 'layercam', 'saliency', 'guided_backprop', 'guided_gradcam', 'occlusion')


@dataclass(frozen=True)
class Case:
    "A network and an image size."
    architecture: str
    dimension: int
    size: int          # voxels per side of the image
    patch: int         # voxels per side of a window
    base_filters: int = 16


CASES = {
    'unet3d': Case('unet', 3, 128, 64),
    'unet2d': Case('unet', 2, 512, 256),
    'vgg11_2d': Case('vgg11', 2, 512, 256),
}


def image_path(name: str, case: Case) -> Path:
    "One seeded sample image of the case's size (written once)."
    import medlab
    folder = DATA / name
    path = folder / 'images' / 'sub000_ch0.nii.gz'
    if not path.is_file(): medlab.make_sample_data(folder, case.dimension, 1, case.size, seed=0)
    return path


def random_run(name: str, case: Case) -> Path:
    "A run folder with the case's network at seeded random weights (written once)."
    import torch
    from medlab.config import MedlabConfig
    from medlab.catalog import ARCHITECTURES
    from medlab.models import build_model
    from medlab.run import RunFolder
    from medlab.tasks import config_task
    seg = ARCHITECTURES[case.architecture].task == 'segmentation'
    cfg = MedlabConfig(output_dir=str(RUNS / name), patch_size=[case.patch] * case.dimension,
                       model={'architecture': case.architecture, 'dimension': case.dimension,
                              'base_filters': case.base_filters, 'class_list': [0, 1, 2] if seg else [0, 1]},
                       loss_function='dcce' if seg else 'cel', metrics=['dice'] if seg else ['accuracy'])
    run = RunFolder(cfg.output_dir)
    if not run.has('best'):
        task = config_task(cfg.model, cfg.loss_function, cfg.metrics)
        torch.manual_seed(0)
        run.prepare(); run.write_config(cfg)
        run.save_checkpoint('best', model=build_model(cfg.model, task.outputs).state_dict(), epoch=0, task=task.name)
    return run.path


def time_maps(predictor, path: Path, method: str, repeats: int) -> dict:
    "Seconds of `repeats` calls of `medlab.cam` (median, min, max, each), the layer the map was read at, and the memory"
    " the calls left alive (MONAI CAM objects and the MB of tensors they hold: the leak `release_leaked_cams` describes,"
    " freed after measuring)."
    import medlab
    from cam_known_answer import release_leaked_cams
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        e = medlab.cam(predictor, path, method=method, target=1)
        seconds.append(time.perf_counter() - started)
    return {'median': round(statistics.median(seconds), 2), 'min': round(min(seconds), 2), 'max': round(max(seconds), 2),
            'calls': [round(s, 2) for s in seconds], 'layer': e.layer, 'map_shape': list(e.map.shape),
            'leaked': release_leaked_cams()}


def occlusion_forwards(window: tuple[int, ...], mask: list[int]) -> int:
    "How many forward passes MONAI's `OcclusionSensitivity` makes on one window (counted with a one-voxel network)."
    import torch
    from monai.visualize import OcclusionSensitivity
    calls = []
    conv = (torch.nn.Conv2d if len(window) == 2 else torch.nn.Conv3d)(1, 2, 1)
    def net(x):
        calls.append(x.shape[0])
        return conv(x).flatten(2).mean(2)
    with torch.no_grad(): OcclusionSensitivity(net, mask_size=mask, n_batch=8, verbose=False, activate=False)(torch.zeros(1, 1, *window))
    return sum(calls)


def occlusion_estimate(predictor, case: Case) -> dict:
    "Estimated seconds of one occlusion map: windows x batches of 8 x the measured seconds of the network on 8 windows."
    import torch
    windows = math.ceil(case.size / case.patch) ** case.dimension
    mask = [max(1, case.patch // 4)] * case.dimension        # medlab.explain's occlusion mask
    forwards = occlusion_forwards((case.patch,) * case.dimension, mask)
    batch = torch.randn(8, 1, *(case.patch,) * case.dimension)
    predictor.model.eval()
    with torch.no_grad():
        predictor.forward(batch[:1])
        started = time.perf_counter(); predictor.forward(batch); per_batch = time.perf_counter() - started
    return {'windows': windows, 'forwards_per_window': forwards, 'seconds_per_batch_of_8': round(per_batch, 2),
            'estimate': round(windows * math.ceil(forwards / 8) * per_batch, 1)}


def child_occlusion(run: Path, path: Path):
    "In a child process: one occlusion map, its seconds printed as JSON (the parent may stop it)."
    import medlab
    predictor = medlab.load_run(run, device='cpu')
    print(json.dumps(time_maps(predictor, path, 'occlusion', 1)), flush=True)


def timed_occlusion(run: Path, path: Path, limit: float) -> dict:
    "One occlusion map in a child process, stopped after `limit` seconds: its timing, or that it was stopped."
    started = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, '--child-occlusion', str(run), str(path)], capture_output=True,
                             text=True, timeout=limit, env=os.environ)
    except subprocess.TimeoutExpired:
        return {'stopped_after': round(time.perf_counter() - started, 1)}
    lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
    if not lines: return {'error': out.stderr[-500:]}
    return json.loads(lines[-1])


def run_case(name: str, args) -> dict:
    "Every method on one case; its rows."
    import medlab
    case = CASES[name]
    path, run = image_path(name, case), random_run(name, case)
    predictor = medlab.load_run(run, device='cpu')
    rows = {}
    for method in args.methods:
        if method == 'occlusion':
            rows[method] = {**timed_occlusion(run, path, args.occlusion_limit), **occlusion_estimate(predictor, case)}
        else: rows[method] = time_maps(predictor, path, method, args.repeats)
        print(f'{name} {method}: {rows[method]}', flush=True)
    return {'case': name, **asdict(case), 'rows': rows}


def print_table(results: list[dict], repeats: int):
    "Seconds per map: a row per method, a column per case."
    cases = [r['case'] for r in results]
    print(f'\n| method | ' + ' | '.join(f"{r['case']} ({r['architecture']}, {r['size']}^{r['dimension']}, patch {r['patch']}, "
                                          f"layer {next((v['layer'] for v in r['rows'].values() if v.get('layer')), '')})"
                                          for r in results) + ' |')
    print('|---|' + '---|' * len(cases))
    for method in METHODS:
        cells = []
        for r in results:
            v = r['rows'].get(method)
            if v is None: cells.append('')
            elif 'median' in v: cells.append(f"{v['median']} ({v['min']}-{v['max']})" if len(v['calls']) > 1 else f"{v['median']} (once)")
            elif 'stopped_after' in v: cells.append(f"stopped after {v['stopped_after']} s; estimate {v['estimate']}")
            else: cells.append(f"error: {v.get('error', '')[:60]}")
        print(f'| {method} | ' + ' | '.join(cells) + ' |')
    print(f'\nmedian of {repeats} calls (min-max); occlusion: one call')
    print(f'\nleft alive by the {repeats} calls (MONAI CAM objects, MB of tensors they hold), freed by `release_leaked_cams`:')
    for r in results:
        kept = [f"{m} {v['leaked']['cams']} ({v['leaked']['mb']} MB)" for m, v in r['rows'].items() if v.get('leaked', {}).get('cams')]
        print(f"  {r['case']}: " + ('; '.join(kept) or 'none'))


def git_commit() -> str:
    "The repository's commit, with '+dirty' when the working tree differs from it."
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + ('+dirty' if dirty else '')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', type=lambda s: s.split(','), default=list(CASES), help=f'comma-separated, of {", ".join(CASES)}')
    p.add_argument('--methods', type=lambda s: s.split(','), default=list(METHODS))
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--occlusion-limit', type=float, default=150, help='seconds before the occlusion child is stopped')
    p.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS/MKL_NUM_THREADS (set before torch loads)')
    p.add_argument('--child-occlusion', nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads: os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(args.threads)
    os.environ.setdefault('TQDM_DISABLE', '1')
    import warnings  # harmless, repeated per window: MONAI's occlusion indexing, the hook on the first layer
    warnings.filterwarnings('ignore', message='Using a non-tuple sequence')
    warnings.filterwarnings('ignore', message='Full backward hook is firing')
    warnings.filterwarnings('ignore', message='`torch.distributed.reduce_op` is deprecated')
    sys.path[:0] = [str(ROOT), str(HERE)]
    if args.child_occlusion: return child_occlusion(*map(Path, args.child_occlusion))
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = [run_case(name, args) for name in args.cases]
    print_table(results, args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"cam_speed_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({'threads': os.environ.get('OMP_NUM_THREADS'), 'torch_threads': torch.get_num_threads(),
                               'commit': git_commit(), 'python': platform.python_version(), 'repeats': args.repeats,
                               'occlusion_limit': args.occlusion_limit, 'seconds': round(time.perf_counter() - started, 1),
                               'cases': results}, indent=1))
    print(f'results in {out.relative_to(ROOT)}')


if __name__ == '__main__':
    main()
