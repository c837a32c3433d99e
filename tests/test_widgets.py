"""The ui floor's panels (issue 21): one module per idea (controls, the training panel, the workflow panels), one
`workflow_panel` for the workflow front ends, the training panel's live part as a callback of the loop, and the old
`medlab.widgets` path forwarding to the new modules."""
import ast
import html
import json
import threading
from pathlib import Path

import pytest

import medlab
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
UI = ['controls', 'config_panel', 'workflow_panels']


# -- the old path -----------------------------------------------------------------------------------------------------
def test_the_old_widgets_path_gives_each_name_from_its_new_home():
    "`from medlab.widgets import ConfigPanel` (tests, docs, user notebooks) still works: the very objects of the new modules."
    import medlab.ui.config_panel as config_panel
    import medlab.ui.controls as controls
    import medlab.ui.workflow_panels as workflow_panels
    from medlab.widgets import ConfigPanel, Panel, ParameterPanel, field_label, infer_panel
    import medlab.widgets
    assert (ConfigPanel, Panel, ParameterPanel) == (config_panel.ConfigPanel, controls.Panel, workflow_panels.ParameterPanel)
    assert field_label is controls.field_label and infer_panel is workflow_panels.infer_panel
    assert medlab.widgets.Control is controls.Control and medlab.widgets._docs is workflow_panels._docs   # private names too
    from medlab.ui.widgets import ConfigPanel as from_last_commit   # the path of the first floors commit
    assert from_last_commit is config_panel.ConfigPanel
    with pytest.raises(AttributeError, match="no_such_thing.*medlab.ui.controls, medlab.ui.config_panel, medlab.ui.workflow_panels"):
        medlab.widgets.no_such_thing
    assert {'ConfigPanel', 'Panel', 'workflow_panel'} <= set(dir(medlab.widgets))


def test_the_facade_finds_each_panel_in_its_new_home():
    assert medlab.config_panel.__module__ == 'medlab.ui.config_panel'
    assert medlab.histology_panel.__module__ == medlab.show_cam.__module__ == 'medlab.ui.workflow_panels'


# -- one workflow_panel -----------------------------------------------------------------------------------------------
def test_workflow_panel_runs_the_workflow_and_shows_its_result():
    "Run calls the workflow with the panel's values, shows its result with `show`, and returns it."
    from medlab.ui.workflow_panels import workflow_panel
    def scale(x: float,     # the number to scale
              factor: int   # how many times
             ): return x * factor
    shown = []
    panel = workflow_panel(scale, shown.append, {'x': 1.5, 'factor': 2})
    assert panel.run() == 3.0 and shown == [3.0]
    panel.controls['factor'].widget.value = 4
    assert panel.run() == 6.0 and shown == [3.0, 6.0]
    assert 'how many times' in panel.controls['factor'].help.value   # help from the workflow's docments


@pytest.mark.parametrize('front, workflow, show, values, called', [
    ('infer_panel', 'predict', 'show_inference', {'runs': 'r', 'data_csv': 'd.csv', 'output_dir': 'o', 'fusion': 'vote'},
     {'runs': 'r', 'data_csv': 'd.csv', 'output_dir': 'o', 'fusion': 'vote'}),
    ('export_panel', 'export', 'show_export', {'run': 'r', 'formats': 'onnx'}, {'run': 'r', 'formats': 'onnx'}),
    ('prepare_panel', 'prepare_dicom', 'show_prepared', {'dicom_dir': 'dcm', 'output_dir': 'o', 'anonymize': False},
     {'input': 'dcm', 'output_dir': 'o', 'anonymize': False}),
    ('histology_panel', 'histology_pipeline', 'show_histology', {'config': 'c.yaml', 'output_dir': 'o', 'mpp': 0.5},
     {'config': 'c.yaml', 'output_dir': 'o', 'mpp': 0.5}),
    ('cam_panel', 'cam_csv', 'show_cam', {'run': 'r', 'data_csv': 'd.csv', 'output_dir': 'o', 'methods': 'gradcam', 'target': '1',
                                          'layer': ''},
     {'run': 'r', 'data_csv': 'd.csv', 'output_dir': 'o', 'methods': 'gradcam', 'target': 1.0, 'layer': None}),
])
def test_each_front_end_runs_its_workflow_and_shows_the_result(front, workflow, show, values, called, monkeypatch):
    "Each template's panel: Run calls its workflow with the panel's values (as before the split) and shows what it returned."
    import inspect
    import medlab.ui.workflow_panels as wp
    real = inspect.signature(getattr(wp, workflow))
    calls, shown = [], []
    def fake(*args, **kwargs):
        calls.append(real.bind(*args, **kwargs).arguments)
        return 'RESULT'
    monkeypatch.setattr(wp, workflow, fake)
    monkeypatch.setattr(wp, show, lambda result, *rest: shown.append((result, *rest)))
    panel = getattr(medlab, front)(**values)
    assert type(panel).__name__ == 'ParameterPanel' and panel.run() == 'RESULT'
    assert calls == [called]
    assert shown == ([('RESULT', 'o', 'd.csv')] if front == 'cam_panel' else [('RESULT',)])


