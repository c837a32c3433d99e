"""GaNDLF's own configs as a GaNDLF user brings them (tests/gandlf_configs/: copies, SOURCES.md names each one's commit)."""
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

import medlab
from medlab.config import ConfigError, MedlabConfig, config_from_dict, config_to_yaml, load_config
from medlab.gandlf import IGNORED
from conftest import gandlf_like_data, load_with_notes as _load, ROOT, run_template, write_yaml

CONFIGS = ROOT / 'tests' / 'gandlf_configs'
TRANSFORM_BLOCKS = ('data_preprocessing', 'data_augmentation', 'data_postprocessing')


def test_every_key_of_gandlf_0_1_5_schema_is_accepted():
    "Each key of GaNDLF 0.1.5's schema loads: it acts as GaNDLF documents it, or is named as a runtime knob that does nothing here."
    path = CONFIGS / 'schema_0.1.5_keys.yaml'
    raw = yaml.safe_load(path.read_text())
    cfg, notes, ignored = _load(path)
    assert sorted(ignored) == sorted(['model.type', 'track_memory_usage', 'print_rgb_label_warning', 'pin_memory_dataloader',
                                      'memory_save_mode', 'medcam_enabled', 'parallel_compute_command', 'previous_parameters', 'q_verbose'])
    moved = {'grid_aggregator_overlap', 'differential_privacy'}  # read into inference_mechanism; false is the only value medlab takes
    for key in raw:
        assert key in MedlabConfig.model_fields or key in IGNORED or key in moved, key
    assert cfg.inference_mechanism.grid_aggregator_overlap == 'crop'
    assert cfg.export.precision == ['fp32'] and cfg.nested_training.stratified is False
    assert cfg.scheduler.type == 'triangle_modified' and cfg.scheduler.options()['step_size'] == 10
    assert cfg.optimizer.options() == {'betas': [0.9, 0.999], 'weight_decay': 5e-05, 'eps': 1e-08, 'amsgrad': False}
    assert cfg.model.ignore_label_validation == 0 and cfg.patch_sampler.padding_mode == 'symmetric'


def test_config_all_options_loads_outside_the_transform_blocks(tmp_path):
    "GaNDLF's reference of every key: each key outside the transform blocks (tests/test_transforms.py covers those) is read with its value."
    raw = yaml.safe_load((CONFIGS / 'config_all_options.yaml').read_text())
    cfg, notes, ignored = _load(write_yaml(tmp_path / 'all.yaml', {k: v for k, v in raw.items() if k not in TRANSFORM_BLOCKS}))
    assert ignored == ['parallel_compute_command', 'q_verbose']
    assert notes == ['enable_padding: read as patch_sampler.enable_padding']
    m = cfg.model
    assert (m.dimension, m.architecture, m.base_filters, m.class_list, m.ignore_label_validation) == (3, 'resunet', 30, [0, 1, 2, 4], 0)
    assert cfg.scheduler.options() == {'min_lr': 1e-05, 'max_lr': 1, 'step_size': None}
    assert (cfg.clip_mode, cfg.clip_grad, cfg.weighted_loss, cfg.save_training) == ('norm', 0.1, True, False)
    assert (cfg.nested_training.testing, cfg.nested_training.validation, cfg.patch_sampler.type) == (5, 5, 'uniform')
    assert (cfg.inference_mechanism.grid_aggregator_overlap, cfg.q_max_length, cfg.q_samples_per_volume) == ('crop', 40, 5)


