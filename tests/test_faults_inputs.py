"""Faults that used to pass without a word: a failed k-fold fold, a k-fold folder missing a fold, a patch larger than the
images, a manifest of 100,000 rows naming one bad file, samples per volume beyond the queue, and a run scored against
the truth of another task. Each gets its clear error or warning, naming the key or file and the way out."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import medlab
import medlab.data
from medlab.config import MedlabConfig, save_config
from medlab.loader import PatchQueue, SubjectReader
from medlab.models import build_model
from medlab.predictor import RunError
from medlab.run import RunFolder
from medlab.split import load_split
from medlab.tasks import Segmentation, build_task
from conftest import write_yaml


def untrained_run(folder, **cfg) -> RunFolder:
    "A run folder holding random weights as its best checkpoint (enough to predict with)."
    cfg = MedlabConfig(output_dir=str(folder), patch_size=[32, 32], **cfg)
    run = RunFolder(folder)
    run.prepare(); run.write_config(cfg)
    task = build_task(cfg.model, cfg.loss_function)
    run.save_checkpoint('best', model=build_model(cfg.model, task.outputs).state_dict(), epoch=1, task=task.name)
    return run


def snapshot(folder) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file()}


# -- a: a failed fold is not a finished k-fold ------------------------------------------------------------------
def test_a_failed_fold_fails_the_kfold_and_the_cli(data):
    "The other fold trains and results.csv is written; then kfold raises naming the failed fold and its notebook; the CLI exits 1."
    from medlab.crossval import FoldsFailed   # new: imported here so that the other cases run on older code
    tmp, csv, cfg = data
    cfg = {**cfg, 'output_dir': str(tmp / 'kf'), 'nested_training': {'testing': 1, 'validation': 2}}
    stranger = RunFolder(tmp / 'kf' / 'outer_0' / 'inner_1')   # another run already in a fold's folder: that fold fails
    stranger.prepare()
    stranger.save_checkpoint('latest', config={**MedlabConfig(**cfg).model_dump(mode='json'), 'learning_rate': 0.5,
                                               'output_dir': str(stranger.path)}, epoch=1)
    config = write_yaml(tmp / 'kf.yaml', cfg)
    with pytest.raises(FoldsFailed) as info: medlab.kfold(config)
    msg = str(info.value)
    assert '1 of 2 fold(s) failed: outer_0/inner_1' in msg and 'holds a run with another config' in msg
    assert str(tmp / 'kf' / 'outer_0' / 'inner_1' / 'train.ipynb') in msg and str(tmp / 'kf' / 'results.csv') in msg
    assert 'allow_failed=True' in msg and len(msg) < 2000
    results = pd.read_csv(tmp / 'kf' / 'results.csv').set_index('fold')
    assert results.loc['outer_0/inner_0', 'status'] == 'trained' and results.loc['outer_0/inner_1', 'status'] == 'failed'
    assert info.value.result.failed[0]['fold'] == 'outer_0/inner_1'
    kept = medlab.kfold(config, allow_failed=True)           # asked for: the results, with the failure in them
    assert [r['fold'] for r in kept.failed] == ['outer_0/inner_1']
    from medlab.cli import main
    assert main(['kfold', str(config)]) == 1


# -- b: inference on a k-fold folder with a fold missing ------------------------------------------------------------
def kfold_folder(tmp, csv, trained: list[str], initial_only: list[str] = ()) -> str:
    "A k-fold folder of three planned inner folds, of which `trained` hold a best checkpoint and `initial_only` only model_initial.pt."
    root = tmp / 'kf'
    root.mkdir()
    save_config(MedlabConfig(data_csv=str(csv), output_dir=str(root), patch_size=[32, 32], model={'class_list': [0, 1, 2], 'base_filters': 4},
                             nested_training={'testing': 1, 'validation': 3}), root / 'config.yaml')
    model = {'class_list': [0, 1, 2], 'base_filters': 4}
    for name in trained: untrained_run(root / name, model=model)
    for name in initial_only:
        run = untrained_run(root / name, model=model)
        run.checkpoint_path('best').rename(run.checkpoint_path('initial'))
    return root


def test_a_kfold_folder_missing_a_fold_is_refused_unless_partial(data):
    tmp, csv, cfg = data
    root = kfold_folder(tmp, csv, ['outer_0/inner_0', 'outer_0/inner_1'])   # outer_0/inner_2 never trained: no folder at all
    with pytest.raises(RunError) as info: medlab.predict(root, csv, tmp / 'out')
    msg = str(info.value)
    assert 'outer_0/inner_2' in msg and 'outer_0/inner_0' not in msg and 'partial=True' in msg and str(root) in msg
    assert not (tmp / 'out').exists()
    with pytest.warns(UserWarning, match=r'outer_0/inner_2.*fusing the 2 run\(s\) that can'):
        result = medlab.predict(root, csv, tmp / 'out', partial=True)
    assert len(result.runs) == 2 and len(result.predictions) == 6


def test_a_fold_without_the_checkpoint_asked_for_is_refused_unless_partial(data):
    tmp, csv, cfg = data
    root = kfold_folder(tmp, csv, ['outer_0/inner_0', 'outer_0/inner_2'], initial_only=['outer_0/inner_1'])
    with pytest.raises(RunError, match=r'outer_0/inner_1 \(no model_best.pt\).*partial=True'): medlab.predict(root, csv, tmp / 'out')
    assert len(medlab.predict(root, csv, tmp / 'out', checkpoint='best', partial=True).runs) == 2
    # a run given by itself that cannot predict is no less missing
    with pytest.raises(RunError, match='outer_0/inner_1'): medlab.predict([root / 'outer_0' / 'inner_0', root / 'outer_0' / 'inner_1'], csv, tmp / 'o2')


# -- c: a patch larger than the images ------------------------------------------------------------------------------
def test_a_patch_ten_times_the_image_is_warned_before_training(data):
    tmp, csv, cfg = data
    seen = []   # each warning, and whether training had begun (the initial checkpoint written) when it came
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = lambda message, *args, **kwargs: seen.append((str(message), (tmp / 'run' / 'model_initial.pt').exists()))
        medlab.train(medlab.load_config(write_yaml(tmp / 'c.yaml', {**cfg, 'patch_size': [320, 320]})))
    said = [(m, begun) for m, begun in seen if 'patch_size' in m]
    assert len(said) == 1 and not said[0][1], seen
    assert 'patch_size (320, 320) is larger than the smallest image, (32, 32) (sub00' in said[0][0]
    assert 'set patch_size to at most (32, 32)' in said[0][0]
    with warnings.catch_warnings():   # a patch that fits says nothing
        warnings.filterwarnings('error', message='.*patch_size.*')
        PatchQueue(load_split(MedlabConfig(**cfg), Segmentation([0, 1, 2])).training, MedlabConfig(**cfg),
                   SubjectReader(MedlabConfig(**cfg).data_preprocessing, 2, Segmentation([0, 1, 2])))


# -- d: 100,000 rows naming one file --------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['missing', 'cut', 'good'])
def test_a_hundred_thousand_rows_naming_one_file(data, monkeypatch, kind):
    "Each distinct file is read once; the error lists three rows and counts the rest, in a few lines."
    tmp, csv, cfg = data
    first = pd.read_csv(csv).iloc[0]
    image = csv.parent / first.Channel_0
    if kind == 'cut':
        raw = image.read_bytes()
        (tmp / 'cut.nii.gz').write_bytes(raw[:len(raw) // 2])
        image = tmp / 'cut.nii.gz'
    elif kind == 'missing': image = tmp / 'gone.nii.gz'
    n = 100_000
    pd.DataFrame({'SubjectID': [f's{i:06d}' for i in range(n)], 'Channel_0': str(image), 'Label': str(csv.parent / first.Label)}).to_csv(tmp / 'big.csv', index=False)
    reads = []
    def counted(real):
        def read(path, *args):
            reads.append((real.__name__, str(path)))
            assert len(reads) < 50, 'files are read once per row'
            return real(path, *args)
        return read
    for name in ('read_info', 'file_integrity', 'voxel_values'): monkeypatch.setattr(medlab.data, name, counted(getattr(medlab.data, name)))
    with pytest.raises(medlab.DataError) as info: medlab.data.check_subjects(medlab.data.read_manifest(tmp / 'big.csv'), MedlabConfig(**cfg).model)
    msg = str(info.value)
    assert len(reads) == len(set(reads)), reads   # each file once by each reader
    assert len(msg) < 2000 and len(info.value.problems) == (1 if kind == 'good' else 4), msg
    if kind == 'good':
        assert 'the same image is line 2 (s000000) Channel_0 and line 3 (s000001) Channel_0 and line 4 (s000002) Channel_0 and 99,997 more' in msg
    else:
        assert f'line 4 (s000002): Channel_0: ' in msg and '... and 99,997 more rows with the same problem as line 4 (s000002)' in msg
        assert '100,000 problem(s)' in msg


# -- e: more samples per volume than the queue holds --------------------------------------------------------------
def test_samples_per_volume_are_bounded_by_the_queue(data):
    tmp, csv, cfg = data
    big = MedlabConfig(**{**cfg, 'q_samples_per_volume': 10**8, 'q_max_length': 8})
    task = Segmentation([0, 1, 2])
    subjects = load_split(big, task).training
    with pytest.warns(UserWarning, match=r'q_samples_per_volume 100000000 is more than the 8 patches the queue holds \(q_max_length\): 8 are drawn'):
        queue = PatchQueue(subjects, big, SubjectReader(big.data_preprocessing, 2, task))
    assert len(queue) == -(-len(subjects) * 8 // 4)
    first = next(iter(queue.epoch(1)))
    assert first['image'].shape == (4, 1, 32, 32)
    with pytest.warns(UserWarning, match='q_samples_per_volume'):
        result = medlab.train(big)
    assert result.epochs_run == 1


# -- f: the truth of another task -----------------------------------------------------------------------------------
def test_a_segmentation_run_scored_against_classification_truth_is_refused(data):
    tmp, csv, cfg = data
    run = untrained_run(tmp / 'seg', model={'class_list': [0, 1, 2], 'base_filters': 4})
    cls_csv = medlab.make_sample_data(tmp / 'cls', n_subjects=4, size=32, task='classification')
    before = snapshot(tmp)
    with pytest.raises(medlab.DataError) as info: medlab.predict(run.path, cls_csv, tmp / 'out')
    msg = str(info.value)
    assert str(cls_csv) in msg and "'ValueToPredict'" in msg and "a segmentation run is scored against 'Label' (mask paths)" in msg
    assert not (tmp / 'out').exists() and snapshot(tmp) == before
    # a Label column of class values (not mask paths) is named as such
    pd.read_csv(cls_csv).rename(columns={'ValueToPredict': 'Label'}).to_csv(tmp / 'values_as_label.csv', index=False)
    with pytest.raises(medlab.DataError, match=r"its 'Label' column holds values such as '\d', not mask paths"):
        medlab.predict(run.path, tmp / 'values_as_label.csv', tmp / 'out')


def test_a_classification_run_scored_against_masks_is_refused(data):
    tmp, csv, cfg = data
    run = untrained_run(tmp / 'cls', model={'architecture': 'vgg11', 'base_filters': 4}, loss_function='cel', metrics=['accuracy'])
    with pytest.raises(medlab.DataError) as info: medlab.predict(run.path, csv, tmp / 'out')
    msg = str(info.value)
    assert str(csv) in msg and "'Label' (mask paths)" in msg and "a classification run is scored against 'ValueToPredict'" in msg
    assert not (tmp / 'out').exists()


def test_evaluate_refuses_truth_of_another_task(data):
    tmp, csv, cfg = data
    pd.DataFrame({'SubjectID': pd.read_csv(csv).SubjectID, 'prediction': 1}).to_csv(tmp / 'predictions.csv', index=False)
    with pytest.raises(medlab.DataError, match="a classification run is scored against 'ValueToPredict'"):
        medlab.evaluate(tmp / 'predictions.csv', csv, task='classification')
    cls_csv = medlab.make_sample_data(tmp / 'cls', n_subjects=4, size=32, task='classification')
    with pytest.raises(medlab.DataError, match="a segmentation run is scored against 'Label'"):
        medlab.evaluate(tmp / 'predictions.csv', cls_csv, task='segmentation')
