"""Every augmentation of `data_augmentation` (GaNDLF's names): what it changes, that the mask moves with the image, seeding,
GaNDLF's own values, and the preview. Fast: well under a minute on two cores."""
import random
import warnings

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

import medlab
from medlab.augmentation import AUGMENTERS, build_augmentation
from medlab.previews import preview_augmentations
from medlab.augmentation_settings import AUGMENTATION
from medlab.config import ConfigError, MedlabConfig, config_from_dict
from conftest import ROOT

SPATIAL = ['flip', 'rotate_90', 'rotate_180', 'affine', 'elastic']
INTENSITY = ['noise', 'noise_var', 'blur', 'contrast', 'gamma', 'bias', 'motion', 'ghosting', 'spike', 'kspace', 'swap', 'anisotropic']
RGB = ['colorjitter', 'hed_transform']
SIZE = 32


def blobs(dim: int, channels: int = 1, size: int = SIZE) -> dict:
    "Smooth blobs (one more in each further channel) and their mask: the first channel above 0.5."
    axes = np.meshgrid(*[np.linspace(-1, 1, size)] * dim, indexing='ij')
    centres = [(0.3, -0.2, 0.1), (-0.4, 0.3, -0.2)]
    image = np.stack([sum(np.exp(-3 * sum((a - c[i]) ** 2 for i, a in enumerate(axes))) for c in centres[:k + 1])
                      for k in range(channels)]).astype(np.float32)
    return {'image': image, 'label': (image[:1] > 0.5).astype(np.uint8)}


def rgb_patch(size: int = SIZE) -> dict:
    "A pink-and-purple 2D RGB patch on 0..255, as H&E slides look."
    rng = np.random.default_rng(0)
    purple = np.array([120, 60, 160], np.float32).reshape(3, 1, 1)
    pink = np.array([230, 150, 200], np.float32).reshape(3, 1, 1)
    nuclei = (blobs(2, size=size)['image'][0] > 0.5)[None]
    return {'image': np.where(nuclei, purple, pink) + rng.uniform(-10, 10, (3, size, size)).astype(np.float32)}


def augment(name: str, dim: int, settings: dict | None = None, keys=('image', 'label'), channels=None, seed: int = 0):
    "`name` alone, always acting, through the config and `build_augmentation`, seeded."
    cfg = MedlabConfig(model={'dimension': dim}, patch_size=[SIZE] * dim,
                       data_augmentation={name: {**(settings or {}), 'probability': 1}})
    return build_augmentation(cfg.augmentations, dim, (SIZE,) * dim, keys, channels).set_random_state(seed=seed)


def arrays(sample: dict) -> dict:
    return {k: np.asarray(v) for k, v in sample.items()}


# -- every augmentation: shapes, dtypes, finite values; the intensity ones leave the mask alone ------------------------

@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('dim', [2, 3])
@pytest.mark.parametrize('name', INTENSITY)
def test_intensity_augmentation_changes_every_channel_and_not_the_mask(name, dim, channels):
    s = blobs(dim, channels)
    out = arrays(augment(name, dim)(dict(s)))
    assert out['image'].shape == s['image'].shape and out['image'].dtype == np.float32
    assert np.isfinite(out['image']).all()
    changed = np.abs(out['image'] - s['image']).reshape(channels, -1).max(1)
    assert (changed > 1e-3).all(), changed  # each channel, not only the first
    assert out['label'].dtype == np.uint8 and (out['label'] == s['label']).all()


