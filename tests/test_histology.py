"""Histology: reading real and generated slides, tissue masks, the patch filter, mining, training from the patch CSV,
de-identification and the slide subcommands."""
import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medlab
from medlab.cli import main
from medlab.config import config_from_dict
from medlab.data import DataError, check_subjects, read_manifest
from medlab.mining import PatchFilter, mine_patches
from medlab.slides import deidentify_slide, make_sample_slide, open_slide, slide_identifiers, tissue_mask

from conftest import shared_data


@pytest.fixture(scope='module')
def large_slide(tmp_path_factory):
    "A 20000 x 20000 generated tiled pyramidal TIFF (MPP 0.5) and its label mask (1/32 scale)."
    folder = tmp_path_factory.mktemp('large')
    path = make_sample_slide(folder / 'large.tif', size=20000, mask=folder / 'large_mask.png', seed=3)
    return path, folder / 'large_mask.png'


def _quiet_open(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return open_slide(path, **kw)


def test_histolab_tiles_every_tissue_tile_accepted_every_no_tissue_tile_rejected():
    tiles = sorted(shared_data('histo2d', 'histolab_tiles').glob('*.png'))
    verdicts = {p.name: PatchFilter()(np.asarray(Image.open(p).convert('RGB'))) for p in tiles}
    assert sum(n.startswith('tissue') for n in verdicts) == 6 and sum(n.startswith('no-tissue') for n in verdicts) == 5
    assert all(v for n, v in verdicts.items() if n.startswith('tissue')), verdicts
    assert not any(v for n, v in verdicts.items() if n.startswith('no-tissue')), verdicts


def test_real_slides_levels_mpp_mask_and_mining(tmp_path):
    "The single-level SVS at level 0 and the two-level JPEG 2000 SVS (no MPP tag: a warning, then given) at level 1."
    cmu = open_slide(shared_data('wsi', 'CMU-1-Small-Region.svs'))
    assert (cmu.dimensions, cmu.level_count, round(cmu.mpp, 3)) == ((2220, 2967), 1, 0.499)
    with pytest.warns(UserWarning, match=r'no microns-per-pixel \(MPP\).*mpp=0.5'):
        open_slide(shared_data('wsi', 'tcga-cr-7395-01a-01-ts1.svs'))
    tcga = open_slide(shared_data('wsi', 'tcga-cr-7395-01a-01-ts1.svs'), mpp=0.25)
    assert tcga.level_dimensions == ((4443, 3567), (2221, 1783)) and tcga.level_for(magnification=20) == (1, 1.0)
    assert 0.25 < tissue_mask(cmu).fraction < 0.45 and 0.5 < tissue_mask(tcga).fraction < 0.75

    r = mine_patches(cmu, tmp_path / 'cmu', 256, result=True)
    df = pd.read_csv(r.csv)
    assert 15 <= r.kept == len(df) <= r.candidates <= 40, (r.kept, r.candidates)
    assert (df['size'] == 256).all() and (df['level'] == 0).all() and (df.x % 256 == 0).all()
    r = mine_patches(tcga, tmp_path / 'tcga', 256, magnification=20, workers=2, result=True)   # level 1: 256 px = 512 at level 0
    df = pd.read_csv(r.csv)
    assert r.grid.level == 1 and (df['size'] == 512).all() and (df['level'] == 1).all()
    assert 20 <= r.kept <= 35, r.kept                         # about 60 % of the 8 x 6 grid
    png = np.asarray(Image.open(tmp_path / 'tcga' / df.Channel_0[0]))
    assert png.shape == (256, 256, 3)
    assert np.array_equal(png, tcga.read_region((int(df.x[0]), int(df.y[0])), 1, (256, 256)))


def test_large_generated_slide_mask_and_mining_with_quotas(large_slide, tmp_path):
    path, labels = large_slide
    s = open_slide(path)
    assert s.dimensions == (20000, 20000) and s.mpp == pytest.approx(0.5) and s.level_count == 7
    assert s.level_dimensions[2] == (5000, 5000) and s.magnification == pytest.approx(20)
    truth = np.asarray(Image.open(labels)) > 0                           # 625 x 625
    mask = tissue_mask(s, 625)
    assert (mask.mask == truth[:mask.mask.shape[0], :mask.mask.shape[1]]).mean() > 0.95
    r = mine_patches(s, tmp_path / 'cls', microns=256, magnification=5, labels=labels, task='classification',
                     quotas={1: 40, 2: 25}, min_tissue=0.9, result=True)
    df = pd.read_csv(r.csv)
    assert r.grid.level == 2 and r.grid.size == 128 and (df['size'] == 512).all()
    assert df.ValueToPredict.value_counts().to_dict() == {1: 40, 2: 25}
    every = mine_patches(s, tmp_path / 'all', 64, level=4, min_tissue=0.2, result=True)   # 1024 level-0 pixels a patch
    assert every.rejected.get('pen', 0) >= 1 and every.kept + sum(every.rejected.values()) == every.candidates, every
    seg = mine_patches(s, tmp_path / 'seg', 128, level=3, labels=labels, quotas=10, min_tissue=0.5, result=True)
    rows = pd.read_csv(seg.csv)
    m = np.asarray(Image.open(tmp_path / 'seg' / rows.Label[0]))
    assert m.shape == (128, 128) and set(np.unique(m)) <= {0, 1, 2} and len(rows) <= 30


def _one_slide_dealt_freely(csv):
    "Drop the PatientID column, so one slide's patches are dealt to training and validation alike."
    table = pd.read_csv(csv)
    table.drop(columns='PatientID').to_csv(csv, index=False)

def test_training_a_smoke_epoch_from_patch_csvs(tmp_path):
    "Classification from patches read on the fly from the slide, segmentation from PNG patches and masks."
    slide = make_sample_slide(tmp_path / 's.tif', size=4096, mask=tmp_path / 'm.png', seed=1)
    cls = mine_patches(slide, tmp_path / 'cls', 64, level=2, labels=tmp_path / 'm.png', task='classification',
                       quotas={1: 6, 2: 6}, store='slide')
    subjects = read_manifest(cls)
    assert len(subjects) == 12 and subjects[0].channels[0].endswith(',256,2') and '#patch=' in subjects[0].channels[0]
    cfg = config_from_dict({'data_csv': str(cls), 'output_dir': str(tmp_path / 'run_cls'), 'modality': 'histo',
                            'patch_size': [64, 64], 'num_epochs': 1, 'batch_size': 4, 'q_samples_per_volume': 1,
                            'model': {'architecture': 'vgg11', 'dimension': 2, 'num_channels': 3, 'class_list': [1, 2], 'base_filters': 4},
                            'loss_function': 'cel', 'metrics': ['accuracy'], 'export': {'enabled': False}})
    check_subjects(subjects, cfg.model)
    with pytest.raises(DataError, match=r'1 PatientID group\(s\) are too few'):  # one slide's patches stay in one split
        medlab.train(cfg)
    _one_slide_dealt_freely(cls)
    result = medlab.train(cfg)
    assert result.best_epoch == 1 and 0 <= result.best['accuracy'] <= 1
    seg = mine_patches(slide, tmp_path / 'seg', 64, level=2, labels=tmp_path / 'm.png', quotas=5)
    _one_slide_dealt_freely(seg)
    cfg = config_from_dict({'data_csv': str(seg), 'output_dir': str(tmp_path / 'run_seg'), 'modality': 'histo',
                            'patch_size': [64, 64], 'num_epochs': 1, 'batch_size': 4, 'q_samples_per_volume': 1,
                            'model': {'dimension': 2, 'num_channels': 3, 'class_list': [0, 1, 2], 'base_filters': 4},
                            'export': {'enabled': False}})
    result = medlab.train(cfg)
    assert 0 <= result.best['dice'] <= 1


def test_deidentify_removes_label_macro_and_text_keeps_level0(tmp_path):
    src = shared_data('wsi', 'CMU-1-Small-Region.svs')
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    found = slide_identifiers(src)
    assert found[:2] == ['label image 387x463', 'macro image 1280x431'] and any('Filename' in f for f in found)
    out = deidentify_slide(src, tmp_path / 'clean.svs')
    assert slide_identifiers(out) == []
    text = out.read_bytes().decode('latin-1')
    for secret in ('CMU-1', '12/29/09', '09:59:15', 'b414003d-95c6-48b0-9369-8010ed517ba7', 'CPAPERIOCS', '1004486'):
        assert secret not in text, secret
    a, b = open_slide(src), open_slide(out)
    assert np.array_equal(a.read_region((0, 0), 0, (2220, 2967)), b.read_region((0, 0), 0, (2220, 2967)))
    assert b.mpp == pytest.approx(0.499) and b.magnification == 20 and sorted(b._ts.associated_images) == ['thumbnail']
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    tcga = deidentify_slide(shared_data('wsi', 'tcga-cr-7395-01a-01-ts1.svs'), tmp_path / 'tcga.svs')
    assert _quiet_open(tcga).level_dimensions == ((4443, 3567), (2221, 1783))


def test_slide_subcommands(tmp_path, capsys):
    svs = shared_data('wsi', 'CMU-1-Small-Region.svs')
    assert main(['mine-patches', str(svs), str(tmp_path / 'm'), '--microns', '128', '--magnification', '10', '--workers', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    df = pd.read_csv(lines[-1])
    assert lines[0].startswith(f'{len(df)} patches of ') and (df['size'] == 256).all()
    assert main(['mine-patches', str(svs), str(tmp_path / 'm2'), '--overlap', '1.5']) == 1
    assert 'overlap is a fraction' in capsys.readouterr().err
    assert main(['deidentify-slide', str(svs), str(tmp_path / 'c.svs')]) == 0
    assert 'removed: label image 387x463; macro image 1280x431' in capsys.readouterr().out
    assert main(['deidentify-slide', str(tmp_path / 'missing.svs'), str(tmp_path / 'd.svs')]) == 1
    assert main(['deidentify-slide']) == 2
