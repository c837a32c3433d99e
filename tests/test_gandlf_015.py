"""GaNDLF 0.1.5's own 16 configs (../shared/gandlf-0.1.5-configs/, SOURCE.txt names the commit): each loads as GaNDLF reads it,
and each testing/ config (and the DFU 2021 classifier that ends in logits) trains one epoch unchanged."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

import medlab
from medlab.config import ConfigError, config_from_dict, config_to_yaml, load_config
from medlab.gandlf import GaNDLFSpelling, IgnoredKey
from conftest import gandlf_like_data, load_with_notes as _load, ROOT

CONFIGS = ROOT.parent / 'shared' / 'gandlf-0.1.5-configs'
NAMES = sorted(p.name for p in CONFIGS.glob('*.yaml'))
REFUSED = {'samples_config_segmentation_histology.yaml'}  # nested_training.validation: 1, which GaNDLF 0.1.5 cannot split either
DFU = 'samples_config_dfu2021_vgg11_without_preprocess_classification.yaml'


def config_path(name):
    "A config of ../shared/gandlf-0.1.5-configs, skipping when that folder is absent (a user's clone)."
    if not CONFIGS.is_dir(): pytest.skip(f'{CONFIGS} is absent: these tests read GaNDLF 0.1.5\'s configs from ../shared beside the repo')
    return CONFIGS / name


def _read(raw):
    "(config, notes, ignored) of a raw mapping."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg = config_from_dict(raw)
    return (cfg, [str(w.message).split(': ', 1)[1] for w in caught if w.category is GaNDLFSpelling],
            [str(w.message).split(': ', 1)[1] for w in caught if w.category is IgnoredKey])


def test_the_folder_holds_the_16_configs_of_the_release():
    config_path('SOURCE.txt')
    assert len(NAMES) == 16 and '3f9b7726' in (CONFIGS / 'SOURCE.txt').read_text()


@pytest.mark.parametrize('name', [n for n in NAMES if n not in REFUSED] or ['(none)'])
def test_each_config_of_gandlf_0_1_5_loads(tmp_path, name):
    "Every config GaNDLF 0.1.5 can run loads as it is (warnings allowed); written back, it loads silently to the same config."
    cfg, notes, ignored = _load(config_path(name), output_dir=str(tmp_path / 'run'))
    again, notes_again, ignored_again = _read(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg and notes_again == [] and ignored_again == []


def test_a_config_gandlf_0_1_5_cannot_split_is_refused_with_that_reason():
    "The histology sample asks for nested_training.validation: 1; GaNDLF 0.1.5 splits with sklearn's KFold, which needs 2 folds."
    from sklearn.model_selection import KFold
    with pytest.raises(ValueError, match='n_splits=2 or more'): KFold(n_splits=1)  # what GaNDLF 0.1.5 meets on this file
    with pytest.raises(ConfigError) as e: load_config(config_path('samples_config_segmentation_histology.yaml'))
    assert len(e.value.problems) == 1
    problem = e.value.problems[0]
    assert problem.startswith('nested_training.validation: 1 would keep no validation subjects')
    assert 'GaNDLF 0.1.5 fails on it too: its KFold needs 2 folds' in problem and 'give -5' in problem


def test_the_lightning_keys_of_config_all_options():
    "accelerator, strategy, precision, n_nodes, devices, auto_lr_find, auto_batch_size_find: each acted on or dropped with why."
    cfg, notes, ignored = _load(config_path('samples_config_all_options.yaml'))
    assert (cfg.accelerator, cfg.precision, cfg.devices) == ('cpu', '32', 'auto')
    assert (cfg.auto_lr_find, cfg.auto_batch_size_find) == (False, False)
    assert sorted(ignored) == ['memory_save_mode', 'n_nodes', 'q_verbose', 'strategy']
    assert notes == ['enable_padding: read as patch_sampler.enable_padding']


@pytest.mark.parametrize('given, read, note', [
    (32, '32', None), ('32-true', '32', 'precision: 32-true read as 32'), ('16-mixed', '16', 'precision: 16-mixed read as 16'),
    (16, '16', None), ('bf16-mixed', 'bf16', 'precision: bf16-mixed read as bf16'), ('bf16', 'bf16', None),
    ('16-true', '16', 'precision: 16-true read as 16 (mixed: float32 weights)'),
])
def test_lightning_precisions_read_as_medlab_s(given, read, note):
    cfg, notes, ignored = _read({'precision': given})
    assert cfg.precision == read and notes == ([note] if note else []) and ignored == []


@pytest.mark.parametrize('raw, says', [
    ({'precision': 64}, 'precision 64 does nothing here: medlab computes in float32 at most'),
    ({'precision': '64-true'}, 'precision 64-true does nothing here: medlab computes in float32 at most'),
    ({'strategy': 'auto'}, 'strategy does nothing here: medlab trains in one process, or with DDP'),
    ({'strategy': 'ddp'}, 'strategy does nothing here: medlab trains in one process, or with DDP'),
    ({'strategy': 'fsdp'}, 'strategy fsdp does nothing here: medlab spreads a run over GPUs with DDP only'),
    ({'n_nodes': 1}, 'n_nodes does nothing here: medlab trains on one machine'),
])
def test_lightning_knobs_medlab_does_not_have_are_dropped_with_why(raw, says):
    cfg, notes, ignored = _read(raw)
    assert len(ignored) == 1 and ignored[0].startswith(says), ignored
    assert cfg.precision == '32'


def test_the_tuners_are_settings_of_their_own():
    cfg, notes, ignored = _read({'auto_lr_find': True, 'auto_batch_size_find': True})
    assert (cfg.auto_lr_find, cfg.auto_batch_size_find, ignored) == (True, True, [])
    with pytest.raises(ConfigError, match="auto_lr_finder: unknown key; did you mean 'auto_lr_find'"): config_from_dict({'auto_lr_finder': True})


def test_a_classifier_ending_in_logits_is_read_as_gandlf_reads_it():
    "final_layer: none of a classification config: cross-entropy on the logits, probabilities from a softmax, as the run records."
    cfg, notes, ignored = _load(config_path(DFU))
    assert (cfg.model.architecture, cfg.loss_function, cfg.model.final_layer, cfg.model.class_list) == ('vgg11', 'cel', 'softmax', [0, 1, 2, 3])
    assert [n for n in notes if n.startswith('model.final_layer')] == [
        "model.final_layer: None read as softmax for this classification run: its logits train with cross-entropy as in GaNDLF, "
        "and its probabilities come from a softmax (their arg max is GaNDLF's decision)"]
    # segmentation still refuses it; regression keeps its raw value
    with pytest.raises(ConfigError, match='gives no class probabilities for a segmentation run'):
        config_from_dict({'model': {'final_layer': 'none'}, 'loss_function': 'dc'})
    assert config_from_dict({'model': {'architecture': 'vgg11', 'final_layer': None}, 'loss_function': 'mse', 'metrics': ['mse']}).model.final_layer == 'none'


# -- training, one epoch each, on small data of the right shape ---------------------------------------------------

def _data(folder, task, num_channels=1, classes=3):
    "Seven subjects: the fewest that fold five ways (four train, one validates, two test)."
    return gandlf_like_data(folder, task, 7, num_channels, classes)


def _train_one_epoch(tmp_path, name, task, **data):
    csv, run = _data(tmp_path / 'data', task, **data), tmp_path / 'run'
    cfg, _, _ = _load(config_path(name), data_csv=str(csv), output_dir=str(run), num_epochs=1)
    cfg.export.enabled = False  # exporting is tested elsewhere; this checks the config trains
    medlab.train(cfg)
    metrics = json.loads((run / 'metrics.json').read_text())
    logs = pd.read_csv(run / 'logs_training.csv')
    assert metrics['task'] == task and metrics['epochs_run'] == 1 and list(logs.epoch) == [1]
    assert np.isfinite(logs.loss.iloc[0])
    return cfg, run, pd.read_csv(run / 'logs_validation.csv')


@pytest.mark.parametrize('task, scores', [
    ('segmentation', ['dice', 'precision', 'iou', 'f1', 'recall']),
    ('classification', ['classification_accuracy', 'f1', 'accuracy', 'balanced_accuracy', 'precision', 'recall', 'specificity', 'iou']),
    ('regression', ['mse']),
])
def test_gandlf_0_1_5_testing_config_trains_one_epoch(tmp_path, task, scores):
    cfg, run, validation = _train_one_epoch(tmp_path, f'testing_config_{task}.yaml', task)
    assert cfg.num_epochs == 1 and cfg.batch_size == 1  # as the file says
    for name in scores: assert name in validation.columns, (name, list(validation.columns))


def test_the_dfu2021_classifier_trains_one_epoch_and_records_softmax(tmp_path):
    "RGB-like 3-channel 128x128 images, 4 classes, vgg11 from logits: an epoch, probabilities that sum to 1, softmax in the run's config."
    cfg, run, validation = _train_one_epoch(tmp_path, DFU, 'classification', num_channels=3, classes=4)
    assert 'classification_accuracy' in validation.columns
    assert 'final_layer: softmax' in (run / 'config.yaml').read_text()
    predictor = medlab.Predictor.from_run(run)
    image = torch.randn(1, 3, 128, 128)
    probabilities = predictor.task.probabilities(predictor.logits(image).float())
    assert probabilities.shape == (1, 4) and torch.allclose(probabilities.sum(1), torch.ones(1), atol=1e-5)


# -- the tuners on a real run -------------------------------------------------------------------------------------

def test_tune_trainer_finds_a_batch_size_and_a_learning_rate_for_a_gandlf_config(tmp_path):
    "The DFU 2021 classifier with both tuners on: a batch size within the epoch's patches (not its 256), a rate from the range test."
    from medlab.run import RunFolder
    from medlab.split import load_split
    from medlab.tasks import config_task
    from medlab.training import Trainer
    from medlab.tuning import tune_trainer
    csv = _data(tmp_path / 'data', 'classification', num_channels=3, classes=4)
    cfg, _, _ = _load(config_path(DFU), data_csv=str(csv), output_dir=str(tmp_path / 'run'), auto_lr_find=True, auto_batch_size_find=True)
    task = config_task(cfg.model, cfg.loss_function, cfg.metrics)
    trainer = Trainer(cfg, load_split(cfg, task), task, RunFolder(cfg.output_dir))
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    tuned, found = tune_trainer(trainer, num_iter=5)
    patches = len(trainer.queue.subjects) * cfg.q_samples_per_volume
    assert set(found) == {'batch_size', 'learning_rate'} and patches == 5  # testing: 1 keeps no test set
    assert found['batch_size'] in (1, 2, 4)  # doubled from 1 while a step fits, never past the epoch's 5 patches
    assert 1e-8 <= found['learning_rate'] <= 10
    assert (tuned.batch_size, tuned.learning_rate) == (found['batch_size'], found['learning_rate'])
    assert (cfg.batch_size, cfg.learning_rate) == (256, 0.001)  # the trainer's own config is left as it was
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())


def test_train_runs_the_tuners_records_them_and_resumes_with_their_values(tmp_path):
    "auto_batch_size_find and auto_lr_find through `train`: a 'tuned' event, the run's config.yaml holds the found values, a resume keeps them."
    from medlab.run import RunFolder
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32)
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1,
                            'batch_size': 64, 'q_samples_per_volume': 2, 'auto_batch_size_find': True, 'auto_lr_find': True,
                            'model': {'class_list': [0, 1, 2], 'base_filters': 4}})
    medlab.train(cfg)
    run = RunFolder(tmp_path / 'run')
    tuned = [e for e in run.events() if e['event'] == 'tuned']
    assert len(tuned) == 1 and set(tuned[0]) >= {'batch_size', 'learning_rate'}
    saved = run.config()
    assert (saved.batch_size, saved.learning_rate) == (tuned[0]['batch_size'], tuned[0]['learning_rate'])
    assert saved.batch_size <= 8  # never past the epoch's patches (4 training subjects x 2), not the config's 64
    medlab.train(cfg.model_copy(update={'num_epochs': 2}))  # resumes: the tuned values are not a config conflict
    events = [e['event'] for e in run.events()]
    assert events.count('tuned') == 1 and run.metrics()['epochs'] == 2 if 'epochs' in run.metrics() else events.count('finished') == 2