@pytest.mark.parametrize('raw, check, note', [
    ({'opt': 'sgd'}, lambda c: c.optimizer.type == 'sgd', 'opt: read as optimizer'),
    ({'model': {'n_channels': 3}}, lambda c: c.model.num_channels == 3, 'model.n_channels: read as model.num_channels'),
    ({'model': {'channels': 2}}, lambda c: c.model.num_channels == 2, 'model.channels: read as model.num_channels'),
    ({'model': {'architecture': 'vgg11', 'batch_norm': False}, 'loss_function': 'cel', 'metrics': ['accuracy']},
     lambda c: c.model.norm_type == 'none', 'model.batch_norm: False read as model.norm_type: none'),
    ({'model': {'architecture': 'vgg11', 'final_layer': 'None'}, 'loss_function': 'mse', 'metrics': ['mse']},
     lambda c: c.model.final_layer == 'none', 'model.final_layer: None read as none'),
    ({'model': {'architecture': 'vgg11', 'final_layer': None}, 'loss_function': 'mse', 'metrics': ['mse']},
     lambda c: c.model.final_layer == 'none', 'model.final_layer: None read as none'),
    ({'model': {'final_layer': 'logsoftmax'}}, lambda c: c.model.final_layer == 'softmax', 'model.final_layer: logsoftmax read as softmax'),
    ({'patch_size': 64}, lambda c: c.patch_size == [64, 64], 'patch_size: one number read as [64, 64]'),
    ({'patch_size': 32, 'model': {'dimension': 3}}, lambda c: c.patch_size == [32, 32, 32], 'patch_size: one number read as [32, 32, 32]'),
    ({'save_masks': True}, lambda c: c.save_output is True, 'save_masks: read as save_output'),
    ({'enable_padding': True}, lambda c: c.patch_sampler.enable_padding is True, 'enable_padding: read as patch_sampler.enable_padding'),
    ({'grid_aggregator_overlap': 'hann'}, lambda c: c.inference_mechanism.grid_aggregator_overlap == 'hann',
     'grid_aggregator_overlap: read as inference_mechanism.grid_aggregator_overlap'),
    ({'nested_training': {'proportional': False}}, lambda c: c.nested_training.stratified is False,
     'nested_training.proportional: read as nested_training.stratified'),
    ({'model': {'onnx_export': True}}, lambda c: c.export.formats == ['onnx', 'openvino'], 'model.onnx_export: read as export.formats'),
    ({'model': {'data_type': 'INT8'}}, lambda c: c.export.precision == ['int8'], 'model.data_type: read as export.precision [int8]'),
    ({'model': {'class_list': '[1||2||4,1||4,4]', 'final_layer': 'sigmoid'}},
     lambda c: c.model.class_list == [0, '1||2||4', '1||4', 4], 'model.class_list: regions'),
])
def test_old_spellings_read_as_current_keys_with_a_note(tmp_path, raw, check, note):
    "Each old spelling gives the current key and one note; the config written back uses the current spelling and loads silently."
    cfg, notes, _ = _load(write_yaml(tmp_path / 'old.yaml', {**raw, 'output_dir': str(tmp_path / 'run')}))
    assert check(cfg) and len(notes) == 1 and notes[0].startswith(note), notes
    again, notes_again, ignored_again = _load(write_yaml(tmp_path / 'new.yaml', yaml.safe_load(config_to_yaml(cfg))))
    assert again == cfg and notes_again == [] and ignored_again == []


@pytest.mark.parametrize('raw, check', [
    ({'model': {'architecture': 'vgg'}, 'loss_function': 'cel', 'metrics': ['f1_score']},
     lambda c: (c.model.architecture, c.metrics) == ('vgg19', ['f1'])),
    ({'loss_function': {'mse': {'reduction': 'sum'}}, 'model': {'architecture': 'resnet18'}, 'metrics': {'mse': None}},
     lambda c: (c.loss_function, c.loss_options, c.metrics) == ('mse', {'reduction': 'sum'}, ['mse'])),
    ({'metrics': ['dice', {'recall': {'average': 'macro'}}]},
     lambda c: (c.metrics, c.metric_options) == (['dice', 'recall'], {'recall': {'average': 'macro'}})),
    ({'scheduler': {'type': 'reduce-on-plateau', 'patience': 3}}, lambda c: c.scheduler.type == 'reduce_on_plateau'),
    ({'scheduler': {'type': 'triangle', 'step_size': 0.0002}}, lambda c: c.scheduler.options()['step_size'] == 0.0002),
    ({'model': {'class_list': '[*range(0,5,1)]'}}, lambda c: c.model.class_list == [0, 1, 2, 3, 4]),
    ({'model': {'architecture': 'vgg16', 'class_list': ['0', '1', '2']}, 'loss_function': 'cel', 'metrics': ['accuracy']},
     lambda c: c.model.class_list == [0, 1, 2]),
    ({'modality': 'path'}, lambda c: c.modality == 'histo'),
    ({'clip_mode': None, 'clip_grad': 0.5}, lambda c: c.clip_mode == 'none'),
    ({'differential_privacy': False}, lambda c: True),
])
def test_gandlf_forms_of_current_keys(raw, check):
    "GaNDLF's current names and short forms, read without a note."
    assert check(config_from_dict(raw))


