"""templates/infer.ipynb and medlab.predict: a finished run predicts new data on each input's grid and scores it."""
import json

import nbformat
import numpy as np
import pandas as pd
import pytest

import medlab
from medlab.io import read_image, read_info, to_array
from conftest import TEMPLATES, run_template, shared_data


@pytest.fixture(scope='module')
def seg2d_run(seg2d_csv, tmp_path_factory):
    "A short 2D run on the sample data that has learnt something (a few epochs)."
    out = tmp_path_factory.mktemp('seg2d_run') / 'run'
    cfg = medlab.load_config(TEMPLATES / 'configs' / 'seg2d_sample.yaml', data_csv=str(seg2d_csv),
                             output_dir=str(out), num_epochs=4)
    result = medlab.train(cfg)
    assert result.best['dice'] > 0.5, result.best   # it learnt: the inference scores below mean something
    return out


def test_infer_template_predicts_and_scores(seg2d_run, seg2d_csv, tmp_path):
    "Headless, the template writes a mask per subject on its grid and scores them as `evaluate` does."
    out = tmp_path / 'pred'
    nb = run_template('infer', tmp_path, runs=str(seg2d_run), data_csv=str(seg2d_csv), output_dir=str(out))
    table = pd.read_csv(out / 'predictions.csv')
    assert len(table) == 24 and list(table.columns) == ['SubjectID', 'file']
    for name in ('sub000_prediction.nii.gz', 'sub000_prediction.png', 'metrics.csv', 'metrics_summary.csv', 'inference.json'):
        assert (out / name).is_file(), name
    pred, image = read_info(out / 'sub000_prediction.nii.gz'), read_info(seg2d_csv.parent / 'images' / 'sub000_ch0.nii.gz')
    assert (pred.size, pred.origin) == (image.size, image.origin) and pred.spacing == pytest.approx(image.spacing)
    png = to_array(read_image(out / 'sub000_prediction.png'), np.uint8)[0]
    assert np.array_equal(png, to_array(read_image(out / 'sub000_prediction.nii.gz'), np.uint8)[0])
    summary = pd.read_csv(out / 'metrics_summary.csv').set_index('metric')
    assert summary.loc['dice', 'n'] == 24 and summary.loc['dice', 'mean'] > 0.5, summary
    # one subject's Dice per class, counted by hand from the written mask and the truth
    per_subject = pd.read_csv(out / 'metrics.csv').set_index('SubjectID')
    pred = to_array(read_image(out / 'sub003_prediction.nii.gz'), np.int64)[0]
    truth = to_array(read_image(seg2d_csv.parent / 'images' / 'sub003_mask.nii.gz'), np.int64)[0]
    for c in (1, 2):
        p, t = pred == c, truth == c
        assert per_subject.loc['sub003', f'dice_{c}'] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
        assert per_subject.loc['sub003', f'volume_difference_{c}'] == pytest.approx((p.sum() - t.sum()) * 0.8 * 0.8, rel=1e-5)
    assert json.loads((out / 'inference.json').read_text())['runs'] == [str(seg2d_run / 'model_best.pt')]
    outputs = [o for c in nbformat.read(nb, 4).cells for o in c.get('outputs', [])]
    assert any('image/png' in o.get('data', {}) for o in outputs), 'the overlay of a subject is shown'


def test_predictions_of_new_data_without_labels(seg2d_run, seg2d_csv, tmp_path):
    "A CSV without labels is predicted, not scored; the masks equal those of the labelled run."
    df = pd.read_csv(seg2d_csv).drop(columns='Label').head(3)
    df.to_csv(seg2d_csv.parent / 'new.csv', index=False)
    result = medlab.predict(seg2d_run, seg2d_csv.parent / 'new.csv', tmp_path / 'new')
    assert result.evaluation is None and not (tmp_path / 'new' / 'metrics.csv').exists()
    predictor = medlab.load_run(seg2d_run)
    direct = predictor.predict(seg2d_csv.parent / df.Channel_0[0]).labels
    assert np.array_equal(direct, to_array(read_image(tmp_path / 'new' / 'sub000_prediction.nii.gz'), np.int64)[0])


def test_bad_inference_inputs_are_named(seg2d_run, seg2d_csv, tmp_path):
    with pytest.raises(FileNotFoundError, match='holds no run'):
        medlab.predict(tmp_path, seg2d_csv, tmp_path / 'x')
    with pytest.raises(ValueError, match="fusion 'median' cannot fuse segmentation predictions; use mean or vote"):
        medlab.predict(seg2d_run, seg2d_csv, tmp_path / 'x', fusion='median')
    two = pd.read_csv(seg2d_csv).assign(Channel_1=lambda d: d.Channel_0)
    two.to_csv(seg2d_csv.parent / 'two.csv', index=False)
    with pytest.raises(medlab.DataError, match=r'line 2 \(sub000\): 2 image channel\(s\) but model.num_channels is 1'):
        medlab.predict(seg2d_run, seg2d_csv.parent / 'two.csv', tmp_path / 'x')
    assert not (tmp_path / 'x').exists()


def test_brain_mri_prediction_keeps_its_geometry(tmp_path):
    "A 3D model predicts the real brain MRI on its own grid: size, spacing, origin and direction."
    mri = shared_data('brain_mri')
    csv = medlab.make_sample_data(tmp_path / 'blobs', dimension=3, n_subjects=4, size=32)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'run3d'), patch_size=[32, 32, 16], num_epochs=1,
                              batch_size=2, q_samples_per_volume=1, model={'dimension': 3, 'base_filters': 4, 'class_list': [0, 1, 2]},
                              data_preprocessing={'normalize': None}, nested_training={'testing': 1, 'validation': -4})
    medlab.train(cfg)
    pd.DataFrame({'SubjectID': ['tcga'], 'Channel_0': [str(mri / 'tcia_example_t1c.nii.gz')]}).to_csv(tmp_path / 'brain.csv', index=False)
    medlab.predict(tmp_path / 'run3d', tmp_path / 'brain.csv', tmp_path / 'out')
    pred, ref = read_info(tmp_path / 'out' / 'tcga_prediction.nii.gz'), read_info(mri / 'tcia_example_t1c.nii.gz')
    assert pred.size == ref.size == (256, 224, 26)
    assert pred.spacing == pytest.approx(ref.spacing) and pred.origin == pytest.approx(ref.origin)
    assert pred.direction == pytest.approx(ref.direction, abs=1e-6)