@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('dim', [2, 3])
@pytest.mark.parametrize('name', SPATIAL)
def test_spatial_augmentation_keeps_the_mask_on_the_image(name, dim, channels):
    """The mask is the blob image thresholded; after the augmentation it still is, but for voxels on the mask's edge:
    the image is interpolated linearly and the mask by nearest neighbour, which round differently where the threshold
    passes between a sample point and its nearest voxel (7 to 240 voxels of a 32^2 or 32^3 patch here). Every
    disagreeing voxel must touch the edge, and at least 97% of the patch must agree."""
    settings = {'affine': {'scales': [0.7, 1.3], 'degrees': 30, 'translation': 3},
                'elastic': {'num_control_points': 7, 'max_displacement': 3}}.get(name, {})
    for seed in range(3):
        s = blobs(dim, channels)
        out = arrays(augment(name, dim, settings, seed=seed)(dict(s)))
        assert out['image'].shape == s['image'].shape and out['label'].shape == s['label'].shape
        assert np.isfinite(out['image']).all() and set(np.unique(out['label'])) <= {0, 1}
        thresholded, mask = out['image'][0] > 0.5, out['label'][0] > 0
        edge = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        assert (thresholded == mask).mean() >= 0.97
        assert not ((thresholded != mask) & ~edge).any(), f'{name} {dim}D seed {seed}: mask and image disagree off the edge'
        assert (mask != s['label'][0]).sum() > 0.05 * s['label'].sum(), f'{name} {dim}D seed {seed}: the mask did not move'
        if channels == 2:  # the second channel moved along: its own blob, thresholded, lies where it should too
            assert np.abs(out['image'][1] - s['image'][1]).max() > 1e-3


@pytest.mark.parametrize('dim', [2, 3])
def test_exact_rotations_and_flips(dim):
    s = blobs(dim, 2)
    r90 = arrays(augment('rotate_90', dim, {'axis': [0, 1]})(dict(s)))
    k = next(k for k in (1, 2, 3) if np.array_equal(r90['image'], np.rot90(s['image'], k, axes=(1, 2))))
    assert np.array_equal(r90['label'], np.rot90(s['label'], k, axes=(1, 2)))
    r180 = arrays(augment('rotate_180', dim, {'axis': [0, dim - 1]})(dict(s)))
    assert np.array_equal(r180['image'], np.flip(s['image'], (1, dim)))
    assert np.array_equal(r180['label'], np.flip(s['label'], (1, dim)))
    flip = arrays(augment('flip', dim, {'axis': 1})(dict(s)))
    assert np.array_equal(flip['image'], np.flip(s['image'], 2))


# -- what each intensity augmentation does ----------------------------------------------------------------------------

def test_noise_forms():
    "A number draws sigma within [0, std] (MONAI); a range starting above 0 draws within it (TorchIO); noise_var is relative."
    s = blobs(3)
    for settings, low, high in [({'std': 0.2}, 0.0, 0.2), ({'std': [0.3, 0.4], 'mean': [1, 1]}, 0.3, 0.4)]:
        for seed in range(4):
            residual = np.asarray(augment('noise', 3, settings, seed=seed)(dict(s))['image']) - s['image']
            assert low - 0.01 <= residual.std() <= high + 0.01
        if 'mean' in settings: assert residual.mean() == pytest.approx(1, abs=0.02)
    scaled = {'image': s['image'] * 1000}
    residual = np.asarray(augment('noise_var', 3, {'std': [0.1, 0.1]}, keys=('image',))(dict(scaled))['image']) - scaled['image']
    assert residual.std() == pytest.approx(0.1 * scaled['image'].std(), rel=0.02)


def test_swap_only_moves_values_and_blur_smooths():
    s = blobs(3, 2)
    swapped = np.asarray(augment('swap', 3, {'patch_size': 5, 'num_iterations': 20})(dict(s))['image'])
    for c in range(2): assert np.allclose(np.sort(swapped[c], None), np.sort(s['image'][c], None))
    noisy = {'image': np.random.default_rng(0).normal(size=(2, SIZE, SIZE, SIZE)).astype(np.float32)}
    blurred = np.asarray(augment('blur', 3, {'std': [2, 2]}, keys=('image',))(dict(noisy))['image'])
    tv = lambda x: sum(np.abs(np.diff(x, axis=a)).sum() for a in range(1, 4))
    assert tv(blurred) < 0.2 * tv(noisy['image'])


