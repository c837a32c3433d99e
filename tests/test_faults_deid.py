"""Hostile and careless input to DICOM de-identification and DICOM-to-NIfTI conversion.

Each test is a case a tester found: a name in the preamble, names in folder and file names, a length field that
swallows Patient's Name, a re-identification table overwritten world-readable, reports and NIfTI files replaced by a
second batch; then a seeded fuzz of byte flips and truncations, with every output byte scanned for the planted PHI.
"""
import csv
import os
import random
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medlab.dicom import anonymize, dicom_to_nifti

CT, MR = get_testdata_file('CT_small.dcm'), get_testdata_file('MR_small.dcm')
UID_PATH = re.compile(r'[0-9.]+/[0-9.]+/[0-9.]+\.dcm')
PHI = dict(PatientName='QUIMBY^ZEBULON', PatientID='MRN8675309X', InstitutionName='SAINT PHIBE HOSPITAL',
           ReferringPhysicianName='DRWHOVIAN^ALBA', StudyDate='19770707', PatientBirthDate='19420214')
PREAMBLE = b'PREAMBLE-OF-QUIMBY-ZEBULON'.ljust(128, b'\0')
NEEDLES = [b'QUIMBY', b'ZEBULON', b'MRN8675309X', b'PHIBE', b'DRWHOVIAN', b'19770707', b'19420214', b'PREAMBLE-OF']


def phi_dataset(base: str, **changes) -> pydicom.Dataset:
    "`base` with the planted PHI (and `changes`), its preamble naming the patient."
    ds = pydicom.dcmread(base)
    for k, v in {**PHI, **changes}.items(): setattr(ds, k, v)
    ds.preamble = PREAMBLE
    return ds


def every_byte(folder: Path) -> list[tuple[str, bytes]]:
    "(relative path, bytes) of every file under `folder`; the path itself is scanned too."
    return [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob('*')) if p.is_file()]


def leaks(folder: Path, needles=NEEDLES) -> list[str]:
    return [f'{name}: {n!r}' for name, data in every_byte(folder) for n in needles if n in data or n.decode() in name]


def report_rows(result) -> list[dict]:
    with open(result.report, newline='') as f: return list(csv.DictReader(f))


# --- 1. the preamble -------------------------------------------------------------------------------------------------

def test_a_name_in_the_preamble_is_not_copied(tmp_path):
    (tmp_path / 'in').mkdir()
    phi_dataset(MR).save_as(tmp_path / 'in' / 'mr.dcm')
    assert pydicom.dcmread(tmp_path / 'in' / 'mr.dcm').preamble == PREAMBLE
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    data = result.written[0].read_bytes()
    assert data[:128] == b'\0' * 128 and data[128:132] == b'DICM'
    assert leaks(tmp_path / 'out') == []


# --- 2. names of folders and files ----------------------------------------------------------------------------------

def test_output_names_and_report_carry_no_input_names(tmp_path):
    src = tmp_path / 'in' / 'QUIMBY^ZEBULON_MRN8675309X'
    src.mkdir(parents=True)
    phi_dataset(CT).save_as(src / 'QUIMBY^ZEBULON_MRN8675309X_ct.dcm')
    phi_dataset(MR, Modality='US').save_as(src / 'QUIMBY^ZEBULON_MRN8675309X_us.dcm')   # flagged: named in the report
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s', mapping=tmp_path / 'secure' / 'key.csv')
    out = tmp_path / 'out'
    names = sorted(p.relative_to(out).as_posix() for p in result.written)
    assert len(names) == 2 and all(UID_PATH.fullmatch(n) for n in names), names
    assert leaks(out) == []
    flagged = [r for r in report_rows(result) if r['reason'].startswith('modality US')]
    assert len(flagged) == 1 and (out / flagged[0]['file']).is_file() and flagged[0]['file'] in names
    key = (tmp_path / 'secure' / 'key.csv').read_text()   # the user's own audit trail: the input paths live only here
    assert 'QUIMBY^ZEBULON_MRN8675309X_us.dcm' in key and flagged[0]['file'] in key


# --- 3. a length field that swallows Patient's Name ------------------------------------------------------------------

