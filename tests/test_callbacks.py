"""The training loop's callbacks (medlab.callbacks): the hooks and the typed epoch record, and the TensorBoard and
MLflow trackers, each store read back by its own library."""
import importlib.util
import subprocess
import sys

import pytest

import medlab
from medlab.callbacks import Callback, EpochRecord
from medlab.run import RunFolder
from conftest import tiny_config as _tiny_config


def tiny(tmp_path, **changes):
    "The shared tiny run, 2 epochs unless told."
    return _tiny_config(tmp_path, **{'num_epochs': 2, **changes})


class Recorder(Callback):
    "Notes each hook; at each epoch's end, which epoch `model_latest.pt` already holds."
    def __init__(self): self.calls, self.records, self.saved = [], [], []
    def on_fit_start(self, trainer): self.calls.append('start')
    def on_epoch_end(self, trainer, record):
        self.calls.append('epoch'); self.records.append(record)
        self.saved.append(trainer.run.checkpoint('latest')['epoch'])
    def on_fit_end(self, trainer, result): self.calls.append(('end', result.epochs_run))
    def teardown(self, trainer): self.calls.append('teardown')


def test_callbacks_get_typed_records_after_the_checkpoints(tmp_path):
    rec, infos = Recorder(), []
    result = medlab.train(tiny(tmp_path), callbacks=[rec], on_epoch=infos.append)
    assert rec.calls == ['start', 'epoch', 'epoch', ('end', 2), 'teardown']
    assert rec.saved == [1, 2]                      # each record comes after its epoch's checkpoint
    run = RunFolder(result.output_dir)
    logs = run.logs('validation').to_dict('records')
    for r, row in zip(rec.records, logs):
        assert isinstance(r, EpochRecord) and r.num_epochs == 2 and r.monitor == 'dice'
        assert r.validation['dice'] == pytest.approx(row['dice']) and r.validation['epoch'] == row['epoch']
        assert r.line.startswith(f"epoch {r.epoch}/2: loss ")
    assert rec.records[-1].best_epoch == result.best_epoch and rec.records[-1].eta_seconds == 0.0
    with pytest.raises(Exception, match='cannot assign'): rec.records[0].epoch = 5
    # the old on_epoch dict is still given, curves included
    assert [i['epoch'] for i in infos] == [1, 2] and infos[0]['curves'].endswith('training_curves.png')
    assert [e['event'] for e in run.events()] == ['start', 'first_step', 'epoch', 'epoch', 'finished']


def test_an_error_in_a_callback_still_tears_down(tmp_path):
    class Boom(Recorder):
        def on_epoch_end(self, trainer, record): self.calls.append('epoch'); raise ValueError('boom')
    boom = Boom()
    with pytest.raises(ValueError, match='boom'): medlab.train(tiny(tmp_path), callbacks=[boom])
    assert boom.calls == ['start', 'epoch', 'teardown']
    assert RunFolder(tmp_path / 'run').events()[-1]['event'] == 'failed'


def test_tensorboard_event_files_read_back_with_tensorboard(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    result = medlab.train(tiny(tmp_path, tracking={'tensorboard': True}))
    acc = EventAccumulator(str(tmp_path / 'run' / 'tensorboard')); acc.Reload()
    run = RunFolder(result.output_dir)
    for kind in ('training', 'validation'):
        logs = run.logs(kind)
        for name in ('loss', 'dice', 'dice_2'):
            events = acc.Scalars(f'{kind}/{name}')
            assert [e.step for e in events] == [1, 2]
            assert [e.value for e in events] == pytest.approx(list(logs[name]), rel=1e-6)
    assert [e.step for e in acc.Scalars('learning_rate')] == [1, 2]


def test_mlflow_run_params_metrics_and_best_model_read_back_with_mlflow(tmp_path, monkeypatch):
    pytest.importorskip('mlflow')
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    result = medlab.train(tiny(tmp_path, tracking={'mlflow': True}))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")      # the store beside the run folder
    exp = client.get_experiment_by_name('medlab')
    [mrun] = client.search_runs([exp.experiment_id])
    assert mrun.info.status == 'FINISHED' and mrun.info.run_name == 'run'
    assert mrun.data.params['model.base_filters'] == '4' and mrun.data.params['num_epochs'] == '2'
    logs = RunFolder(result.output_dir).logs('validation')
    history = client.get_metric_history(mrun.info.run_id, 'validation/dice')
    assert [m.step for m in history] == [1, 2] and [m.value for m in history] == pytest.approx(list(logs.dice))
    assert [a.path for a in client.list_artifacts(mrun.info.run_id)] == ['model_best.pt']
    local = client.download_artifacts(mrun.info.run_id, 'model_best.pt', str(tmp_path / 'back'))
    assert open(local, 'rb').read() == (tmp_path / 'run' / 'model_best.pt').read_bytes()


def test_mlflow_goes_where_mlflow_tracking_uri_says(tmp_path, monkeypatch):
    pytest.importorskip('mlflow')
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.chdir(tmp_path)   # MLflow's own default artifact root for a user's store: ./mlruns
    medlab.train(tiny(tmp_path, num_epochs=1, tracking={'mlflow': True, 'experiment': 'mine'}))
    assert not (tmp_path / 'mlflow.db').exists()
    exp = MlflowClient(uri).get_experiment_by_name('mine')
    [mrun] = MlflowClient(uri).search_runs([exp.experiment_id])
    assert [a.path for a in MlflowClient(uri).list_artifacts(mrun.info.run_id)] == ['model_best.pt']


def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'mlflow' else real(name, *a))
    cfg = tiny(tmp_path, tracking={'mlflow': True})
    with pytest.raises(ImportError, match=r'tracking.mlflow: true needs the mlflow package.*pip install "medlab\[tracking\]"'):
        medlab.train(cfg)
    assert not (tmp_path / 'run').exists()


def test_a_run_trains_with_neither_tracker_installed(tmp_path):
    "mlflow and tensorboard made unimportable (as when the extra is not installed): tracking off trains, tracking on is refused."
    cfg = tiny(tmp_path, num_epochs=1)
    code = ("import sys\nfor m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard'): sys.modules[m] = None\n"
            'import medlab\ncfg = medlab.MedlabConfig(**' + repr(cfg.model_dump(mode='json')) + ')\n'
            'print(medlab.train(cfg).epochs_run)\n'
            "try: medlab.train(cfg.model_copy(update={'output_dir': cfg.output_dir + '2', 'tracking': {'tensorboard': True}}))\n"
            'except ImportError as e: print(e)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-2:] == ['1', 'tracking.tensorboard: true needs the tensorboard package, which is not installed: '
                                            'pip install "medlab[tracking]" (or set tracking.tensorboard: false)']
    assert not (tmp_path / 'run2').exists()
