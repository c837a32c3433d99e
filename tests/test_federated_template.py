"""templates/federated.ipynb: the panel (sites tab, a live table per round, Stop) and the same notebook under papermill,
which resumes the federation the panel stopped."""
import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

import medlab
from medlab.engine.run import RunFolder
from conftest import TEMPLATES

pytest.importorskip('flwr')

YAML = {'data_csv': '../data/data.csv', 'output_dir': '../runs/federated', 'seed': 0, 'patch_size': [32, 32], 'batch_size': 4,
        'q_samples_per_volume': 1, 'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'export': {'enabled': False},
        'nested_training': {'testing': 1, 'validation': -3}, 'federated': {'rounds': 2, 'local_steps': 1}}


@pytest.fixture
def work(tmp_path):
    "A folder as a user has it: the template, a federation's YAML and sample data from three sites."
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'federated_sample.yaml').write_text(yaml.safe_dump(YAML))
    medlab.make_sample_data(tmp_path / 'data', n_subjects=9, size=32, sites=3)
    return tmp_path


def test_the_panel_stops_after_a_round_and_papermill_resumes_it(work, monkeypatch):
    monkeypatch.chdir(work)
    cfg = medlab.load_config('configs/federated_sample.yaml')
    panel = medlab.federated_panel(cfg, source='configs/federated_sample.yaml', cpus=1)
    sites = panel.tabs.children[panel.tabs.titles.index('sites')]
    assert '3 sites, 9 subjects' in sites.children[1].value and 'site_c' in sites.children[1].value
    panel.background = True                                           # as in JupyterLab: Run returns at once, Stop works
    # Stop pressed as round 1's line appears (the observer runs before the next round is sent): the federation ends there
    panel.progress.observe(lambda change: change['new'].startswith('round 1') and panel.stop(), 'value')
    panel.start()
    panel.wait(240)
    assert not panel.busy and 'Stopped after round 1 of 2' in panel.message.value, panel.message.value
    table = panel.widget.children[-2].value                           # the round table: each site and the weighted mean
    assert all(name in table for name in ('site_a', 'site_b', 'site_c', 'weighted', 'dice')), table
    assert panel.progress.value.startswith('round 1 of 2: validation loss')
    run = RunFolder(work / 'runs' / 'federated')
    assert run.checkpoint('latest')['epoch'] == 1 and not (run.path / 'metrics.json').exists()

    out = work / 'executed.ipynb'
    pm.execute_notebook(str(TEMPLATES / 'federated.ipynb'), str(out), cwd=str(work), kernel_name='python3', progress_bar=False,
                        parameters={'config': 'configs/federated_sample.yaml', 'engine': 'simulation'})
    text = json.dumps([o for c in nbformat.read(out, 4).cells for o in c.get('outputs', [])])
    assert 'round 2 of 2: validation loss' in text and 'round 1 of 2' not in text    # resumed: only round 2 was trained
    assert 'best round' in text and 'site site_a dice' in text                       # the summary, with each site's score
    assert [e['resumed_from_round'] for e in run.events() if e['event'] == 'start'] == [None, 1]
    metrics = run.metrics()
    assert metrics['epochs_run'] == 2 and sorted(metrics['sites']) == ['site_a', 'site_b', 'site_c']
    assert medlab.load_run(run.path).model is not None               # an ordinary run folder
