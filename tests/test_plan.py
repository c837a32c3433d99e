"""medlab.plan (issue 24): a dataset fingerprint turned into a config by nnU-Net's kind of rules, on generated sets whose
right answers are known, and a planned config trained through templates/train.ipynb unchanged."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import SimpleITK as sitk

import medlab
from medlab.engine.run import RunFolder
from conftest import TEMPLATES


def write(arr: np.ndarray, path: Path, spacing, dtype=sitk.sitkFloat32) -> str:
    "`arr` (x, y[, z]) as a NIfTI file with `spacing`."
    img = sitk.Cast(sitk.GetImageFromArray(np.ascontiguousarray(arr.T)), dtype)
    img.SetSpacing(tuple(float(s) for s in spacing))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return str(path)


def volumes(folder: Path, n: int, shape, spacing, make) -> Path:
    "A manifest of `n` subjects whose image and mask `make(rng)` returns, on `spacing`."
    rng, rows = np.random.default_rng(0), []
    for i in range(n):
        image, mask = make(rng)
        rows.append({'SubjectID': f's{i}', 'Channel_0': write(image, folder / f's{i}.nii.gz', spacing),
                     'Label': write(mask, folder / f's{i}_mask.nii.gz', spacing, sitk.sitkUInt8)})
    pd.DataFrame(rows).to_csv(folder / 'data.csv', index=False)
    return folder / 'data.csv'


def ball(shape, centre, radius, spacing=(1, 1, 1)) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing='ij')
    return sum((g - c * sp) ** 2 for g, c, sp in zip(grid, centre, spacing)) <= radius ** 2


def decided(p) -> dict:
    return {d.key: d.value for d in p.decisions}


def test_thick_slices_give_their_spacing_pooling_and_flat_kernels(tmp_path):
    "5 x 0.8 x 0.8 mm (z thick): z resampled to its 10th percentile, pooled only after x and y, 3x3x1 kernels first."
    def make(rng):
        mask = ball((64, 64, 12), (32, 32, 6), 12, (0.8, 0.8, 5.0)).astype(np.uint8)
        return rng.normal(100, 10, mask.shape) + 50 * mask, mask
    csv = volumes(tmp_path / 'aniso', 4, (64, 64, 12), (0.8, 0.8, 5.0), make)
    planned = medlab.plan(csv, tmp_path / 'aniso.yaml', minutes=5, device='cpu', measure=False)
    d = decided(planned)
    assert planned.fingerprint['anisotropy'] == pytest.approx(6.25)
    assert 'data_preprocessing.resample' not in d                      # every image already has the target spacing
    assert d['model.strides'][1] == [2, 2, 1] and d['model.kernel_sizes'][0] == [3, 3, 1]
    assert d['data_preprocessing.normalize'] is None                   # MR-like: a z-score per image
    assert planned.config.model.architecture == 'dynunet' and planned.config.budget.minutes == 5
    assert all(p % math.prod(l[a] for l in d['model.strides']) == 0 for a, p in enumerate(d['patch_size']))
    text = (tmp_path / 'aniso.yaml').read_text()
    assert '# 3D images' in text and 'kernel_sizes: [[3, 3, 1]' in text
    assert medlab.load_config(tmp_path / 'aniso.yaml').model.strides == d['model.strides']     # the YAML is an ordinary config
    assert json.loads((tmp_path / 'fingerprint.json').read_text())['dimension'] == 3 and (tmp_path / 'fingerprint.png').stat().st_size > 1000


def test_ct_is_clipped_and_zscored_with_the_datasets_foreground(tmp_path):
    "CT-like HU with air at -1000: modality CT, one rescale = clip to foreground percentiles + z-score with their statistics."
    def make(rng):
        body = ball((40, 40, 20), (20, 20, 10), 15)
        organ = ball((40, 40, 20), (20, 20, 10), 5).astype(np.uint8)
        image = np.where(body, rng.normal(40, 10, body.shape), -1000.0) + 300.0 * organ
        return np.round(image), organ
    csv = volumes(tmp_path / 'ct', 3, (40, 40, 20), (1.0, 1.0, 1.0), make)
    planned = medlab.plan(csv, minutes=5, device='cpu', measure=False)
    d, fg = decided(planned), planned.fingerprint['channels'][0]['intensity']['foreground']
    assert planned.fingerprint['channels'][0]['modality'] == 'CT'
    lo, hi = d['data_preprocessing.rescale']['in_min_max']
    assert 300 < lo < hi < 400 and (lo, hi) == (fg['p00_5'], fg['p99_5'])      # the organ's values, not the air's
    out = d['data_preprocessing.rescale']['out_min_max']
    assert out == pytest.approx([(lo - fg['mean']) / fg['std'], (hi - fg['mean']) / fg['std']], abs=1e-3)


def test_channels_on_two_grids_are_aligned(tmp_path):
    "A second channel at half resolution: align_channels onto channel 0."
    rows, rng = [], np.random.default_rng(0)
    for i in range(3):
        mask = ball((32, 32, 16), (16, 16, 8), 6).astype(np.uint8)
        rows.append({'SubjectID': f's{i}', 'Channel_0': write(rng.normal(0, 1, mask.shape) + mask, tmp_path / f's{i}_a.nii.gz', (1, 1, 1)),
                     'Channel_1': write(rng.normal(0, 1, (16, 16, 8)), tmp_path / f's{i}_b.nii.gz', (2, 2, 2)),
                     'Label': write(mask, tmp_path / f's{i}_m.nii.gz', (1, 1, 1), sitk.sitkUInt8)})
    pd.DataFrame(rows).to_csv(tmp_path / 'data.csv', index=False)
    d = decided(medlab.plan(tmp_path / 'data.csv', minutes=5, device='cpu', measure=False))
    assert 'data_preprocessing.align_channels' in d and d['model.num_channels'] == 2


def test_rgb_patches_plan_a_2d_colour_recipe(tmp_path):
    "2D RGB histology-like PNG patches: 2D, three channels, values to [0, 1], quarter turns and colour jitter."
    from PIL import Image
    rng, rows = np.random.default_rng(0), []
    for i in range(4):
        mask = ball((96, 96), (48, 48), 20, (1, 1)).astype(np.uint8)
        rgb = np.clip(rng.normal(200, 10, (96, 96, 3)) - 120 * mask[..., None] * np.array([0.3, 1.0, 0.5]), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / f'p{i}.png'); Image.fromarray(mask).save(tmp_path / f'p{i}_mask.png')
        rows.append({'SubjectID': f'p{i}', 'Channel_0': f'p{i}.png', 'Label': f'p{i}_mask.png'})
    pd.DataFrame(rows).to_csv(tmp_path / 'data.csv', index=False)
    planned = medlab.plan(tmp_path / 'data.csv', minutes=5, device='cpu', measure=False)
    d = decided(planned)
    assert (d['model.dimension'], d['model.num_channels'], d['patch_size']) == (2, 3, [96, 96])
    assert 'data_preprocessing.normalize_div_by_255' in d and {'rotate_90', 'colorjitter', 'flip'} <= set(d['data_augmentation'])


def test_the_plan_template_plans_and_the_train_template_trains_it(tmp_path):
    "templates/plan.ipynb plans the sample data for a few seconds; templates/train.ipynb trains the YAML as it is, within its budget."
    medlab.make_sample_data(tmp_path / 'data', n_subjects=8, size=48)
    pm.execute_notebook(str(TEMPLATES / 'plan.ipynb'), str(tmp_path / 'planned.ipynb'), cwd=str(tmp_path), kernel_name='python3',
                        progress_bar=False, parameters={'data_csv': 'data/data.csv', 'output_yaml': 'planned.yaml', 'minutes': 0.4,
                                                        'device': 'cpu'})
    shown = json.dumps([o for c in json.loads((tmp_path / 'planned.ipynb').read_text())['cells'] for o in c.get('outputs', [])])
    assert 'dynunet' in shown and 'image/png' in shown and 'the median image shape' in shown   # table, figure and YAML
    text = (tmp_path / 'planned.yaml').read_text()
    assert 'Expected here:' in text and 'budget: {minutes: 0.4}' in text
    pm.execute_notebook(str(TEMPLATES / 'train.ipynb'), str(tmp_path / 'out.ipynb'), cwd=str(tmp_path), kernel_name='python3',
                        progress_bar=False, parameters={'config': 'planned.yaml'})
    run = RunFolder(tmp_path / 'runs' / 'planned')
    assert run.metrics()['best_epoch'] >= 1 and run.config().model.architecture == 'dynunet'
    assert any(e['event'] == 'budget' for e in run.events())      # the run sized its epochs to the budget
    cfg = run.config()   # the inference side of the recipe went into the YAML and the run folder
    assert cfg.model.deep_supervision and cfg.inference_mechanism.mirror_axes == [0, 1] and cfg.inference_mechanism.choose_postprocessing
    chosen = json.loads((run.path / 'postprocessing.json').read_text())
    assert chosen['subjects'] == len(run.split().validation) and set(chosen['validation_dice']) == {'1', '2'}
    assert medlab.load_run(run.path).largest_component == chosen['largest_component']
