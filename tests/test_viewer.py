"""Look before and after: the data browser's table on sample and real data, the 3D viewer widget, and the gallery of a
trained run's validation predictions."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medlab
from medlab.browse import subject_table
from medlab.viewer import label_colour, read_pair, validation_gallery, view3d
from conftest import shared_data


def test_browse_3d_sample_data(tmp_path):
    "The 3D sample data: every subject's size, spacing, label values, all checks passed; headless browsing draws."
    csv = medlab.make_sample_data(tmp_path, dimension=3, n_subjects=3, size=16, num_channels=2)
    table = subject_table(csv)
    assert table['size'].tolist() == [(16, 16, 16)] * 3
    assert table.channels.tolist() == [2, 2, 2] and table.ok.all(), table.problems.tolist()
    assert table.labels.tolist() == [[0, 1, 2]] * 3
    assert table.attrs['model'] == '3D, 2 channel(s), classes [0, 1, 2]'
    medlab.browse_data(csv)  # headless: the table and the first subject's figure


def test_browse_brain_mri(tmp_path):
    "A real 3D NIfTI with its brain mask: the header's numbers, mask values {0, 1}, and the checks pass."
    brain = shared_data('brain_mri')
    folder = tmp_path
    pd.DataFrame({'SubjectID': ['tcia'], 'Channel_0': [str(brain / 'tcia_example_t1c.nii.gz')],
                  'Label': [str(brain / 'bet_tcia_example_t1c_mask.nii.gz')]}).to_csv(folder / 'brain.csv', index=False)
    table = subject_table(folder / 'brain.csv')
    row = table.iloc[0]
    assert (row['size'], row.channels, row.labels, bool(row.ok)) == ((256, 224, 26), 1, [0, 1], True), row.problems
    assert row.spacing == pytest.approx((0.8984, 0.8984, 5.5), abs=1e-3)
    image, mask = read_pair(brain / 'tcia_example_t1c.nii.gz', brain / 'bet_tcia_example_t1c_mask.nii.gz')
    assert image.shape == mask.shape == (256, 224, 26) and int(mask.sum()) > 100_000


def test_browse_chest_xrays_finds_the_rgb_ones(tmp_path):
    "Five real chest radiographs (PNG): two stored grey, three as RGB; against a one-channel config the RGB ones are named."
    cxr = shared_data('cxr')
    files = {'00000001_000': 1, '00027426_000': 0, 'h0001': 0, 'tb0005': 1, 'tb0007': 1}
    pd.DataFrame({'SubjectID': list(files), 'Channel_0': [str(cxr / f'{k}.png') for k in files],
                  'ValueToPredict': list(files.values())}).to_csv(tmp_path / 'cxr.csv', index=False)
    cfg = medlab.MedlabConfig(model={'architecture': 'vgg11', 'num_channels': 1, 'class_list': [0, 1]},
                              loss_function='cel', metrics=['accuracy'])
    table = subject_table(tmp_path / 'cxr.csv', cfg)
    assert table['size'].tolist() == [(512, 512)] * 5 and table.spacing.tolist() == [(1.0, 1.0)] * 5
    assert table.channels.tolist() == [1, 1, 3, 3, 3]
    assert table.value.tolist() == [1, 0, 0, 1, 1]
    assert table.ok.tolist() == [True, True, False, False, False]
    assert table.problems[2] == '3 image channel(s) but model.num_channels is 1'
    assert table.attrs['problems'] == []


def test_view3d_widget_holds_volume_and_labelled_overlay(tmp_path):
    "The NiiVue widget gets the MRI, its mask as an overlay with the 2D viewer's colours and the class names; a PNG is converted."
    pytest.importorskip('ipyniivue')
    brain = shared_data('brain_mri')
    nv = view3d(brain / 'tcia_example_t1c.nii.gz', brain / 'bet_tcia_example_t1c_mask.nii.gz', opacity=0.3, class_names={1: 'brain'})
    image, overlay = nv.volumes
    assert (str(image.path), image.colormap) == (str(brain / 'tcia_example_t1c.nii.gz'), 'gray')
    assert overlay.opacity == 0.3 and overlay.colormap_label.labels == ['background', 'brain']
    assert overlay.colormap_label.lut[4:8] == [round(255 * c) for c in label_colour(1)] + [255]
    png = view3d(shared_data('cxr') / 'h0001.png').volumes[0]
    assert png.name == 'h0001.nii.gz' and png.data[:2] == b'\x1f\x8b'  # NIfTI, gzipped, in memory


def test_view3d_without_ipyniivue_says_how_to_install(monkeypatch, tmp_path):
    "Without ipyniivue, one sentence with the pip command."
    csv = medlab.make_sample_data(tmp_path, dimension=3, n_subjects=1, size=8)
    monkeypatch.setitem(sys.modules, 'ipyniivue', None)
    with pytest.raises(ImportError, match=r'pip install "ipyniivue>=2.4"'):
        view3d(csv.parent / 'images' / 'sub000_ch0.nii.gz')


def _coloured(png, column: int, columns: int = 3) -> int:
    "Pixels of a picture's column of panels that are clearly coloured (a label overlay), not grey."
    rgb = np.asarray(Image.open(png).convert('RGB')).astype(int)
    part = rgb[:, column * rgb.shape[1] // columns:(column + 1) * rgb.shape[1] // columns]
    return int(((part.max(-1) - part.min(-1)) > 60).sum())


def test_validation_gallery_of_a_trained_segmentation_run(tmp_path):
    "After one epoch on tiny 2D data: image | truth | prediction for each validation subject, written into the run folder."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=8, size=32)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'run'), patch_size=[32, 32], num_epochs=1,
                              batch_size=4, q_samples_per_volume=1, model={'class_list': [0, 1, 2], 'base_filters': 4},
                              export={'enabled': False})
    medlab.train(cfg)
    run = tmp_path / 'run'
    validation = medlab.RunFolder(run).split().validation
    png = medlab.validation_gallery(run, n=3)
    assert png == run / 'validation_predictions.png'
    rows = min(3, len(validation))
    assert Image.open(png).size == (855, round((3.3 * rows + 0.4) * 90))
    assert _coloured(png, 0) == 0 and _coloured(png, 1) > 100   # the image alone, then its truth drawn over it
    assert not list(run.glob('.validation_predictions.png.*'))  # written atomically: no temporary file left


def test_validation_gallery_of_a_classification_run_and_of_none(tmp_path):
    "Classification: one panel per subject titled with true and predicted class; a split without validation subjects: None."
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=8, size=32, task='classification')
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'run'), patch_size=[32, 32], num_epochs=1,
                              batch_size=4, loss_function='cel', metrics=['accuracy'], export={'enabled': False},
                              model={'architecture': 'vgg11', 'class_list': [0, 1], 'base_filters': 4})
    medlab.train(cfg)
    run = medlab.RunFolder(tmp_path / 'run')
    n = min(2, len(run.split().validation))
    png = validation_gallery(run.path, n=2, show=False)
    assert Image.open(png).size == (round(3.3 * n * 90), round(3.8 * 90))
    split = run.split()
    run.write_split(medlab.Split(split.training + split.validation, ()))
    assert validation_gallery(run.path) is None


def test_validation_gallery_of_a_3d_run_shows_the_slice_through_the_truth(tmp_path):
    "A 3D run (an untrained network saved as a run saves it): each row is the axial slice through the truth's centre."
    from medlab.models import build_model
    csv = medlab.make_sample_data(tmp_path / 'data', dimension=3, n_subjects=3, size=16)
    subjects = medlab.read_manifest(csv)
    cfg = medlab.MedlabConfig(output_dir=str(tmp_path / 'run'), patch_size=[16, 16, 16],
                              model={'dimension': 3, 'class_list': [0, 1, 2], 'base_filters': 4})
    run = medlab.RunFolder(cfg.output_dir)
    run.prepare(); run.write_config(cfg); run.write_split(medlab.Split(tuple(subjects[:1]), tuple(subjects[1:])))
    run.save_checkpoint('best', model=build_model(cfg.model, 3).state_dict(), epoch=1, task='segmentation')
    png = validation_gallery(run.path, show=False)
    assert Image.open(png).size == (855, round((3.3 * 2 + 0.4) * 90))
    assert _coloured(png, 0) == 0 and _coloured(png, 1) > 100


def test_browser_widget_opens_a_volume_in_niivue(tmp_path):
    "The browser of 3D data offers the 3D view; choosing it puts the subject's image and mask into NiiVue."
    pytest.importorskip('ipyniivue')
    from medlab.browse import data_browser, manifest_subjects
    csv = medlab.make_sample_data(tmp_path, dimension=3, n_subjects=2, size=16)
    w = data_browser(subject_table(csv), manifest_subjects(csv)[0])
    assert w.mode.layout.display == 'flex' and w.viewer.sliders[2].description == 'z'
    w.picker.value, w.mode.value = 'sub001', '3D'
    assert [Path(v.path).name for v in w.viewer.volumes] == ['sub001_ch0.nii.gz', 'sub001_mask.nii.gz']
