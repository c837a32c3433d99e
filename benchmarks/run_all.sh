#!/usr/bin/env bash
# Every benchmark in one command (~75 min on 2 cores; GaNDLF's venv is built first when missing, ~3 min, 6.8 GB):
#   bash benchmarks/run_all.sh [REPEATS]
# start-up medians (REPEATS runs per system, default 5) for seg3d, seg2d and cls2d; then one full run of each workload
# with every system; then the scaling run. Results: benchmarks/_work/results/*.json, tables on stdout.
# Run it on an otherwise idle machine: every system gets one thread (--threads 1) but shares the cores with the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
REPEATS=${1:-5}
for w in seg3d seg2d cls2d; do
  $PY benchmarks/run.py --workload $w --systems medlab_api,medlab_defaults,medlab_papermill,monai,gandlf --startup "$REPEATS" --threads 1
done
$PY benchmarks/run.py --workload seg2d --systems medlab_api,medlab_defaults,medlab_papermill,monai,gandlf --threads 1
$PY benchmarks/run.py --workload cls2d --systems medlab_api,medlab_defaults,medlab_papermill,monai,gandlf --threads 1
$PY benchmarks/run.py --workload seg3d --systems medlab_api,medlab_defaults,monai,gandlf --threads 1
$PY benchmarks/scaling.py --systems medlab_api,monai --threads 1
$PY benchmarks/scaling.py --systems medlab_api,monai,gandlf --threads 1 --float32  # GaNDLF cannot read int16 volumes
