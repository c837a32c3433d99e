"""GaNDLF's pre- and post-processing: every name in 2D and 3D, and predictions back on the input grid after grid changes."""
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

import medlab
from medlab.config import config_from_dict
from medlab.io import read_image, to_array, to_image
from medlab.loader import SubjectReader
from medlab.preprocessing_settings import PREPROCESSING, SPATIAL
from medlab.tasks import Segmentation
from medlab.data import Subject, read_manifest
from medlab.sample_data import blob_subject
from conftest import ROOT

SETTINGS = {'threshold': {'min': 0.1, 'max': 2.0}, 'clip': {'min': 0.0, 'max': 1.0}, 'clamp': {'min': 0.0, 'max': 1.0},
            'rescale': {'percentiles': [1, 99]}, 'normalize_by_val': {'mean': [0.5, 0.5, 0.5], 'std': [0.2, 0.2, 0.2]},
            'ct_window': {'preset': 'brain'}, 'resample': {'resolution': 1.2}, 'resample_min': {'resolution': 0.6},
            'resize_image': [20, 18, 16], 'crop': [2, 1, 1], 'centercrop': [16, 16, 12], 'resize_patch': [16, 16, 16]}
RGB_ONLY = {'normalize_imagenet', 'normalize_standardize', 'normalize_by_val', 'rgb2rgba', 'stain_normalizer'}


def _subject(tmp_path, dimension, channels, name='s'):
    "A blob subject written as files: (channels, mask) paths."
    rng = np.random.default_rng(0)
    shape = (24, 22) if dimension == 2 else (24, 22, 18)
    image, mask = blob_subject(shape, rng, channels)
    image = np.abs(image) * 100  # positive intensities with zeros where the mask is empty below
    paths = []
    for c in range(channels):
        img = to_image(image[c]); img.SetSpacing((0.8,) * dimension)
        sitk.WriteImage(img, str(tmp_path / f'{name}_ch{c}.nii.gz')); paths.append(str(tmp_path / f'{name}_ch{c}.nii.gz'))
    m = to_image(mask); m.SetSpacing((0.8,) * dimension)
    sitk.WriteImage(m, str(tmp_path / f'{name}_mask.nii.gz'))
    return Subject(name, tuple(paths), str(tmp_path / f'{name}_mask.nii.gz'))


@pytest.mark.parametrize('name, dimension', [(n, d) for n in sorted(set(PREPROCESSING) - {'rgba2rgb'}) for d in (2, 3)
                                             if not (n == 'stain_normalizer' and d == 3)])   # stains: 8-bit RGB slides, 2D only
def test_every_preprocessing_name_runs(tmp_path, name, dimension):
    "Each pre-processing name reads a subject in 2D and 3D (three channels for the RGB ones, else one and two) to finite values, mask alike."
    if name == 'histogram_matching':
        template = to_image(np.random.default_rng(1).normal(50, 10, (8, 8)).astype(np.float32))
        sitk.WriteImage(template, str(tmp_path / 't.nii.gz'))
        settings = {'target': str(tmp_path / 't.nii.gz')}
    elif name == 'stain_normalizer':   # real H&E in tests/test_stain.py; here a reference of the sample's own colours
        from PIL import Image
        ref = np.random.default_rng(2).integers(60, 200, (16, 16, 3)).astype(np.uint8)
        Image.fromarray(ref).save(tmp_path / 'ref.png')
        settings = {'target': str(tmp_path / 'ref.png'), 'extractor': 'macenko'}
    else: settings = SETTINGS.get(name)
    if isinstance(settings, list): settings = settings[:dimension]
    for channels in ([3] if name in RGB_ONLY else [1, 2]):
        cfg = config_from_dict({'data_preprocessing': {name: settings}, 'model': {'dimension': dimension, 'class_list': [0, 1, 2],
                                'num_channels': channels}, 'patch_size': [16] * dimension})
        reader = SubjectReader(cfg.data_preprocessing, dimension, Segmentation([0, 1, 2]))
        data = reader(_subject(tmp_path, dimension, channels, f'{name}{channels}'))
        image, label = np.asarray(data['image']), np.asarray(data['label'])
        assert image.shape[0] == (4 if name == 'rgb2rgba' else channels) and np.isfinite(image).all(), (name, image.shape)
        assert label.shape[1:] == image.shape[1:] and set(np.unique(label)) <= {0, 1, 2}
        if name in SPATIAL: assert 'grid' in data and data['grid'].size == image.shape[1:]


def test_resampled_run_writes_predictions_on_the_input_grid(tmp_path):
    "A run with resample, a zero-plane crop and a centre crop learns on its grid and writes masks on each input's grid that match the truth."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=12, size=48)
    run = tmp_path / 'run'
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(run), 'patch_size': [32, 32], 'num_epochs': 12, 'batch_size': 4,
                            'q_samples_per_volume': 2, 'model': {'class_list': [0, 1, 2], 'base_filters': 8}, 'learning_rate': 0.01,
                            'data_preprocessing': {'resample': {'resolution': 1.2}, 'crop_external_zero_planes': None,
                                                   'centercrop': [36, 36], 'normalize': None},
                            'data_postprocessing': {'mapping': {2: 7}}, 'save_output': True, 'export': {'enabled': False},
                            'metrics': ['dice']})
    result = medlab.train(cfg)
    assert result.best['dice'] >= 0.5, result.best  # learns on the 36x36 grid of 1.2 mm voxels (input: 48x48 of 0.8 mm)
    subjects = {s.subject_id: s for s in read_manifest(csv)}
    scores = []
    for path in sorted((run / 'predictions' / 'validation').glob('*_prediction.nii.gz')):
        pred, truth = read_image(path), read_image(subjects[path.name.split('_prediction')[0]].label)
        assert pred.GetSize() == truth.GetSize() and pred.GetSpacing() == pytest.approx(truth.GetSpacing())
        assert pred.GetOrigin() == pytest.approx(truth.GetOrigin())
        p, t = to_array(pred, None)[0], to_array(truth, None)[0]
        assert set(np.unique(p)) <= {0, 1, 7}  # mapping 2 -> 7 applied to the written values
        p = np.where(p == 7, 2, p)
        scores.append(2 * ((p > 0) & (t > 0)).sum() / max(1, (p > 0).sum() + (t > 0).sum()))
    assert scores and np.mean(scores) >= 0.5, scores  # the foreground lies where the truth is, on the input grid
    # the same from medlab.predict on a finished run: the input's grid
    subject = next(iter(subjects.values()))
    prediction = medlab.load_run(run).predict(subject)
    assert np.asarray(prediction.labels).shape == to_array(read_image(subject.channels[0]), None)[0].shape


