"""The default class activation map of a trained classifier points at the one square that makes class 1."""
import numpy as np

import medlab
from medlab.io import read_image, to_array


def test_the_default_map_points_at_the_square(tmp_path):
    "Class 1 differs from class 0 only by a small bright square at a random place: the default map must find it."
    csv = medlab.make_localization_data(tmp_path / 'sq', n_subjects=192, size=64, seed=0)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'run'), patch_size=[64, 64], num_epochs=12, batch_size=8,
                              q_samples_per_volume=1, learning_rate=1e-3, loss_function='cel', metrics=['balanced_accuracy'],
                              model={'architecture': 'vgg11', 'base_filters': 8}, data_preprocessing={'normalize': None},
                              nested_training={'validation': -4}, export={'enabled': False})
    result = medlab.train(cfg)
    assert result.best['balanced_accuracy'] >= 0.9, result.best
    predictor = medlab.load_run(tmp_path / 'run')
    hits, shares = [], []
    for s in medlab.RunFolder(tmp_path / 'run').split().validation:
        if s.value != 1: continue
        heat = medlab.cam(predictor, s.channels[0], target=1).map
        region = to_array(read_image(csv.parent / 'regions' / f'{s.subject_id}.nii.gz'))[0] > 0
        hits.append(region[np.unravel_index(np.argmax(heat), heat.shape)])
        shares.append(heat[region].sum() / heat.sum())
    # the square is 64 of 4096 pixels (1.6 %): a map that ignored it would hit ~2 % and hold ~2 % of its mass there;
    # seen: 0.96 / 0.31 here, 1.00 / 0.23 for a vgg11 trained longer on 384 images (benchmarks/cam_known_answer.py)
    assert np.mean(hits) >= 0.8 and np.mean(shares) >= 0.15, (np.mean(hits), np.mean(shares))


def test_a_segmentation_map_covers_the_class_it_explains(tmp_path):
    "A U-Net's default map of class 1, explained over the region it predicts, lies on the true class-1 blobs."
    csv = medlab.make_sample_data(tmp_path / 'blobs', n_subjects=24, size=64)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp_path / 'run'), patch_size=[64, 64], num_epochs=8, batch_size=8,
                              q_samples_per_volume=4, learning_rate=0.003, scheduler='cosine', model={'class_list': [0, 1, 2], 'base_filters': 8},
                              data_preprocessing={'normalize': None}, export={'enabled': False})
    assert medlab.train(cfg).best['dice'] > 0.8
    predictor, hits, shares = medlab.load_run(tmp_path / 'run'), [], []
    for s in medlab.RunFolder(tmp_path / 'run').split().validation:
        heat = medlab.cam(predictor, s.channels[0], target=1).map
        truth = to_array(read_image(s.label))[0] == 1
        hits.append(truth[np.unravel_index(np.argmax(heat), heat.shape)]); shares.append(heat[truth].sum() / heat.sum())
    # class 1 covers ~10 % of an image; seen 1.00 / 0.98 for a U-Net at Dice 0.985 (benchmarks/cam_known_answer.py)
    assert np.mean(hits) >= 0.8 and np.mean(shares) >= 0.5, (np.mean(hits), np.mean(shares))
