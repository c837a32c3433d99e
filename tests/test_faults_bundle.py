"""Hostile bundles and packages. A MONAI bundle medlab writes holds no user string that MONAI's ConfigParser evaluates
(`$`), resolves (`@`, `%`) or rewrites (`#`, `::`): such values travel as plain data. A model package refuses symlinks,
reads both `sha256sum` manifest formats, and names the file and key of a malformed manifest or package.json."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import medlab
from medlab.deploy import PackageError, bundle_run, load_package, package_run, verify_package
from medlab.io import read_image, to_array

# a file name that is also a Python expression: evaluated, it leaves a file PWNED; read, it is a NIfTI file
EVIL = "$__import__('pathlib').Path('PWNED').touch() or __import__('types').SimpleNamespace(nii=__import__('types').SimpleNamespace(gz=0)).nii.gz"
HOSTILE = [EVIL, '@dataset_dir', '%dataset_dir', 'scan#1.nii.gz', 'a@::b.nii.gz', 'a::b.nii.gz']


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> tuple[Path, Path]:
    "A 2D segmentation run trained for one epoch (no export), and its data CSV."
    tmp = tmp_path_factory.mktemp('hostile')
    csv = medlab.make_sample_data(tmp / 'data', n_subjects=6, size=48)
    medlab.train(medlab.MedlabConfig(data_csv=str(csv), output_dir=str(tmp / 'run'), patch_size=[32, 32], num_epochs=1, batch_size=4,
                                     q_samples_per_volume=1, model={'class_list': [0, 1, 2], 'base_filters': 4},
                                     nested_training={'validation': -3}, export={'enabled': False}))
    return tmp / 'run', csv


def run_with_target(trained, where: Path, target: str, name: str = 'run') -> Path:
    "A copy of the trained run whose config matches histograms to the file `target` (relative: found from `where`), which is made."
    run, csv = trained
    copy = Path(shutil.copytree(run, where / name))
    cfg = yaml.safe_load((copy / 'config.yaml').read_text())
    cfg['data_preprocessing'] = {**(cfg.get('data_preprocessing') or {}), 'histogram_matching': {'target': target}}
    (copy / 'config.yaml').write_text(yaml.safe_dump(cfg))
    shutil.copy(csv.parent / 'images' / 'sub000_ch0.nii.gz', where / target)
    return copy


def special(value: str) -> bool:
    "True for a string MONAI's ConfigParser does not read back as itself: an expression, a reference, a macro, an id separator."
    return value[:1] in '$@%' or '#' in value or '::' in value


def strings(tree) -> list[str]:
    "Every string in a JSON tree, keys included."
    if isinstance(tree, str): return [tree]
    if isinstance(tree, dict): return [s for k, v in tree.items() for s in [k, *strings(v)]]
    if isinstance(tree, list): return [s for v in tree for s in strings(v)]
    return []


def special_strings(bundle: Path) -> set[str]:
    return {s for f in ('inference.json', 'metadata.json') for s in strings(json.loads((bundle / 'configs' / f).read_text())) if special(s)}


def test_a_dollar_file_name_is_not_evaluated_by_monai_bundle_run(trained, tmp_path, monkeypatch):
    "The bundle run by MONAI's runner: the expression in the file name is never evaluated, and the masks are medlab's."
    monkeypatch.chdir(tmp_path)   # the relative target is found from here, by medlab and by the bundle
    run = run_with_target(trained, tmp_path, EVIL)
    bundle = bundle_run(run, tmp_path / 'bundle')
    images = tmp_path / 'in'; images.mkdir()
    sources = sorted((trained[1].parent / 'images').glob('sub00[12]_ch0.nii.gz'))
    for s in sources: shutil.copy(s, images / s.name)
    done = subprocess.run([sys.executable, '-m', 'monai.bundle', 'run', '--config_file', str(bundle / 'configs' / 'inference.json'),
                           '--bundle_root', str(bundle), '--dataset_dir', str(images), '--output_dir', str(tmp_path / 'out')],
                          capture_output=True, text=True, cwd=tmp_path)
    assert not list(tmp_path.rglob('PWNED')), 'the file name was evaluated as Python'
    assert done.returncode == 0, done.stderr[-2000:]
    assert EVIL not in (bundle / 'configs' / 'inference.json').read_text()
    predictor = medlab.load_run(run)
    for s in sources:
        mask = tmp_path / 'out' / s.name.replace('.nii.gz', '_prediction.nii.gz')
        np.testing.assert_array_equal(to_array(read_image(mask), np.int64)[0], predictor.predict(s).labels)


@pytest.mark.parametrize('target', HOSTILE)
def test_monai_reads_every_user_value_back_as_written(trained, tmp_path, monkeypatch, target):
    "MONAI's parser, in this process, builds the histogram step with the target exactly as configured; no special string holds it."
    from monai.bundle import ConfigParser
    monkeypatch.chdir(tmp_path)
    plain = bundle_run(run_with_target(trained, tmp_path, 'template.nii.gz', 'plain'), tmp_path / 'plain_bundle')
    bundle = bundle_run(run_with_target(trained, tmp_path, target), tmp_path / 'bundle')
    added = special_strings(bundle) - special_strings(plain)   # medlab's own expressions are in both
    assert not [s for s in added if target in s], added
    parser = ConfigParser()
    parser.read_config(str(bundle / 'configs' / 'inference.json'))
    parser['bundle_root'], parser['dataset_dir'] = str(bundle), str(tmp_path)
    steps = [t for t in parser.get_parsed_content('preprocessing').transforms if type(t).__name__ == 'HistogramMatchd']
    assert [t.target for t in steps] == [target]
    assert not (tmp_path / 'PWNED').exists()


def test_the_run_folder_name_is_not_written_as_config(trained, tmp_path):
    "A run folder whose name holds MONAI's special characters reaches no string of the bundle's configs that MONAI parses as code."
    plain = bundle_run(trained[0], tmp_path / 'plain')
    name = "$print('x')#@::1"
    bundle = bundle_run(shutil.copytree(trained[0], tmp_path / name), tmp_path / 'bundle')
    added = special_strings(bundle) - special_strings(plain)
    assert not [s for s in added if name in s], added


# --- packages -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def package(trained, tmp_path_factory) -> Path:
    return package_run(trained[0], tmp_path_factory.mktemp('package') / 'package')


def copy_of(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / 'package'))


def write_manifest(path: Path, marker: str = ' '):
    "Re-sign every file of the package (symlinks followed), as `sha256sum` would, with its text (' ') or binary ('*') marker."
    files = sorted(p for p in path.rglob('*') if p.is_file() and p.name != 'MANIFEST.sha256')
    (path / 'MANIFEST.sha256').write_text(''.join(f'{hashlib.sha256(p.read_bytes()).hexdigest()} {marker}{p.relative_to(path).as_posix()}\n'
                                                  for p in files))


@pytest.mark.parametrize('how', ['added file', 'replaced file', 'folder'])
def test_a_symlink_in_a_package_is_refused(package, tmp_path, how):
    pkg, outside = copy_of(package, tmp_path), tmp_path / 'outside'
    outside.mkdir()
    if how == 'added file':
        (outside / 'notes.txt').write_text('from elsewhere')
        (pkg / 'notes.txt').symlink_to(outside / 'notes.txt'); name = 'notes.txt'
    elif how == 'replaced file':
        shutil.move(pkg / 'weights.safetensors', outside / 'weights.safetensors')
        (pkg / 'weights.safetensors').symlink_to(outside / 'weights.safetensors'); name = 'weights.safetensors'
    else:
        (outside / 'extra.txt').write_text('from elsewhere')
        (pkg / 'extra').symlink_to(outside, target_is_directory=True); name = 'extra'
    write_manifest(pkg)
    with pytest.raises(PackageError, match=f'{name} is a symbolic link'): load_package(pkg)


@pytest.mark.parametrize('marker', [' ', '*'])
def test_a_sha256sum_manifest_in_text_or_binary_mode_is_read(package, tmp_path, marker):
    pkg = copy_of(package, tmp_path)
    write_manifest(pkg, marker)
    assert verify_package(pkg)['task'] == 'segmentation'


@pytest.mark.skipif(shutil.which('sha256sum') is None, reason='needs coreutils sha256sum')
def test_the_manifest_sha256sum_b_writes_is_read(package, tmp_path):
    pkg = copy_of(package, tmp_path)
    names = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob('*') if p.is_file() and p.name != 'MANIFEST.sha256')
    (pkg / 'MANIFEST.sha256').write_bytes(subprocess.run(['sha256sum', '-b', *names], cwd=pkg, capture_output=True, check=True).stdout)
    assert ' *weights.safetensors\n' in (pkg / 'MANIFEST.sha256').read_text()
    assert verify_package(pkg)['task'] == 'segmentation'


@pytest.mark.parametrize('line, says', [('not a manifest line', 'MANIFEST.sha256 line 3'),
                                        ('1234  config.yaml', 'MANIFEST.sha256 line 3'),
                                        (f'{"0" * 64}  config.yaml', 'config.yaml is listed twice')])
def test_a_malformed_manifest_line_is_named(package, tmp_path, line, says):
    pkg = copy_of(package, tmp_path)
    lines = (pkg / 'MANIFEST.sha256').read_text().splitlines()
    (pkg / 'MANIFEST.sha256').write_text('\n'.join(lines[:2] + [line] + lines[2:]) + '\n')
    with pytest.raises(PackageError, match=says): load_package(pkg)


def test_a_manifest_that_is_not_text_is_named(package, tmp_path):
    pkg = copy_of(package, tmp_path)
    (pkg / 'MANIFEST.sha256').write_bytes(b'\xff\xfe' + (pkg / 'MANIFEST.sha256').read_bytes())
    with pytest.raises(PackageError, match='MANIFEST.sha256 is not UTF-8 text'): load_package(pkg)


@pytest.mark.parametrize('edit, key', [
    (lambda d: d.pop('versions'), 'versions'),
    (lambda d: d['versions'].pop('medlab'), 'versions.medlab'),
    (lambda d: d.update(versions='1.0'), 'versions'),
    (lambda d: d['versions'].update(medlab=3), 'versions.medlab'),
    (lambda d: d['versions'].update(medlab='three'), 'versions.medlab'),
])
def test_a_package_json_without_its_keys_is_named(package, tmp_path, edit, key):
    pkg = copy_of(package, tmp_path)
    description = json.loads((pkg / 'package.json').read_text())
    edit(description)
    (pkg / 'package.json').write_text(json.dumps(description))
    write_manifest(pkg)
    with pytest.raises(PackageError, match=f"package.json.*'{key}'"): load_package(pkg)


@pytest.mark.parametrize('text', ['{"task": ', '[1, 2]', ''])
def test_a_package_json_that_is_not_a_json_object_is_named(package, tmp_path, text):
    pkg = copy_of(package, tmp_path)
    (pkg / 'package.json').write_text(text)
    write_manifest(pkg)
    with pytest.raises(PackageError, match='package.json is not a JSON object'): load_package(pkg)
