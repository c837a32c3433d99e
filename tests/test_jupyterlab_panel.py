"""End-to-end checks of the templates in a real JupyterLab driven by headless Chromium.

train.ipynb: opens the template, runs all cells, checks that medlab's config panel (`medlab.widgets.ConfigPanel`)
shows every field of its data, model and training tabs, that a bad CSV path gives one line and no traceback, that
Run trains in the background (Run disabled, the curve image redrawn each epoch), that Stop ends the run and Run
resumes it to the edited number of epochs. Screenshots go to tests/_artefacts/. infer.ipynb and kfold.ipynb: the same machinery
(`medlab.widgets.ParameterPanel`): edit the paths and folds in the panel, press Run, wait for the files and the
results shown under the panel. Controls are found by their key (the class `medlab-key-KEY`): their labels are words.
test_fresh_clone.py opens the train template where no data exists yet.

Needs Debian's Chromium at /usr/bin/chromium and the Python `playwright` package (no `playwright install`):
    apt-get update && apt-get install -y chromium
    .venv/bin/pip install playwright
The test is skipped with a reason when either is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path('/usr/bin/chromium')
REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / 'templates'
SHARED_DATA = REPO.parent / "shared" / "data"
ARTEFACTS = REPO / 'tests' / '_artefacts'   # screenshots of the panel tests (git-ignored)
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--no-first-run', '--disable-sync', '--disable-dev-shm-usage']
PANEL_KEYS = ['model.architecture', 'model.dimension', 'patch_size', 'num_epochs', 'learning_rate',
                'batch_size', 'data_csv', 'output_dir']

if not CHROMIUM.exists():
    pytest.skip(f'{CHROMIUM} not found: install it with `apt-get update && apt-get install -y chromium`',
                allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip('the `playwright` Python package is missing: `pip install playwright` '
                '(no `playwright install`; the test uses /usr/bin/chromium)', allow_module_level=True)
pytest.importorskip('jupyterlab', reason='jupyterlab is not installed in this Python')

YAML = """\
# a tiny 2D run for the browser test: paths resolve against this file's folder
data_csv: ../data/data.csv
output_dir: ../run
seed: 0
model: {dimension: 2, class_list: [0, 1, 2], base_filters: 8}
patch_size: [32, 32]
num_epochs: 2
batch_size: 4
q_samples_per_volume: 2
"""

# ---------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read())

def _wait(pred, timeout: float, what: str, every: float = 0.25):
    "Poll `pred` until it returns something truthy; fail with `what` after `timeout` seconds."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got: return got
        time.sleep(every)
    raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')

def _stop(proc: subprocess.Popen, base: str):
    "Shut the kernels down through the API, then stop the server by its PID (its process group if it hangs)."
    try:
        for s in _get_json(f'{base}/api/sessions', timeout=3):
            req = urllib.request.Request(f"{base}/api/sessions/{s['id']}", method='DELETE')
            urllib.request.urlopen(req, timeout=10).close()
    except Exception: pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: pass
    if proc.poll() is None:
        try: os.killpg(proc.pid, signal.SIGKILL)   # the group this test started for the server (start_new_session)
        except ProcessLookupError: pass
        proc.wait(timeout=10)

@pytest.fixture
def lab(tmp_path):
    "A fresh JupyterLab serving a folder with the template, a tiny config and sample data; yields (base_url, folder)."
    import medlab
    work = tmp_path / 'work'
    (work / 'configs').mkdir(parents=True)
    for name in ('train', 'infer', 'kfold', 'cam', 'export', 'prepare', 'federated', 'plan'): shutil.copy(TEMPLATES / f'{name}.ipynb', work / f'{name}.ipynb')
    (work / 'configs' / 'seg2d_sample.yaml').write_text(YAML)   # the template's default `config` path
    medlab.make_sample_data(work / 'data', n_subjects=8, size=64)
    with jupyterlab(work, tmp_path) as base: yield base, work

@contextlib.contextmanager
def jupyterlab(work: Path, tmp_path: Path):
    "A fresh JupyterLab serving `work` with private settings; yields its base URL, then stops it and its kernels."
    home = tmp_path / 'jupyter'   # private config/data/runtime dirs: no user settings, workspaces or kernels leak in
    settings = home / 'config' / 'lab' / 'user-settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = {k: v for k, v in os.environ.items() if k not in ('MEDLAB_HEADLESS', 'JPY_SESSION_NAME')}
    env.update(JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_DATA_DIR=str(home / 'data'),
               JUPYTER_RUNTIME_DIR=str(home / 'runtime'), JUPYTERLAB_SETTINGS_DIR=str(home / 'config' / 'lab' / 'user-settings'),
               JUPYTERLAB_WORKSPACES_DIR=str(home / 'config' / 'lab' / 'workspaces'), PYTHONUNBUFFERED='1')

    port = _free_port()
    base = f'http://127.0.0.1:{port}'
    log = open(tmp_path / 'jupyterlab.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--ip=127.0.0.1', f'--port={port}', '--no-browser', '--allow-root',
         '--IdentityProvider.token=', '--ServerApp.password=', '--ServerApp.disable_check_xsrf=True',
         f'--ServerApp.root_dir={work}', '--ServerApp.port_retries=0'],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f'JupyterLab exited with {proc.returncode}:\n' + (tmp_path / 'jupyterlab.log').read_text()[-3000:])
            try: return _get_json(f'{base}/api/status', timeout=2)
            except OSError: return None
        _wait(up, 60, 'JupyterLab to answer /api/status')
        yield base
    finally:
        _stop(proc, base)
        log.close()

# ---------------------------------------------------------------------------------------------------------------
def _notebook_text(page) -> str:
    "The notebook's outputs as text, for failure messages."
    try: return page.locator('.jp-OutputArea').all_inner_texts().__repr__()[-4000:]
    except Exception as e: return f'(could not read outputs: {e})'

def _control(page, key: str):
    "The control of config key or template parameter `key` (its label is a few words; the key is its class and tooltip)."
    return page.locator(f'[class~="medlab-key-{key}"]')

def _labelled(page, label: str):
    "The widget box whose description label is exactly `label` (the viewers' own controls)."
    return page.locator('.widget-inline-hbox').filter(
        has=page.locator('label.widget-label, label.widget-label-basic', has_text=re.compile(rf'^\s*{re.escape(label)}\s*$')))  # checkboxes: -basic

@contextlib.contextmanager
def _page(tmp_path, height: int = 1000):
    "A page in headless Chromium; on failure a screenshot goes to tmp_path/failure.png."
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': height})
            try: yield page
            except Exception:
                _screenshot_on_failure(page, tmp_path)
                raise
        finally: browser.close()

def _open_and_run_all(page, base: str, notebook: str):
    "Open `notebook` in JupyterLab, wait for an idle connected kernel, and run all cells."
    page.set_default_timeout(30_000)
    page.goto(f'{base}/lab/tree/{notebook}', wait_until='domcontentloaded', timeout=60_000)
    # ready: the status bar shows an idle kernel, and the server has a connected idle kernel
    expect(page.locator('#jp-main-statusbar')).to_contain_text('| Idle', timeout=60_000)
    def kernel_ready():
        ss = _get_json(f'{base}/api/sessions')
        return ss and all(s['kernel']['execution_state'] == 'idle' and s['kernel']['connections'] > 0 for s in ss)
    _wait(kernel_ready, 60, 'an idle, connected kernel in /api/sessions')
    page.locator('#jp-MainMenu .lm-MenuBar-item').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

@contextlib.contextmanager
def _outputs_on_failure(page):
    "A failed expectation inside says what the notebook printed too (where a cell's error shows)."
    try: yield
    except AssertionError as e: raise AssertionError(f'{e}\nnotebook outputs: {_notebook_text(page)}') from None

def _set_text(page, key: str, value: str):
    "Type `value` into the text control of `key` and leave it (ipywidgets syncs on change)."
    box = _control(page, key).locator('input')
    box.fill(value); box.press('Enter'); box.blur()
    expect(box).to_have_value(value)

def _json_file(path: Path):
    if not path.exists(): return None
    try: return json.loads(path.read_text())
    except ValueError: return None

def _screenshot_on_failure(page, tmp_path):
    try: page.screenshot(path=str(tmp_path / 'failure.png'), full_page=True)
    except Exception: pass

def _shot(page, name: str):
    "Save a screenshot of the whole page as a test artefact (tests/_artefacts/NAME.png)."
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f'{name}.png'), full_page=True)

def _tab(page, name: str):
    "Bring the panel's tab called `name` forward."
    page.locator('.lm-TabBar-tab').filter(has_text=re.compile(rf'^\s*{re.escape(name)}\s*$')).click()

_CURVES = """async () => {
  const el = document.querySelector('.medlab-curves');
  const img = el && (el.tagName === 'IMG' ? el : el.querySelector('img'));
  const progress = document.querySelector('.medlab-progress'), message = document.querySelector('.medlab-message');
  let hash = null;
  if (img && img.src) {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 0; for (const b of bytes) h = (h * 31 + b) >>> 0;
    hash = `${h}:${bytes.length}`;
  }
  return {progress: progress ? progress.innerText : '', message: message ? message.innerText : '', hash};
}"""

def _watch(page, until: str, timeout: float, seen: dict) -> dict:
    "Poll the panel's progress line, message and curve image until the message contains `until`; `seen` maps epoch -> curve hashes."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = page.evaluate(_CURVES)
        m = re.search(r'epoch (\d+)/\d+', state['progress'])
        if m and state['hash']: seen.setdefault(int(m.group(1)), set()).add(state['hash'])
        if until in state['message']: return state
        time.sleep(0.2)
    raise AssertionError(f'timed out after {timeout:.0f} s waiting for {until!r} in the panel message; last: {state}')

def test_train_template_panel_in_jupyterlab(lab, tmp_path):
    """The grouped train panel in a real JupyterLab: every field of the data, model and training tabs is shown; a bad CSV
    path gives one line and no traceback; Run trains in the background with Run disabled, the curves redrawn each
    epoch; Stop ends the run and Run resumes it to the end."""
    base, work = lab
    import medlab
    from medlab.widgets import ConfigPanel
    groups = ConfigPanel(medlab.load_config(work / 'configs' / 'seg2d_sample.yaml'), background=False).groups
    with _page(tmp_path, 1400) as page:
        _open_and_run_all(page, base, 'train.ipynb')
        # the panel: a dropdown of segmentation architectures only (the manifest has Label), every control, a Run button
        arch = _control(page, 'model.architecture').locator('select')
        with _outputs_on_failure(page): expect(page.locator('.medlab-message')).to_have_count(1, timeout=90_000)
        _tab(page, 'model')
        expect(arch).to_be_visible()
        options = {o.strip() for o in arch.locator('option').all_inner_texts()}
        assert {'unet', 'resunet'} <= options and not any(o.startswith(('resnet', 'vgg', 'densenet')) for o in options), options
        for key in PANEL_KEYS:
            expect(_control(page, key)).to_have_count(1)
        for group in ('data', 'model', 'training'):   # every field of these tabs is there and visible in its tab
            _tab(page, group)
            for key in groups[group]:
                expect(_control(page, key)).to_be_visible()
            _shot(page, f'train_panel_{group}')
        assert {'loss_function', 'patience', 'seed', 'metrics', 'model.class_list'} <= {k for g in groups.values() for k in g}
        _tab(page, 'training')
        epochs = _control(page, 'num_epochs').locator('input')
        expect(epochs).to_have_value('2')
        run = page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$'))
        stop = page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Stop\s*$'))
        expect(run).to_have_count(1)
        expect(stop).to_be_disabled()
        assert not (work / 'run' / 'metrics.json').exists(), 'the panel must not train before Run is pressed'

        # a bad CSV path: one line naming data_csv, the traceback folded away
        _tab(page, 'data')
        csv_box = _control(page, 'data_csv').locator('input')
        csv_box.fill('nothere.csv'); csv_box.press('Enter'); csv_box.blur()
        expect(page.locator('.medlab-message')).to_be_empty()
        run.click()
        message = page.locator('.medlab-message .widget-html-content > div').first
        expect(message).to_contain_text('nothere.csv', timeout=60_000)
        assert '\n' not in message.inner_text().strip() and 'data_csv' in message.inner_text(), message.inner_text()
        assert page.locator('.medlab-message details').get_attribute('open') is None
        assert 'Traceback (most recent call last)' in page.locator('.medlab-message details pre').text_content()   # folded, not lost
        shown = page.evaluate("document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)').innerText")
        assert 'Traceback' not in shown and 'most recent call last' not in shown, shown[-2000:]
        expect(run).to_be_enabled()
        _shot(page, 'train_panel_bad_csv')
        csv_box.fill('../data/data.csv'); csv_box.press('Enter'); csv_box.blur()   # relative to the YAML's folder, as in the YAML
        expect(csv_box).to_have_value(str((work / 'data' / 'data.csv').resolve()))   # shown resolved
        expect(page.locator('.medlab-message')).to_be_empty()

        # edit two controls, then Run: the panel trains in the background with Run disabled and Stop enabled
        _tab(page, 'model')
        arch.select_option('resunet')
        _tab(page, 'training')
        epochs.fill('3'); epochs.press('Enter'); epochs.blur()
        expect(epochs).to_have_value('3')
        # epochs long enough (a few seconds on an idle machine) that Stop lands inside the run, not after it
        _tab(page, next(g for g, keys in groups.items() if 'q_samples_per_volume' in keys))
        samples = _control(page, 'q_samples_per_volume').locator('input')
        samples.fill('48'); samples.press('Enter'); samples.blur()
        expect(samples).to_have_value('48')
        run.click()
        expect(run).to_be_disabled(timeout=10_000)
        expect(stop).to_be_enabled()
        seen = {}
        end = time.monotonic() + 180
        while not seen and time.monotonic() < end:   # the first epoch's line and curves
            state = page.evaluate(_CURVES)
            m = re.search(r'epoch (\d+)/3', state['progress'])
            if m and state['hash']: seen.setdefault(int(m.group(1)), set()).add(state['hash'])
            time.sleep(0.2)
        assert seen, f'no epoch line within 180 s; notebook outputs: {_notebook_text(page)}'
        expect(run).to_be_disabled()
        _shot(page, 'train_panel_training')
        stop.click()
        _watch(page, 'Stopped', 180, seen)
        expect(run).to_be_enabled()
        expect(stop).to_be_disabled()
        _shot(page, 'train_panel_stopped')
        stopped_after = max(seen)
        assert stopped_after < 3 and (work / 'run' / 'model_latest.pt').exists(), seen
        assert not (work / 'run' / 'metrics.json').exists() or _json_file(work / 'run' / 'metrics.json')['epochs_run'] < 3

        # Run resumes the stopped run and trains to the end; the curve image changed between epochs
        run.click()
        expect(run).to_be_disabled(timeout=10_000)
        _watch(page, 'Finished', 240, seen)
        _shot(page, 'train_panel_finished')
        summary = _json_file(work / 'run' / 'metrics.json')
        assert summary['epochs_run'] == 3, summary
        assert Path(summary['output_dir']).resolve() == (work / 'run').resolve(), summary
        import yaml
        saved = yaml.safe_load((work / 'run' / 'config.yaml').read_text())
        assert saved['num_epochs'] == 3 and saved['model']['architecture'] == 'resunet', saved
        hashes = {e: h for e, h in seen.items()}
        assert len(hashes) >= 2 and len(set().union(*hashes.values())) >= 2, f'the curves did not change between epochs: {hashes}'
        assert max(hashes) == 3, hashes

        # the output area shows the result: summary, final curves and the validation predictions over image and truth
        expect(page.locator('.medlab-output img')).to_have_count(2, timeout=60_000)
        expect(run).to_be_enabled()


def test_infer_template_panel_in_jupyterlab(lab, tmp_path):
    "The inference panel predicts the sample data with a finished run and shows a prediction over its image."
    base, work = lab
    import medlab
    cfg = medlab.load_config(work / 'configs' / 'seg2d_sample.yaml', output_dir=str(work / 'trained'), num_epochs=1)
    medlab.train(cfg)
    with _page(tmp_path, 1200) as page:
        _open_and_run_all(page, base, 'infer.ipynb')
        fusion = _control(page, 'fusion').locator('select')
        with _outputs_on_failure(page): expect(fusion).to_be_visible(timeout=90_000)
        for label in ('runs', 'data_csv', 'output_dir', 'fusion', 'device', 'checkpoint'):
            expect(_control(page, label)).to_have_count(1)
        _set_text(page, 'runs', 'trained')
        _set_text(page, 'data_csv', 'data/data.csv')
        _set_text(page, 'output_dir', 'predicted')
        fusion.select_option('vote')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        info = work / 'predicted' / 'inference.json'
        with _outputs_on_failure(page): written = _wait(lambda: _json_file(info), 120, f'{info} after pressing Run', every=0.5)
        assert written['fusion'] == 'vote' and written['runs'] == [str((work / 'trained' / 'model_best.pt').resolve())], written
        assert len(list((work / 'predicted').glob('*_prediction.nii.gz'))) == 8
        # the scores and one prediction drawn over its image appear under the panel
        expect(page.locator('.medlab-output img')).to_have_count(1, timeout=60_000)
        expect(page.locator('.medlab-output')).to_contain_text('dice')


def test_kfold_template_panel_in_jupyterlab(lab, tmp_path):
    "The k-fold panel runs two folds on two workers and shows each fold's line, the results and the box plots."
    base, work = lab
    with _page(tmp_path, 1200) as page:
        _open_and_run_all(page, base, 'kfold.ipynb')
        executor = _control(page, 'executor').locator('select')
        with _outputs_on_failure(page): expect(executor).to_be_visible(timeout=90_000)
        expect(_control(page, 'testing').locator('input')).to_have_value('1')      # the YAML's nested_training
        _set_text(page, 'validation', '2')
        _set_text(page, 'workers', '2')
        _set_text(page, 'output_dir', 'kf')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        results = work / 'kf' / 'results.csv'
        with _outputs_on_failure(page): _wait(lambda: results.exists(), 180, f'{results} after pressing Run', every=0.5)
        import pandas as pd
        table = pd.read_csv(results)
        assert list(table.fold) == ['outer_0/inner_0', 'outer_0/inner_1'] and (table.status == 'trained').all(), table
        expect(page.locator('.medlab-output')).to_contain_text('outer_0/inner_1: trained', timeout=30_000)
        expect(page.locator('.medlab-output img')).to_have_count(1, timeout=60_000)


def test_cam_template_panel_in_jupyterlab(lab, tmp_path):
    "The CAM panel maps two methods for the sample data and shows them side by side, with an opacity slider."
    base, work = lab
    import medlab
    medlab.train(medlab.load_config(work / 'configs' / 'seg2d_sample.yaml', output_dir=str(work / 'trained'), num_epochs=1))
    with _page(tmp_path, 1200) as page:
        _open_and_run_all(page, base, 'cam.ipynb')
        methods = _control(page, 'methods').locator('input')
        with _outputs_on_failure(page): expect(methods).to_be_visible(timeout=90_000)
        _set_text(page, 'run', 'trained')
        _set_text(page, 'data_csv', 'data/data.csv')
        _set_text(page, 'output_dir', 'maps')
        _set_text(page, 'methods', 'layercam, saliency')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        table = work / 'maps' / 'cam.csv'
        with _outputs_on_failure(page): _wait(lambda: table.exists(), 120, f'{table} after pressing Run', every=0.5)
        import pandas as pd
        assert sorted(set(pd.read_csv(table).method)) == ['layercam', 'saliency']
        expect(page.locator('.medlab-output img')).to_have_count(1, timeout=60_000)   # both maps in one figure
        expect(_labelled(page, 'opacity')).to_have_count(1)
        expect(_labelled(page, 'subject').locator('select')).to_have_count(1)


def test_export_template_panel_in_jupyterlab(lab, tmp_path):
    "The export panel exports a run as FP32 and FP16 and shows the parity table."
    base, work = lab
    import medlab
    medlab.train(medlab.load_config(work / 'configs' / 'seg2d_sample.yaml', output_dir=str(work / 'trained'), num_epochs=1,
                                    export={'enabled': False}))
    with _page(tmp_path, 1200) as page:
        _open_and_run_all(page, base, 'export.ipynb')
        precision = _control(page, 'precision').locator('input')
        with _outputs_on_failure(page): expect(precision).to_be_visible(timeout=90_000)
        _set_text(page, 'run', 'trained')
        _set_text(page, 'precision', 'fp32, fp16')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        written = work / 'trained' / 'export' / 'export.json'
        with _outputs_on_failure(page): exports = _wait(lambda: _json_file(written), 120, f'{written} after pressing Run', every=0.5)
        assert [e['precision'] for e in exports['exports'] if e['format'] == 'openvino'] == ['fp32', 'fp16'], exports
        expect(page.locator('.medlab-output table')).to_contain_text('relative_diff', timeout=30_000)


def test_prepare_template_panel_in_jupyterlab(lab, tmp_path):
    "The prepare panel de-identifies and converts a DICOM series and shows its middle slices."
    base, work = lab
    series = SHARED_DATA / 'dicom' / 'dcm_qa_deident'
    if not series.exists(): pytest.skip(f'{series} is absent: this test needs ../shared/data beside the repo')
    shutil.copytree(series, work / 'dicom')
    with _page(tmp_path, 1200) as page:
        _open_and_run_all(page, base, 'prepare.ipynb')
        folder = _control(page, 'dicom_dir').locator('input')
        with _outputs_on_failure(page): expect(folder).to_be_visible(timeout=90_000)
        _set_text(page, 'dicom_dir', 'dicom')
        _set_text(page, 'output_dir', 'prepared')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        manifest = work / 'prepared' / 'data.csv'
        with _outputs_on_failure(page): _wait(lambda: manifest.is_file(), 120, f'{manifest} after pressing Run', every=0.5)
        expect(page.locator('.medlab-output img')).to_have_count(1, timeout=60_000)
        assert len(list((work / 'prepared' / 'anonymized').rglob('*.dcm'))) == 196


FEDERATED_YAML = """\
# a tiny federation of three sites for the browser test: paths resolve against this file's folder
data_csv: ../sites/data.csv
output_dir: ../federation
model: {dimension: 2, class_list: [0, 1, 2], base_filters: 4}
patch_size: [32, 32]
batch_size: 4
q_samples_per_volume: 1
nested_training: {testing: 1, validation: -3}
export: {enabled: false}
federated: {rounds: 2, local_steps: 1}
"""

def test_federated_template_panel_in_jupyterlab(lab, tmp_path):
    "The federated panel shows each site's subjects in its sites tab; Run trains two rounds with the per-site table live."
    base, work = lab
    import medlab
    pytest.importorskip('flwr')
    (work / 'configs' / 'federated_sample.yaml').write_text(FEDERATED_YAML)   # the template's default `config` path
    medlab.make_sample_data(work / 'sites', n_subjects=9, size=32, sites=3)
    with _page(tmp_path, 1400) as page:
        _open_and_run_all(page, base, 'federated.ipynb')
        with _outputs_on_failure(page): expect(page.locator('.lm-TabBar-tab').filter(has_text=re.compile(r'^\s*sites\s*$'))).to_be_visible(timeout=90_000)
        _tab(page, 'sites')
        expect(page.locator('.medlab-sites')).to_contain_text('3 sites, 9 subjects')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        with _outputs_on_failure(page): expect(page.locator('.medlab-rounds')).to_contain_text('weighted', timeout=240_000)   # after round 1
        expect(page.locator('.medlab-rounds')).to_contain_text('site_c')
        expect(page.locator('.medlab-message')).to_contain_text('Finished: 2 round(s)', timeout=240_000)
        expect(page.locator('.medlab-output')).to_contain_text('best round')
        _shot(page, 'federated_panel')
    metrics = _json_file(work / 'federation' / 'metrics.json')
    assert metrics['epochs_run'] == 2 and sorted(metrics['sites']) == ['site_a', 'site_b', 'site_c'], metrics


def test_plan_template_panel_in_jupyterlab(lab, tmp_path):
    "The plan panel reads the sample data and shows the fingerprint figure, the decisions with their reasons and the YAML."
    base, work = lab
    with _page(tmp_path, 1400) as page:
        _open_and_run_all(page, base, 'plan.ipynb')
        box = _control(page, 'data_csv').locator('input')
        with _outputs_on_failure(page): expect(box).to_be_visible(timeout=90_000)
        _set_text(page, 'data_csv', 'data/data.csv')
        _set_text(page, 'output_yaml', 'configs/planned.yaml')
        _set_text(page, 'minutes', '2')
        page.locator('button.jupyter-button').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
        with _outputs_on_failure(page): expect(page.locator('.medlab-output')).to_contain_text('dynunet', timeout=120_000)
        expect(page.locator('.medlab-output')).to_contain_text('budget: {minutes: 2')
        expect(page.locator('.medlab-output img')).to_have_count(1)        # the fingerprint figure
        _shot(page, 'plan_panel')
    import medlab
    assert medlab.load_config(work / 'configs' / 'planned.yaml').budget.minutes == 2
    assert (work / 'configs' / 'fingerprint.json').is_file()