def test_gamma_keeps_order_and_bias_is_a_smooth_positive_field():
    s = blobs(2)
    g = np.asarray(augment('gamma', 2, {'log_gamma': [0.3, 0.3]})(dict(s))['image'])
    assert np.allclose(g, s['image'] ** np.exp(0.3), atol=1e-5)
    b = np.asarray(augment('bias', 2)(dict(s))['image'])
    field = b / s['image']
    assert (field > 0).all() and np.abs(np.diff(np.log(field), axis=1)).max() < 0.2


def test_anisotropic_keeps_the_grid_and_the_mean():
    s = blobs(3)
    out = np.asarray(augment('anisotropic', 3, {'axis': [2], 'downsampling': [3, 3]})(dict(s))['image'])
    assert out.shape == s['image'].shape and out.mean() == pytest.approx(s['image'].mean(), rel=0.05)
    assert not np.allclose(out, s['image'], atol=1e-3)


# -- RGB --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', RGB)
def test_rgb_augmentations_change_colour_on_rgb_2d_only(name):
    p = rgb_patch()
    out = np.asarray(augment(name, 2, keys=('image',), channels=3, seed=5)(dict(p))['image'])
    assert out.shape == (3, SIZE, SIZE) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
    assert np.abs(out - p['image']).mean() > 1
    for dim, channels, says in [(2, 1, '1-channel 2D'), (3, None, '3D'), (3, 3, '3-channel 3D')]:
        with pytest.raises(ValueError, match=f'data_augmentation.{name}: acts on RGB images .* this run has {says} images'):
            augment(name, dim, channels=channels)
    with pytest.raises(RuntimeError) as e:  # channels unknown: caught on the patch (MONAI's Compose names the transform, then the cause)
        augment(name, 2)(blobs(2, 2))
    assert str(e.value.__cause__) == f'data_augmentation.{name}: acts on RGB images (3, x, y), got a patch of shape (2, 32, 32)'


def test_colorjitter_brightness_alone_scales_all_channels_alike():
    p = {'image': rgb_patch()['image'] / 255}
    out = np.asarray(augment('colorjitter', 2, {'brightness': [0.5, 0.5], 'contrast': [1, 1], 'saturation': [1, 1], 'hue': 0},
                             keys=('image',), channels=3)(dict(p))['image'])
    assert np.allclose(out, p['image'] * 0.5, atol=1e-6)


def test_hed_changes_the_haematoxylin_only_where_asked():
    from skimage.color import rgb2hed
    p = rgb_patch()
    none = {f'{s}_{k}_range': None for s in ('haematoxylin', 'eosin', 'dab') for k in ('sigma', 'bias')}
    out = np.asarray(augment('hed_transform', 2, {**none, 'haematoxylin_bias_range': [0.05, 0.05]}, keys=('image',), channels=3)(dict(p))['image'])
    before, after = (rgb2hed(np.moveaxis(x / 255, 0, -1)) for x in (p['image'], out))
    assert np.median(after[..., 0] - before[..., 0]) == pytest.approx(0.05, abs=0.01)
    assert np.abs(np.median(after[..., 1] - before[..., 1])) < 0.01
    dark = {'image': np.zeros_like(p['image'])}  # mean 0 lies outside cutoff_range [0.2, 1]: unchanged
    kept = augment('hed_transform', 2, {'cutoff_range': [0.2, 1]}, keys=('image',), channels=3)(dict(dark))['image']
    assert (np.asarray(kept) == 0).all()


# -- seeding: every draw from the pipeline's own random state ---------------------------------------------------------

def every_augmentation(dim: int) -> MedlabConfig:
    names = [n for n in AUGMENTATION if n not in RGB]
    return MedlabConfig(model={'dimension': dim}, patch_size=[SIZE] * dim, data_augmentation={n: {'probability': 1} for n in names})


