"""The hostile-input cases of the command line: refused DICOM files named with their reason, a salt that keeps
pseudonyms across batches (from the option or the environment), quotas that are not numbers, errors without a message."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from test_faults_deid import NEEDLES, leaks, swallowing_file

MEDLAB = str(Path(sys.executable).parent / 'medlab')
CT = get_testdata_file('CT_small.dcm')


def medlab_cli(*args, env=None):
    return subprocess.run([MEDLAB, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_anonymize_names_each_refused_file_with_its_reason(tmp_path):
    (tmp_path / 'in').mkdir()
    swallowing_file(tmp_path / 'in' / 'bad.dcm')
    shutil.copy(CT, tmp_path / 'in' / 'good.dcm')
    out = medlab_cli('anonymize', tmp_path / 'in', tmp_path / 'out', '--salt', 'secret')
    assert out.returncode == 0, out.stderr[-2000:]
    refused = [l for l in out.stderr.splitlines() if l.startswith('refused: ')]
    assert len(refused) == 1 and refused[0].startswith(f"refused: {tmp_path / 'in' / 'bad.dcm'}: ") and '(0008,1090)' in refused[0]
    assert leaks(tmp_path / 'out') == [] and len(list((tmp_path / 'out').rglob('*.dcm'))) == 1


def test_anonymize_salt_from_option_or_environment_gives_the_same_pseudonyms(tmp_path):
    (tmp_path / 'in').mkdir()
    shutil.copy(CT, tmp_path / 'in')
    by_option = medlab_cli('anonymize', tmp_path / 'in', tmp_path / 'a', '--salt', 'secret')
    by_env = medlab_cli('anonymize', tmp_path / 'in', tmp_path / 'b', env={'MEDLAB_DEID_SALT': 'secret'})
    other = medlab_cli('anonymize', tmp_path / 'in', tmp_path / 'c', '--salt', 'another')
    assert by_option.returncode == by_env.returncode == other.returncode == 0, (by_option.stderr, by_env.stderr, other.stderr)
    a, b, c = (pydicom.dcmread(next((tmp_path / n).rglob('*.dcm'))) for n in 'abc')
    assert (a.PatientID, a.StudyInstanceUID) == (b.PatientID, b.StudyInstanceUID)
    assert a.PatientID != c.PatientID and a.StudyInstanceUID != c.StudyInstanceUID


def test_convert_refuses_a_folder_with_foreign_files_unless_overwrite(tmp_path):
    (tmp_path / 'in').mkdir()
    shutil.copy(CT, tmp_path / 'in')
    (tmp_path / 'nifti').mkdir()
    (tmp_path / 'nifti' / 'mine.nii.gz').write_bytes(b'the user\'s own file')
    refused = medlab_cli('convert', tmp_path / 'in', tmp_path / 'nifti')
    assert refused.returncode == 1 and 'mine.nii.gz' in refused.stderr and '--overwrite' in refused.stderr, refused.stderr
    done = medlab_cli('convert', tmp_path / 'in', tmp_path / 'nifti', '--overwrite')
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / 'nifti' / 'mine.nii.gz').read_bytes() == b'the user\'s own file'


def test_quotas_that_are_not_numbers_are_named_before_any_slide_is_read(tmp_path):
    out = medlab_cli('mine-patches', tmp_path / 'no-such-slide.svs', tmp_path / 'mined', '--quotas', '1:a')
    assert out.returncode == 1 and "--quotas '1:a' is not a number of patches" in out.stderr and 'invalid literal' not in out.stderr
