"""Export: OpenVINO FP32 parity on 2D and 3D segmentation and a classifier, INT8's metric change, the export template,
the export a training leaves behind, and predicting through the OpenVINO backend."""
import json

import numpy as np
import pandas as pd
import pytest

import medlab
from medlab.deploy import export_run
from medlab.io import read_image, to_array
from medlab.run import RunFolder
from conftest import TEMPLATES, run_template


def train_small(tmp, name: str, **changes) -> RunFolder:
    "A run trained briefly on sample data (2D segmentation unless `changes` say otherwise)."
    task = 'classification' if changes.get('loss_function') == 'cel' else 'segmentation'
    dimension = changes.get('model', {}).get('dimension', 2)
    csv = medlab.make_sample_data(tmp / f'{name}_data', dimension=dimension, n_subjects=8, size=48 if dimension == 2 else 32, task=task)
    cfg = {'data_csv': str(csv), 'output_dir': str(tmp / name), 'patch_size': [32] * dimension, 'num_epochs': 2, 'batch_size': 4,
           'q_samples_per_volume': 2, 'nested_training': {'validation': -4}, 'data_preprocessing': {'normalize': None},
           **changes, 'model': {'class_list': [0, 1, 2], 'base_filters': 8, **changes.get('model', {})}}
    medlab.train(medlab.MedlabConfig(**cfg))
    return RunFolder(tmp / name)


@pytest.mark.parametrize('name, changes', [
    ('seg2d', {}),
    ('seg3d', {'model': {'dimension': 3}}),
    ('cls2d', {'loss_function': 'cel', 'metrics': ['accuracy'], 'model': {'architecture': 'vgg11', 'class_list': [0, 1]},
               'q_samples_per_volume': 1}),
])
def test_fp32_openvino_matches_torch(tmp_path, name, changes):
    "The export left by training: logits within 1e-4 of their range, classes equal on >= 99.99 % of voxels, on patches and whole images."
    run = train_small(tmp_path, name, **changes)
    written = json.loads((run.path / 'export' / 'export.json').read_text())   # export.enabled is the default
    fp32 = next(e for e in written['exports'] if e['format'] == 'openvino')
    assert fp32['precision'] == 'fp32' and fp32['relative_diff'] < 1e-4 and fp32['class_agreement'] >= 0.9999, fp32
    torch_p, ov_p = medlab.load_run(run.path), medlab.load_run(run.path, backend='openvino')
    for subject in run.split().validation:
        a, b = torch_p.predict(subject), ov_p.predict(subject)
        spread = a.probabilities.max() - a.probabilities.min()
        assert np.abs(a.probabilities - b.probabilities).max() < 1e-4 * max(spread, 1e-6)
        assert np.mean(np.asarray(a.labels) == np.asarray(b.labels)) >= 0.9999


def test_int8_reports_its_metric_change_and_the_template_shows_the_table(seg2d_csv, tmp_path):
    "A model that learnt the 2D sample task, exported through the template as FP32 and INT8: the Dice drop stays within 0.01."
    cfg = medlab.load_config(TEMPLATES / 'configs' / 'seg2d_sample.yaml', data_csv=str(seg2d_csv), output_dir=str(tmp_path / 'run'),
                             num_epochs=6, export={'enabled': False})
    result = medlab.train(cfg)
    assert result.best['dice'] > 0.8, result.best
    assert not (tmp_path / 'run' / 'export').exists()   # export.enabled: false
    run_template('export', tmp_path, run=str(tmp_path / 'run'), precision=['fp32', 'int8'], formats=['openvino', 'onnx'],
                 package_dir=str(tmp_path / 'package'))
    table = pd.DataFrame(json.loads((tmp_path / 'run' / 'export' / 'export.json').read_text())['exports']).set_index(['format', 'precision'])
    assert table.loc[('openvino', 'int8'), 'metric_change'] >= -0.01, table
    assert table.loc[('openvino', 'int8'), 'class_agreement'] >= 0.99, table
    assert (tmp_path / 'run' / 'export' / 'model.onnx').stat().st_size > 10_000
    assert medlab.load_package(tmp_path / 'package').predict(seg2d_csv.parent / 'images' / 'sub000_ch0.nii.gz').labels.shape == (96, 96)


def test_infer_template_with_the_openvino_backend(tmp_path):
    run = train_small(tmp_path, 'seg2d')
    csv = run.path.parent / 'seg2d_data' / 'data.csv'
    run_template('infer', tmp_path, runs=str(run.path), data_csv=str(csv), output_dir=str(tmp_path / 'ov'), backend='openvino')
    run_template('infer', tmp_path, runs=str(run.path), data_csv=str(csv), output_dir=str(tmp_path / 'pt'))
    info = json.loads((tmp_path / 'ov' / 'inference.json').read_text())
    assert info['backend'] == 'openvino' and info['runs'][0].endswith('export/model_fp32.xml')
    for name in pd.read_csv(tmp_path / 'pt' / 'predictions.csv').file:
        a, b = (to_array(read_image(tmp_path / folder / name)) for folder in ('ov', 'pt'))
        assert np.mean(a == b) >= 0.9999, name
