"""Shared fixtures for medlab's system tests."""
import os
import shutil
from pathlib import Path

import papermill as pm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / 'templates'
SHARED_DATA = ROOT.parent / 'shared' / 'data'

os.environ['MEDLAB_HEADLESS'] = '1'  # papermill kernels started from here train at once, as batch jobs do


@pytest.fixture(scope='session')
def seg2d_csv(tmp_path_factory) -> Path:
    "The 2D sample dataset, as the demo writes it."
    import medlab
    return medlab.make_sample_data(tmp_path_factory.mktemp('seg2d'), dimension=2, n_subjects=24)


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_template(name: str, out_dir: Path, **parameters) -> Path:
    "Execute `templates/<name>.ipynb` under papermill, from the templates folder; returns the executed notebook."
    out = out_dir / f'{name}_executed.ipynb'
    pm.execute_notebook(str(TEMPLATES / f'{name}.ipynb'), str(out), parameters=parameters, cwd=str(TEMPLATES),
                        kernel_name='python3', progress_bar=False)
    return out


def shared_data(*parts) -> Path:
    "A path under ../shared/data, skipping the test when that folder is absent (a user's clone)."
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists(): pytest.skip(f'{path} is absent: the real-data tests need ../shared/data beside the repo')
    return path


def tiny_config(tmp_path: Path, num_epochs: int = 3, **changes):
    "Six 32x32 sample subjects under `tmp_path/data`, a 4-filter U-Net: a run of a few seconds."
    import medlab
    csv = tmp_path / 'data' / 'data.csv'
    if not csv.exists(): medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32)
    return medlab.MedlabConfig(**{'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32],
                                  'num_epochs': num_epochs, 'batch_size': 4, 'q_samples_per_volume': 1, 'patience': 10,
                                  'model': {'class_list': [0, 1, 2], 'base_filters': 4},
                                  'metrics': ['dice', 'dice_per_label'], 'export': {'enabled': False}, **changes})


def load_with_notes(path, **overrides):
    "Load a config, returning it with the messages it raised: (config, spelling notes, ignored keys)."
    import warnings
    from medlab.config import load_config
    from medlab.gandlf import GaNDLFSpelling, IgnoredKey
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg = load_config(path, **overrides)
    notes = [str(w.message).split(': ', 1)[1] for w in caught if w.category is GaNDLFSpelling]
    ignored = [str(w.message).split(': ', 1)[1].split(' does nothing here')[0] for w in caught if w.category is IgnoredKey]
    return cfg, notes, ignored


@pytest.fixture
def data(tmp_path):
    "Six 2D sample subjects (32x32) and a small one-epoch config for them (nothing trained): (tmp_path, csv, config dict)."
    import medlab
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=6, size=32)
    cfg = {'data_csv': str(csv), 'output_dir': str(tmp_path / 'run'), 'patch_size': [32, 32], 'num_epochs': 1, 'batch_size': 4,
           'q_samples_per_volume': 1, 'model': {'class_list': [0, 1, 2], 'base_filters': 4}}
    return tmp_path, csv, cfg


def gandlf_like_data(folder: Path, task: str, n_subjects: int = 10, num_channels: int = 1, classes: int = 3) -> Path:
    "Small 2D data in the form GaNDLF's own tests use: 128x128 images, masks of 0 and 255, `classes` classes, or a number."
    import pandas as pd
    import SimpleITK as sitk
    import medlab
    csv = medlab.make_sample_data(folder, dimension=2, n_subjects=n_subjects, size=128, num_channels=num_channels,
                                  task='regression' if task == 'regression' else 'segmentation')
    df = pd.read_csv(csv)
    if task == 'segmentation':
        for path in df.Label:
            mask = sitk.ReadImage(str(folder / path))
            sitk.WriteImage(sitk.Cast(mask > 0, sitk.sitkUInt8) * 255, str(folder / path))
    if task == 'classification':
        df = df.drop(columns='Label').assign(ValueToPredict=[i % classes for i in range(len(df))])
    df.to_csv(csv, index=False)
    return csv
