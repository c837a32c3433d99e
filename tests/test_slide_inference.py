"""Slide inference on real slides: a run trained for one epoch on mined patches predicts the bundled SVS slides; the
maps reopen in tiffslide with the slide's physical extent, hold probabilities in [0, 1], average overlaps exactly,
and `predict` / templates/infer.ipynb / templates/histology.ipynb take slides unchanged."""
import json
import warnings

import nbformat
import numpy as np
import pandas as pd
import pytest
import tiffslide
import torch
from PIL import Image

import medlab
from medlab.config import MedlabConfig
from medlab.predictor import Predictor
from medlab.slide_inference import infer_slide, read_patches, slide_grid, tissue_patches, training_rows
from medlab.slides import SlideError, open_slide, tissue_mask
from medlab.tasks import config_task
from conftest import TEMPLATES, run_template, shared_data

CMU = ('wsi', 'CMU-1-Small-Region.svs')
TCGA = ('wsi', 'tcga-cr-7395-01a-01-ts1.svs')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny classifier trained one epoch on patches mined from a generated slide (background, tissue, 'tumour')."
    d = tmp_path_factory.mktemp('histo')
    slide = medlab.make_sample_slide(d / 'slide.tif', size=2048, mpp=0.5, mask=d / 'mask.png')
    csv = medlab.mine_patches(slide, d / 'patches', patch_size=64, mpp=1.0, labels=d / 'mask.png', task='classification')
    with pytest.warns(UserWarning, match='one slide are dealt to training and validation alike'):
        assert training_rows(csv) > 40
    cfg = MedlabConfig(modality='histo', data_csv=str(csv), output_dir=str(d / 'run'), seed=0,
                       model={'architecture': 'vgg11', 'num_channels': 3, 'class_list': [0, 1, 2], 'base_filters': 4},
                       loss_function='cel', metrics=['accuracy'], patch_size=[64, 64], batch_size=16, num_epochs=1,
                       q_samples_per_volume=1, nested_training={'testing': 1, 'validation': -5}, export={'enabled': False},
                       data_preprocessing={'normalize_div_by_255': None})
    medlab.train(cfg)
    return d / 'run'


def reopened(path):
    "(width, height), (mpp x, mpp y) and the level-0 array of a TIFF, as tiffslide reads it."
    s = tiffslide.TiffSlide(path)
    mpp = float(s.properties['tiffslide.mpp-x']), float(s.properties['tiffslide.mpp-y'])
    return s.dimensions, mpp, s.read_region((0, 0), 0, s.dimensions, as_array=True)[..., 0]


def test_single_level_svs(run, tmp_path):
    "CMU-1 (one level, 0.499 um/px) read at 1 um/px: maps with the slide's extent (2220 x 0.499 um across) and its MPP."
    path = shared_data(*CMU)
    r = infer_slide(run, path, tmp_path, mpp=1.0, stride=32)
    slide = open_slide(path)
    assert (r.level, r.patch, r.stride) == (0, 64, 32) and r.mpp == pytest.approx(1.0) and 0 < r.patches < r.grid_patches
    for tif in [*r.probabilities, r.labels]:
        (w, h), (mx, my), arr = reopened(tif)
        assert mx == my == pytest.approx(r.output_mpp) == pytest.approx(8.0)
        for size, size0 in zip((w, h), slide.dimensions):               # extent within one output pixel of the slide's
            assert abs(size * mx - size0 * slide.mpp) < mx
        assert arr.shape == (h, w)
    p1, p2 = (reopened(t)[2] for t in r.probabilities)
    assert p1.dtype == np.float32 and 0 <= p1.min() and p2.max() <= 1 and (p1 + p2).max() <= 1 + 1e-5
    labels = reopened(r.labels)[2]
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()
    assert (labels[(p1 + p2) == 0] == 0).all()                           # nothing predicted outside the tissue
    for png in (r.heatmap, r.overlay):
        with Image.open(png) as im: assert im.size == slide.thumbnail(1024)[0].shape[1::-1]
    written = json.loads((tmp_path / 'CMU-1-Small-Region_slide_inference.json').read_text())
    assert written['patches'] == r.patches and written['output_mpp'] == pytest.approx(8.0)


def test_two_level_jpeg2000_svs_without_mpp(run, tmp_path):
    "The TCGA slide has no MPP: a warning naming the fix, an error for a resolution in microns, then an explicit MPP works."
    path = shared_data(*TCGA)
    with pytest.warns(UserWarning, match=r'no microns-per-pixel .* open_slide\(path, mpp=0.5\)'):
        slide = open_slide(path)
    with pytest.raises(SlideError, match='has no microns-per-pixel'):
        infer_slide(run, slide, tmp_path, mpp=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                      # with slide_mpp given: no warning
        r = infer_slide(run, path, tmp_path, mpp=1.0, slide_mpp=0.5)
    assert r.level == 1 and r.mpp == pytest.approx(1.0, rel=1e-3)            # level 1 (downsample 2.0) is 1 um/px
    (w, h), (mx, _), arr = reopened(r.probabilities[0])
    assert mx == pytest.approx(r.output_mpp) and 0 <= arr.min() and arr.max() <= 1
    assert slide.dimensions == (4443, 3567)
    for size, size0 in zip((w, h), slide.dimensions):
        assert abs(size * mx - size0 * 0.5) < mx


class _Brightness(torch.nn.Module):
    "A 'network' whose class-1 probability is its patch's mean value (after normalize_div_by_255)."
    def forward(self, x):
        p = x.float().mean((1, 2, 3)).clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)


class _Constant(torch.nn.Module):
    def forward(self, x): return torch.tensor([[0.0, np.log(0.3 / 0.7)]]).expand(len(x), 2)


