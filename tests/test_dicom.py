"""DICOM de-identification (PS3.15 Annex E, Basic Profile) and DICOM-to-NIfTI conversion.

On pydicom's bundled CT_small/MR_small, on CT_small with every attribute of Table E.1-1 planted in it (top level and
inside a sequence item), and on the real 196-slice series in ../shared/data/dicom/dcm_qa_deident (skipped when absent).
The checks read the action codes of the table directly, not medlab's resolution of them.
"""
import hashlib
import re
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_ROOT_UID

from conftest import shared_data
from medlab.dicom import PROFILE, PROFILE_SOURCE, DicomSeriesError, anonymize, dicom_to_nifti, profile_rule

CT, MR = get_testdata_file('CT_small.dcm'), get_testdata_file('MR_small.dcm')
REAL = ('dicom', 'dcm_qa_deident')
PSEUDONYM = re.compile(r'ANON[0-9A-F]{12}')
NEST = 0x00082218          # Anatomic Region Sequence: not in the profile, so kept and walked into
MARKERS = ('SECRET', 'secret', 'Doe', '20200315', '1.2.3.4.5.')


def values(elem) -> list:
    return list(elem.value) if isinstance(elem.value, (MultiValue, list, Sequence)) else [elem.value]


def profile_violations(ds: Dataset, dates: str = 'remove') -> list[str]:
    "Every element of `ds` (file meta and sequences included) that breaks its Table E.1-1 action, and every private one."
    bad = []
    for elem in [*ds.file_meta, *ds.iterall()]:
        rule = profile_rule(elem.tag)
        if rule is None: continue
        where = f'{elem.tag} {rule.name} ({rule.action})'
        if elem.tag.is_private: bad.append(f'{where}: private attribute left'); continue
        if rule.dates and dates == 'keep': continue
        if rule.dates and dates == 'shift' and elem.VR in ('DA', 'DT', 'TM', 'SH'): continue   # checked against the input elsewhere
        if elem.tag == 0x00100020:
            if not (elem.is_empty or PSEUDONYM.fullmatch(str(elem.value))): bad.append(f'{where}: {elem.value!r} is no pseudonym')
        elif rule.action.startswith('X'): bad.append(f'{where}: present')
        elif rule.action in ('Z', 'Z/D') and not elem.is_empty: bad.append(f'{where}: not empty')
        elif rule.action == 'U' and not all(str(v).startswith(PYDICOM_ROOT_UID) for v in values(elem) if v):
            bad.append(f'{where}: UID kept')
        elif rule.action == 'D' and elem.VR != 'SQ' and elem.is_empty: bad.append(f'{where}: no dummy')
    return bad


def identifying_values(ds: Dataset) -> set[str]:
    "The non-empty values the input holds in attributes the profile lists."
    return {str(v) for e in [*ds.file_meta, *ds.iterall()]
            if profile_rule(e.tag) and e.VR != 'SQ' and not e.is_empty for v in values(e) if v}


def leaks(ds: Dataset, identifying: set[str]) -> list[str]:
    return [f'{e.tag} {e.keyword}: {v!r}' for e in [*ds.file_meta, *ds.iterall()]
            if profile_rule(e.tag) and e.VR != 'SQ' for v in values(e) if v and str(v) in identifying]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_profile_table_is_the_standard():
    assert 'PS3.15 2026c' in PROFILE_SOURCE and 'Table E.1-1' in PROFILE_SOURCE
    assert len(PROFILE) == 656 and len({r.tag for r in PROFILE}) == 656
    assert {r.action for r in PROFILE} == {'D', 'Z', 'X', 'U', 'Z/D', 'X/Z', 'X/D', 'X/Z/D', 'X/Z/U*'}


# --- every attribute of the table, planted ---------------------------------------------------------------------------

def _planted_value(tag: int, vr: str, i: int):
    if tag == 0x00080201: return '+0100'                   # Timezone Offset From UTC: the one SH the date options cover
    return {'PN': 'Doe^Jane', 'DA': '20200315', 'DT': '20200315101010', 'TM': '101010', 'UI': f'1.2.3.4.5.{i}',
            'AS': '045Y', 'IS': '7', 'DS': '7.5', 'UR': 'http://secret.example', 'AT': 0x00100010,
            'US': 7, 'SS': 7, 'UL': 7, 'SL': 7, 'SV': 7, 'UV': 7, 'FL': 7.5, 'FD': 7.5,
            'OB': b'SECRET', 'OW': b'SECRET', 'UN': b'SECRET', 'OD': b'SECRET!!', 'OF': b'SECRET!!', 'OL': b'SECRET!!',
            'OV': b'SECRET!!', 'SQ': Sequence([Dataset()])}.get(vr, 'SECRET')


