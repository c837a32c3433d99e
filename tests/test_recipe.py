"""The inference side of a planned recipe on a real (tiny) run: deep supervision trains, test-time mirroring and the
post-processing chosen on validation are what every predictor of the run replays (load_run, its test predictions, OpenVINO)."""
import json

import numpy as np
import SimpleITK as sitk
import torch

import medlab
from medlab.engine.postprocessing import class_dice, keep_largest, write_postprocessing
from medlab.engine.run import RunFolder
from conftest import tiny_config


def test_a_run_chooses_postprocessing_on_mirrored_validation_and_its_predictors_replay_it(tmp_path):
    medlab.make_sample_data(tmp_path / 'data', n_subjects=9, size=32)
    cfg = tiny_config(tmp_path, num_epochs=4, model={'architecture': 'dynunet', 'class_list': [0, 1, 2], 'base_filters': 4,
                                                     'deep_supervision': True},
                      nested_training={'testing': -3, 'validation': -3}, save_output=True,
                      inference_mechanism={'mirror_axes': [0, 1], 'choose_postprocessing': True},
                      export={'enabled': True, 'formats': ['openvino'], 'precision': ['fp32']})
    result = medlab.train(cfg)
    run = RunFolder(cfg.output_dir)
    assert not result.stopped and np.isfinite(run.logs('training').loss).all()
    state = run.checkpoint('best')['model']
    assert any(k.startswith('deep_supervision_heads') for k in state)   # the coarser outputs were trained

    # the choice: made on each validation subject as the run's predictor (mirrored, nothing cleaned) predicts it
    split = run.split()
    chosen = json.loads((run.path / 'postprocessing.json').read_text())
    assert chosen['subjects'] == len(split.validation) >= 1 and chosen['checkpoint'] == 'best'
    assert any(e['event'] == 'postprocessing' for e in run.events())
    raw = medlab.load_run(run.path)
    assert raw.mirror_axes == (0, 1) and raw.largest_component == chosen['largest_component']
    raw.largest_component = []
    pairs = [(torch.as_tensor(raw.predict(s.channels[0]).labels), torch.as_tensor(sitk.GetArrayFromImage(sitk.ReadImage(s.label)).T))
             for s in split.validation]
    for c in (1, 2):   # both means recomputed here from the predictor's own predictions: the choice was made on them
        before = np.mean([class_dice(p, t, c) for p, t in pairs])
        after = np.mean([class_dice(keep_largest(p[None], [c])[0], t, c) for p, t in pairs])
        scores = chosen['validation_dice'][str(c)]
        assert abs(before - scores['as_predicted']) < 1e-9 and abs(after - scores['largest_component']) < 1e-9, (c, before, after, scores)
        assert (c in chosen['largest_component']) == (after > before)

    # mirroring is on in the run's predictor: without it the probabilities differ
    predictor, subject = medlab.load_run(run.path), split.testing[0]
    mirrored = predictor.predict(subject.channels[0])
    predictor.mirror_axes = ()
    assert not np.allclose(predictor.predict(subject.channels[0]).probabilities, mirrored.probabilities, atol=1e-4)

    # replayed: the test predictions the run wrote, load_run, and the OpenVINO export predict the same labels
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(run.predictions_dir('testing') / f'{subject.subject_id}_prediction.nii.gz'))).T
    np.testing.assert_array_equal(written.reshape(mirrored.labels.shape), mirrored.labels)
    openvino = medlab.load_run(run.path, backend='openvino')
    assert openvino.mirror_axes == (0, 1) and openvino.largest_component == chosen['largest_component']
    assert (openvino.predict(subject.channels[0]).labels == mirrored.labels).mean() > 0.999

    # a choice that cleans both classes (whatever this tiny run chose) is what both backends then apply
    write_postprocessing(run, {'largest_component': [1, 2]}, 'best', run.checkpoint('best')['epoch'])
    raw.largest_component, cleaned = [], medlab.load_run(run.path)
    unclean = torch.as_tensor(raw.predict(subject.channels[0]).labels)
    np.testing.assert_array_equal(cleaned.predict(subject.channels[0]).labels, keep_largest(unclean[None], [1, 2])[0].numpy())
    openvino = medlab.load_run(run.path, backend='openvino')
    assert openvino.largest_component == [1, 2] and (openvino.predict(subject.channels[0]).labels == cleaned.predict(subject.channels[0]).labels).mean() > 0.999
    assert medlab.load_run(run.path, checkpoint='latest').largest_component == []   # chosen for the best model, not the latest