def swallowing_file(path: Path) -> bytes:
    "MR_small whose Manufacturer's Model Name (LO, just before Patient's Name) has a length that takes Patient's Name in."
    ds = phi_dataset(MR)
    ds.save_as(path)
    data = bytearray(path.read_bytes())
    lo = data.index(b'\x08\x00\x90\x10LO')
    pn = data.index(b'\x10\x00\x10\x00PN')
    assert pn == lo + 8 + int.from_bytes(data[lo + 6:lo + 8], 'little')   # the name follows the model name directly
    pn_size = 8 + int.from_bytes(data[pn + 6:pn + 8], 'little')
    data[lo + 6:lo + 8] = (pn - lo - 8 + pn_size).to_bytes(2, 'little')
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_swallowing_length_field_is_refused_not_half_cleaned(tmp_path):
    (tmp_path / 'in').mkdir()
    swallowing_file(tmp_path / 'in' / 'bad.dcm')
    assert 'PatientName' not in pydicom.dcmread(tmp_path / 'in' / 'bad.dcm')   # pydicom reads it without a word
    shutil.copy(CT, tmp_path / 'in' / 'good.dcm')
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    assert len(result.written) == 1 and [p.name for p, _ in result.skipped] == ['bad.dcm']
    assert leaks(tmp_path / 'out') == []
    why = result.skipped[0][1]
    assert '(0008,1090)' in why and 'LO' in why
    refused = [r for r in report_rows(result) if r['reason'].startswith('refused')]
    assert len(refused) == 1 and why in refused[0]['reason'] and refused[0]['file'] == result.ids[tmp_path / 'in' / 'bad.dcm']


def test_a_truncated_file_is_refused(tmp_path):
    (tmp_path / 'in').mkdir()
    data = Path(CT).read_bytes()
    (tmp_path / 'in' / 'cut.dcm').write_bytes(data[:len(data) - 1001])   # inside the pixel data: pydicom reads it
    pydicom.dcmread(tmp_path / 'in' / 'cut.dcm')
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    assert result.written == [] and 'parsed elements' in result.skipped[0][1]


# --- 4. the re-identification table --------------------------------------------------------------------------------

def test_mapping_is_merged_private_and_never_overwritten_by_another_salt(tmp_path):
    for i, base in enumerate((CT, MR)):
        (tmp_path / f'in{i}').mkdir()
        shutil.copy(base, tmp_path / f'in{i}')
    key = tmp_path / 'secure' / 'key.csv'
    anonymize(tmp_path / 'in0', tmp_path / 'out', salt='s', mapping=key)
    first = key.read_text().splitlines()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    anonymize(tmp_path / 'in1', tmp_path / 'out', salt='s', mapping=key)
    second = key.read_text().splitlines()
    assert set(first) < set(second) and second[0] == 'kind,old,new'
    assert any(r.startswith('PatientID,1CT1,') for r in second) and any(r.startswith('PatientID,4MR1,') for r in second)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = (key.read_bytes(), key.stat().st_mtime_ns)
    with pytest.raises(ValueError, match='another salt'):
        anonymize(tmp_path / 'in0', tmp_path / 'out2', salt='other', mapping=key)
    assert (key.read_bytes(), key.stat().st_mtime_ns) == before and not (tmp_path / 'out2').exists()


# --- 5. reports across batches -------------------------------------------------------------------------------------

def test_a_second_batch_keeps_the_first_batchs_flags(tmp_path):
    (tmp_path / 'b1').mkdir(); (tmp_path / 'b2').mkdir()
    phi_dataset(CT, Modality='US').save_as(tmp_path / 'b1' / 'us.dcm')
    shutil.copy(MR, tmp_path / 'b2' / 'mr.dcm')
    first = anonymize(tmp_path / 'b1', tmp_path / 'out', salt='s')
    flagged = report_rows(first)
    assert len(flagged) == 1
    second = anonymize(tmp_path / 'b2', tmp_path / 'out', salt='s')
    assert report_rows(second) == flagged and second.report == first.report
    assert first.written[0].is_file() and second.written[0].is_file()


# --- the output folder: foreign files, reruns, other settings ------------------------------------------------------

def test_output_folders_with_foreign_files_or_other_settings_are_refused(tmp_path):
    (tmp_path / 'in').mkdir()
    shutil.copy(CT, tmp_path / 'in')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='did not write'): anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s', overwrite=True)
    assert (tmp_path / 'out' / 'notes.txt').read_text() == 'mine' and len(result.written) == 1
    stamp = result.written[0].stat().st_mtime_ns
    again = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')   # a rerun with the same settings: nothing to redo
    assert again.written == [] and again.unchanged == result.written and result.written[0].stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match='other settings'): anonymize(tmp_path / 'in', tmp_path / 'out', salt='t')
    with pytest.raises(ValueError, match='other settings'): anonymize(tmp_path / 'in', tmp_path / 'out', salt='s', date_shift_days=3)


