"""A newcomer's first hour on a fresh clone: there is no runs/ folder, so the data the templates name is not there yet.

In JupyterLab (headless Chromium, through the helpers of test_jupyterlab_panel.py), Run All in templates/train.ipynb
shows the panel, with the missing CSV said under its field; typing the sample data's CSV there and pressing Run trains.
Every other template's panel appears too and marks its missing input. Under papermill a missing input still fails
the run with medlab's one short message. Panel labels are a few words, with the config key in the tooltip.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import papermill as pm
import pytest

import medlab
from conftest import TEMPLATES

RED = '1px solid #b00'


def fresh_clone(tmp_path: Path) -> Path:
    "The project as a clone has it before `make demo`: templates/ with its configs, and no runs/."
    project = tmp_path / 'project'
    shutil.copytree(TEMPLATES, project / 'templates', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    assert not (project / 'runs').exists()
    return project


def execute(project: Path, name: str, **parameters) -> Path:
    "Run the clone's `templates/<name>.ipynb` under papermill from its folder, as `make demo` does; returns the executed notebook."
    out = project / f'{name}_executed.ipynb'
    pm.execute_notebook(str(project / 'templates' / f'{name}.ipynb'), str(out), parameters=parameters,
                        cwd=str(project / 'templates'), kernel_name='python3', progress_bar=False)
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> Path:
    "A tiny finished run (six 32x32 subjects, one epoch), for the templates that read a run and a data CSV."
    tmp = tmp_path_factory.mktemp('trained')
    csv = medlab.make_sample_data(tmp / 'data', n_subjects=6, size=32)
    medlab.train(medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp / 'run'), patch_size=[32, 32], num_epochs=1,
                                     batch_size=4, q_samples_per_volume=1, model={'class_list': [0, 1, 2], 'base_filters': 4},
                                     export={'enabled': False}))
    return tmp / 'run'


# -- headless: a missing input fails the run with the one short message ------------------------------------------
def _missing_inputs(project: Path, run: Path, tmp: Path) -> dict:
    "template -> (parameters, the short message): the template's own defaults where the clone lacks their data."
    csv = tmp / 'not_yet' / 'data.csv'
    return {
        'train': ({}, f'FileNotFoundError: data CSV not found: {project / "runs/sample_data/seg2d/data.csv"} (set data_csv to the manifest)'),
        'kfold': ({'output_dir': str(tmp / 'kfold')}, f'FileNotFoundError: data CSV not found: {project / "runs/sample_data/seg2d/data.csv"}'),
        'infer': ({'runs': str(run), 'data_csv': str(csv), 'output_dir': str(tmp / 'predicted')}, f'FileNotFoundError: data CSV not found: {csv}'),
        'cam': ({'run': str(run), 'data_csv': str(csv), 'output_dir': str(tmp / 'maps')}, f'FileNotFoundError: data CSV not found: {csv}'),
        'export': ({}, 'RunError: run folder not found: ../runs/train_seg2d'),   # as the parameter gave it
        'prepare': ({}, 'FileNotFoundError: ../shared/data/dicom/dcm_qa_deident: no such file or folder'),
        'plan': ({}, 'data CSV not found'),
        'federated': ({}, f'FileNotFoundError: data CSV not found: {project / "runs/sample_data/seg2d/data.csv"} (set data_csv to the manifest)'),
        'histology': ({'slide': str(tmp / 'not_yet' / 'slide.svs'), 'labels': str(tmp / 'not_yet' / 'labels.png')},
                      f'FileNotFoundError: slide not found: {tmp / "not_yet" / "slide.svs"}'),
    }


@pytest.mark.parametrize('name', ['train', 'kfold', 'infer', 'cam', 'export', 'prepare', 'histology', 'federated', 'plan'])
def test_a_missing_input_fails_a_papermill_run_with_the_short_message(name, trained, tmp_path):
    "Each template on a fresh clone, headless, with its data not there: the run fails, saying which file and nothing more."
    project = fresh_clone(tmp_path)
    parameters, message = _missing_inputs(project, trained, tmp_path)[name]
    with pytest.raises(pm.PapermillExecutionError) as info: execute(project, name, **parameters)
    said = str(info.value)
    assert message in said, said
    assert 'Traceback' not in said and len(said.strip().splitlines()) <= 5, said


def test_interactive_train_on_a_fresh_clone_shows_the_panel(tmp_path):
    "train.ipynb with the panel (interactive=True) and its default YAML, whose data_csv is not there: every cell runs, the panel appears."
    project = fresh_clone(tmp_path)
    nb = nbformat.read(execute(project, 'train', interactive=True), 4)
    outputs = [o for c in nb.cells for o in c.get('outputs', [])]
    assert not [o for o in outputs if o['output_type'] == 'error']
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outputs)
    state = str(nb.metadata.get('widgets', {}))
    assert 'data CSV not found' in state and 'runs/sample_data/seg2d/data.csv' in state, state[:500]
    assert not (project / 'runs').exists()   # nothing trained, nothing written


# -- interactive, in-process: every template's panel appears and marks its missing input --------------------------
def test_the_train_panel_says_a_missing_csv_by_its_field_and_reads_it_once_given(tmp_path):
    "The clone's YAML in the training panel: data_csv is marked with the library's message; the sample data's CSV typed in clears it."
    from medlab.widgets import ConfigPanel
    project = fresh_clone(tmp_path)
    yaml = project / 'templates' / 'configs' / 'seg2d_sample.yaml'
    panel = ConfigPanel(medlab.load_config(yaml), source=yaml, background=False)
    field = panel.controls['data_csv']
    missing = project / 'runs' / 'sample_data' / 'seg2d' / 'data.csv'
    assert f'data CSV not found: {missing} (set data_csv to the manifest)' in field.note.value
    assert field.widget.layout.border == RED and panel.tabs.titles[panel.tabs.selected_index] == 'data'
    assert panel.message.value == ''   # the message line is Run's: the data's problem is by its field
    csv = medlab.make_sample_data(project / 'mydata', n_subjects=8, size=32)
    field.widget.value = '../../mydata/data.csv'   # relative to the YAML's folder, as in the YAML
    assert panel.cfg.data_csv == str(csv.resolve())
    assert '8 subject(s), 0 with problems' in field.note.value and field.widget.layout.border is None
    assert panel.data.view.children[0].picker.value == 'sub000'   # the subjects tab shows the data browser


@pytest.mark.parametrize('name, values, key', [
    ('infer_panel', {'runs': 'runs/train_seg2d', 'data_csv': 'runs/nowhere.csv', 'output_dir': 'runs/predicted'}, 'data_csv'),
    ('cam_panel', {'run': 'runs/train_seg2d', 'data_csv': 'runs/nowhere.csv', 'output_dir': 'runs/maps', 'methods': 'layercam',
                   'target': None, 'layer': None}, 'run'),
    ('export_panel', {'run': 'runs/train_seg2d', 'output_dir': None, 'formats': 'openvino', 'precision': 'fp32',
                      'package_dir': None, 'bundle_dir': None}, 'run'),
    ('prepare_panel', {'dicom_dir': 'shared/dicom', 'output_dir': 'runs/prepared', 'anonymize': True, 'keep_dates': False,
                       'shift_days': None, 'mapping': None}, 'dicom_dir'),
    ('plan_panel', {'data_csv': 'runs/nowhere.csv', 'output_yaml': 'configs/planned.yaml', 'minutes': 15, 'modality': None,
                    'device': 'auto'}, 'data_csv'),
    ('histology_panel', {'config': 'configs/histology_sample.yaml', 'slide': 'slides/nowhere.svs', 'labels': None,
                         'output_dir': 'runs/histology', 'mpp': 1.0, 'slide_mpp': None, 'max_patches': 10}, 'slide'),
])
def test_every_parameter_panel_appears_and_marks_its_missing_input(name, values, key, tmp_path, monkeypatch):
    "Each template's panel on an empty folder: it is built, the missing input is red under its box, the output folder is not."
    monkeypatch.chdir(tmp_path)
    panel = getattr(medlab, name)(**values)
    assert '(not found)' in panel.controls[key].where.value and panel.controls[key].widget.layout.border == RED
    out = panel.controls['output_yaml' if 'output_yaml' in panel.controls else 'output_dir']   # what the work writes
    assert '(not found)' not in out.where.value and out.widget.layout.border is None
    assert panel.message.value == '' and not panel.run_button.disabled


def test_the_kfold_panel_appears_when_its_yaml_is_not_there(tmp_path, monkeypatch):
    "kfold.ipynb's panel reads its YAML for the folds; a missing YAML is said under the box instead of stopping the cell."
    monkeypatch.chdir(tmp_path)
    panel = medlab.kfold_panel('configs/nowhere.yaml', data_csv='runs/nowhere.csv', output_dir='runs/kfold')
    config = panel.controls['config']
    assert f'config file not found: {tmp_path / "configs/nowhere.yaml"}' in config.note.value and config.widget.layout.border == RED
    assert '(not found)' in panel.controls['data_csv'].where.value
    assert (panel.values['testing'], panel.values['validation']) == (1, -5)   # the config's defaults meanwhile


def test_the_federated_panel_appears_and_its_sites_tab_says_the_csv_is_not_there(tmp_path):
    "federated.ipynb's panel on a fresh clone: built, the missing CSV said by its field and in the sites tab; make_sample_data(sites=3) fills it."
    project = fresh_clone(tmp_path)
    yaml = project / 'templates' / 'configs' / 'federated_sample.yaml'
    panel = medlab.federated_panel(medlab.load_config(yaml), source=yaml)
    missing = project / 'runs' / 'sample_data' / 'seg2d' / 'data.csv'
    sites = panel.tabs.children[panel.tabs.titles.index('sites')]
    assert f'data CSV not found: {missing}' in sites.children[1].value and f'data CSV not found: {missing}' in panel.controls['data_csv'].note.value
    medlab.make_sample_data(missing.parent, n_subjects=12, size=32, sites=3)   # what `make demo` writes
    sites.children[0].click()                                                # Read again
    assert '3 sites, 12 subjects' in sites.children[1].value, sites.children[1].value
    assert not (project / 'runs' / 'federated_seg2d').exists()


# -- labels ----------------------------------------------------------------------------------------------------------
def test_labels_are_short_words_with_the_key_in_the_tooltip():
    "No label is a config key: each is at most five words without underscores; the tooltip starts with the key."
    from medlab.widgets import ConfigPanel
    panel = ConfigPanel(medlab.MedlabConfig(), background=False)
    labels = {k: c.label for k, c in panel.controls.items()}
    assert all('_' not in l and len(l) <= 32 and 1 <= len(l.split()) <= 5 for l in labels.values()), labels
    assert all(c.widget.tooltip.startswith(k) for k, c in panel.controls.items())
    assert labels['data_postprocessing_after_reverse_one_hot_encoding.use'] == 'post-processing (label map)'
    assert labels['inference_mechanism.grid_aggregator_overlap'] == 'overlap blending'
    assert labels['data_csv'] == 'data CSV' and labels['model.architecture'] == 'architecture'
    assert 'inference_mechanism:\n  grid_aggregator_overlap:' in panel.yaml_box.value   # the keys, as the YAML file holds them
    infer = medlab.infer_panel(runs='r', data_csv='d.csv', output_dir='o', fusion='mean', device=None, checkpoint='best', backend='torch')
    assert infer.controls['runs'].label == 'run folder(s)' and 'title="runs: a run folder' in infer.controls['runs'].widget.description
    assert infer.controls['runs'].widget.tooltip.startswith('runs: a run folder')


# -- the browser -----------------------------------------------------------------------------------------------------
def test_train_template_on_a_fresh_clone_in_jupyterlab(tmp_path):
    """Run All in a fresh clone's templates/train.ipynb: the panel appears and says the CSV is not there under its field
    (labels are words, the key is the tooltip); typing the sample data's CSV reads it; Run trains an epoch."""
    ui = pytest.importorskip('test_jupyterlab_panel')   # skips with its reason when Chromium or playwright is missing
    from playwright.sync_api import expect
    project = fresh_clone(tmp_path)
    missing = project / 'runs' / 'sample_data' / 'seg2d' / 'data.csv'
    with ui.jupyterlab(project, tmp_path) as base, ui._page(tmp_path, 1400) as page:
        ui._open_and_run_all(page, base, 'templates/train.ipynb')
        note = page.locator('.medlab-row-data_csv .medlab-note')
        try: expect(note).to_contain_text(f'data CSV not found: {missing} (set data_csv to the manifest)', timeout=120_000)
        except AssertionError as e: raise AssertionError(f'{e}\nnotebook outputs: {ui._notebook_text(page)}') from None
        shown = page.evaluate("document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)').innerText")
        assert 'Traceback' not in shown and 'FileNotFoundError' not in shown, shown[-2000:]
        labels = page.evaluate("""() => [...document.querySelectorAll('[class*="medlab-key-"] label[class^="widget-label"]')]
                                  .filter(l => l.offsetParent && l.innerText.trim().replace('\\u200b', ''))
                                  .map(l => [l.innerText.trim(), (l.querySelector('[title]') || l).title])""")
        assert len(labels) >= 10 and all('_' not in text and len(text.split()) <= 5 for text, _ in labels), labels
        assert ['data CSV', 'data_csv: manifest CSV, or one CSV per split'] in labels, labels
        assert any(text == 'post-processing (label map)' and title.startswith('data_postprocessing_after_reverse_one_hot_encoding.use')
                   for text, title in labels), labels
        ui._shot(page, 'fresh_clone_missing_csv')

        csv = medlab.make_sample_data(project / 'mydata', n_subjects=8, size=64)
        box = ui._control(page, 'data_csv').locator('input')
        box.fill(str(csv)); box.press('Enter'); box.blur()
        expect(note).to_contain_text('8 subject(s), 0 with problems', timeout=60_000)
        ui._tab(page, 'subjects')
        expect(page.locator('.medlab-subjects')).to_contain_text('8 subject(s), 0 with problems')
        epochs = ui._control(page, 'num_epochs').locator('input')
        for attempt in range(3):   # under load a tab click can land while the panel still lays out: click again until it shows
            ui._tab(page, 'training')
            try: expect(epochs).to_be_visible(timeout=20_000); break
            except AssertionError:
                if attempt == 2: raise
        epochs.fill('1'); epochs.press('Enter'); epochs.blur()
        expect(epochs).to_have_value('1')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        seen = {}
        ui._watch(page, 'Finished', 300, seen)
        assert 1 in seen, seen   # the epoch line and its curves appeared while it trained
        expect(page.locator('.medlab-progress')).to_contain_text('epoch 1/1')
        ui._shot(page, 'fresh_clone_trained')
    metrics = ui._json_file(project / 'runs' / 'train_seg2d' / 'metrics.json')
    assert metrics['epochs_run'] == 1 and 'dice' in metrics['best'], metrics
