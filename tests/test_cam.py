"""Class activation maps: templates/cam.ipynb headless, maps on the input's geometry for the real brain MRI and chest
X-ray, and a known answer (the default map of a trained classifier points at the one square that makes class 1)."""
import numpy as np
import pandas as pd
import pytest

import medlab
from medlab.io import read_image, read_info, to_array
from conftest import run_template, shared_data


@pytest.fixture(scope='module')
def seg2d_run(tmp_path_factory):
    "A 2D segmentation run trained a few epochs on the sample blobs."
    tmp = tmp_path_factory.mktemp('camseg')
    csv = medlab.make_sample_data(tmp / 'data', n_subjects=10, size=64)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp / 'run'), patch_size=[64, 64], num_epochs=4, batch_size=4,
                              q_samples_per_volume=2, learning_rate=0.003, model={'class_list': [0, 1, 2], 'base_filters': 8},
                              data_preprocessing={'normalize': None})
    medlab.train(cfg)
    return tmp / 'run', csv


def test_cam_template_writes_maps_on_the_input_grid(seg2d_run, tmp_path):
    run, csv = seg2d_run
    pd.read_csv(csv).head(2).to_csv(csv.parent / 'two.csv', index=False)
    out = tmp_path / 'cam'
    run_template('cam', tmp_path, run=str(run), data_csv=str(csv.parent / 'two.csv'), output_dir=str(out),
                 methods=['layercam', 'gradcam', 'saliency'], target=2)
    table = pd.read_csv(out / 'cam.csv')
    assert list(table.columns) == ['SubjectID', 'method', 'target', 'layer', 'prediction', 'score', 'map']
    assert len(table) == 6 and set(table.target) == {2} and set(table.method) == {'layercam', 'gradcam', 'saliency'}
    assert (table[table.method == 'saliency'].layer.isna()).all() and table[table.method == 'layercam'].layer.notna().all()
    for row in table.itertuples():
        heat, image = read_info(out / row.map), read_info(csv.parent / 'images' / f'{row.SubjectID}_ch0.nii.gz')
        assert (heat.size, heat.origin) == (image.size, image.origin) and heat.spacing == pytest.approx(image.spacing)
        values = to_array(read_image(out / row.map))
        assert values.min() == 0 and values.max() == pytest.approx(1)
        assert (out / row.SubjectID / f'{row.method}.png').stat().st_size > 1000


def test_an_unknown_layer_is_refused_with_the_list(seg2d_run, tmp_path):
    run, csv = seg2d_run
    with pytest.raises(ValueError, match="layer 'decoder.9' is not in this network; its convolutions are: conv_0.conv_0.conv"):
        medlab.cam_csv(run, csv, tmp_path / 'x', layer='decoder.9')
    assert not (tmp_path / 'x').exists()


def test_maps_of_the_real_brain_mri_and_chest_xray_keep_their_geometry(tmp_path):
    mri, cxr = shared_data('brain_mri', 'tcia_example_t1c.nii.gz'), shared_data('cxr', '00000001_000.png')
    blobs3d = medlab.make_sample_data(tmp_path / 'b3', dimension=3, n_subjects=4, size=32)
    medlab.train(medlab.MedlabConfig(data_csv=str(blobs3d), output_dir=str(tmp_path / 'r3'), patch_size=[32, 32, 16], num_epochs=1,
                                     batch_size=2, q_samples_per_volume=1, nested_training={'validation': -4},
                                     model={'dimension': 3, 'base_filters': 4, 'class_list': [0, 1, 2]}, data_preprocessing={'normalize': None}))
    squares = medlab.make_localization_data(tmp_path / 'sq', n_subjects=8, size=64)
    medlab.train(medlab.MedlabConfig(data_csv=str(squares), output_dir=str(tmp_path / 'r2'), patch_size=[128, 128], num_epochs=1,
                                     batch_size=4, q_samples_per_volume=1, nested_training={'validation': -4}, loss_function='cel',
                                     metrics=['accuracy'], model={'architecture': 'vgg11', 'base_filters': 4}, data_preprocessing={'normalize': None}))
    for run, image, name in ((tmp_path / 'r3', mri, 'tcia'), (tmp_path / 'r2', cxr, 'cxr')):
        pd.DataFrame({'SubjectID': [name], 'Channel_0': [str(image)]}).to_csv(tmp_path / f'{name}.csv', index=False)
        table = medlab.cam_csv(run, tmp_path / f'{name}.csv', tmp_path / 'maps', 'layercam', target=1)
        heat, ref = read_info(tmp_path / 'maps' / table['map'][0]), read_info(image)
        assert heat.size == ref.size and heat.spacing == pytest.approx(ref.spacing) and heat.origin == pytest.approx(ref.origin)
        assert heat.direction == pytest.approx(ref.direction, abs=1e-6)
    assert read_info(tmp_path / 'maps' / 'tcia' / 'layercam.nii.gz').size == (256, 224, 26)
    assert read_info(tmp_path / 'maps' / 'cxr' / 'layercam.nii.gz').size == (512, 512)
