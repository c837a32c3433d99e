"""GaNDLF's training options with their meaning: regions, the class penalty, schedules, and the keys that write files."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest

import medlab
from medlab.config import config_from_dict
from medlab.run import RunFolder
from medlab.tasks import Classification, class_penalty
from medlab.training import training_penalty


def test_penalty_on_the_papers_example():
    "GaNDLF's paper: a class in 10 of 100 cases weighs 0.9, the other 0.1; counted on the subjects given (the training split)."
    cfg = config_from_dict({'model': {'architecture': 'vgg11'}, 'loss_function': 'cel', 'metrics': ['accuracy'], 'weighted_loss': True})
    subjects = [SimpleNamespace(value=0.0)] * 10 + [SimpleNamespace(value=1.0)] * 90
    assert training_penalty(cfg, Classification([0, 1]), subjects) == pytest.approx([0.9, 0.1])
    assert class_penalty([30, 70]) == pytest.approx([0.7, 0.3])
    unweighted = config_from_dict({'model': {'architecture': 'vgg11'}, 'loss_function': 'cel', 'metrics': ['accuracy']})
    assert training_penalty(unweighted, Classification([0, 1]), subjects) is None


def test_weighted_run_counts_training_masks_only(tmp_path):
    "A weighted segmentation run records the penalty of its training masks, which differs from the same count over every subject."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=8, size=32)
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1,
                            'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'weighted_loss': True, 'batch_size': 4,
                            'q_samples_per_volume': 1, 'export': {'enabled': False}})
    medlab.train(cfg)
    run = RunFolder(tmp_path / 'run')
    penalty = next(e for e in run.events() if e['event'] == 'start')['penalty']
    task, split = medlab.tasks.build_task(cfg.model, cfg.loss_function), run.split()
    assert penalty == pytest.approx(class_penalty(task.class_counts(split.training, 2)))
    everyone = class_penalty(task.class_counts([*split.training, *split.validation], 2))
    assert penalty != pytest.approx(everyone) and sum(penalty) == pytest.approx(len(penalty) - 1)


def test_region_class_list_learns_overlapping_regions(tmp_path):
    "GaNDLF's combined labels: '[0,1||2,2]' learns the union of the blobs and the class-2 blobs as two overlapping channels."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=16, size=48)
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [48, 48], 'num_epochs': 20,
                            'model': {'class_list': '[0,1||2,2]', 'final_layer': 'sigmoid', 'base_filters': 8}, 'loss_function': 'dcce',
                            'metrics': ['dice', 'dice_per_label'], 'batch_size': 4, 'q_samples_per_volume': 2, 'learning_rate': 0.01,
                            'export': {'enabled': False}, 'save_output': True})
    result = medlab.train(cfg)
    best = result.best
    # a network that learnt nothing scores near 0 on these sparse blobs; seen here: 0.9x on the union, 0.8x on class 2
    assert best['dice_1||2'] >= 0.8 and best['dice_2'] >= 0.6, best
    written = sorted((tmp_path / 'run' / 'predictions' / 'validation').glob('*_prediction.nii.gz'))
    from medlab.io import read_image, to_array
    values = set(to_array(read_image(written[0]), None).ravel().tolist())
    assert values <= {0, 1, 2} and 2 in values, values  # the innermost region's index: 1 the union only, 2 class 2


def _lr_run(tmp_path, scheduler, epochs=3, **extra):
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=5, size=32)
    cfg = config_from_dict({'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': epochs,
                            'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'batch_size': 2, 'q_samples_per_volume': 1,
                            'learning_rate': 0.01, 'scheduler': scheduler, 'export': {'enabled': False}, 'patience': 100,
                            'nested_training': {'testing': 1, 'validation': -5}, **extra})
    medlab.train(cfg)
    return RunFolder(tmp_path / 'run')


def test_logged_learning_rate_follows_a_per_batch_schedule(tmp_path):
    "triangle steps every batch: the log holds the rate of each epoch's last batch, as GaNDLF's formula gives it."
    run = _lr_run(tmp_path, {'type': 'triangle', 'step_size': 3, 'min_lr': 0.1, 'max_lr': 1.0})
    batches = math.ceil(len(run.split().training) / 2)  # 4 training subjects, one patch each, batches of 2
    def rate(it):  # GaNDLF's triangle, times learning_rate
        cycle = math.floor(1 + it / 6); x = abs(it / 3 - 2 * cycle + 1)
        return 0.01 * (1.0 - 0.9 * max(0.0, 1 - x))
    logged = run.logs('training').learning_rate.tolist()
    assert logged == pytest.approx([rate(e * batches - 1) for e in (1, 2, 3)]), (batches, logged)
    assert len(set(round(v, 8) for v in logged)) > 1


def test_logged_learning_rate_follows_a_per_epoch_schedule_and_options_write_files(tmp_path, capsys):
    "step halves every epoch; save_at_every_epoch, save_training and verbose each leave their mark."
    run = _lr_run(tmp_path, {'type': 'step', 'step_size': 1, 'gamma': 0.5}, epochs=2,
                  model={'class_list': [0, 1, 2], 'base_filters': 4, 'save_at_every_epoch': True}, save_training=True, verbose=True,
                  clip_mode='none', clip_grad=0.01, determinism=True)
    assert run.logs('training').learning_rate.tolist() == pytest.approx([0.01, 0.005])
    assert sorted(p.name for p in (run.path / 'epochs').iterdir()) == ['model_epoch_1.pt', 'model_epoch_2.pt']
    trained_on = {s.subject_id for s in run.split().training}
    written = pd.read_csv(run.path / 'predictions' / 'training' / 'predictions.csv')
    assert set(written.SubjectID) == trained_on
    printed = capsys.readouterr().out
    assert 'epoch 1/2: loss' in printed and 'epoch 2/2: loss' in printed
