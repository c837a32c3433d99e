"""Known-answer measurements of medlab's class activation maps: which method, at which layer, points at what the
network had to find. They choose `medlab.explain.DEFAULT_METHOD` and `DEFAULT_LAYERS` (issue 8).

    python benchmarks/cam_known_answer.py --threads 1                   # all three parts: ~9 min, +~6 min the first time (training)
    python benchmarks/cam_known_answer.py --threads 1 --part cls2d      # 2D classification: vgg11, resnet18, densenet121
    python benchmarks/cam_known_answer.py --threads 1 --part cls3d      # 3D classification: vgg11
    python benchmarks/cam_known_answer.py --threads 1 --part seg2d      # 2D segmentation: unet, resunet
    python benchmarks/cam_known_answer.py --part cls2d --archs vgg11 --methods layercam,saliency --max-subjects 8  # a quick look
    python benchmarks/cam_known_answer.py --part cls2d --retrain        # train the run folders again
    python benchmarks/cam_known_answer.py --part cls2d --targets logit,centred   # also explain centred logits
    python benchmarks/cam_known_answer.py --tables benchmarks/_work/results/cam_known_answer_cls2d_<time>.json  # README tables

The tasks, each with a known answer:
- cls2d, cls3d: `medlab.make_localization_data`: class 1 differs from class 0 only by a bright square (cube) at a random
  place; its mask is `regions/{SubjectID}.nii.gz`. A network that classifies it well must have found the square.
- seg2d: `medlab.make_sample_data(task='segmentation')` blobs; class 1's true mask is the `Label` file == 1.

Each architecture is trained once with `medlab.train` (`PARTS`; run folders under `_work/runs/cam/<part>/<arch>`, reused
while their config is unchanged; `--retrain` to redo) and loaded with `medlab.load_run` (its best checkpoint by the
validation metric). Then, for the first `--max-subjects` (24) class-1 subjects of the validation split (segmentation:
validation subjects), every method of `medlab.explain.METHODS` and every candidate layer (`candidate_layers`; layer
methods only), one `medlab.explain.explain(predictor, image, method, target=1, layer=layer)` call gives a map in [0, 1]
on the image's grid, scored against the known mask:
- pointing game: is the map's maximum (`np.argmax`, the first one on ties) inside the mask? No tolerance margin.
- mass share: the map's sum inside the mask over its whole sum (a uniform map scores the mask's area fraction,
  printed as `chance`).
- peak in a corner: the maximum lies within an eighth of the size from a border on every axis (uniform chance:
  4/64 in 2D, 8/512 in 3D).
- seconds: the wall time of the `explain` call (prediction, the network copy, the method and the blend).
The target is the true class 1 (segmentation: class 1 averaged over the region the model predicts as class 1, the
default). Segmentation adds occlusion with that region fixed (`explain(..., region=prediction == 1)`), because
the default recomputes it from every occluded image. `*` in the tables marks medlab's current default.

`release_leaked_cams` works around a leak in `medlab.explain` (every Grad-CAM-family map keeps its network copy alive);
without it the run ends killed for memory.

Results: `_work/results/cam_known_answer_<part>_<time>.json` (settings, training curves, per-map rows, the tables) and
printed tables. See benchmarks/README.md, "Class activation maps".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / '_work'
DATA = WORK / 'data' / 'cam'
RUNS = WORK / 'runs' / 'cam'
RESULTS = WORK / 'results'


@dataclass(frozen=True)
class Training:
    "How one architecture is trained for a part."
    base_filters: int
    epochs: int
    learning_rate: float = 1e-3
    scheduler: str = 'constant'


@dataclass(frozen=True)
class Part:
    "One known-answer task: its data and the architectures trained on it."
    task: str                                  # 'localization' (classification) or 'segmentation'
    dimension: int
    n_subjects: int
    size: int                                  # voxels per side
    square: int = 0                            # localization: side of the class-1 square
    patch: int = 0                             # 0: the whole image
    archs: dict = field(default_factory=dict)  # architecture -> Training


PARTS = {
    'cls2d': Part('localization', 2, 384, 64, square=8, archs={
        'vgg11': Training(8, 30), 'resnet18': Training(4, 30), 'densenet121': Training(8, 30, 1e-3, 'cosine')}),
    'cls3d': Part('localization', 3, 192, 32, square=6, archs={'vgg11': Training(8, 30)}),
    'seg2d': Part('segmentation', 2, 48, 96, patch=64, archs={'unet': Training(8, 15, 3e-3, 'cosine'),
                                                             'resunet': Training(8, 15, 3e-3, 'cosine')}),
}


# ---------------------------------------------------------------------------------------------------------------
# Data and training
# ---------------------------------------------------------------------------------------------------------------

def write_data(name: str, part: Part) -> Path:
    "The part's data set under `_work/data/cam/<name>` (written once; seeded); its CSV."
    import medlab
    folder = DATA / name
    csv = folder / 'data.csv'
    if csv.is_file(): return csv
    if part.task == 'localization':
        return medlab.make_localization_data(folder, part.dimension, part.n_subjects, part.size, part.square, seed=0)
    return medlab.make_sample_data(folder, part.dimension, part.n_subjects, part.size, seed=0, task='segmentation')


def run_config(name: str, part: Part, arch: str, training: Training, csv: Path):
    "The `MedlabConfig` that trains `arch` on the part's data (a quarter of the subjects validate; no test split)."
    from medlab.config import MedlabConfig
    seg = part.task == 'segmentation'
    patch = part.patch or part.size
    return MedlabConfig(
        data_csv=str(csv), output_dir=str(RUNS / name / arch), seed=0,
        model={'architecture': arch, 'dimension': part.dimension, 'base_filters': training.base_filters,
               'class_list': [0, 1, 2] if seg else [0, 1]},
        patch_size=[patch] * part.dimension, batch_size=8, learning_rate=training.learning_rate,
        num_epochs=training.epochs, patience=training.epochs, scheduler={'type': training.scheduler},
        loss_function='dcce' if seg else 'cel', metrics=['dice', 'dice_per_label'] if seg else ['balanced_accuracy'],
        nested_training={'testing': 1, 'validation': -4}, q_samples_per_volume=4 if seg else 1, in_memory=True)


def trained_run(cfg, retrain: bool) -> dict:
    "Train `cfg` unless its run folder already finished with the same config; the validation curve and the best epoch."
    import medlab
    from medlab.run import RunFolder, config_differences
    import yaml
    run = RunFolder(cfg.output_dir)
    saved = run.path / run.config_file
    reuse = (not retrain and run.finished and saved.is_file()
             and not config_differences(cfg, yaml.safe_load(saved.read_text())) and cfg.num_epochs == run.config().num_epochs)
    started = time.perf_counter()
    if not reuse: medlab.train(cfg, resume=False)
    logs = run.logs('validation')
    metric = 'dice' if cfg.loss_function == 'dcce' else 'balanced_accuracy'
    best = logs.loc[logs[metric].idxmax()]
    return {'run': str(run.path), 'reused': reuse, 'train_seconds': None if reuse else round(time.perf_counter() - started, 1),
            'metric': metric, 'best_epoch': int(best['epoch']), 'best': round(float(best[metric]), 4),
            'curve': [round(float(v), 4) for v in logs[metric]],
            **({'dice_per_label': {k: round(float(best[k]), 4) for k in logs.columns if k.startswith('dice_')}}
               if metric == 'dice' else {})}


# ---------------------------------------------------------------------------------------------------------------
# What is explained
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    "One validation image, pre-processed as the run reads it, and the mask the map should point at."
    subject_id: str
    image: object   # (C, x, y[, z]) float32
    mask: object    # (x, y[, z]) bool


def read_mask(path: str | Path, dimension: int, value: int = 1):
    "The voxels of `path` equal to `value`, as (x, y[, z]) bool, the axis order of medlab's arrays."
    from medlab.io import read_image, squeeze_to, to_array
    return to_array(squeeze_to(read_image(path), dimension), None)[0] == value


def validation_cases(predictor, run_path: str, part: Part, csv: Path, max_subjects: int | None) -> list[Case]:
    "Class-1 validation subjects (segmentation: all validation subjects) with their true class-1 masks."
    from medlab.run import RunFolder
    subjects = RunFolder(run_path).split().validation
    if part.task == 'localization':
        subjects = [s for s in subjects if int(s.value) == 1]
        masks = [csv.parent / 'regions' / f'{s.subject_id}.nii.gz' for s in subjects]
    else: masks = [s.label for s in subjects]
    cases = [Case(s.subject_id, predictor.read(s), read_mask(m, part.dimension)) for s, m in zip(subjects, masks)]
    return cases[:max_subjects] if max_subjects else cases


def candidate_layers(arch: str, net) -> list[str]:
    "The layers measured for `arch`, in the order data flows: every convolution for vgg11 (and each block's output, after"
    " its norm and ReLU); for the deep nets each block's output and the last convolution of each stage."
    from medlab.explain import conv_layers
    names = [n for n, _ in net.named_modules()]
    convs = conv_layers(net)
    if arch == 'vgg11':
        return [x for c in convs for x in (c, c.removesuffix('.conv'))]
    if arch == 'resnet18':
        out = ['conv1']
        for stage in sorted({n.split('.')[0] for n in names if re.fullmatch(r'layer\d', n)}):
            blocks = sorted(n for n in names if re.fullmatch(rf'{stage}\.\d+', n))
            out += [*blocks[:-1], f'{blocks[-1]}.conv2', stage]   # the stage's output is its last block's
        return out
    if arch == 'densenet121':
        out = ['features.conv0']
        for n in names:
            if re.fullmatch(r'features\.denseblock\d+', n):
                last = [c for c in convs if c.startswith(n + '.')][-1]
                out += [last, n]
            elif re.fullmatch(r'features\.transition\d+', n): out.append(n)
        return out + ['features.norm5']
    if arch == 'unet':
        levels = [n for n in names if re.fullmatch(r'conv_0|down_\d|upcat_\d', n)]
        return [x for n in levels for x in (f'{n}.convs.conv_1.conv' if n != 'conv_0' else 'conv_0.conv_1.conv', n)] + ['final_conv']
    if arch == 'resunet':
        # MONAI's UNet nests each level as Sequential(down, SkipConnection(...), up): model(.1.submodule)*.0 is a level's
        # encoder block, .2 its decoder block (.2.0.conv the up-convolution); the innermost submodule is the bottom.
        downs = [n for n in names if re.fullmatch(r'model(\.1\.submodule)*\.0', n)]
        bottom = max((n for n in names if re.fullmatch(r'model(\.1\.submodule)+', n)), key=len)
        ups = sorted((n for n in names if re.fullmatch(r'model(\.1\.submodule)*\.2', n)), key=len, reverse=True)
        return [*downs, bottom, *[x for u in ups for x in (f'{u}.0.conv', u)]]
    return convs


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------

def localisation(heat, mask) -> dict:
    "Pointing game (the map's maximum inside the mask), the share of the map's mass inside it, where the maximum lies"
    " and whether it lies in a corner (within an eighth of the size from a border on every axis)."
    import numpy as np
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    total = float(heat.sum())
    corner = all(min(p, s - 1 - p) < s // 8 for p, s in zip(peak, heat.shape))
    return {'hit': bool(mask[peak]), 'share': float(heat[mask].sum()) / total if total > 0 else 0.0,
            'flat': bool(heat.max() == heat.min()), 'peak': [int(p) for p in peak], 'corner': corner}


def measure(predictor, cases: list[Case], method: str, layer: str, fixed_region: bool = False) -> list[dict]:
    "One row per case: `explain` of class 1 by `method` at `layer`, scored against the case's mask (an error: one row)."
    " `fixed_region` (segmentation): pass the model's own class-1 prediction as `region` instead of leaving it to"
    " `RegionScore`, which recomputes it from every image it scores (for occlusion: from every occluded image)."
    from medlab.explain import explain
    rows = []
    for case in cases:
        region = (predictor.predict_image(case.image).labels == 1) if fixed_region else None
        started = time.perf_counter()
        try: e = explain(predictor, case.image, method, target=1, layer=layer or None, region=region)
        except Exception as err:  # a layer a method cannot read is a finding, not the end of the benchmark
            rows.append({'subject': case.subject_id, 'method': method, 'layer': layer, 'error': f'{type(err).__name__}: {err}'[:300]})
            break
        rows.append({'subject': case.subject_id, 'method': method, 'layer': layer,
                     'seconds': time.perf_counter() - started, **localisation(e.map, case.mask)})
    leaked = release_leaked_cams()
    return [{**r, 'cams_leaked_by_group': leaked} for r in rows]


def release_leaked_cams() -> dict:
    "Free the CAMs `medlab.explain` leaves alive; how many there were and the MB of tensors they held. Each MONAI"
    " `ModelWithHooks` it builds (one per window of every Grad-CAM, Grad-CAM++, LayerCAM and guided Grad-CAM map) keeps"
    " the layer's output, whose autograd node holds the hooks that hold it: a cycle through C++ that `gc` cannot see,"
    " so every map keeps its copy of the network and the layer's output and gradient (24 GB after ~1,500 densenet121"
    " maps, when the kernel killed the first run). Clearing the stored tensors breaks the cycle. A workaround for the"
    " benchmark only; see benchmarks/README.md, \"Class activation maps\"."
    import gc
    from monai.visualize.class_activation_maps import ModelWithHooks
    count, tensors, cam = 0, {}, None
    for cam in [o for o in gc.get_objects() if isinstance(o, ModelWithHooks)]:
        held = [*cam.activations.values(), *cam.gradients.values(), *cam.model.parameters(), *cam.model.buffers()]
        tensors.update({t.data_ptr(): t.numel() * t.element_size() for t in held})
        cam.activations.clear(); cam.gradients.clear(); cam.score = None; count += 1
    cam = held = None
    gc.collect()
    return {'cams': count, 'mb': round(sum(tensors.values()) / 2**20, 1)}


def centre_logits(model):
    "Make `model` give its logits minus their mean over the classes (the same probabilities and decisions), so that a"
    " map of class 1 follows what raises class 1 against the others, not what raises every logit; the hook's handle."
    return model.register_forward_hook(lambda module, inputs, out: out - out.mean(1, keepdim=True))


def summarise(rows: list[dict]) -> list[dict]:
    "Per (target, method, layer): maps, pointing hit rate, mean mass share, mean seconds per map, flat maps, the error if any."
    import numpy as np
    table = {}
    for r in rows: table.setdefault((r['target'], r['method'], r['layer']), []).append(r)
    out = []
    for (target, method, layer), rs in table.items():
        ok = [r for r in rs if 'error' not in r]
        errors = [r['error'] for r in rs if 'error' in r]
        out.append({'target': target, 'method': method, 'layer': layer, 'maps': len(ok),
                    'hit_rate': round(float(np.mean([r['hit'] for r in ok])), 3) if ok else None,
                    'mean_share': round(float(np.mean([r['share'] for r in ok])), 3) if ok else None,
                    'seconds': round(float(np.mean([r['seconds'] for r in ok])), 4) if ok else None,
                    'corner_rate': round(float(np.mean([r['corner'] for r in ok])), 3) if ok else None,
                    'flat': sum(r['flat'] for r in ok), **({'error': errors[0]} if errors else {})})
    return out


def guided_vs_saliency(predictor, case: Case) -> float:
    "Largest difference between the guided-backpropagation and the plain-gradient map of one case (0: the same map)."
    import numpy as np
    from medlab.explain import explain
    a, b = (explain(predictor, case.image, m, target=1).map for m in ('guided_backprop', 'saliency'))
    return float(np.abs(a - b).max())


def print_table(title: str, summary: list[dict], default: tuple[str, str], chance: float):
    "The table of one architecture; `*` marks medlab's current default method and layer."
    print(f'\n{title}  (chance: hit rate = share = {chance:.3f}, the mask\'s mean area fraction)')
    print(f"| method | layer | maps | pointing hit rate | mean mass share | peak in a corner | s/map |")
    print('|---|---|---|---|---|---|---|')
    for r in summary:
        mark = ' *' if (r['method'], r['layer']) == default else ''
        if 'error' in r and not r['maps']:
            print(f"| {r['method']} | {r['layer'] or '(input)'}{mark} | 0 | error: {r['error'][:90]} | | | |"); continue
        flat = f" ({r['flat']} flat)" if r['flat'] else ''
        print(f"| {r['method']} | {r['layer'] or '(input)'}{mark} | {r['maps']} | {r['hit_rate']:.2f}{flat} | {r['mean_share']:.3f} "
              f"| {r['corner_rate']:.2f} | {r['seconds']:.3f} |")


def matrix(summary: list[dict], default: tuple[str, str], target: str = 'logit') -> list[str]:
    "A compact markdown table of one architecture: a row per layer, a column per layer method, each cell"
    " `pointing hit rate / mean mass share`, then a row per method that reads the input; `*` marks the default."
    rows = [r for r in summary if r['target'] == target]
    layer_methods = [m for m in dict.fromkeys(r['method'] for r in rows if r['layer'])]
    cell = lambda r: (f"{r['hit_rate']:.2f} / {r['mean_share']:.2f}" if r['maps'] else 'error') + (' *' if (r['method'], r['layer']) == default else '')
    by = {(r['method'], r['layer']): r for r in rows}
    seconds = {m: statistics.median(r['seconds'] for r in rows if r['method'] == m and r['maps'])
               for m in dict.fromkeys(r['method'] for r in rows)}
    out = ['| layer | ' + ' | '.join(layer_methods) + ' |', '|---|' + '---|' * len(layer_methods)]
    for layer in dict.fromkeys(r['layer'] for r in rows if r['layer']):
        out.append(f'| `{layer}` | ' + ' | '.join(cell(by[m, layer]) if (m, layer) in by else '' for m in layer_methods) + ' |')
    for r in rows:
        if not r['layer']: out.append(f"| (input) {r['method']} | {cell(r)} |" + ' |' * (len(layer_methods) - 1))
    out.append('')
    out.append('s/map (median over the layers): ' + ', '.join(f'{m} {v:.3f}' for m, v in seconds.items()))
    return out


def print_tables(path: Path):
    "The compact tables of a results JSON (what benchmarks/README.md shows)."
    results = json.loads(Path(path).read_text())
    for a in results['architectures']:
        t = a['training']
        print(f"\n### {results['part']} {a['architecture']} (base_filters {a['config']['model']['base_filters']}, "
              f"validation {t['metric']} {t['best']}, {a['subjects']} subjects, chance {a['chance']:.3f})\n")
        print('\n'.join(matrix(a['summary'], tuple(a['default']))))
        fixed = [r for r in a['summary'] if r['target'] == 'logit, region fixed']
        if fixed: print(f"\nocclusion with the region fixed: {fixed[0]['hit_rate']:.2f} / {fixed[0]['mean_share']:.2f}")


# ---------------------------------------------------------------------------------------------------------------
# One part
# ---------------------------------------------------------------------------------------------------------------

TARGETS = {'logit': 'the logit of class 1 (what medlab explains)',
           'centred': 'the logit of class 1 minus the mean logit (`centre_logits`; the same predictions)'}


def run_arch(name: str, part: Part, arch: str, csv: Path, args) -> dict:
    "Train (or reuse) one architecture, measure every method and candidate layer, print its tables; its results."
    import numpy as np
    import medlab
    from medlab.explain import LAYER_METHODS, METHODS, DEFAULT_METHOD, default_layer
    cfg = run_config(name, part, arch, part.archs[arch], csv)
    training = trained_run(cfg, args.retrain)
    print(f"{name} {arch}: best validation {training['metric']} {training['best']} at epoch {training['best_epoch']}"
          f" ({'reused' if training['reused'] else 'trained in %s s' % training['train_seconds']})", flush=True)
    predictor = medlab.load_run(cfg.output_dir, device='cpu')
    cases = validation_cases(predictor, cfg.output_dir, part, csv, args.max_subjects)
    predicted = [int(np.asarray(predictor.predict_image(c.image).labels).reshape(-1)[0]) for c in cases] if part.task == 'localization' else []
    layers = candidate_layers(arch, predictor.model)
    methods = args.methods or list(METHODS)
    default = (DEFAULT_METHOD, default_layer(arch, predictor.model))
    chance = float(np.mean([c.mask.mean() for c in cases]))
    rows, started = [], time.perf_counter()
    for target in args.targets:
        hook = centre_logits(predictor.model) if target == 'centred' else None
        for method in methods:
            for layer in (layers if method in LAYER_METHODS else ['']):
                rows += [{'target': target, **r} for r in measure(predictor, cases, method, layer)]
        if hook is not None: hook.remove()
        print_table(f'{name} {arch}, target: {TARGETS[target]} (base_filters {cfg.model.base_filters}; {len(cases)} subjects; '
                    f'{training["metric"]} {training["best"]})', [r for r in summarise(rows) if r['target'] == target], default, chance)
    if part.task == 'segmentation' and 'occlusion' in methods:
        fixed = [{'target': 'logit, region fixed', **r} for r in measure(predictor, cases, 'occlusion', '', fixed_region=True)]
        rows += fixed
        print_table(f'{name} {arch}, occlusion with the region fixed to the unoccluded prediction of class 1',
                    summarise(fixed), default, chance)
    gap = guided_vs_saliency(predictor, cases[0]) if {'guided_backprop', 'saliency'} <= set(methods) else None
    if gap is not None: print(f'guided_backprop - saliency, largest difference on {cases[0].subject_id}: {gap:.2e}')
    return {'architecture': arch, 'config': cfg.model_dump(mode='json'), 'training': training, 'subjects': len(cases),
            'predicted_class_1': sum(p == 1 for p in predicted) if predicted else None, 'chance': round(chance, 4),
            'default': list(default), 'layers': layers, 'guided_minus_saliency': gap,
            'measure_seconds': round(time.perf_counter() - started, 1), 'summary': summarise(rows), 'rows': rows}


def git_commit() -> str:
    "The repository's commit, with '+dirty' when the working tree differs from it."
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ('+dirty' if dirty else '')
    except OSError: return 'unknown'


def run_part(name: str, args) -> Path:
    "Every architecture of one part; the JSON written."
    part = PARTS[name]
    csv = write_data(name, part)
    archs = [a for a in (args.archs or part.archs) if a in part.archs]
    started, load = time.perf_counter(), os.getloadavg()[0]
    results = [run_arch(name, part, a, csv, args) for a in archs]
    import resource
    out = {'part': name, 'load_average_1min': [round(load, 2), round(os.getloadavg()[0], 2)],
           'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), 'settings': asdict(part), 'threads': os.environ.get('OMP_NUM_THREADS'), 'commit': git_commit(),
           'python': platform.python_version(), 'max_subjects': args.max_subjects, 'methods': args.methods, 'targets': args.targets,
           'seconds': round(time.perf_counter() - started, 1), 'architectures': results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"cam_known_answer_{name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f'\n{name}: {out["seconds"]} s; results in {path.relative_to(ROOT)}', flush=True)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--part', choices=[*PARTS, 'all'], default='all')
    p.add_argument('--archs', type=lambda s: s.split(','), default=None, help='comma-separated; default: every one of the part')
    p.add_argument('--methods', type=lambda s: s.split(','), default=None, help='comma-separated; default: every registered method')
    p.add_argument('--max-subjects', type=int, default=24, help='explain at most this many validation subjects (0: all)')
    p.add_argument('--targets', type=lambda s: s.split(','), default=['logit'], help=f'comma-separated, of {", ".join(TARGETS)}')
    p.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS/MKL_NUM_THREADS (set before torch loads)')
    p.add_argument('--retrain', action='store_true', help='train the run folders again')
    p.add_argument('--tables', type=Path, default=None, help='print the compact tables of a results JSON and stop')
    args = p.parse_args(argv)
    if args.tables: return print_tables(args.tables)
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(args.threads)
    os.environ.setdefault('TQDM_DISABLE', '1')  # tqdm's bars would bury the tables
    import warnings  # two harmless warnings repeated once per map: MONAI's occlusion indexing, the hook on the first layer
    warnings.filterwarnings('ignore', message='Using a non-tuple sequence')
    warnings.filterwarnings('ignore', message='Full backward hook is firing')
    warnings.filterwarnings('ignore', message='`torch.distributed.reduce_op` is deprecated')  # gc.get_objects meets it
    sys.path.insert(0, str(ROOT))
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    for name in (PARTS if args.part == 'all' else [args.part]): run_part(name, args)


if __name__ == '__main__':
    main()