def test_a_salt_makes_batches_consistent(tmp_path):
    "A series split over two batches lands in one series folder with one set of UIDs; another salt gives others."
    for i in range(2):
        (tmp_path / f'b{i}').mkdir()
        ds = pydicom.dcmread(MR)
        ds.SOPInstanceUID = f'{ds.SOPInstanceUID}.{i}'
        ds.save_as(tmp_path / f'b{i}' / 'mr.dcm')
    a = anonymize(tmp_path / 'b0', tmp_path / 'out', salt='secret')
    b = anonymize(tmp_path / 'b1', tmp_path / 'out', salt='secret')
    other = anonymize(tmp_path / 'b1', tmp_path / 'other', salt='another secret')
    da, db, do = (pydicom.dcmread(r.written[0]) for r in (a, b, other))
    assert a.written[0].parent == b.written[0].parent and a.written[0] != b.written[0]
    assert (da.StudyInstanceUID, da.SeriesInstanceUID, da.PatientID) == (db.StudyInstanceUID, db.SeriesInstanceUID, db.PatientID)
    assert do.StudyInstanceUID != db.StudyInstanceUID and do.PatientID != db.PatientID


# --- refused files are named, each with its reason -----------------------------------------------------------------

def test_each_refused_file_is_named_with_its_reason(tmp_path):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'notes.txt').write_text('not DICOM')
    swallowing_file(tmp_path / 'in' / 'bad.dcm')
    shutil.copy(CT, tmp_path / 'in')
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    lines = result.refusals
    assert len(lines) == 2
    assert any(l.startswith(str(tmp_path / 'in' / 'notes.txt') + ': not DICOM') for l in lines)
    assert any(l.startswith(str(tmp_path / 'in' / 'bad.dcm') + ': ') and '(0008,1090)' in l for l in lines)
    reasons = {r['file']: r['reason'] for r in report_rows(result)}
    assert all(reasons[result.ids[p]] == f'refused: {why}' for p, why in result.skipped)


# --- tags the profile does not list ---------------------------------------------------------------------------------

