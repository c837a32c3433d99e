"""Nested k-fold cross-validation: the written fold splits, templates/kfold.ipynb end to end (fusion, restart), a
failing fold, and the Dask executor."""
import json

import nbformat
import pandas as pd
import pytest
import yaml

import medlab
from medlab.crossval import plan_folds
from medlab.run import RunFolder
from conftest import run_template, write_yaml


def fold_splits(folder) -> dict:
    "outer_i/inner_j -> {split: set of SubjectIDs}, from the split.csv files written below `folder`."
    out = {}
    for csv in sorted(folder.glob('outer_*/inner_*/split.csv')):
        df = pd.read_csv(csv)
        out[csv.parent.relative_to(folder).as_posix()] = {k: set(df.SubjectID[df.split == k]) for k in ('training', 'validation', 'testing')}
    return out


@pytest.fixture(scope='module')
def blobs(tmp_path_factory):
    return medlab.make_sample_data(tmp_path_factory.mktemp('blobs'), n_subjects=12, size=64)


def small_config(csv, out, **changes) -> medlab.MedlabConfig:
    cfg = dict(data_csv=str(csv), output_dir=str(out), patch_size=[64, 64], batch_size=4, q_samples_per_volume=4,
               num_epochs=1, learning_rate=0.003, model={'class_list': [0, 1, 2], 'base_filters': 8},
               data_preprocessing={'normalize': None}, scheduler='cosine')
    return medlab.MedlabConfig(**{**cfg, **changes})


@pytest.mark.parametrize('testing, validation, n_folds', [(3, 3, 9), (-5, 3, 3), (1, 3, 3)])
def test_fold_splits_leave_nothing_out_and_leak_nothing(blobs, tmp_path, testing, validation, n_folds):
    "Written split files: no subject in two splits of a fold, none unused, tested exactly once, validated once per outer fold."
    plan_folds(small_config(blobs, tmp_path, nested_training={'testing': testing, 'validation': validation}), tmp_path)
    folds = fold_splits(tmp_path)
    everyone = set(pd.read_csv(blobs).SubjectID)
    assert len(folds) == n_folds
    for name, s in folds.items():
        assert not (s['training'] & s['validation'] or s['training'] & s['testing'] or s['validation'] & s['testing']), name
        assert s['training'] | s['validation'] | s['testing'] == everyone, name
        assert s['training'] and s['validation'], name
    outers = sorted({n.split('/')[0] for n in folds})
    tests = [folds[f'{o}/inner_0']['testing'] for o in outers]
    if testing == 1: assert tests == [set()]                                         # no test set
    if testing == -5: assert len(tests) == 1 and len(tests[0]) in (2, 3)              # the first fifth only
    if testing == 3: assert sorted(x for t in tests for x in t) == sorted(everyone)   # each tested exactly once
    for o in outers:   # inside an outer fold, every non-test subject validates exactly once
        val = [x for n, s in folds.items() if n.startswith(o + '/') for x in s['validation']]
        assert sorted(val) == sorted(everyone - folds[f'{o}/inner_0']['testing'])


def test_classification_folds_are_stratified(tmp_path):
    "Uneven classes (13 and 5, the smaller barely more than the folds): each class is spread across the folds within one."
    csv = medlab.make_sample_data(tmp_path / 'cls', n_subjects=18, size=32, task='classification')
    df = pd.read_csv(csv)
    df['ValueToPredict'] = [1] * 5 + [0] * 13
    df.to_csv(csv, index=False)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'kf'), patch_size=[32, 32],
                              model={'architecture': 'vgg11', 'base_filters': 4}, loss_function='cel', metrics=['accuracy'],
                              nested_training={'testing': 3, 'validation': 3})
    plan_folds(cfg, tmp_path / 'kf')
    value = dict(zip(df.SubjectID, df.ValueToPredict))
    folds = fold_splits(tmp_path / 'kf')
    spread = lambda parts: [max(c) - min(c) for c in zip(*[[sum(value[x] == v for x in p) for v in (0, 1)] for p in parts])]
    assert spread([folds[f'outer_{i}/inner_0']['testing'] for i in range(3)]) == [1, 1]   # 13 and 5 over 3 test sets
    for i in range(3):   # inside each outer fold too, over its validation sets
        assert max(spread([folds[f'outer_{i}/inner_{j}']['validation'] for j in range(3)])) <= 1