@pytest.mark.parametrize('raw, says', [
    ({'lerning_rate': 0.1}, "lerning_rate: unknown key; did you mean 'learning_rate'?"),
    ({'model': {'n_chanels': 3}}, "model.n_chanels: unknown key; did you mean 'num_channels'?"),
    ({'optimizer': {'type': 'sgd', 'momentun': 0.9}}, "did you mean 'momentum'"),
    ({'optimizer': {'type': 'adam', 'momentum': 0.9}}, 'momentum: not an option of adam; it is an option of rmsprop, sgd'),
    ({'metrics': [{'recall': {'averge': 'macro'}}]}, "metric_options.recall.averge: not an option of recall; did you mean 'average'?"),
    ({'loss_function': {'focal': {'gama': 2}}}, "loss_options.gama: not an option of focal; did you mean 'gamma'?"),
    ({'differential_privacy': {'noise_multipler': 1.0}}, 'noise_multipler'),
    ({'model': {'class_list': [0, 1], 'num_classes': 3}}, 'model.num_classes: 3 disagrees with model.class_list [0, 1]'),
    ({'problem_type': 'classification'}, 'problem_type: classification, but model.architecture unet'),
    ({'model': {'class_list': '[0,1||2,2]'}}, 'needs a segmentation network with final_layer: sigmoid'),
    ({'nested_training': {'validation': 1}}, 'nested_training.validation: 1 would keep no validation subjects'),
    ({'optimizer': 'sparseadam'}, 'sparseadam updates sparse gradients only'),
])
def test_misspelt_and_impossible_keys_stay_errors(raw, says):
    "Compatibility does not weaken the checks: a typo is still an error with a suggestion, and a value medlab cannot honour says why."
    with pytest.raises(ConfigError, match=None) as e: config_from_dict(raw)
    assert any(says in p for p in e.value.problems), e.value.problems


def test_config_all_options_loads_whole():
    "GaNDLF's reference config as it is, transform blocks included, loads (its colorjitter then needs RGB 2D images to build)."
    cfg, notes, ignored = _load(CONFIGS / 'config_all_options.yaml')
    assert list(cfg.data_preprocessing) == ['threshold', 'normalize', 'resample', 'resample_min', 'crop_external_zero_planes', 'crop', 'centercrop']
    assert len(cfg.augmentations) == 14 and cfg.augmentations['elastic'].probability == 0.5 and cfg.augmentations['kspace'].probability == 1


def test_a_config_gandlf_cannot_parse_gets_the_line():
    "GaNDLF's BraTS sample is not valid YAML (a second `metrics:` followed by a brace at column 0): the error names the line."
    with pytest.raises(ConfigError, match='malformed YAML at line 61'): load_config(CONFIGS / 'samples_config_segmentation_brats.yaml')


# -- GaNDLF's testing configs train, unchanged -------------------------------------------------------------------

@pytest.mark.parametrize('task', ['segmentation', 'classification', 'regression'])
def test_gandlf_testing_config_trains_one_epoch(tmp_path, task):
    "GaNDLF's testing/config_{task}.yaml, unchanged, trains an epoch through the template with only data_csv and output_dir given."
    csv, run = gandlf_like_data(tmp_path / 'data', task), tmp_path / 'run'
    config = CONFIGS / f'testing_config_{task}.yaml'
    run_template('train', tmp_path, config=str(config), data_csv=str(csv), output_dir=str(run))
    metrics = json.loads((run / 'metrics.json').read_text())
    logs = pd.read_csv(run / 'logs_training.csv')
    assert metrics['task'] == task and metrics['epochs_run'] == 1 and list(logs.epoch) == [1]
    assert logs.learning_rate.iloc[0] == pytest.approx(0.001)  # triangle at GaNDLF's default step_size: learning_rate * max_lr
    expected = {'segmentation': ['dice', 'precision', 'iou', 'f1', 'recall'],
                'classification': ['cel', 'classification_accuracy', 'f1'], 'regression': ['mse']}[task]
    for name in expected: assert name in pd.read_csv(run / 'logs_validation.csv').columns, name
    assert np.isfinite(logs.loss.iloc[0])