def test_gandlf_all_options_preprocessing_block_is_read(tmp_path):
    "GaNDLF's reference config: its data_preprocessing block validates and runs on a 3D image, and its post-processing names exist."
    raw = yaml.safe_load((ROOT / 'tests' / 'gandlf_configs' / 'config_all_options.yaml').read_text())
    block = raw['data_preprocessing']
    assert list(block) == ['threshold', 'normalize', 'resample', 'resample_min', 'crop_external_zero_planes', 'crop', 'centercrop']
    cfg = config_from_dict({'data_preprocessing': block, 'model': {'dimension': 3}, 'patch_size': [32, 32, 32]})
    subject = _subject(tmp_path, 3, 1)
    # as written, crop removes 64 voxels at both ends of every axis after resampling to [1, 2, 3] mm: nothing is left
    with pytest.raises(ValueError, match='data_preprocessing.crop: removing'):
        SubjectReader(cfg.data_preprocessing, 3, Segmentation([0, 1, 2])).read(subject)
    steps = {k: v for k, v in cfg.data_preprocessing.items() if k != 'crop'}
    data = SubjectReader(steps, 3, Segmentation([0, 1, 2])).read(subject)
    # threshold 10..75 keeps part of the image; centercrop makes 64^3 (padded), whatever resampling and cropping did first
    assert np.asarray(data['image']).shape == (1, 64, 64, 64) and data['grid'].size == (64, 64, 64)
    post = config_from_dict({'data_postprocessing': {'fill_holes': None, 'mapping': {0: 0, 1: 1, 2: 4}}})
    assert list(post.data_postprocessing) == ['fill_holes', 'mapping']


def test_channels_on_other_grids_are_aligned_when_asked(tmp_path):
    "A second channel on a coarser grid: refused with the fix named, then read on the first channel's grid with align_channels."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32, num_channels=2)
    df = pd.read_csv(csv)
    for path in df.Channel_1:  # the second contrast resampled to 2 mm voxels over the same box, as another scanner gave it
        img = sitk.ReadImage(str(csv.parent / path))
        coarse = sitk.Resample(img, [13, 13], sitk.Transform(), sitk.sitkLinear, (-39.6, -39.6), (2.0, 2.0), img.GetDirection(), 0.0)
        sitk.WriteImage(coarse, str(csv.parent / path))
    base = {'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1, 'batch_size': 4,
            'model': {'class_list': [0, 1, 2], 'base_filters': 4, 'num_channels': 2}, 'export': {'enabled': False}}
    with pytest.raises(medlab.DataError, match='add align_channels to data_preprocessing'): medlab.train(config_from_dict(base))
    cfg = config_from_dict({**base, 'data_preprocessing': {'align_channels': None, 'normalize': None}})
    subject = read_manifest(csv)[0]
    data = SubjectReader(cfg.data_preprocessing, 2, Segmentation([0, 1, 2])).read(subject)
    assert np.asarray(data['image']).shape == (2, 32, 32) and data['grid'].size == (32, 32)
    assert medlab.train(cfg).epochs_run == 1


def test_resize_patch_feeds_the_network_its_size_and_predicts_on_the_input_grid(tmp_path):
    "GaNDLF's resize_patch: 48-voxel patches reach the network as 32, windows go through it resized and come back at 48."
    from medlab.loader import PatchQueue
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=48)
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [48, 48], 'num_epochs': 2,
                            'batch_size': 2, 'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'export': {'enabled': False},
                            'data_preprocessing': {'resize_patch': [32, 32]}, 'save_output': True})
    assert cfg.network_patch_size == (32, 32)
    subjects = read_manifest(csv)
    queue = PatchQueue(subjects, cfg, SubjectReader(cfg.data_preprocessing, 2, Segmentation([0, 1, 2])))
    batch = next(iter(queue.epoch(1)))
    assert tuple(batch['image'].shape[2:]) == (32, 32) and tuple(batch['label'].shape[2:]) == (32, 32)
    medlab.train(cfg)
    written = sorted((tmp_path / 'run' / 'predictions' / 'validation').glob('*_prediction.nii.gz'))
    assert written and read_image(written[0]).GetSize() == (48, 48)
    seen = []
    predictor = medlab.load_run(tmp_path / 'run')
    predictor.model.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    predictor.predict(subjects[0])
    assert seen and set(seen) == {(32, 32)}
    with pytest.raises(medlab.ConfigError, match='multiple of 16'):
        config_from_dict({**cfg.model_dump(mode='json'), 'data_preprocessing': {'resize_patch': [30, 30]}})
