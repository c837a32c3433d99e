"""The dataset fingerprint (issue 24) on generated sets with known answers: anisotropic spacing, CT-like HU with
air, two channels on different grids, 2D RGB patches; and on medlab's own sample data."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medlab.core.errors import MedlabError
from medlab.datasets.fingerprint import FingerprintError, fingerprint, fingerprint_figure, save_fingerprint
from medlab.datasets.io import read_image, to_array, to_image, write_image
from medlab.datasets.sample_data import make_sample_data


def write_image_on(arr: np.ndarray, path: Path, spacing, origin=None, direction=None) -> str:
    "`arr` (x, y[, z]) written on a grid of `spacing`; returns the path."
    img = to_image(arr)
    img.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None: img.SetOrigin(origin)
    if direction is not None: img.SetDirection(direction)
    write_image(arr, path, img)
    return str(path)


def write_csv(folder: Path, rows: list[dict]) -> Path:
    csv = folder / 'data.csv'
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def cubes(shape, corners, side, value, mask=None):
    "A mask with `side`-voxel cubes of `value` at `corners` (apart: each one component)."
    mask = np.zeros(shape, np.uint8) if mask is None else mask
    for c in corners: mask[tuple(slice(a, a + side) for a in c)] = value
    return mask


# (1) anisotropic spacing: z is the 5 mm axis; three cubes of class 1, two of class 2 (not in the last subject)
SIZES = [(32, 32, 10), (40, 32, 12), (48, 32, 14)]
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope='module')
def anisotropic(tmp_path_factory):
    folder = tmp_path_factory.mktemp('aniso')
    rng, rows, masks = np.random.default_rng(0), [], []
    for i, shape in enumerate(SIZES):
        mask = cubes(shape, [(2, 2, 1), (12, 2, 1), (2, 12, 1)], 4, 1)
        if i < 2: mask = cubes(shape, [(20, 20, 5), (26, 26, 5)], 3, 2, mask)
        image = (rng.normal(100, 10, shape) + 50 * mask).astype(np.float32)
        direction = RAS if i == 2 else None
        rows.append({'SubjectID': f's{i}',
                     'Channel_0': write_image_on(image, folder / f's{i}.nii.gz', (0.8, 0.8, 5.0), direction=direction),
                     'Label': write_image_on(mask, folder / f's{i}_mask.nii.gz', (0.8, 0.8, 5.0), direction=direction)})
        masks.append(mask)
    return write_csv(folder, rows), masks


def test_anisotropic_spacing_sizes_and_orientation(anisotropic):
    fp = fingerprint(anisotropic[0], samples_per_subject=1000)
    ch = fp['channels'][0]
    assert (fp['dimension'], fp['task'], fp['subjects'], fp['read']) == (3, 'segmentation', 3, 3)
    assert fp['spacing'] == {'median': [0.8, 0.8, 5.0]} and ch['spacing']['p10'] == [0.8, 0.8, 5.0]
    assert fp['anisotropy'] == 6.25
    assert ch['size'] == {'median': [40.0, 32.0, 12.0], 'min': [32, 32, 10], 'max': [48, 32, 14]}
    assert fp['size'] == {'median': [40.0, 32.0, 12.0]}
    assert fp['per_subject'][2] == {'SubjectID': 's2', 'spacing': [0.8, 0.8, 5.0], 'size': [48, 32, 14]}
    assert ch['orientation'] == {'LPS': 2, 'RAS': 1}
    assert (ch['modality'], ch['modality_source'], ch['integer']) == ('MR', 'guessed', False)   # 3D, positive floats


def test_classes_shares_components_and_presence(anisotropic):
    csv, masks = anisotropic
    fp = fingerprint(csv, samples_per_subject=1000)
    total = sum(m.size for m in masks)
    voxels = {v: sum(int((m == v).sum()) for m in masks) for v in (0, 1, 2)}
    assert list(fp['classes']) == ['0', '1', '2']
    for v in (0, 1, 2): assert fp['classes'][str(v)]['share'] == pytest.approx(voxels[v] / total, rel=1e-5)
    assert sum(c['share'] for c in fp['classes'].values()) == pytest.approx(1.0, abs=1e-5)
    assert fp['classes']['1']['foreground_share'] == pytest.approx(voxels[1] / (voxels[1] + voxels[2]), rel=1e-5)
    assert (fp['classes']['1']['components'], fp['classes']['2']['components']) == (3.0, 2.0)
    assert (fp['classes']['1']['present'], fp['classes']['2']['present']) == (1.0, pytest.approx(2 / 3, abs=1e-5))
    assert fp['classes']['0']['foreground_share'] == 0.0


# (2) CT-like: air at -1000 HU, a body at 40 +- 5 HU (class 1) holding a +300 HU structure (class 2)
@pytest.fixture(scope='module')
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ct')
    rng, rows = np.random.default_rng(1), []
    for i in range(3):
        shape = (32, 32, 24)
        mask = cubes(shape, [(6, 6, 4)], 20, 1)
        mask = cubes(shape, [(12, 12, 8)], 6, 2, mask)
        image = np.full(shape, -1000, np.int16)
        image[mask > 0] = 40 + rng.integers(-5, 6, int((mask > 0).sum()))
        image[mask == 2] += 300
        rows.append({'SubjectID': f'ct{i}', 'Channel_0': write_image_on(image, folder / f'ct{i}.nii.gz', (1.0, 1.0, 2.5)),
                     'Label': write_image_on(mask, folder / f'ct{i}_mask.nii.gz', (1.0, 1.0, 2.5))})
    return write_csv(folder, rows)


def test_ct_is_guessed_from_hounsfield_units(ct):
    fp = fingerprint(ct, samples_per_subject=5000)
    ch = fp['channels'][0]
    assert (ch['modality'], ch['modality_source'], ch['integer'], ch['rgb']) == ('CT', 'guessed', True, False)
    fg, image = ch['intensity']['foreground'], ch['intensity']['image']
    assert 35 <= fg['min'] <= fg['p00_5'] <= 45 and 335 <= fg['p99_5'] <= fg['max'] <= 345
    assert fg['mean'] == pytest.approx(40 + 300 * 6 ** 3 / 20 ** 3, abs=3)   # the structure is 2.7 % of the body
    assert image['p00_5'] == -1000 and image['min'] == -1000 and image['max'] == fg['max']
    assert ch['zero_share'] == 0.0 and fp['nonzero_size'] == {'median': [32.0, 32.0, 24.0]}   # air is -1000, not 0: no crop
    hist = ch['intensity']['histogram']
    assert len(hist['edges']) == len(hist['counts']) + 1 and sum(hist['counts']) == 3 * 5000
    assert fg['min'] <= hist['edges'][0] and hist['edges'][-1] <= fg['max']


def test_a_given_modality_wins_and_a_wrong_one_is_named(ct):
    fp = fingerprint(ct, modality='mr', samples_per_subject=100)
    assert (fp['channels'][0]['modality'], fp['channels'][0]['modality_source']) == ('MR', 'given')
    with pytest.raises(FingerprintError, match="'XR'.*CT, MR, RGB, other"): fingerprint(ct, modality='XR', samples_per_subject=100)
    with pytest.raises(FingerprintError, match='2 channels but the data has 1'): fingerprint(ct, modality=['CT', 'MR'])


# (3) two channels on different grids: channel 1 at half resolution over the same space
@pytest.fixture(scope='module')
def two_grids(tmp_path_factory):
    folder = tmp_path_factory.mktemp('grids')
    rows = []
    for i in range(2):
        mask = cubes((32, 32, 16), [(8, 8, 4)], 8, 1)           # voxels 8..15 (4..11 in z) at 1 mm
        fine = np.where(mask > 0, 50.0, 10.0).astype(np.float32)
        coarse = np.zeros((16, 16, 8), np.float32)
        coarse[4:8, 4:8, 2:6] = 100.0                             # the same box at 2 mm: voxels 4..7 (2..5 in z)
        rows.append({'SubjectID': f'g{i}', 'Channel_0': write_image_on(fine, folder / f'g{i}_0.nii.gz', (1, 1, 1)),
                     'Channel_1': write_image_on(coarse, folder / f'g{i}_1.nii.gz', (2, 2, 2)),
                     'Label': write_image_on(mask, folder / f'g{i}_mask.nii.gz', (1, 1, 1))})
    return write_csv(folder, rows)


def test_a_channel_on_another_grid_is_found_and_measured_inside_the_mask(two_grids):
    fp = fingerprint(two_grids, samples_per_subject=2000)
    ch0, ch1 = fp['channels']
    assert (ch0['on_grid_of_channel_0'], ch1['on_grid_of_channel_0']) == (1.0, 0.0)
    assert ch1['spacing']['median'] == [2.0, 2.0, 2.0] and ch1['size']['median'] == [16.0, 16.0, 8.0]
    assert fp['spacing']['median'] == [1.0, 1.0, 1.0]                         # the shortcut is channel 0's
    assert (ch0['intensity']['foreground']['mean'], ch0['intensity']['foreground']['std']) == (50.0, 0.0)
    assert (ch1['intensity']['foreground']['mean'], ch1['intensity']['foreground']['min']) == (100.0, 100.0)   # mask resampled onto it
    assert ch1['zero_share'] == pytest.approx(1 - 64 / (16 * 16 * 8))


# (4) 2D RGB histology-like PNG patches with a mask
@pytest.fixture(scope='module')
def rgb_patches(tmp_path_factory):
    folder = tmp_path_factory.mktemp('rgb')
    rng, rows = np.random.default_rng(2), []
    for i in range(3):
        rgb = rng.integers(180, 240, (32, 32, 3)).astype(np.uint8)       # pale pink background (y, x, RGB)
        mask = np.zeros((32, 32), np.uint8); mask[8:20, 10:22] = 1         # a nucleus-dark region
        rgb[mask == 1] = (90, 40, 120)
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(folder / f'p{i}.png'))
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(folder / f'p{i}_mask.png'))
        rows.append({'SubjectID': f'p{i}', 'Channel_0': f'p{i}.png', 'Label': f'p{i}_mask.png'})
    return write_csv(folder, rows)


def test_rgb_png_patches(rgb_patches):
    fp = fingerprint(rgb_patches, samples_per_subject=1000)
    ch = fp['channels'][0]
    assert (fp['dimension'], fp['task'], ch['rgb'], ch['modality'], ch['modality_source'], ch['components']) == \
        (2, 'segmentation', True, 'RGB', 'guessed', 3)
    assert ch['integer'] is True and ch['spacing']['median'] == [1.0, 1.0] and ch['size']['median'] == [32.0, 32.0]
    assert ch['orientation'] == {'identity': 3}
    fg = ch['intensity']['foreground']
    assert (fg['min'], fg['max']) == (40.0, 120.0)                        # the three components pooled
    assert fp['classes']['1']['share'] == pytest.approx(144 / 1024, rel=1e-5) and fp['classes']['1']['components'] == 1.0


# medlab's own sample data, 2D and 3D
@pytest.mark.parametrize('dimension, size', [(2, 32), (3, 24)])
def test_sample_data(tmp_path, dimension, size):
    csv = make_sample_data(tmp_path, dimension=dimension, n_subjects=4, size=size)
    fp = fingerprint(csv, samples_per_subject=1000)
    assert (fp['dimension'], fp['task'], fp['read']) == (dimension, 'segmentation', 4)
    assert fp['spacing']['median'] == [0.8] * dimension and fp['anisotropy'] == 1.0
    assert list(fp['classes']) == ['0', '1', '2']
    assert sum(c['share'] for c in fp['classes'].values()) == pytest.approx(1.0, abs=1e-5)
    assert fp['classes']['1']['foreground_share'] + fp['classes']['2']['foreground_share'] == pytest.approx(1.0, abs=1e-5)
    masks = [to_array(read_image(tmp_path / 'images' / f'sub{i:03d}_mask.nii.gz'), np.int64)[0] for i in range(4)]
    for v in (1, 2):   # 2-4 blobs each; overlapping blobs merge into one piece
        counts = [ndimage.label(m == v)[1] for m in masks]
        assert fp['classes'][str(v)]['components'] == float(np.median(counts)) and 1 <= min(counts) <= max(counts) <= 4


def test_image_level_targets_and_images_only(tmp_path):
    fp = fingerprint(make_sample_data(tmp_path / 'cls', n_subjects=4, size=24, task='classification'), samples_per_subject=200)
    assert (fp['task'], fp['classes']) == ('classification', {})
    fp = fingerprint(make_sample_data(tmp_path / 'reg', n_subjects=4, size=24, task='regression'), samples_per_subject=200)
    assert fp['task'] == 'regression'
    # images only: the foreground is the non-zero voxels
    image = np.zeros((24, 24), np.float32); image[4:12, 4:12] = 5.0
    write_image(image, tmp_path / 'only.nii.gz')
    fp = fingerprint(write_csv(tmp_path, [{'SubjectID': 'a', 'Channel_0': 'only.nii.gz'}]), samples_per_subject=200)
    assert fp['task'] is None and fp['classes'] == {}
    assert (fp['channels'][0]['intensity']['foreground']['mean'], fp['channels'][0]['intensity']['image']['min']) == (5.0, 0.0)
    assert fp['channels'][0]['zero_share'] == pytest.approx(1 - 64 / 576)
    assert fp['nonzero_size'] == {'median': [8.0, 8.0]} and fp['size'] == {'median': [24.0, 24.0]}   # nnU-Net's crop to non-zero


def test_max_subjects_is_a_seeded_choice(tmp_path):
    csv = make_sample_data(tmp_path, n_subjects=6, size=24)
    a, b = (fingerprint(csv, max_subjects=3, samples_per_subject=100, seed=s) for s in (0, 0))
    c = fingerprint(csv, max_subjects=3, samples_per_subject=100, seed=5)
    assert (a['subjects'], a['read'], len(a['per_subject'])) == (6, 3, 3) and a == b
    ids = [s['SubjectID'] for s in a['per_subject']]
    assert ids == sorted(ids) and ids != [s['SubjectID'] for s in c['per_subject']]


def test_bad_input_is_a_medlab_error_naming_the_file(tmp_path):
    assert issubclass(FingerprintError, MedlabError)
    with pytest.raises(FingerprintError, match='missing.csv'): fingerprint(tmp_path / 'missing.csv')
    (tmp_path / 'broken.nii.gz').write_bytes(b'\x1f\x8b not really gzip')
    csv = write_csv(tmp_path, [{'SubjectID': 'x1', 'Channel_0': 'broken.nii.gz'}])
    with pytest.raises(FingerprintError, match=r'x1, Channel_0: .*broken\.nii\.gz'): fingerprint(csv)
    csv = write_csv(tmp_path, [{'SubjectID': 'x2', 'Channel_0': 'gone.nii.gz'}])
    with pytest.raises(FingerprintError, match=r'x2, Channel_0: image not found: .*gone\.nii\.gz'): fingerprint(csv)
    write_image(np.ones((8, 8), np.float32), tmp_path / 'flat.nii.gz'); write_image(np.ones((8, 8, 4), np.uint8), tmp_path / 'deep.nii.gz')
    csv = write_csv(tmp_path, [{'SubjectID': 'x3', 'Channel_0': 'flat.nii.gz', 'Label': 'deep.nii.gz'}])
    with pytest.raises(FingerprintError, match=r'x3, Label is 3D but Channel_0 is 2D: .*deep\.nii\.gz'): fingerprint(csv)


def test_save_writes_json_and_figure_that_read_back(anisotropic, tmp_path):
    fp = fingerprint(anisotropic[0], samples_per_subject=500)
    path = save_fingerprint(fp, tmp_path / 'out')
    assert path == tmp_path / 'out' / 'fingerprint.json'
    assert json.loads(path.read_text()) == fp
    png = tmp_path / 'out' / 'fingerprint.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
    fig = fingerprint_figure(json.loads(path.read_text()))
    assert len(fig.axes) == 4 and fig.axes[1].get_xlabel() == 'x' and fig.axes[1].get_ylabel() == 'z'   # x against z in 3D
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == ['0', '1', '2']


def test_figure_without_classes(tmp_path):
    fp = fingerprint(make_sample_data(tmp_path, n_subjects=2, size=24, task='regression'), samples_per_subject=100)
    fig = fingerprint_figure(fp)
    assert len(fig.axes) == 4 and 'no classes (task: regression)' in [t.get_text() for t in fig.axes[3].texts]