def test_kfold_template_fuses_folds_and_restarts(blobs, tmp_path):
    "Three inner folds through templates/kfold.ipynb on two workers; the fusion scores at least their mean; a rerun trains nothing."
    cfg = small_config(blobs, tmp_path / 'kf', num_epochs=6, nested_training={'testing': -4, 'validation': 3})
    config = write_yaml(tmp_path / 'kf.yaml', cfg.model_dump(mode='json'))
    nb = run_template('kfold', tmp_path, config=str(config), workers=2)
    results = pd.read_csv(tmp_path / 'kf' / 'results.csv')
    folds, fused = results[results.inner != 'fused'], results[results.inner == 'fused']
    assert list(folds.fold) == ['outer_0/inner_0', 'outer_0/inner_1', 'outer_0/inner_2'] and (folds.status == 'trained').all()
    assert len(fused) == 1 and fused.status.iloc[0] == '3 run(s) fused by mean'
    # the fused models score at least the mean single fold on the same test subjects (seen: 0.87 vs 0.84 mean)
    assert fused.test_dice.iloc[0] >= folds.test_dice.mean(), results[['fold', 'test_dice']]
    assert folds.val_dice.min() > 0.5, folds.val_dice   # the folds learnt
    for row in folds.itertuples():
        executed = nbformat.read(row.notebook, 4)
        assert RunFolder(tmp_path / 'kf' / row.fold).finished and executed.metadata.papermill['parameters']['split'].endswith('split.csv')
    summary = pd.read_csv(tmp_path / 'kf' / 'summary.csv').set_index(['metric', 'over'])
    assert summary.loc[('test_dice', 'folds'), 'n'] == 3 and summary.loc[('test_dice', 'fused'), 'n'] == 1
    assert (tmp_path / 'kf' / 'results.png').stat().st_size > 1000
    assert (tmp_path / 'kf' / 'outer_0' / 'fused' / 'predictions.csv').is_file()
    assert any('image/png' in o.get('data', {}) for c in nbformat.read(nb, 4).cells for o in c.get('outputs', []))
    # running again skips every finished fold: no notebook is executed again
    stamps = {r.notebook: RunFolder(tmp_path / 'kf' / r.fold).events()[-1]['time'] for r in folds.itertuples()}
    again = medlab.kfold(config, workers=2)
    assert (again.results[again.results.inner != 'fused'].status == 'finished earlier').all()
    assert {r.notebook: RunFolder(tmp_path / 'kf' / r.fold).events()[-1]['time'] for r in folds.itertuples()} == stamps
    pd.testing.assert_series_equal(again.results.test_dice, results.test_dice)


def test_more_epochs_resume_the_folds_and_another_config_is_refused(blobs, tmp_path):
    "Running again with more epochs continues each finished fold; a changed learning rate is refused before any fold runs."
    cfg = small_config(blobs, tmp_path / 'kf', nested_training={'testing': 1, 'validation': -2})
    config = write_yaml(tmp_path / 'kf.yaml', cfg.model_dump(mode='json'))
    medlab.kfold(config)
    longer = medlab.kfold(config, num_epochs=2)
    assert list(longer.results.status) == ['trained'] and list(longer.results.best_epoch) in ([1], [2])
    assert RunFolder(tmp_path / 'kf' / 'outer_0' / 'inner_0').logs('validation').epoch.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r'was trained with another config \(differs in: learning_rate\)'):
        medlab.kfold(config, num_epochs=2, learning_rate=0.01)