def _predictor(model):
    cfg = MedlabConfig(modality='histo', patch_size=[64, 64], loss_function='cel', metrics=['accuracy'],
                       model={'architecture': 'vgg11', 'num_channels': 3, 'class_list': [0, 1]},
                       data_preprocessing={'normalize_div_by_255': None})
    return Predictor(model, cfg, config_task(cfg.model, cfg.loss_function, cfg.metrics), 'cpu')


def test_overlaps_average_exactly(tmp_path):
    "A constant 0.3 stays 0.3 under four-fold overlap; a patch-dependent score averages the patches covering each pixel."
    path = shared_data(*CMU)
    r = infer_slide(_predictor(_Constant()), path, tmp_path / 'c', mpp=1.0, stride=32)
    p = reopened(r.probabilities[0])[2]
    assert np.allclose(p[p > 0], 0.3, atol=1e-6) and (p > 0).mean() > 0.3
    r = infer_slide(_predictor(_Brightness()), path, tmp_path / 'b', mpp=1.0, stride=16, output_factor=16)
    p = reopened(r.probabilities[0])[2]
    slide = open_slide(path)
    grid = slide_grid(slide, 64, 16, mpp=1.0, output_factor=16)       # 4 output pixels a patch, 1 a stride: 16 patches a pixel
    cells = set(tissue_patches(grid, tissue_mask(slide, 1024), 0.1))   # the mask infer_slide takes for this slide
    checked = 0
    for y, x in [(30, 30), (40, 50), (60, 20), (70, 60)]:
        covering = [(i, j) for i in range(x - 3, x + 1) for j in range(y - 3, y + 1) if (i, j) in cells]
        if not covering: continue
        want = np.mean([read_patches(slide, grid, [c])[0].mean() / 255 for c in covering])
        assert p[y, x] == pytest.approx(want, abs=1e-5), (y, x, len(covering))
        checked += len(covering) > 1
    assert checked >= 2


def test_predict_and_the_infer_template_take_slides(run, tmp_path):
    "A CSV of slides (with an `mpp` column) through `medlab.predict` and templates/infer.ipynb unchanged."
    path = shared_data(*CMU)
    pd.DataFrame([{'SubjectID': 'cmu', 'Channel_0': str(path), 'mpp': 1.0}]).to_csv(tmp_path / 'slides.csv', index=False)
    result = medlab.predict(run, tmp_path / 'slides.csv', tmp_path / 'pred')
    row = result.predictions.iloc[0]
    assert (row.SubjectID, row.labels, row.heatmap, row.mpp) == ('cmu', 'cmu_labels.tif', 'cmu_heatmap.png', 1.0)
    assert result.evaluation is None and (tmp_path / 'pred' / 'cmu_probability_1.tif').is_file()
    with pytest.raises(ValueError, match="slides are fused by the mean"):
        medlab.predict(run, tmp_path / 'slides.csv', tmp_path / 'x', fusion='vote')
    nb = run_template('infer', tmp_path, runs=str(run), data_csv=str(tmp_path / 'slides.csv'), output_dir=str(tmp_path / 'tpl'))
    table = pd.read_csv(tmp_path / 'tpl' / 'predictions.csv')
    assert list(table.SubjectID) == ['cmu'] and (tmp_path / 'tpl' / table.labels[0]).is_file()
    assert reopened(tmp_path / 'tpl' / 'cmu_labels.tif')[0] == reopened(tmp_path / 'pred' / 'cmu_labels.tif')[0]
    assert nbformat.read(nb, 4).cells


def test_histology_template_on_the_small_svs(tmp_path):
    "templates/histology.ipynb headless on CMU-1 with a two-class label mask (left and right halves): every step's output."
    path = shared_data(*CMU)
    w, h = open_slide(path).dimensions
    halves = np.ones((h // 16, w // 16), np.uint8); halves[:, halves.shape[1] // 2:] = 2
    Image.fromarray(halves).save(tmp_path / 'labels.png')
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text((TEMPLATES / 'configs' / 'histology_sample.yaml').read_text()
                   .replace('class_list: [0, 1, 2]', 'class_list: [1, 2]').replace('num_epochs: 3', 'num_epochs: 1'))
    out = tmp_path / 'histo'
    nb = run_template('histology', tmp_path, config=str(cfg), slide=str(path), labels=str(tmp_path / 'labels.png'),
                      output_dir=str(out), mpp=1.0, max_patches=120)
    for name in ('tissue.png', 'CMU-1-Small-Region_heatmap.png', 'CMU-1-Small-Region_labels.tif', 'CMU-1-Small-Region_probability.tif',
                 'run/model_best.pt', 'patches/CMU-1-Small-Region_patches.csv'):
        assert (out / name).is_file(), name
    mined = pd.read_csv(out / 'patches' / 'CMU-1-Small-Region_patches.csv')
    assert len(mined) >= 20 and set(mined.ValueToPredict) == {1, 2}
    (w2, h2), (mx, _), _ = reopened(out / 'CMU-1-Small-Region_probability.tif')
    assert abs(w2 * mx - w * 0.499) < mx
    images = [o for c in nbformat.read(nb, 4).cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert len(images) >= 3                                            # tissue with patches, heat map, label map


def test_the_histology_panel_edits_the_templates_parameters():
    "The panel (medlab.widgets.ParameterPanel) has a control for every parameter of the template but `interactive`."
    import papermill
    params = papermill.inspect_notebook(str(TEMPLATES / 'histology.ipynb'))
    values = {k: eval(v['default']) for k, v in params.items() if k != 'interactive'}
    panel = medlab.histology_panel(**values)
    assert type(panel).__name__ == 'ParameterPanel' and panel.values == values
    assert list(values) == ['config', 'slide', 'labels', 'output_dir', 'mpp', 'slide_mpp', 'max_patches']
