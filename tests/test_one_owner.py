"""One owner per job: window blending (predictor, CAM, bundle export), task construction from a config, constants."""
import numpy as np
import pytest
import torch

import medlab
import medlab.explain as explain_mod
import medlab.predictor as predictor_mod
from medlab.config import InferenceConfig, MedlabConfig
from medlab.deploy import _inference_json
from medlab.models import build_model
from medlab.tasks import build_task


def _predictor(how: str, overlap: int = 8):
    cfg = MedlabConfig(patch_size=[32, 32], model={'class_list': [0, 1], 'base_filters': 4}, data_preprocessing={'normalize': None},
                       inference_mechanism=InferenceConfig(patch_overlap=overlap, grid_aggregator_overlap=how))
    task = build_task(cfg.model, cfg.loss_function)
    torch.manual_seed(0)
    return medlab.Predictor(build_model(cfg.model, task.outputs), cfg, task, 'cpu')


@pytest.fixture
def blends(monkeypatch):
    "Every call of MONAI's sliding window from the predictor and from CAM, as the blending it was given."
    seen = []
    real = predictor_mod.sliding_window_inference
    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ('overlap', 'mode', 'roi_weight_map')})
        return real(*args, **kwargs)
    monkeypatch.setattr(predictor_mod, 'sliding_window_inference', spy)
    monkeypatch.setattr(explain_mod, 'sliding_window_inference', spy)
    return seen


def test_cam_maps_with_hann_blending_work_and_weigh_windows_as_prediction_does(blends):
    p = _predictor('hann')
    image = np.random.default_rng(0).random((1, 56, 56), dtype=np.float32)
    e = explain_mod.explain(p, image, method='saliency', target=1)
    assert e.map.shape == (56, 56) and np.isfinite(e.map).all() and e.map.min() == 0 and e.map.max() == pytest.approx(1)
    predicted, explained = blends[0], blends[-1]   # the predictor's logits first, then CAM's windows
    assert predicted['mode'] == explained['mode'] == 'constant'
    assert predicted['overlap'] == explained['overlap']
    assert explained['roi_weight_map'] is not None, 'CAM ignored hann: windows averaged'
    torch.testing.assert_close(explained['roi_weight_map'].cpu(), predicted['roi_weight_map'].cpu())
    torch.testing.assert_close(predicted['roi_weight_map'].cpu(), medlab.predictor.hann_weights((32, 32)))


@pytest.mark.parametrize('how', ['average', 'gaussian', 'crop'])
def test_prediction_cam_and_the_bundle_blend_windows_alike(blends, how):
    p = _predictor(how)
    explain_mod.explain(p, np.random.default_rng(1).random((1, 56, 56), dtype=np.float32), method='saliency', target=1)
    predicted, explained = blends[0], blends[-1]
    assert predicted['mode'] == explained['mode'] and predicted['overlap'] == explained['overlap']
    assert (predicted['roi_weight_map'] is None) == (explained['roi_weight_map'] is None)
    if predicted['roi_weight_map'] is not None:
        torch.testing.assert_close(explained['roi_weight_map'].cpu(), predicted['roi_weight_map'].cpu())
    if how == 'crop':   # no MONAI inferer mode for a weight map: the bundle refuses it
        with pytest.raises(ValueError, match="grid_aggregator_overlap 'crop' has no MONAI inferer mode"): _inference_json(p)
    else:
        inferer = _inference_json(p)[0]['inferer']
        assert (inferer['mode'], inferer['overlap']) == (predicted['mode'], predicted['overlap'])


def test_the_bundle_refuses_hann():
    with pytest.raises(ValueError, match="grid_aggregator_overlap 'hann' has no MONAI inferer mode"): _inference_json(_predictor('hann'))


def test_task_of_keeps_the_scaling_factor_a_caller_used_to_drop():
    from medlab.tasks import task_of
    cfg = MedlabConfig(model={'architecture': 'resnet18', 'class_list': []}, loss_function='mse', metrics=['mae'], scaling_factor=10.0)
    assert (task_of(cfg).name, task_of(cfg).scaling_factor) == ('regression', 10.0)


def test_slide_suffixes_are_one_list_that_infer_and_data_share():
    import medlab.data, medlab.infer
    assert medlab.infer.SLIDE_SUFFIXES is medlab.data.SLIDE_SUFFIXES
    assert '.qptiff' in medlab.data.SLIDE_SUFFIXES and '.svslide' not in medlab.data.SLIDE_SUFFIXES  # tiffslide reads TIFFs, not Sakura's SQLite


def test_the_two_optical_densities_are_named_for_what_they_are():
    from medlab.slides import summed_optical_density
    from medlab.transforms import stain_optical_density
    rgb = np.array([[[255, 255, 255], [15, 63, 255]]], np.uint8)
    np.testing.assert_allclose(summed_optical_density(rgb), [[0.0, -np.log(16 / 256) - np.log(64 / 256)]], atol=1e-6)
    np.testing.assert_allclose(stain_optical_density(rgb[0]), -np.log((rgb[0] + 1.0) / 240), atol=1e-12)
    import medlab.slides, medlab.transforms
    assert not hasattr(medlab.slides, 'optical_density') and not hasattr(medlab.transforms, 'optical_density')


def test_template_path_finds_the_repository_templates_from_the_core_floor():
    "utils moved to medlab/core/: the templates are two folders up from it, not one (a run of train.ipynb failed there)."
    from pathlib import Path
    from medlab.core.utils import template_path
    assert template_path('train') == Path(__file__).resolve().parents[1] / 'templates' / 'train.ipynb'