def test_the_kfold_panel_passes_the_folds_as_nested_training(monkeypatch, tmp_path):
    import medlab.ui.workflow_panels as wp
    yaml = tmp_path / 'c.yaml'
    yaml.write_text('nested_training: {testing: 3, validation: 2}\n')
    calls, shown = [], []
    monkeypatch.setattr(wp, 'kfold', lambda config, **kw: calls.append((config, kw)) or 'KFOLD')
    monkeypatch.setattr(wp, 'show_kfold', shown.append)
    panel = medlab.kfold_panel(str(yaml), workers=2)
    assert (panel.values['testing'], panel.values['validation']) == (3, 2)
    panel.controls['testing'].widget.value = 4
    assert panel.run() == 'KFOLD' and shown == ['KFOLD']
    assert calls == [(str(yaml), {'nested_training': {'testing': 4, 'validation': 2}, 'workers': 2})]


def test_the_front_ends_are_written_once():
    "No front end builds its own ParameterPanel: each goes through `workflow_panel`."
    source = (ROOT / 'medlab' / 'ui' / 'workflow_panels.py').read_text()
    tree = ast.parse(source)
    builders = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                and any(isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'ParameterPanel' for n in ast.walk(f))]
    assert builders == ['workflow_panel'], builders
    fronts = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.endswith('_panel') and f.name != 'workflow_panel']
    assert sorted(f.name for f in fronts) == ['cam_panel', 'export_panel', 'histology_panel', 'infer_panel', 'kfold_panel', 'plan_panel', 'prepare_panel']
    assert all(f.end_lineno - f.lineno <= 20 for f in fronts), [(f.name, f.end_lineno - f.lineno) for f in fronts]


# -- the training panel's live part is a callback ------------------------------------------------------------------
def test_the_training_panel_follows_training_through_a_callback(tmp_path, monkeypatch):
    """Run in the training panel trains two epochs: the panel gets each epoch's typed record through its callback (no
    `on_epoch` dict), shows the record's own line and the curves, and passes Stop's event as `stop`."""
    import medlab.ui.config_panel as cp
    from medlab.engine.callbacks import Callback, EpochRecord
    given, lines, real = {}, [], cp.train
    def spy(cfg, **kwargs):
        given.update(kwargs)
        return real(cfg, **kwargs)
    monkeypatch.setattr(cp, 'train', spy)
    panel = cp.ConfigPanel(tiny_config(tmp_path, num_epochs=2), background=False)
    panel.progress.observe(lambda change: lines.append(change['new']), 'value')
    result = panel.run()
    assert result.epochs_run == 2 and 'on_epoch' not in given
    assert isinstance(given['stop'], threading.Event) and given['stop'] is panel.stop_event
    live = [c for c in given['callbacks'] if isinstance(c, Callback)]
    assert len(live) == 1 and live[0].panel is panel
    record = panel.last_epoch
    assert isinstance(record, EpochRecord) and (record.epoch, record.num_epochs) == (2, 2)
    epochs = [l for l in lines if l.startswith('epoch ')]
    assert len(epochs) == 2 and epochs[0].startswith('epoch 1/2: loss ') and epochs[1] == html.escape(record.line)
    assert record.line.startswith('epoch 2/2: loss ')
    assert (panel.bar.value, panel.bar.max) == (2, 2)
    assert panel.curves.value[:4] == b'\x89PNG' and panel.curves.layout.display == 'none'   # drawn live, hidden at the end
    assert not hasattr(cp, 'progress_line')   # the record's line is the one line


# -- the shape of the ui floor --------------------------------------------------------------------------------------
def test_the_ui_modules_import_medlab_at_their_top():
    "The ui floor may import every floor below at module top: no medlab import inside a function in the panel modules."
    late = []
    for name in UI:
        path = ROOT / 'medlab' / 'ui' / f'{name}.py'
        for f in ast.walk(ast.parse(path.read_text())):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            for n in ast.walk(f):
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or '').startswith('medlab')):
                    late.append(f'{path.name}:{n.lineno}')
    assert not late, late


def test_the_panel_notebooks_keep_export_cells_short():
    "fastcore's rhythm: no export cell over 60 lines, and no 'Checks' appendix."
    for name in ['12_controls', '12d_config_panel', '12e_workflow_panels']:
        cells = json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())['cells']
        long = [len(''.join(c['source']).splitlines()) for c in cells
                if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export')]
        assert long and max(long) <= 60, (name, long)
        assert not any(''.join(c['source']).strip() == '## Checks' for c in cells), name