@pytest.mark.parametrize('dim', [2, 3])
def test_same_seed_same_patch_and_global_rngs_untouched(dim):
    cfg, s = every_augmentation(dim), blobs(dim, 2)
    pipeline = build_augmentation(cfg.augmentations, dim, (SIZE,) * dim)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    runs = [arrays(pipeline.set_random_state(seed=seed)(dict(s))) for seed in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), states[0]), "torch's global RNG moved"
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in ('image', 'label'))
    assert not np.array_equal(runs[0]['image'], runs[2]['image'])
    # what torch's global RNG holds does not matter either
    torch.manual_seed(123)
    again = arrays(pipeline.set_random_state(seed=7)(dict(s)))
    assert np.array_equal(again['image'], runs[0]['image'])


def test_torchio_alone_would_move_the_global_rng():
    "The check above means something: the TorchIO transforms medlab wraps draw from torch's global RNG."
    import torchio as tio
    state = torch.get_rng_state()
    tio.RandomElasticDeformation(max_displacement=1)(tio.ScalarImage(tensor=torch.rand(1, 16, 16, 16)))
    assert not torch.equal(torch.get_rng_state(), state)


def test_patch_queue_epochs_repeat_with_torchio_augmentations(tmp_path):
    "Through the training loader: the same epoch twice gives the same batches, and torch's RNG stays where it was."
    from medlab.loader import PatchQueue, SubjectReader
    from medlab.data import read_manifest
    from medlab.tasks import config_task
    csv = medlab.make_sample_data(tmp_path, n_subjects=2, size=48)
    cfg = MedlabConfig(data_csv=str(csv), patch_size=[32, 32], batch_size=4, q_samples_per_volume=2, model={'class_list': [0, 1, 2]},
                       data_augmentation={'elastic': {'max_displacement': 2}, 'motion': None, 'swap': None, 'noise': None})
    task = config_task(cfg.model, cfg.loss_function, cfg.metrics)
    queue = PatchQueue(read_manifest(csv), cfg, SubjectReader(cfg.data_preprocessing, 2, task))
    state = torch.get_rng_state()
    first, second = ([b['image'] for b in queue.epoch(1)] for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert len(first) == 1 and torch.equal(first[0], second[0])


# -- GaNDLF's own values ------------------------------------------------------------------------------------------------

def gandlf_block() -> dict:
    raw = yaml.safe_load((ROOT / 'tests' / 'gandlf_configs' / 'config_all_options.yaml').read_text())
    return raw['data_augmentation']


def test_every_augmentation_of_config_all_options_validates_and_builds():
    "GaNDLF's reference config, with its values: every name is known, validates and builds (the RGB one on RGB 2D images)."
    block = gandlf_block()
    names = [n for n in block if n != 'default_probability']
    assert set(names) <= set(AUGMENTATION) and len(names) == 14
    cfg = config_from_dict({'data_augmentation': block, 'model': {'dimension': 3}, 'patch_size': [SIZE] * 3})
    aug = cfg.augmentations
    assert aug['affine'].scales == (0.5, 1.5) and aug['swap'].patch_size == 15 and aug['anisotropic'].downsampling == (2.0, 2.5)
    assert aug['kspace'].probability == 1 and aug['bias'].probability == 0.5 and aug['rotate_90'].axis == (0, 2)
    rest = {n: s for n, s in aug.items() if n not in RGB}
    out = arrays(build_augmentation(rest, 3, (SIZE,) * 3).set_random_state(seed=0)(blobs(3)))
    assert out['image'].shape == (1, SIZE, SIZE, SIZE) and np.isfinite(out['image']).all()
    rgb = config_from_dict({'data_augmentation': {'colorjitter': block['colorjitter']}, 'modality': 'histo',
                            'model': {'dimension': 2, 'num_channels': 3}, 'patch_size': [SIZE, SIZE]})
    jitter = build_augmentation(rgb.augmentations, 2, (SIZE, SIZE), ('image',), 3).set_random_state(seed=0)
    assert np.asarray(jitter(rgb_patch())['image']).shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match='data_augmentation.colorjitter: acts on RGB images'):
        build_augmentation(aug, 3, (SIZE,) * 3, num_channels=1)


