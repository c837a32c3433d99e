"""The library is what the notebooks make, the notebooks are clean, and their inline tests pass."""
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


def _tracked_copy(dest: Path) -> Path:
    "A copy of the tracked files (as committed or staged, in their working-tree state)."
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split('\0')
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def _differences(a: Path, b: Path) -> list[str]:
    out = []
    for f in sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file() and '__pycache__' not in p.parts):
        if not (b / f).exists() or (a / f).read_bytes() != (b / f).read_bytes(): out.append(str(f))
    out += [str(p.relative_to(b)) for p in b.rglob('*.py') if '__pycache__' not in p.parts and not (a / p.relative_to(b)).exists()]
    return out


def test_medlab_is_exported_from_nbs_and_notebooks_are_clean(tmp_path):
    copy = _tracked_copy(tmp_path / 'repo')
    subprocess.run([BIN / 'nbdev_export'], cwd=copy, check=True, capture_output=True)
    stale = _differences(ROOT / 'medlab', copy / 'medlab')
    assert not stale, f'medlab/ is out of step with nbs/ in {stale}: run nbdev_export'
    subprocess.run([BIN / 'nbdev_clean'], cwd=copy, check=True, capture_output=True)
    subprocess.run([BIN / 'nbdev_clean', '--fname', 'templates'], cwd=copy, check=True, capture_output=True)
    dirty = _differences(ROOT / 'nbs', copy / 'nbs') + _differences(ROOT / 'templates', copy / 'templates')
    assert not dirty, f'notebooks not clean: {dirty}: run nbdev_clean and nbdev_clean --fname templates'


def test_notebook_inline_tests_pass():
    res = subprocess.run([BIN / 'nbdev_test', '--n_workers', '2'], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
