"""3D sliding-window inference of one run's network: torch against its OpenVINO exports (FP32, FP16, INT8), one invocation.

    python benchmarks/export.py --threads 1            # a 3D BasicUNet (16 base filters) on a 128^3 volume, patch 64^3 (~6 min)
    python benchmarks/export.py --threads 1 --size 96 --patch 96

A seg3d-like run is trained for 2 epochs (the weights matter only for the INT8 calibration and the Dice check), exported
by `medlab.export_run` (FP32, FP16, INT8), and each backend predicts the same volume through the same Predictor
(windows, blending, argmax), each in its own process so that peak RSS is per backend: `medlab.load_run(run)` and
`medlab.load_run(run, backend='openvino', precision=p)`. Printed: seconds per volume (median of --repeats after one
warm-up), windows per second, peak RSS, the largest logit difference from torch and the share of voxels whose class
agrees, and the Dice of each against the volume's true mask. Results: benchmarks/_work/results/export_*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / '_work'

CHILD = r'''
import json, resource, sys, time
import numpy as np, torch
import medlab
from medlab.evaluation import segmentation_scores
from medlab.io import read_image, to_array
run, image, truth, backend, precision, repeats = sys.argv[1:7]
p = medlab.load_run(run) if backend == 'torch' else medlab.load_run(run, backend='openvino', precision=precision)
x = torch.as_tensor(p.read(image))[None]
logits = p.logits(x)                                   # warm-up (and the logits compared)
times = []
for _ in range(int(repeats)):
    start = time.perf_counter(); p.logits(x); times.append(time.perf_counter() - start)
labels = p.prediction('v', logits).labels
np.save(sys.argv[7], logits.numpy())
dice = segmentation_scores(labels, to_array(read_image(truth), np.int64)[0], p.task.class_list)['dice']
print(json.dumps({'seconds': float(np.median(times)), 'dice': dice, 'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def train_run(folder: Path, size: int, patch: int) -> Path:
    "A 3D BasicUNet trained briefly on sample volumes, exported as FP32, FP16 and INT8."
    import medlab
    csv = medlab.make_sample_data(folder / 'data', dimension=3, n_subjects=6, size=size)
    cfg = medlab.MedlabConfig(data_csv=str(csv), output_dir=str(folder / 'run'), patch_size=[patch] * 3, num_epochs=2, batch_size=2,
                              q_samples_per_volume=2, model={'dimension': 3, 'class_list': [0, 1, 2], 'base_filters': 16},
                              data_preprocessing={'normalize': None}, inference_mechanism={'patch_overlap': patch // 4},
                              nested_training={'validation': -3}, export={'enabled': False})
    medlab.train(cfg)
    medlab.export_run(folder / 'run', precision=['fp32', 'fp16', 'int8'])
    return csv


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--patch', type=int, default=64)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    os.environ.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), MEDLAB_HEADLESS='1')
    import numpy as np
    import pandas as pd
    stamp = time.strftime('%Y%m%d-%H%M%S')
    folder = WORK / 'export' / stamp
    csv = train_run(folder, a.size, a.patch)
    subject = pd.read_csv(csv).iloc[-1]
    image, truth = csv.parent / subject.Channel_0, csv.parent / subject.Label
    rows = []
    for backend, precision in [('torch', 'fp32'), ('openvino', 'fp32'), ('openvino', 'fp16'), ('openvino', 'int8')]:
        logits = folder / f'{backend}_{precision}.npy'
        # the same cores for torch and OpenVINO: OMP_NUM_THREADS sets torch's threads, and OpenVINO uses the cores the process
        # may run on, which `taskset` limits to the first a.threads
        cores = ','.join(str(c) for c in range(a.threads))
        out = subprocess.run(['taskset', '-c', cores, sys.executable, '-c', CHILD, str(folder / 'run'), str(image), str(truth), backend,
                              precision, str(a.repeats), str(logits)], capture_output=True, text=True, env=os.environ)
        if out.returncode: sys.exit(out.stderr[-3000:])
        rows.append({'backend': backend, 'precision': precision, **json.loads(out.stdout.strip().splitlines()[-1])})
    reference = np.load(folder / 'torch_fp32.npy')
    spread = float(reference.max() - reference.min())
    windows = (-(-a.size // (a.patch - a.patch // 4))) ** 3
    for r in rows:
        other = np.load(folder / f"{r['backend']}_{r['precision']}.npy")
        r.update(max_abs_diff=float(np.abs(other - reference).max()), relative_diff=float(np.abs(other - reference).max()) / spread,
                 class_agreement=float((other.argmax(1) == reference.argmax(1)).mean()), windows_per_second=windows / r['seconds'],
                 speedup=rows[0]['seconds'] / r['seconds'])
    table = pd.DataFrame(rows)
    print(f'\n3D BasicUNet (16 base filters), {a.size}^3 volume, patch {a.patch}^3, overlap {a.patch // 4}, {a.threads} thread(s)')
    print(table.round(4).to_string(index=False))
    out = WORK / 'results' / f'export_{stamp}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'size': a.size, 'patch': a.patch, 'threads': a.threads, 'rows': rows}, indent=2))
    print(f'saved {out}')


if __name__ == '__main__':
    main()
