"""Loading and geometry on the real brain MRI in ../shared/data (skipped with a reason where that folder is absent)."""
import numpy as np
import pandas as pd
import pytest

import medlab
from medlab.config import ModelConfig
from medlab.data import check_subjects, read_manifest
from medlab.io import read_image, read_info, to_array, write_image
from medlab.loader import SubjectReader
from medlab.tasks import Segmentation
from conftest import shared_data


def test_brain_mri_and_mask_load_on_one_grid(tmp_path):
    mri = shared_data('brain_mri')
    pd.DataFrame({'SubjectID': ['tcga'], 'Channel_0': [str(mri / 'tcia_example_t1c.nii.gz')],
                  'Label': [str(mri / 'bet_tcia_example_t1c_mask.nii.gz')]}).to_csv(tmp_path / 'brain.csv', index=False)
    subjects = read_manifest(tmp_path / 'brain.csv')
    model = ModelConfig(dimension=3, class_list=[0, 1])
    check_subjects(subjects, model)  # the mask lies on the T1c grid and holds only 0 and 1
    data = SubjectReader({}, 3, Segmentation([0, 1])).read(subjects[0])
    assert data['image'].shape == (1, 256, 224, 26) and data['label'].shape == (1, 256, 224, 26)
    assert 0.02 < data['label'].mean() < 0.5  # a brain mask covers part of the field of view
    # a prediction written on the input's geometry carries its spacing, origin and direction
    ref = read_image(mri / 'tcia_example_t1c.nii.gz')
    write_image(data['label'].astype(np.uint8), tmp_path / 'pred.nii.gz', ref)
    out = read_info(tmp_path / 'pred.nii.gz')
    assert out.size == ref.GetSize()
    assert out.spacing == pytest.approx(ref.GetSpacing()) and out.origin == pytest.approx(ref.GetOrigin())
    assert out.direction == pytest.approx(ref.GetDirection(), abs=1e-6)
    assert np.array_equal(to_array(read_image(tmp_path / 'pred.nii.gz'), np.uint8), data['label'].astype(np.uint8))


def test_sequences_on_other_grids_are_refused(tmp_path):
    mri = shared_data('brain_mri')
    pd.DataFrame({'SubjectID': ['tcga'], 'Channel_0': [str(mri / 'tcia_example_t1c.nii.gz')],
                  'Channel_1': [str(mri / 'tcia_example_t2.nii.gz')],
                  'Label': [str(mri / 'bet_tcia_example_t1c_mask.nii.gz')]}).to_csv(tmp_path / 'two.csv', index=False)
    with pytest.raises(medlab.DataError, match='line 2 \\(tcga\\): Channel_1 lies on another grid than Channel_0: size'):
        check_subjects(read_manifest(tmp_path / 'two.csv'), ModelConfig(dimension=3, num_channels=2))


def test_dicom_series_folder_reads_as_a_volume():
    info = read_info(shared_data('dicom', 'dcm_qa_deident'))
    assert info.size == (256, 256, 196)
    assert info.spacing == pytest.approx((1.0547, 1.0547, 1.2), abs=1e-3)


def test_png_radiograph_reads_as_2d():
    from medlab.io import squeeze_to
    png = shared_data('cxr', '00000001_000.png')
    info = read_info(png)
    assert info.size == (512, 512) and info.dimension == 2 and info.components == 1
    arr = to_array(squeeze_to(read_image(png), 2))
    assert arr.shape == (1, 512, 512) and arr.max() > arr.min()