def _planted(ds: Dataset) -> list[tuple[int, str]]:
    "Every profile attribute pydicom's dictionary knows, added to `ds`; returns (tag, VR) of each."
    done = []
    for i, rule in enumerate(PROFILE):
        digits = rule.tag[1:-1].replace(',', '')
        if not re.fullmatch(r'[0-9A-F]{8}', digits) or digits[:4] in ('0000', '0002'): continue
        tag = int(digits, 16)
        try: vr = dictionary_VR(tag).split(' or ')[0]
        except KeyError: continue                          # newer than pydicom 3.0.2's dictionary
        value = _planted_value(tag, vr, i)
        if vr == 'SQ': value[0].PatientName = 'Doe^Nested'
        ds.add_new(tag, vr, value)
        done.append((tag, vr))
    return done


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
    "CT_small with every attribute of the table at the top level and in an item of a kept sequence, plus curves and overlays."
    assert profile_rule(NEST) is None
    ds = pydicom.dcmread(CT)
    item = Dataset()
    tags = _planted(ds)
    _planted(item)
    ds.add_new(NEST, 'SQ', Sequence([item]))
    for tag, vr, value in [(0x50003000, 'OB', b'SECRET'), (0x60003000, 'OW', b'SECRET'), (0x60024000, 'LT', 'SECRET overlay')]:
        ds.add_new(tag, vr, value)
    folder = tmp_path_factory.mktemp('planted')
    (folder / 'in').mkdir()
    ds.save_as(folder / 'in' / 'planted.dcm')
    return folder, tags


def _expect(rule, vr: str, dates: str, shift: int):
    "What a planted attribute must become: 'absent', 'empty', 'pseudonym', 'dummy', 'uid', 'kept' or a shifted value."
    if rule.dates and dates == 'keep': return 'kept'
    if rule.dates and dates == 'shift' and vr in ('TM', 'SH'): return 'kept'
    if rule.dates and dates == 'shift' and vr in ('DA', 'DT'):
        return (date(2020, 3, 15) + timedelta(days=shift)).strftime('%Y%m%d') + ('101010' if vr == 'DT' else '')
    if rule.tag == '(0010,0020)': return 'pseudonym'
    return {'X': 'absent', 'Z': 'empty', 'D': 'dummy', 'U': 'uid'}[rule.action.split('/')[0]]


@pytest.mark.parametrize('dates,shift', [('remove', 0), ('shift', -30), ('keep', 0)])
def test_every_planted_attribute_follows_its_action(planted, dates, shift):
    folder, tags = planted
    out = folder / f'out_{dates}'
    result = anonymize(folder / 'in', out, keep_dates=dates == 'keep', date_shift_days=shift if dates == 'shift' else None, salt='k')
    assert result.skipped == [] and len(result.written) == 1
    ds, original = pydicom.dcmread(result.written[0]), pydicom.dcmread(folder / 'in' / 'planted.dcm')
    assert len(tags) > 600
    wrong = []
    for where, got, before in [('top', ds, original), ('nested', ds[NEST].value[0], original[NEST].value[0])]:
        for tag, vr in tags:
            rule, elem = profile_rule(tag), got.get(tag)
            want = _expect(rule, vr, dates, shift)
            ok = {'absent': elem is None,
                  'empty': elem is not None and elem.is_empty,
                  'pseudonym': elem is not None and PSEUDONYM.fullmatch(str(elem.value)) is not None,
                  'dummy': elem is not None and (len(elem.value) == 0 if vr == 'SQ'
                                                 else not elem.is_empty and elem.value != before[tag].value),
                  'uid': elem is not None and str(elem.value).startswith(PYDICOM_ROOT_UID),
                  'kept': elem is not None and elem.value == before[tag].value}.get(want, elem is not None and elem.value == want)
            if not ok:
                wrong.append(f'{where} {rule.tag} {rule.name} ({rule.action}, {vr}): want {want}, got {None if elem is None else elem.value!r}')
    assert not wrong, '\n'.join(wrong[:20])
    for tag in (0x50003000, 0x60003000, 0x60024000): assert tag not in ds
    assert not any(e.tag.is_private for e in ds.iterall())
    assert ds.PixelData == original.PixelData
    assert profile_violations(ds, dates) == []
    kept = (lambda e: profile_rule(e.tag) and profile_rule(e.tag).dates) if dates == 'keep' else (lambda e: False)
    text = lambda e: e.value.decode('latin-1') if isinstance(e.value, bytes) else str(e.value)
    left = [f'{e.tag} {e.keyword}: {e.value!r}' for e in ds.iterall()
            if e.VR != 'SQ' and e.tag != 0x7FE00010 and not kept(e) and any(m in text(e) for m in MARKERS)]
    assert left == []


