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