def test_overlay_text_and_unknown_public_tags_are_removed_unless_kept(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.add_new(0x60000022, 'LO', 'QUIMBY overlay')     # Overlay Description: not in Table E.1-1
    ds.add_new(0x00191234, 'LO', 'private QUIMBY')      # private: the profile removes it
    ds.add_new(0x00231001, 'LO', 'QUIMBY private too')
    ds.add_new(0x00450013, 'LO', 'QUIMBY unknown')      # a public tag no dictionary knows
    (tmp_path / 'in').mkdir()
    ds.save_as(tmp_path / 'in' / 'ct.dcm')
    out = pydicom.dcmread(anonymize(tmp_path / 'in', tmp_path / 'out', salt='s').written[0])
    assert 0x60000022 not in out and 0x00450013 not in out and not any(e.tag.is_private for e in out)
    assert leaks(tmp_path / 'out', [b'QUIMBY']) == [] and out.Rows == 128
    kept = pydicom.dcmread(anonymize(tmp_path / 'in', tmp_path / 'kept', salt='s', keep=['OverlayDescription']).written[0])
    assert kept[0x60000022].value == 'QUIMBY overlay' and 0x00450013 not in kept
    with pytest.raises(ValueError, match="Patient's Name.*Table E.1-1"): anonymize(tmp_path / 'in', tmp_path / 'k2', keep=['PatientName'])
    with pytest.raises(ValueError, match="did you mean 'OverlayDescription'"): anonymize(tmp_path / 'in', tmp_path / 'k3', keep=['OverlayDescriptoin'])


# --- 6. conversion into a folder that holds NIfTI files ------------------------------------------------------------

def write_slice(folder: Path, uid: str, i: int, description: str = 'T1 MPRAGE', number: int = 5):
    "Slice `i` (0.8 mm apart) of a series made from MR_small."
    ds = pydicom.dcmread(MR)
    ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = uid, description, number, i + 1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f'{uid}.{i + 1}'
    ds.ImagePositionPatient = [-83.9, -91.2, 6.6 + i * 0.8]
    ds.save_as(folder / f'{i + 1:03d}.dcm')


def make_series(folder: Path, uid: str, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(n): write_slice(folder, uid, i)
    return folder


def test_conversion_never_replaces_another_conversions_file(tmp_path):
    a, b = make_series(tmp_path / 'a', '1.2.3.1'), make_series(tmp_path / 'b', '1.2.3.2', n=5)
    out = tmp_path / 'nifti'
    [first] = dicom_to_nifti(a, out)
    stamp, data = first.stat().st_mtime_ns, first.read_bytes()
    [second] = dicom_to_nifti(b, out)                       # same description and number, another series
    assert first.name == 'T1_MPRAGE_5.nii.gz' and second.name != first.name
    assert (first.read_bytes(), first.stat().st_mtime_ns) == (data, stamp)
    assert sitk.ReadImage(str(first)).GetSize() == (64, 64, 4) and sitk.ReadImage(str(second)).GetSize() == (64, 64, 5)
    rows = list(csv.DictReader(open(out / 'series.csv')))
    assert sorted((r['uid'], r['file']) for r in rows) == [('1.2.3.1', first.name), ('1.2.3.2', second.name)]
    assert dicom_to_nifti(a, out) == [first] and first.stat().st_mtime_ns == stamp   # a rerun: nothing changed, nothing written
    write_slice(a, '1.2.3.1', 4)                                                        # the series grew: refused without overwrite
    with pytest.raises(FileExistsError, match='4 files then, 5 now.*overwrite=True'): dicom_to_nifti(a, out)
    assert first.stat().st_mtime_ns == stamp
    assert dicom_to_nifti(a, out, overwrite=True) == [first] and sitk.ReadImage(str(first)).GetSize() == (64, 64, 5)


def test_conversion_refuses_a_folder_with_foreign_files(tmp_path):
    a = make_series(tmp_path / 'a', '1.2.3.1')
    out = tmp_path / 'nifti'
    out.mkdir()
    (out / 'T1_MPRAGE_5.nii.gz').write_bytes(b'someone else')
    (out / 'series.csv').write_text('theirs\n')
    with pytest.raises(FileExistsError, match='did not write'): dicom_to_nifti(a, out)
    assert (out / 'T1_MPRAGE_5.nii.gz').read_bytes() == b'someone else'
    [path] = dicom_to_nifti(a, out, overwrite=True)
    assert path.name != 'T1_MPRAGE_5.nii.gz' and (out / 'T1_MPRAGE_5.nii.gz').read_bytes() == b'someone else'


# --- fuzz: byte flips and truncations of files full of PHI ---------------------------------------------------------

def fuzzed_inputs(folder: Path, seed: int = 20240607, flips: int = 240, cuts: int = 60) -> int:
    "Byte-flipped and truncated copies of CT_small and MR_small carrying the planted PHI, under a folder named after it."
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    bases = []
    for base in (CT, MR):
        ds = phi_dataset(base)
        ds.save_as(folder / 'x.dcm')
        bases.append((ds, pydicom.dcmread(folder / 'x.dcm').get_item(0x7FE00010).value_tell))
    (folder / 'x.dcm').unlink()
    for i in range(flips + cuts):
        ds, pixels = bases[i % 2]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f'1.2.826.0.1.3680043.8.498.77.{i}'
        path = folder / f'QUIMBY^ZEBULON_MRN8675309X_{i:03d}.dcm'
        ds.save_as(path)
        data = bytearray(path.read_bytes())
        if i < flips:
            for _ in range(rng.choice((1, 1, 2, 3))): data[rng.randrange(128, pixels)] ^= rng.randrange(1, 256)   # the header
        else: data = data[:rng.randrange(132, len(data))]
        path.write_bytes(bytes(data))
    return flips + cuts


def test_fuzzed_files_leak_nothing_and_every_refusal_is_reported(tmp_path):
    n = fuzzed_inputs(tmp_path / 'in' / 'ZEBULON_QUIMBY')
    result = anonymize(tmp_path / 'in', tmp_path / 'out', salt='s')
    assert len(result.written) + len(result.skipped) == n
    assert len(result.written) > n // 4 and len(result.skipped) > n // 10     # both roads were taken
    assert leaks(tmp_path / 'out') == []
    reasons = {r['file']: r['reason'] for r in report_rows(result)}
    assert all(reasons.get(result.ids[p]) == f'refused: {why}' for p, why in result.skipped)
    for path in result.written:                                               # what was written reads back as a clean file
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == 'YES' and not any(e.tag.is_private for e in ds.iterall())
