"""Every kind of bad input gets its own clear error, naming the file or key and the fix, before any training."""
import numpy as np
import pandas as pd
import papermill as pm
import pytest

import medlab
from medlab.io import read_image, to_image, write_image
from conftest import run_template, write_yaml


@pytest.fixture
def data(tmp_path):
    "A small 2D sample dataset and a config for it."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32)
    cfg = {'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1,
           'model': {'class_list': [0, 1, 2], 'base_filters': 4}}
    return tmp_path, csv, cfg


def problems_of(cfg: dict, tmp_path, exc=medlab.ConfigError) -> str:
    "Train with `cfg`, expecting `exc`; returns its message and checks that nothing was trained."
    with pytest.raises(exc) as info:
        medlab.train(medlab.load_config(write_yaml(tmp_path / 'c.yaml', cfg)))
    assert not (tmp_path / 'run' / 'model_initial.pt').exists()
    return str(info.value)


# -- the config ------------------------------------------------------------------------------------------------
def test_unknown_keys_name_place_and_closest_key(data):
    tmp, csv, cfg = data
    msg = problems_of({**cfg, 'learning_rat': 0.1, 'model': {**cfg['model'], 'base_filter': 8}}, tmp)
    assert "learning_rat: unknown key; did you mean 'learning_rate'?" in msg
    assert "model.base_filter: unknown key; did you mean 'base_filters'?" in msg
    assert str(tmp / 'c.yaml') in msg


def test_wrong_types_and_ranges_name_the_key(data):
    tmp, csv, cfg = data
    msg = problems_of({**cfg, 'batch_size': 'eight', 'learning_rate': -1, 'model': {'dimension': 4}}, tmp)
    for key in ('batch_size:', 'learning_rate:', 'model.dimension:'): assert key in msg


def test_unknown_names_offer_the_closest(data):
    tmp, csv, cfg = data
    msg = problems_of({**cfg, 'loss_function': 'dcc', 'optimizer': 'adma', 'metrics': ['dise'],
                       'data_augmentation': {'flipp': None}}, tmp)
    for part in ("unknown loss 'dcc'", "did you mean 'adam'", "did you mean 'dice'", "did you mean 'flip'"): assert part in msg


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model:\n  dimension: 2\n  class_list: [0, 1\n')
    with pytest.raises(medlab.ConfigError, match=r'malformed YAML at line \d'): medlab.load_config(bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='config file not found'): medlab.load_config(tmp_path / 'nope.yaml')


def test_papermill_run_reports_the_config_error(data):
    "Under papermill the template fails with the same message, and no run folder is made."
    tmp, csv, cfg = data
    with pytest.raises(pm.PapermillExecutionError) as info:
        run_template('train', tmp, config=str(write_yaml(tmp / 'c.yaml', {**cfg, 'num_epoch': 3})))
    assert "num_epoch: unknown key; did you mean 'num_epochs'?" in str(info.value)
    assert not (tmp / 'run').exists()


# -- the manifest ----------------------------------------------------------------------------------------------
def test_missing_csv(data):
    tmp, csv, cfg = data
    assert 'data CSV not found' in problems_of({**cfg, 'data_csv': str(tmp / 'none.csv')}, tmp, FileNotFoundError)


def test_malformed_csv(data):
    tmp, csv, cfg = data
    (tmp / 'broken.csv').write_bytes(b'SubjectID,Channel_0,Label\n"a,b\xff\xfe,c\n')
    assert 'not a readable CSV' in problems_of({**cfg, 'data_csv': str(tmp / 'broken.csv')}, tmp, medlab.DataError)


def test_every_bad_row_is_listed(data):
    "Missing files, masks with values outside class_list and NaN images: all rows in one error."
    tmp, csv, cfg = data
    df = pd.read_csv(csv)
    df.loc[0, 'Channel_0'] = 'images/missing.nii.gz'
    df.loc[2, 'Label'] = df.loc[2, 'Channel_0']
    image = read_image(csv.parent / df.loc[4, 'Channel_0'])
    arr = np.zeros((1, 32, 32), np.float32); arr[0, 3, 3] = np.nan
    write_image(arr, tmp / 'nan.nrrd', image)
    df.loc[4, 'Channel_0'] = str(tmp / 'nan.nrrd')
    df.to_csv(csv.parent / 'bad.csv', index=False)
    msg = problems_of({**cfg, 'data_csv': str(csv.parent / 'bad.csv')}, tmp, medlab.DataError)
    assert '3 problem(s)' in msg
    assert 'line 2 (sub000): Channel_0: image not found' in msg
    assert 'line 4 (sub002): Label has values' in msg and 'outside model.class_list [0, 1, 2]' in msg
    assert 'line 6 (sub004): Channel_0 holds 1 NaN or infinite values' in msg


def test_mismatched_channel_geometry_names_what_differs(data):
    tmp, csv, cfg = data
    df = pd.read_csv(csv)
    ref = read_image(csv.parent / df.loc[1, 'Channel_0'])
    write_image(np.zeros((30, 32), np.float32), tmp / 'small.nii.gz')
    shifted = to_image(np.zeros((32, 32), np.float32), ref); shifted.SetSpacing((1.5, 0.8))
    import SimpleITK as sitk
    sitk.WriteImage(shifted, str(tmp / 'spacing.nii.gz'))
    df['Channel_1'] = df['Channel_0']
    df.loc[1, 'Channel_1'] = str(tmp / 'small.nii.gz')
    df.loc[3, 'Channel_1'] = str(tmp / 'spacing.nii.gz')
    df[['SubjectID', 'Channel_0', 'Channel_1', 'Label']].to_csv(csv.parent / 'two.csv', index=False)
    msg = problems_of({**cfg, 'data_csv': str(csv.parent / 'two.csv'), 'model': {**cfg['model'], 'num_channels': 2}}, tmp, medlab.DataError)
    assert 'line 3 (sub001): Channel_1 lies on another grid than Channel_0: size (32, 32) vs (30, 32);' in msg
    assert 'line 5 (sub003): Channel_1 lies on another grid than Channel_0: spacing' in msg


def test_channel_count_and_dimension_must_match_the_model(data):
    tmp, csv, cfg = data
    msg = problems_of({**cfg, 'model': {**cfg['model'], 'num_channels': 2}}, tmp, medlab.DataError)
    assert '1 image channel(s) but model.num_channels is 2' in msg
    msg = problems_of({**cfg, 'patch_size': [32, 32, 32], 'model': {**cfg['model'], 'dimension': 3}}, tmp, medlab.DataError)
    assert 'is 2D (32, 32) but model.dimension is 3' in msg


def test_unknown_and_missing_columns(data):
    tmp, csv, cfg = data
    pd.read_csv(csv).rename(columns={'Label': 'Lable'}).to_csv(tmp / 'cols.csv', index=False)
    msg = problems_of({**cfg, 'data_csv': str(tmp / 'cols.csv')}, tmp, medlab.DataError)
    assert "unknown column 'Lable'; did you mean 'Label'?" in msg and "missing column 'Label'" in msg


def test_subjects_in_two_split_files(data):
    tmp, csv, cfg = data
    msg = problems_of({**cfg, 'data_csv': {'training': str(csv), 'validation': str(csv)}}, tmp, medlab.DataError)
    assert "SubjectID 'sub000' is in both training and validation" in msg
