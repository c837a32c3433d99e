"""The data browser and the 3D viewer in a real JupyterLab driven by headless Chromium (software WebGL).

A notebook written here browses the 2D sample data (table, subject picker, slice viewer) and opens the real brain
MRI with its mask in NiiVue (`medlab.view3d`); the test picks another subject, moves the opacity slider, and waits
for NiiVue's canvas. Screenshots: tmp_path/viewer.png (the page), tmp_path/slice_viewer.png. Needs /usr/bin/chromium, the `playwright` package, ipyniivue
and ../shared/data; skipped with a reason otherwise.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path('/usr/bin/chromium')
BRAIN = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'brain_mri'
# software WebGL for NiiVue (see ../shared/BROWSER-TESTING.md), and no background traffic to hosts out of reach
CHROMIUM_ARGS = ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-dev-shm-usage']

if not CHROMIUM.exists(): pytest.skip(f'{CHROMIUM} not found: apt-get install -y chromium', allow_module_level=True)
sync_api = pytest.importorskip('playwright.sync_api', reason='the `playwright` Python package is missing (pip install playwright)')
pytest.importorskip('ipyniivue', reason='ipyniivue (the optional 3D viewer) is not installed')
if not BRAIN.exists(): pytest.skip(f'{BRAIN} is absent: the viewer test needs ../shared/data', allow_module_level=True)


def _get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read())

def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if got := pred(): return got
        time.sleep(0.25)
    raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')

@pytest.fixture
def lab(tmp_path):
    "A fresh JupyterLab on a folder holding the sample data and the notebook; yields (base_url, folder)."
    import medlab
    work = tmp_path / 'work'
    csv = medlab.make_sample_data(work / 'data', n_subjects=3, size=48)
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(f"import medlab\nmedlab.browse_data({str(csv)!r}, class_names=['background', 'ring', 'core'])"),
                nbformat.v4.new_code_cell(f"medlab.view3d({str(BRAIN / 'tcia_example_t1c.nii.gz')!r}, "
                                          f"{str(BRAIN / 'bet_tcia_example_t1c_mask.nii.gz')!r}, class_names={{1: 'brain'}}, height=300)")]
    nbformat.write(nb, work / 'viewer.ipynb')
    home = tmp_path / 'jupyter'   # private Jupyter folders: no user settings or workspaces leak in
    news = home / 'settings' / '@jupyterlab' / 'apputils-extension'
    news.mkdir(parents=True)
    (news / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = {k: v for k, v in os.environ.items() if k not in ('MEDLAB_HEADLESS', 'JPY_SESSION_NAME')}
    env.update(JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_DATA_DIR=str(home / 'data'), JUPYTER_RUNTIME_DIR=str(home / 'runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(home / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(home / 'workspaces'))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    base, log = f'http://127.0.0.1:{port}', open(tmp_path / 'jupyterlab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--ip=127.0.0.1', f'--port={port}', '--no-browser', '--allow-root',
                             '--IdentityProvider.token=', '--ServerApp.password=', '--ServerApp.disable_check_xsrf=True',
                             f'--ServerApp.root_dir={work}', '--ServerApp.port_retries=0'],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up():
            if proc.poll() is not None: raise AssertionError((tmp_path / 'jupyterlab.log').read_text()[-3000:])
            try: return _get_json(f'{base}/api/status', timeout=2)
            except OSError: return None
        _wait(up, 60, 'JupyterLab to answer')
        yield base, work
    finally:
        try:
            for s in _get_json(f'{base}/api/sessions', timeout=3):
                urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions/{s['id']}", method='DELETE'), timeout=10).close()
        except Exception: pass
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()


def test_browser_and_3d_viewer_render_in_jupyterlab(lab, tmp_path):
    base, work = lab
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1400, 'height': 1600})
        try:
            page.set_default_timeout(30_000)
            page.goto(f'{base}/lab/tree/viewer.ipynb', wait_until='domcontentloaded', timeout=60_000)
            expect(page.locator('#jp-main-statusbar')).to_contain_text('| Idle', timeout=60_000)
            _wait(lambda: (ss := _get_json(f'{base}/api/sessions')) and all(
                s['kernel']['execution_state'] == 'idle' and s['kernel']['connections'] > 0 for s in ss), 60, 'an idle kernel')
            page.locator('#jp-MainMenu .lm-MenuBar-item').filter(has_text=re.compile(r'^\s*Run\s*$')).click()
            page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
            # the browser: the table, a subject picker, the slice viewer's figure with the first subject
            picker = page.locator('.widget-dropdown select').first
            expect(picker).to_be_visible(timeout=90_000)
            expect(page.locator('.jp-OutputArea table').first).to_contain_text('sub002')
            figure = page.locator('.widget-output img').first
            expect(figure).to_be_visible()
            before = figure.get_attribute('src')
            picker.select_option('sub001')
            _wait(lambda: (img := page.locator('.widget-output img').first).count() and img.get_attribute('src') != before,
                  30, 'the viewer to redraw for sub001')
            # NiiVue: one WebGL canvas in the second cell's output, and no error output anywhere
            expect(page.locator('.jp-OutputArea canvas')).to_have_count(1, timeout=60_000)
            box = page.locator('.jp-OutputArea canvas').bounding_box()
            assert box and box['height'] >= 250, box
            assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
            page.wait_for_timeout(2000)   # let NiiVue draw the volume before the picture
            page.locator('.widget-output img').first.screenshot(path=str(tmp_path / 'slice_viewer.png'))
        finally:
            page.screenshot(path=str(tmp_path / 'viewer.png'))
            browser.close()