def test_classification_kfold_fuses_by_vote(tmp_path):
    "Image-level folds end to end: two inner folds of a classifier, the outer test set scored by a vote; 'vote' is refused for regression before any fold."
    csv = medlab.make_sample_data(tmp_path / 'cls', n_subjects=12, size=32, task='classification')
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'kf'), patch_size=[32, 32], num_epochs=1, batch_size=4,
                              q_samples_per_volume=1, model={'architecture': 'vgg11', 'base_filters': 4}, loss_function='cel',
                              metrics=['balanced_accuracy'], nested_training={'testing': -4, 'validation': 2})
    result = medlab.kfold(write_yaml(tmp_path / 'cls.yaml', cfg.model_dump(mode='json')), workers=2, fusion='vote')
    rows = result.results.set_index('inner')
    assert list(rows.status) == ['trained', 'trained', '2 run(s) fused by vote'], rows.status
    assert 0 <= rows.loc['fused', 'test_accuracy'] <= 1 and 'test_auroc' in rows
    assert len(pd.read_csv(tmp_path / 'kf' / 'outer_0' / 'fused' / 'predictions.csv')) == 3
    reg = cfg.model_copy(update={'output_dir': str(tmp_path / 'reg'), 'loss_function': 'mse', 'metrics': ['mae'],
                                 'model': cfg.model.model_copy(update={'class_list': []})})
    reg_csv = medlab.make_sample_data(tmp_path / 'reg_data', n_subjects=12, size=32, task='regression')
    with pytest.raises(ValueError, match="fusion 'vote' cannot fuse regression predictions; use mean"):
        medlab.kfold(write_yaml(tmp_path / 'reg.yaml', {**reg.model_dump(mode='json'), 'data_csv': str(reg_csv)}), fusion='vote')
    assert not (tmp_path / 'reg').exists()


def test_a_failing_fold_leaves_the_others(blobs, tmp_path):
    "A fold whose folder holds another run fails with its notebook and error; the other fold trains."
    cfg = small_config(blobs, tmp_path / 'kf', nested_training={'testing': 1, 'validation': 2})
    stranger = RunFolder(tmp_path / 'kf' / 'outer_0' / 'inner_1')
    stranger.prepare()
    stranger.save_checkpoint('latest', config={**cfg.model_dump(mode='json'), 'learning_rate': 0.5, 'output_dir': str(stranger.path)}, epoch=1)
    result = medlab.kfold(write_yaml(tmp_path / 'kf.yaml', cfg.model_dump(mode='json')), allow_failed=True)
    rows = result.results.set_index('fold')
    assert rows.loc['outer_0/inner_0', 'status'] == 'trained' and rows.loc['outer_0/inner_0', 'val_dice'] >= 0
    assert rows.loc['outer_0/inner_1', 'status'] == 'failed'
    assert 'holds a run with another config (differs in: learning_rate)' in rows.loc['outer_0/inner_1', 'error']
    assert rows.loc['outer_0/inner_1', 'notebook'].endswith('outer_0/inner_1/train.ipynb')
    assert len(result.failed) == 1


def test_dask_local_cluster_runs_a_grid_on_two_workers(blobs, tmp_path):
    "A grid of two learning rates, one fold each, on a Dask LocalCluster of two workers: each config gets its folder and row."
    cfg = small_config(blobs, tmp_path / 'kf', nested_training={'testing': 1, 'validation': -2})
    results = medlab.kfold(write_yaml(tmp_path / 'kf.yaml', cfg.model_dump(mode='json')), executor='dask', workers=2,
                           grid={'learning_rate': [0.003, 0.001]})
    assert sorted(results) == ['learning_rate=0.001', 'learning_rate=0.003']
    rows = pd.concat([r.results for r in results.values()])
    assert (rows.status == 'trained').all() and len(rows) == 2
    assert rows.worker.str.split(' ').str[0].nunique() == 2, rows.worker   # the two folds ran on the two Dask workers
    for name, lr in (('learning_rate=0.003', 0.003), ('learning_rate=0.001', 0.001)):
        assert RunFolder(tmp_path / 'kf' / name / 'outer_0' / 'inner_0').config().learning_rate == lr
    grid = pd.read_csv(tmp_path / 'kf' / 'grid_summary.csv')
    assert set(grid.config) == set(results) and 'val_dice' in set(grid.metric)


def test_kfold_refuses_bad_settings_before_any_fold(blobs, tmp_path):
    cfg = small_config(blobs, tmp_path / 'kf', nested_training={'testing': 1, 'validation': 2})
    config = write_yaml(tmp_path / 'kf.yaml', cfg.model_dump(mode='json'))
    with pytest.raises(ValueError, match="executor 'slurm': use one of local, dask"):
        medlab.kfold(config, executor='slurm')
    with pytest.raises(medlab.DataError, match='12 subject\\(s\\) are too few for testing: 1 and validation: 20'):
        medlab.kfold(config, nested_training={'testing': 1, 'validation': 20})
    assert not list((tmp_path / 'kf').glob('outer_*/inner_*/train.ipynb'))