# --- pydicom's bundled files --------------------------------------------------------------------------------------

def test_pydicom_test_files(tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    for f in (CT, MR): shutil.copy(f, src)
    result = anonymize(src, tmp_path / 'out', salt='s')
    assert result.counts == dict(written=2, skipped=0, flagged=0, patients=2, uids=9)
    for out, f in result.sources.items():   # output files are named by their new UIDs
        before, after = pydicom.dcmread(f), pydicom.dcmread(out)
        assert profile_violations(after) == []
        assert leaks(after, identifying_values(before)) == []
        assert not any(e.tag.is_private for e in after.iterall())
        assert after.PixelData == before.PixelData
        assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID != before.SOPInstanceUID
        assert (after.PatientIdentityRemoved, after.LongitudinalTemporalInformationModified) == ('YES', 'REMOVED')
        assert [c.CodeValue for c in after.DeidentificationMethodCodeSequence] == ['113100']
        assert 'InstitutionName' not in after and 'StationName' not in after
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID


def test_instance_uids_the_table_leaves_out_are_replaced_consistently(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.SOPInstanceUIDOfConcatenationSource, ds.VolumeFrameOfReferenceUID = ds.SOPInstanceUID, ds.FrameOfReferenceUID
    ds.SOPClassesInStudy, ds.CodingSchemeUID = [ds.SOPClassUID], '2.16.840.1.113883.6.96'   # defined UIDs: kept
    (tmp_path / 'in').mkdir()
    ds.save_as(tmp_path / 'in' / 'ct.dcm')
    out = pydicom.dcmread(anonymize(tmp_path / 'in', tmp_path / 'out').written[0])
    assert profile_rule(0x00200242) is None and profile_rule(0x00209312) is None
    assert (out.SOPInstanceUIDOfConcatenationSource, out.VolumeFrameOfReferenceUID) == (out.SOPInstanceUID, out.FrameOfReferenceUID)
    assert out.SOPInstanceUID != ds.SOPInstanceUID
    assert (out.SOPClassesInStudy, out.CodingSchemeUID) == (ds.SOPClassUID, '2.16.840.1.113883.6.96')


def test_burned_in_report_flags_ultrasound_and_secondary_capture(tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    for name, changes in [('us.dcm', dict(Modality='US')), ('sc.dcm', dict(Modality='OT', SOPClassUID='1.2.840.10008.5.1.4.1.1.7')),
                          ('yes.dcm', dict(BurnedInAnnotation='YES')), ('ct.dcm', {})]:
        ds = pydicom.dcmread(CT)
        ds.SOPInstanceUID = f'{ds.SOPInstanceUID}.{len(name)}{name[0]}'   # four instances (one UID twice is one instance, written once)
        for k, v in changes.items(): setattr(ds, k, v)
        ds.save_as(src / name)
    result = anonymize(src, tmp_path / 'out')
    rows = result.report.read_text().splitlines()
    assert result.flagged == 3 and rows[0] == 'file,modality,sop_class,burned_in_annotation,reason'
    named = {out.relative_to(tmp_path / 'out').as_posix(): src.name for out, src in result.sources.items()}   # outputs: new UIDs
    assert sorted(named[r.split(',')[0]] for r in rows[1:]) == ['sc.dcm', 'us.dcm', 'yes.dcm']
    assert any('Secondary Capture SOP class' in r for r in rows) and any('modality US' in r for r in rows)


def test_refuses_outputs_that_touch_the_input(tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    shutil.copy(CT, src)
    before = tree_hashes(src)
    with pytest.raises(ValueError, match='inside the input folder'): anonymize(src, src / 'anon')
    with pytest.raises(ValueError, match='over its own input'): anonymize(src / 'CT_small.dcm', src)
    with pytest.raises(ValueError, match='inside the output'): anonymize(src, tmp_path / 'out', mapping=tmp_path / 'out' / 'key.csv')
    with pytest.raises(ValueError, match='inside the input'): anonymize(src, tmp_path / 'out', mapping=src / 'key.csv')
    assert tree_hashes(src) == before and not (tmp_path / 'out').exists()


# --- the real series ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def real(tmp_path_factory):
    "The real series de-identified four ways; the input's hashes before and after."
    src = shared_data(*REAL)
    tmp = tmp_path_factory.mktemp('real')
    before = tree_hashes(src)
    runs = {'basic': anonymize(src, tmp / 'basic', mapping=tmp / 'secure' / 'key.csv', salt='salt-a'),
            'again': anonymize(src, tmp / 'again', salt='salt-a'),
            'other': anonymize(src, tmp / 'other', salt='salt-b'),
            'shift': anonymize(src, tmp / 'shift', date_shift_days=-30, salt='salt-a')}
    return src, tmp, runs, before, tree_hashes(src)


def _read_all(files) -> list[Dataset]: return [pydicom.dcmread(f) for f in files]


def test_real_series_keeps_nothing_identifying_and_pixels_exactly(real):
    src, _, runs, _, _ = real
    result = runs['basic']
    assert result.counts == dict(written=196, skipped=0, flagged=0, patients=1, uids=199)
    for out in result.written:
        before, after = pydicom.dcmread(result.sources[out]), pydicom.dcmread(out)
        assert profile_violations(after) == [], out
        assert leaks(after, identifying_values(before)) == [], out
        assert after.PixelData == before.PixelData
    assert not any(e.tag.is_private for e in after.iterall())


def test_real_series_uids_are_consistent_and_new(real):
    src, _, runs, _, _ = real
    outs, ins = _read_all(runs['basic'].written), _read_all(sorted(src.glob('*.dcm')))
    for key in ('StudyInstanceUID', 'SeriesInstanceUID', 'FrameOfReferenceUID'):
        new, old = {str(d.get(key)) for d in outs}, {str(d.get(key)) for d in ins}
        assert len(new) == 1 and new.isdisjoint(old) and next(iter(new)).startswith(PYDICOM_ROOT_UID), key
    sops = [d.SOPInstanceUID for d in outs]
    assert len(set(sops)) == 196 and all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in outs)
    assert set(sops).isdisjoint(d.SOPInstanceUID for d in ins)
    assert len({d.PatientID for d in outs}) == 1 and PSEUDONYM.fullmatch(outs[0].PatientID)


def test_same_salt_gives_same_uids_and_another_salt_others(real):
    _, _, runs, _, _ = real
    uids = lambda run: [(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.PatientID) for d in _read_all(run.written)]
    a, again, other = uids(runs['basic']), uids(runs['again']), uids(runs['other'])
    assert a == again
    assert all(x != y for ra, ro in zip(a, other) for x, y in zip(ra, ro))


def test_dates_shift_by_the_given_days(real):
    src, _, runs, _, _ = real
    for out in runs['shift'].written[:5]:
        before, after = pydicom.dcmread(runs['shift'].sources[out]), pydicom.dcmread(out)
        for key in ('StudyDate', 'SeriesDate', 'AcquisitionDate', 'ContentDate'):
            expected = datetime.strptime(str(before[key].value), '%Y%m%d') - timedelta(days=30)
            assert after[key].value == expected.strftime('%Y%m%d'), key
        assert after.StudyTime == before.StudyTime and after.LongitudinalTemporalInformationModified == 'MODIFIED'
        assert {'113100', '113107'} <= {c.CodeValue for c in after.DeidentificationMethodCodeSequence}   # (this series had them already)
        assert profile_violations(after, 'shift') == []
    basic = pydicom.dcmread(runs['basic'].written[0])
    assert basic['StudyDate'].is_empty and 'SeriesDate' not in basic and 'AcquisitionDate' not in basic


def test_input_folder_is_unchanged(real):
    _, _, _, before, after = real
    assert len(before) == 196 and before == after


def test_mapping_is_written_only_when_asked(real):
    _, tmp, runs, _, _ = real
    assert runs['basic'].mapping == tmp / 'secure' / 'key.csv'
    rows = [r.split(',') for r in runs['basic'].mapping.read_text().splitlines()]
    out = pydicom.dcmread(runs['basic'].written[0])
    assert rows[0] == ['kind', 'old', 'new'] and ['PatientID', 'FRUIT', out.PatientID] in rows
    kinds = {r[0] for r in rows[1:]}
    assert {'PatientID', 'StudyInstanceUID', 'SeriesInstanceUID', 'SOPInstanceUID', 'FrameOfReferenceUID'} <= kinds
    assert len(rows) == 1 + 1 + 199 + 196   # and a File row per input: where it went, for the user's audit
    assert sorted(Path(r[1]).name for r in rows if r[0] == 'File') == sorted(p.name for p in shared_data(*REAL).glob('*.dcm'))
    assert [r for r in rows if r[0] == 'SeriesInstanceUID'][0][2] == out.SeriesInstanceUID
    for name in ('again', 'other', 'shift'):
        assert runs[name].mapping is None
        assert [p.name for p in (tmp / name).rglob('*.csv')] == ['burned_in_report.csv']
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob('*.csv') if p.name != 'burned_in_report.csv') == ['secure/key.csv']


# --- DICOM to NIfTI -------------------------------------------------------------------------------------------------

def test_real_series_converts_with_its_geometry(tmp_path):
    src = shared_data(*REAL)
    paths = dicom_to_nifti(src, tmp_path / 'nifti')
    assert [p.name for p in paths] == ['Accelerated_SAG_IR_SPGR_10.nii.gz']
    image = sitk.ReadImage(str(paths[0]))
    assert image.GetSize() == (256, 256, 196)
    np.testing.assert_allclose(image.GetSpacing(), (1.0547, 1.0547, 1.2), atol=1e-4)
    first = pydicom.dcmread(src / '00001.dcm', stop_before_pixels=True)
    iop = np.array(first.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    direction = np.array(image.GetDirection()).reshape(3, 3)   # column i: the direction of image axis i
    np.testing.assert_allclose(direction, np.column_stack([iop[:3], iop[3:], normal]), atol=1e-4)
    positions = [np.array(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float) for f in sorted(src.glob('*.dcm'))]
    np.testing.assert_allclose(image.GetOrigin(), min(positions, key=lambda p: p @ normal), atol=1e-3)
    table = (tmp_path / 'nifti' / 'series.csv').read_text().splitlines()
    assert table[0] == 'uid,description,folder,files,size,spacing,file'
    assert table[1].endswith(',196,256x256x196,1.0547x1.0547x1.2,Accelerated_SAG_IR_SPGR_10.nii.gz')


@pytest.fixture()
def real_copy(tmp_path) -> Path:
    folder = tmp_path / 'series'
    shutil.copytree(shared_data(*REAL), folder)
    return folder


def test_a_missing_slice_is_named(real_copy, tmp_path):
    ordered = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(real_copy), sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(real_copy))[0])
    iop = np.array(pydicom.dcmread(ordered[0]).ImageOrientationPatient, float)
    at = lambda f: np.array(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:])
    Path(ordered[98]).unlink()
    with pytest.raises(DicomSeriesError) as error: dicom_to_nifti(real_copy, tmp_path / 'out')
    message = str(error.value)
    assert str(real_copy) in message and 'missing slices: 2.40 mm gap' in message
    assert f'{at(ordered[97]):.2f} and {at(ordered[99]):.2f} mm' in message and 'median spacing 1.20 mm' in message
    assert not (tmp_path / 'out').exists()