@pytest.mark.parametrize('block, says', [
    ({'noise': {'std': [1, 0]}}, 'noise.std: a range [low, high] needs low <= high'),
    ({'affine': {'scales': 1.5}}, 'affine.scales: one number s scales by 1 +- s'),
    ({'blur': {'std': [0, 1, 2]}}, 'blur.std: give a number or a range [low, high]'),
    ({'colorjitter': {'hue': [-1, 0]}}, 'colorjitter.hue: every value must be within [-0.5, 0.5]'),
    ({'motion': {'interpolation': 'cubicc'}}, 'motion.interpolation'),
    ({'elstic': None}, "unknown transform 'elstic'; did you mean 'elastic'?"),
    ({'rotate_90': {'axis': [1, 3]}}, 'data_augmentation.rotate_90.axis: [3] not an axis of a 3D patch (0..2) (axes count from 0'),
    ({'anisotropic': {'axis': [3]}}, 'data_augmentation.anisotropic.axis: [3] not an axis of a 3D patch'),
    ({'swap': {'patch_size': 40}}, 'data_augmentation.swap.patch_size: blocks of [40, 40, 40] do not fit in patches of [32, 32, 32]'),
])
def test_bad_settings_name_the_key(block, says):
    with pytest.raises(ConfigError) as e:
        config_from_dict({'data_augmentation': block, 'model': {'dimension': 3}, 'patch_size': [SIZE] * 3})
    assert any(says in p for p in e.value.problems), e.value.problems


def test_gandlf_every_axis_rotation_reads_as_the_xy_plane():
    cfg = config_from_dict({'data_augmentation': {'rotate_90': {'axis': [1, 2, 3]}, 'rotate_180': None}})
    assert cfg.augmentations['rotate_90'].axis == (0, 1) and cfg.augmentations['rotate_180'].axis == (0, 1)


# -- the preview --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('dim', [2, 3])
def test_preview_shows_the_patch_and_each_augmentation(tmp_path, dim):
    csv = medlab.make_sample_data(tmp_path / 'data', dimension=dim, n_subjects=5, size=40)
    cfg = MedlabConfig(data_csv=str(csv), patch_size=[SIZE] * dim, model={'dimension': dim, 'class_list': [0, 1, 2]},
                       data_augmentation={'affine': None, 'elastic': None, 'kspace': None, 'flip': {'probability': 0.1}})
    fig = preview_augmentations(cfg, output=tmp_path / 'run' / 'augmentations.png')
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ['original', 'affine', 'elastic', 'kspace', 'flip']
    assert len(fig.axes[0].images) == 2  # the image and the mask over it
    png = tmp_path / 'run' / 'augmentations.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and not list(png.parent.glob('.*.tmp'))


def test_preview_of_an_rgb_sample_and_of_no_augmentations(tmp_path):
    cfg = MedlabConfig(modality='histo', patch_size=[SIZE, SIZE], loss_function='cel', metrics=['accuracy'],
                       model={'architecture': 'vgg11', 'num_channels': 3, 'class_list': [0, 1]},
                       data_augmentation={'colorjitter': None, 'hed_transform': None})
    fig = preview_augmentations(cfg, subject=rgb_patch())
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ['original', 'colorjitter', 'hed_transform']
    assert fig.axes[0].images[0].get_array().shape == (SIZE, SIZE, 3)
    assert preview_augmentations(MedlabConfig(), output=tmp_path / 'none.png') is None and not (tmp_path / 'none.png').exists()
