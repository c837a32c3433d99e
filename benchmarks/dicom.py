"""DICOM de-identification and DICOM-to-NIfTI speed on the real 196-slice MR series.

    python benchmarks/dicom.py                      # median of 3 of each (~10 s here)
    python benchmarks/dicom.py --repeats 5 --data ../shared/data/dicom/dcm_qa_deident

`medlab.dicom.anonymize` (Basic Profile; and with dates shifted and a mapping table) and `medlab.dicom.dicom_to_nifti`
each run `--repeats` times on the same series into fresh folders; prints slices de-identified per second and series
converted per second (medians), and saves benchmarks/_work/results/dicom.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / 'shared' / 'data' / 'dicom' / 'dcm_qa_deident'


def timed(f, repeats: int) -> list[float]:
    "Wall seconds of `f(i)` for each repeat i, each into a fresh folder."
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        f(i)
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', type=Path, default=DATA, help='a folder holding one DICOM series')
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    from medlab.dicom import anonymize, dicom_to_nifti
    slices = sum(1 for f in args.data.rglob('*') if f.is_file())
    work = Path(tempfile.mkdtemp(prefix='medlab_dicom_bench_'))
    try:
        basic = timed(lambda i: anonymize(args.data, work / f'basic{i}', salt='bench'), args.repeats)
        shifted = timed(lambda i: anonymize(args.data, work / f'shift{i}', date_shift_days=-30, mapping=work / f'key{i}.csv',
                                            salt='bench'), args.repeats)
        nifti = timed(lambda i: dicom_to_nifti(args.data, work / f'nifti{i}'), args.repeats)
    finally:
        shutil.rmtree(work)
    result = {'data': str(args.data), 'slices': slices, 'repeats': args.repeats, 'cpus': os.cpu_count(), 'machine': platform.platform(),
              'anonymize_seconds': basic, 'anonymize_shift_mapping_seconds': shifted, 'dicom_to_nifti_seconds': nifti}
    rows = [('anonymize (Basic Profile)', basic, slices, 'slices'),
            ('anonymize (dates shifted, mapping)', shifted, slices, 'slices'),
            ('dicom_to_nifti (1 series)', nifti, 1, 'series')]
    print(f'{slices} slices, median of {args.repeats}, {os.cpu_count()} CPUs')
    for name, seconds, n, unit in rows:
        median = statistics.median(seconds)
        print(f'{name:36s} {median:6.2f} s  {n / median:8.1f} {unit}/s   (runs: {", ".join(f"{s:.2f}" for s in seconds)})')
    out = HERE / '_work' / 'results' / 'dicom.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f'saved {out}')


if __name__ == '__main__':
    main()
