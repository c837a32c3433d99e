"""Does a planned run beat a hand-written one (issue 24)? `medlab.plan` + a 15-minute CPU budget against a GaNDLF-style
default config with the same budget, on a generated 3D multi-class set, scored on held-out subjects; and what each part
of the planned recipe adds (ablations: deep supervision, augmentation preset, normalisation, mirroring TTA, post-processing).

    python benchmarks/plan_quality.py --quick                  # smoke run: 8+4 subjects of 32x32x32, 0.5-minute budgets (~4 min)
    python benchmarks/plan_quality.py                          # 24+10 subjects, 15-minute budgets: 5 trainings, ~80 min
    python benchmarks/plan_quality.py --only planned,default   # the goal alone (~32 min)
    python benchmarks/plan_quality.py --minutes 15 --ablation-minutes 5   # shorter retrained ablations

Data (`make_data`, seeded by --seed): --subjects training + --test held-out subjects of 64x64x40 voxels at (0.8, 0.8, 2.0) mm,
1 channel, labels 0..3: a smooth random organ (class 1, ~6 % of the volume) holding a small structure (class 2, ~1 %) with
another on its border (class 3, ~1 %), inside a body whose outside is exactly 0 (a masked background, as skull-stripped MR:
about a third of the voxels); class intensities that partly overlap (organ 150, class 3 175, class 2 200, tissue 100, noise
sd 18, texture), a smooth multiplicative bias field, 3-5 small organ-like distractor blobs outside the organ (false-positive
components: what keep-largest-component post-processing removes), a per-subject intensity scale drawn log-uniformly
(stratified) over x0.1..x10 plus an offset, and files stored as uint8 (rescaled into 1..255), int16 and float32 in turn.

Runs (each one `medlab.train` in this process, --threads torch threads, 1 by default; every training has the same
`budget: {minutes: M}`, so both configs get the same wall time and the budget sizes their epochs):
- `planned`: `medlab.plan(train.csv, planned.yaml, minutes=M)`, then that YAML trained unchanged.
- `default`: what a user writes by hand, GaNDLF-style: 3D `unet`, base_filters 16, instance norm, per-image z-score
  (`data_preprocessing: {normalize: }`), flips on every axis only, `dcce`, Adam lr 1e-3 (constant), patch 64x64x32, batch 2,
  medlab's other defaults (8 patches a subject, label sampler, patience 10 as in the planned YAML).
- retrained ablations (the planned YAML with one part switched off, --ablation-minutes): `no_deep_supervision`,
  `flip_only_augmentation` (the default's flips instead of the preset) or, when the plan already chose mirroring only
  (a short budget), `full_augmentation` (the plan's whole preset instead), `per_image_zscore` (the default's normalisation
  instead of the planned one); --ablation-epochs N trains each for N epochs instead (equal work, whatever the load); inference-only ablations of the planned run (no retraining): `no_tta` (`p.mirror_axes = ()`),
  `no_postprocessing` (`p.largest_component = []`). An ablation that would equal the planned run is reported as skipped.
In every run `export.enabled` is false (the OpenVINO export after training changes no prediction; it only costs time).
Both configs split train.csv into training and validation themselves (the same seeded split).

Scoring: each run's predictor (`medlab.load_run(run_dir)`, its best checkpoint, with what the run folder replays) predicts
every test subject; Dice of classes 1, 2, 3 computed here against the test labels (both empty: 1), averaged over subjects.
Prints the table (run, mean Dice, Dice per class, delta vs planned, epochs, seconds) and MET/MISSED for the goal
"planned mean test Dice > default mean test Dice"; saves benchmarks/_work/results/plan_quality_<time>.json.
Scratch (data, YAMLs, run folders) in benchmarks/_work/plan_quality/.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

import medlab
from medlab.core.config import InferenceConfig, ModelConfig
from medlab.datasets.io import read_image, to_array
from medlab.engine.postprocessing import class_dice
from medlab.workflows.plan import augmentation

HERE = Path(__file__).resolve().parent
WORK = HERE / '_work' / 'plan_quality'
RESULTS = HERE / '_work' / 'results'
CLASSES = [1, 2, 3]
SPACING = (0.8, 0.8, 2.0)
DTYPES = ['uint8', 'int16', 'float32']
MEANS = {'tissue': 100.0, 1: 150.0, 2: 200.0, 3: 175.0}   # organ and class 3 overlap (25 apart, noise sd 18)
NOISE_SD = 18.0
FLIPS = {'flip': {'axis': [0, 1, 2], 'probability': 0.5}}
INTENSITY_KEYS = ('normalize', 'rescale', 'clip', 'threshold')   # data_preprocessing keys that set the intensity scale


# ---------------------------------------------------------------- data
def smooth_noise(rng, shape, sigma_mm: float) -> np.ndarray:
    "Gaussian noise smoothed by `sigma_mm` (per axis in voxels of SPACING), scaled to sd 1."
    field = ndimage.gaussian_filter(rng.standard_normal(shape), [sigma_mm / s for s in SPACING], mode='wrap')
    return field / (field.std() + 1e-8)


def blob(coords: np.ndarray, center, radii, rng, wobble: float = 0.2) -> np.ndarray:
    "A randomly rotated ellipsoid (mm) whose surface is pushed in and out by smooth noise."
    rot = Rotation.random(random_state=rng).as_matrix()
    r = np.linalg.norm(((coords - np.asarray(center)) @ rot.T) / np.asarray(radii), axis=-1)
    return r + wobble * smooth_noise(rng, r.shape, 0.5 * min(radii)) < 1


def unit(rng, flat: bool = False) -> np.ndarray:
    "A random direction (in the x-y plane when `flat`)."
    v = rng.standard_normal(3)
    if flat: v[2] = 0
    return v / np.linalg.norm(v)


def make_subject(rng, shape, scale: float) -> tuple[np.ndarray, np.ndarray]:
    "One subject's image (float, x y z, 0 outside the body) and labels (uint8)."
    coords = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, SPACING)], indexing='ij'), -1)
    fov = np.array(shape) * SPACING
    mid = fov / 2
    body = np.linalg.norm((coords[..., :2] - mid[:2]) / (0.46 * fov[:2] * rng.uniform(0.95, 1.05, 2)), axis=-1) < 1
    organ_r = 0.26 * fov * [1, 1, 1.08] * rng.uniform(0.9, 1.08, 3)
    organ_c = mid + rng.uniform(-0.07, 0.07, 3) * fov
    organ = blob(coords, organ_c, organ_r, rng) & body
    inner_dir = unit(rng)
    inner = blob(coords, organ_c + 0.35 * organ_r * inner_dir, 0.55 * organ_r * rng.uniform(0.9, 1.1, 3), rng) & organ
    border_dir = unit(rng, flat=True)
    if border_dir @ inner_dir > 0: border_dir = -border_dir   # away from the inner structure
    border = blob(coords, organ_c + 0.95 * organ_r * border_dir, 0.55 * organ_r * rng.uniform(0.9, 1.1, 3), rng) & body
    labels = np.zeros(shape, np.uint8)
    labels[organ], labels[border], labels[inner] = 1, 3, 2
    far = ndimage.distance_transform_edt(labels == 0, sampling=SPACING) > 6
    distractors = np.zeros(shape, bool)
    for _ in range(rng.integers(3, 6)):   # organ-like blobs away from the organ: false positives to remove
        inside = np.argwhere(far & body)
        c = coords[tuple(inside[rng.integers(len(inside))])]
        distractors |= blob(coords, c, rng.uniform(0.05, 0.08) * fov.mean() * np.array([1, 1, 1.3]), rng) & far & body
    mean = np.where(body, MEANS['tissue'], 0.0)
    mean[distractors] = MEANS[1]
    for c in CLASSES: mean[labels == c] = MEANS[c]
    texture = 8 * smooth_noise(rng, shape, 2.0)
    bias = np.exp(0.2 * smooth_noise(rng, shape, 0.35 * fov.mean()))
    image = (mean + texture + NOISE_SD * rng.standard_normal(shape)) * bias
    image = np.clip(image, 10, None) * scale + rng.uniform(0, 100) * scale   # per-subject scale and offset
    return np.where(body, image, 0.0), labels


def stored(image: np.ndarray, dtype: str) -> np.ndarray:
    "The image in `dtype`: uint8 rescaled into 1..255 inside the body, int16 rounded, float32 as is; 0 stays 0."
    if dtype == 'uint8': return np.where(image > 0, np.clip(np.round(image / image.max() * 255), 1, 255), 0).astype(np.uint8)
    if dtype == 'int16': return np.where(image > 0, np.clip(np.round(image), 1, 32767), 0).astype(np.int16)
    return image.astype(np.float32)


def write_nifti(arr: np.ndarray, path: Path):
    "An (x, y, z) array as NIfTI at SPACING, in the array's dtype."
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(path))


def make_split(folder: Path, name: str, n: int, shape, seed: int, first: int) -> tuple[Path, list[dict]]:
    "`n` subjects (IDs from `first`) and their manifest `name`.csv; scales log-uniform over x0.1..x10, one per stratum."
    folder.mkdir(parents=True, exist_ok=True)
    strata = np.random.default_rng([seed, first, 7]).permutation(n)
    rows, facts = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, first + i])
        scale = 10 ** (2 * (strata[i] + rng.uniform()) / n - 1)
        image, labels = make_subject(rng, shape, scale)
        sid, dtype = f'sub{first + i:03d}', DTYPES[(first + i) % 3]
        img_path, lab_path = folder / f'{sid}_image.nii.gz', folder / f'{sid}_label.nii.gz'
        write_nifti(stored(image, dtype), img_path)
        write_nifti(labels, lab_path)
        rows.append({'SubjectID': sid, 'Channel_0': str(img_path), 'Label': str(lab_path)})
        facts.append({'subject': sid, 'scale': round(scale, 4), 'dtype': dtype})
    manifest = folder / f'{name}.csv'
    with open(manifest, 'w', newline='') as f:
        w = csv.DictWriter(f, ['SubjectID', 'Channel_0', 'Label']); w.writeheader(); w.writerows(rows)
    return manifest, facts


def make_data(folder: Path, subjects: int = 24, test: int = 10, shape=(64, 64, 40), seed: int = 0) -> tuple[Path, Path]:
    "Generate (once) the training and test subjects in `folder`; their manifests."
    train_csv, test_csv = folder / 'train.csv', folder / 'test.csv'
    if train_csv.exists() and test_csv.exists(): return train_csv, test_csv
    make_split(folder / 'test', 'test', test, shape, seed, first=subjects)
    make_split(folder / 'train', 'train', subjects, shape, seed, first=0)
    shutil.move(folder / 'train' / 'train.csv', train_csv); shutil.move(folder / 'test' / 'test.csv', test_csv)
    return train_csv, test_csv


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f: return list(csv.DictReader(f))


def describe_data(train_csv: Path, test_csv: Path) -> dict:
    "What the generated set holds, read back from the files: class shares, dtypes, each subject's stored intensity range."
    rows = read_manifest(train_csv) + read_manifest(test_csv)
    shares, dtypes, p99, zero = {c: [] for c in CLASSES}, {}, [], []
    for r in rows:
        img = sitk.ReadImage(r['Channel_0'])
        arr, lab = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(sitk.ReadImage(r['Label']))
        for c in CLASSES: shares[c].append(float((lab == c).mean()))
        name = img.GetPixelIDTypeAsString()
        dtypes[name] = dtypes.get(name, 0) + 1
        p99.append(float(np.percentile(arr[arr > 0], 99)))
        zero.append(float((arr == 0).mean()))
    img = sitk.ReadImage(rows[0]['Channel_0'])
    return {'subjects': len(read_manifest(train_csv)), 'test_subjects': len(read_manifest(test_csv)), 'size': list(img.GetSize()),
            'spacing': list(img.GetSpacing()), 'class_share_mean': {c: round(float(np.mean(v)), 4) for c, v in shares.items()},
            'class_share_range': {c: [round(min(v), 4), round(max(v), 4)] for c, v in shares.items()}, 'dtypes': dtypes,
            'p99_min': round(min(p99), 2), 'p99_max': round(max(p99), 2), 'p99_fold': round(max(p99) / min(p99), 1),
            'zero_share': round(float(np.mean(zero)), 3)}


def data_line(d: dict) -> str:
    shares = ', '.join(f"class {c} {100 * d['class_share_mean'][c]:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"
                       for c, (lo, hi) in d['class_share_range'].items())
    return (f"data: {d['subjects']}+{d['test_subjects']} subjects of {d['size']} at {[round(s, 2) for s in d['spacing']]} mm; {shares}; "
            f"dtypes {d['dtypes']}; stored 99th percentiles {d['p99_min']:g}..{d['p99_max']:g} ({d['p99_fold']:g}-fold); "
            f"{100 * d['zero_share']:.0f}% zero background")


# ---------------------------------------------------------------- configs
def default_raw(train_csv: Path, out: Path, minutes: float, shape) -> dict:
    "The hand-written GaNDLF-style config (see the docstring); patch 64x64x32, cut to the image (multiples of 16) in --quick."
    patch = [min(64, n // 16 * 16) for n in shape[:2]] + [min(32, shape[2] // 16 * 16)]
    return {'data_csv': str(train_csv), 'output_dir': str(out),
            'model': {'dimension': 3, 'architecture': 'unet', 'num_channels': 1, 'class_list': [0, *CLASSES], 'base_filters': 16,
                      'norm_type': 'instance'},
            'patch_size': patch, 'batch_size': 2, 'data_preprocessing': {'normalize': None}, 'data_augmentation': dict(FLIPS),
            'loss_function': 'dcce', 'optimizer': {'type': 'adam'}, 'learning_rate': 1e-3, 'metrics': ['dice', 'dice_per_label'],
            'num_epochs': 1000, 'budget': {'minutes': minutes}, 'export': {'enabled': False}}


def planned_raw(yaml_path: Path, out: Path, minutes: float) -> dict:
    "The planned YAML as a raw mapping (paths made absolute), its run folder `out`, export off, the budget `minutes`."
    raw = medlab.load_config(yaml_path).model_dump(mode='json', exclude_unset=True)
    return {**raw, 'output_dir': str(out), 'export': {'enabled': False}, 'budget': {'minutes': minutes}}


def ablations(planned: dict) -> dict[str, tuple[dict | None, str]]:
    "Each retrained ablation: its raw config (None: skipped) and a note."
    out = {}
    if 'deep_supervision' not in ModelConfig.model_fields:
        out['no_deep_supervision'] = None, 'skipped: this medlab has no model.deep_supervision'
    elif not planned['model'].get('deep_supervision'):
        out['no_deep_supervision'] = None, 'skipped: the plan has no deep supervision'
    else:
        out['no_deep_supervision'] = {**planned, 'model': {**planned['model'], 'deep_supervision': False}}, 'model.deep_supervision: false'
    aug = planned.get('data_augmentation') or {}
    out['flip_only_augmentation'] = ((None, 'skipped: the plan already flips only') if aug == FLIPS else
                                     ({**planned, 'data_augmentation': dict(FLIPS)}, f'data_augmentation: flips only (not {sorted(aug)})'))
    full = augmentation({'dimension': planned['model']['dimension'], 'channels': [{'rgb': False}]}).value   # the plan's whole preset
    out['full_augmentation'] = ((None, 'skipped: the plan already has the whole preset') if aug == full else
                                ({**planned, 'data_augmentation': full}, f'data_augmentation: the whole preset {sorted(full)} (not {sorted(aug)})'))
    pre = planned.get('data_preprocessing') or {}
    kept = {k: v for k, v in pre.items() if not k.startswith(INTENSITY_KEYS)}
    zscore = {**kept, 'normalize': None}
    planned_step = sorted(set(pre) - set(kept))
    out['per_image_zscore'] = ((None, 'skipped: the plan already z-scores each image') if planned_step == ['normalize'] else
                               ({**planned, 'data_preprocessing': zscore}, f'normalize instead of {planned_step}'))
    return out


# ---------------------------------------------------------------- runs and scores
def score(predictor, test_rows: list[dict]) -> dict:
    "Mean Dice per class over the test subjects, and its mean over classes."
    per = {c: [] for c in CLASSES}
    for r in test_rows:
        labels = np.asarray(predictor.predict([r['Channel_0']], r['SubjectID']).labels)
        truth = to_array(read_image(r['Label']), np.uint8)[0]   # (x, y, z), the predictor's order
        if labels.shape != truth.shape: raise ValueError(f"{r['SubjectID']}: prediction {labels.shape} but label {truth.shape}")
        for c in CLASSES: per[c].append(class_dice(labels, truth, c))   # medlab's own: both empty count 1
    by_class = {c: round(float(np.mean(v)), 4) for c, v in per.items()}
    return {'dice': round(float(np.mean(list(by_class.values()))), 4), 'dice_per_class': by_class}


def inference_state(p) -> dict:
    return {'mirror_axes': list(getattr(p, 'mirror_axes', ()) or ()), 'largest_component': list(getattr(p, 'largest_component', []) or [])}


def train_and_score(name: str, raw: dict, test_rows: list[dict], note: str = '') -> tuple[dict, object]:
    "Train `raw` from scratch, score its predictor on the test subjects; the row and the predictor."
    out = Path(raw['output_dir'])
    shutil.rmtree(out, ignore_errors=True)
    cfg = medlab.MedlabConfig.model_validate(raw)
    t0 = time.time()
    result = medlab.train(cfg, resume=False)
    seconds = time.time() - t0
    p = medlab.load_run(out)
    row = {'run': name, **score(p, test_rows), 'epochs': result.epochs_run, 'best_epoch': result.best_epoch,
           'train_s': round(seconds, 1), 'retrained': True, **inference_state(p), 'note': note}
    print(json.dumps(row), flush=True)
    return row, p


def inference_ablations(p, test_rows: list[dict], planned_row: dict) -> list[dict]:
    "The planned run's predictor with mirroring off, then with post-processing off (no retraining)."
    rows = []
    for name, attr, off, key in [('no_tta', 'mirror_axes', (), 'mirror_axes'), ('no_postprocessing', 'largest_component', [], 'choose_postprocessing')]:
        base = {'run': name, 'epochs': planned_row['epochs'], 'best_epoch': planned_row['best_epoch'], 'train_s': 0.0, 'retrained': False}
        if key not in InferenceConfig.model_fields or not hasattr(p, attr):
            rows.append({**base, 'note': f'skipped: this medlab has no inference_mechanism.{key} / Predictor.{attr}'}); continue
        before = getattr(p, attr)
        if not before:
            rows.append({**base, 'note': f'skipped: the planned run has no {attr} ({key} off or chose none)'}); continue
        setattr(p, attr, off)
        try: rows.append({**base, **score(p, test_rows), **inference_state(p), 'note': f'{attr} {list(before)} -> {list(off)}'})
        finally: setattr(p, attr, before)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    ref = next((r['dice'] for r in rows if r['run'] == 'planned' and 'dice' in r), None)
    head = ['run', 'mean Dice', *[f'Dice {c}' for c in CLASSES], 'vs planned', 'epochs', 'train s', 'note']
    lines = [' | '.join(head), ' | '.join('---' for _ in head)]
    for r in rows:
        if 'dice' not in r:
            lines.append(' | '.join([r['run'], '-', *['-'] * len(CLASSES), '-', '-', '-', r.get('note', '')])); continue
        delta = '' if ref is None or r['run'] == 'planned' else f"{r['dice'] - ref:+.4f}"
        lines.append(' | '.join([r['run'], f"{r['dice']:.4f}", *[f"{r['dice_per_class'][c]:.4f}" for c in CLASSES], delta,
                                 str(r['epochs']), f"{r['train_s']:g}", r.get('note', '')]))
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--subjects', type=int, default=24, help='training subjects (split into train/validation by each run)')
    ap.add_argument('--test', type=int, default=10, help='held-out test subjects')
    ap.add_argument('--seed', type=int, default=0, help="the data's seed")
    ap.add_argument('--minutes', type=float, default=15, help='budget of the planned and the default run')
    ap.add_argument('--ablation-minutes', type=float, default=None, help='budget of each retrained ablation (default: --minutes)')
    ap.add_argument('--ablation-epochs', type=int, default=None, help='retrained ablations train exactly this many epochs (no '
                    "budget): the planned run's epochs give an equal-work ablation that another job's load cannot change")
    ap.add_argument('--plan-yaml', default=None, help="reuse this planned YAML (an earlier run's) instead of planning again: "
                    'planning times the network here, so a busy machine could plan another one')
    ap.add_argument('--only', default=None, help='comma-separated runs: planned, default, no_deep_supervision, flip_only_augmentation, full_augmentation, '
                    'per_image_zscore, no_tta, no_postprocessing (default: all)')
    ap.add_argument('--quick', action='store_true', help='smoke run: 8+4 subjects of 32x32x32, 0.5-minute budgets')
    ap.add_argument('--threads', type=int, default=1, help="torch's threads (1: steady on a machine shared with other jobs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = (32, 32, 32) if args.quick else (64, 64, 40)   # unet with instance norm needs 32+ a side
    if args.quick: args.subjects, args.test, args.minutes = 8, 4, 0.5
    minutes = args.minutes
    ab_minutes = args.ablation_minutes if args.ablation_minutes is not None else minutes
    every = ['planned', 'default', 'no_deep_supervision', 'flip_only_augmentation', 'full_augmentation', 'per_image_zscore', 'no_tta',
             'no_postprocessing']
    only = every if not args.only else [s.strip() for s in args.only.split(',')]
    if unknown := set(only) - set(every): ap.error(f"--only: unknown run(s) {sorted(unknown)}; choose from {', '.join(every)}")
    missing = [k for k, fields in [('model.deep_supervision', ModelConfig.model_fields), ('inference_mechanism.mirror_axes', InferenceConfig.model_fields),
                                   ('inference_mechanism.choose_postprocessing', InferenceConfig.model_fields)] if k.split('.')[1] not in fields]
    if missing: print(f"note: this medlab has no {', '.join(missing)}: the ablations that need them are reported as skipped")

    tag = f"{'x'.join(map(str, shape))}_{args.subjects}+{args.test}_seed{args.seed}"
    t0 = time.time()
    train_csv, test_csv = make_data(WORK / 'data' / tag, args.subjects, args.test, shape, args.seed)
    facts = describe_data(train_csv, test_csv)
    print(f'{data_line(facts)} ({time.time() - t0:.0f} s)', flush=True)
    test_rows = read_manifest(test_csv)
    runs = WORK / 'runs' / tag
    rows, planned, p_planned, plan_info = [], None, None, {}
    needs_plan = [r for r in only if r != 'default']
    if needs_plan:
        yaml_path = Path(args.plan_yaml) if args.plan_yaml else WORK / f'planned_{tag}.yaml'
        if args.plan_yaml: plan_info = {'yaml': str(yaml_path), 'reused': True}; print(f'reusing the plan {yaml_path}', flush=True)
        else:
            t1 = time.time()
            plan = medlab.plan(train_csv, yaml_path, minutes=minutes, output_dir=runs / 'planned')
            plan_info = {'plan_s': round(time.time() - t1, 1), 'yaml': str(yaml_path), 'expected': plan.expected,
                         'decisions': {d.key: d.value for d in plan.decisions if d.key not in ('data_csv', 'output_dir')}}
            print(f"planned {yaml_path} in {plan_info['plan_s']} s: expected {plan.expected}", flush=True)
        planned = planned_raw(yaml_path, runs / 'planned', minutes)
    if 'planned' in only or {'no_tta', 'no_postprocessing'} & set(only):
        row, p_planned = train_and_score('planned', planned, test_rows, 'medlab.plan, unchanged')
        rows.append(row)
    if 'default' in only:
        rows.append(train_and_score('default', default_raw(train_csv, runs / 'default', minutes, shape), test_rows,
                                    'hand-written: unet 16, z-score, flips')[0])
    if p_planned is not None:
        rows += [r for r in inference_ablations(p_planned, test_rows, rows[0]) if r['run'] in only]
    if planned is not None:
        for name, (raw, note) in ablations(planned).items():
            if name not in only: continue
            if raw is None: rows.append({'run': name, 'note': note}); print(f'{name}: {note}', flush=True); continue
            raw = {**raw, 'output_dir': str(runs / name), 'budget': {'minutes': ab_minutes}}
            if args.ablation_epochs:   # equal work: the planned run's epochs, whatever the machine's load
                raw = {**{k: v for k, v in raw.items() if k != 'budget'}, 'num_epochs': args.ablation_epochs}
                note += f' ({args.ablation_epochs} epochs, no budget)'
            rows.append(train_and_score(name, raw, test_rows, note)[0])

    print('\n' + table(rows))
    by = {r['run']: r for r in rows if 'dice' in r}
    goal = None
    if 'planned' in by and 'default' in by:
        goal = 'MET' if by['planned']['dice'] > by['default']['dice'] else 'MISSED'
        print(f"\ngoal: planned mean test Dice > default mean test Dice: {by['planned']['dice']:.4f} vs {by['default']['dice']:.4f} "
              f"({by['planned']['dice'] - by['default']['dice']:+.4f}): {goal}")
    machine = f'{platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}'
    print(f'\n{machine}; {time.time() - t0:.0f} s in all')
    out = RESULTS / f'plan_quality_{time.strftime("%Y%m%d_%H%M%S")}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'args': vars(args), 'minutes': minutes, 'ablation_minutes': ab_minutes, 'data': facts, 'plan': plan_info,
                               'rows': rows, 'goal': goal, 'machine': machine, 'seconds': round(time.time() - t0, 1)}, indent=1, default=str))
    print(f'saved {out}')


if __name__ == '__main__':
    main()