def test_a_file_from_another_series_is_named(real_copy, tmp_path):
    intruder = pydicom.dcmread(CT)
    intruder.SeriesInstanceUID = pydicom.dcmread(real_copy / '00001.dcm').SeriesInstanceUID
    intruder.save_as(real_copy / 'intruder.dcm')
    sizes = r'mixed series: 2 different sizes: 256x256 in 196 files .*; 128x128 in 1 files \(e.g. intruder.dcm\)'
    with pytest.raises(DicomSeriesError, match=sizes):
        dicom_to_nifti(real_copy, tmp_path / 'out')


def test_a_slice_with_another_orientation_is_named(real_copy, tmp_path):
    ds = pydicom.dcmread(real_copy / '00100.dcm')
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(real_copy / '00100.dcm')
    with pytest.raises(DicomSeriesError, match=rf'{re.escape(str(real_copy))}: series .*mixed series: 2 different orientations'):
        dicom_to_nifti(real_copy, tmp_path / 'out')


def test_a_folder_without_dicom_is_named(tmp_path):
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'readme.txt').write_text('no images here')
    with pytest.raises(DicomSeriesError, match=rf'{re.escape(str(tmp_path / "notes"))}: no DICOM series'):
        dicom_to_nifti(tmp_path / 'notes', tmp_path / 'out')
