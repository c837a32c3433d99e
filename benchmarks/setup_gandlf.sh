#!/usr/bin/env bash
# Build GaNDLF 0.1.5 in its own venv beside the project (never in .venv), as ../shared/bench/README.md (relative to the project) says:
# GaNDLF pins torch 2.7.1 and needs torchvision, and PyPI's torchvision does not load beside the project's torch.
#   bash benchmarks/setup_gandlf.sh            # builds benchmarks/_work/gandlf-venv when missing, then verifies
#   FORCE=1 bash benchmarks/setup_gandlf.sh    # rebuilds from scratch
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${GANDLF_VENV:-$HERE/_work/gandlf-venv}"
PYTHON="${PYTHON:-python3}"

if [[ "${FORCE:-0}" == 1 ]]; then rm -rf "$VENV"; fi
if [[ -x "$VENV/bin/gandlf" && -f "$VENV/.complete" ]]; then
  echo "GaNDLF venv present: $VENV"
else
  # an unfinished venv (no .complete) is completed in place: pip skips what is already installed
  mkdir -p "$(dirname "$VENV")"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install)
  "${PIP[@]}" --upgrade pip setuptools wheel
  # 1. torch + torchvision that load together (on this machine's disk; /etc/xdg/pip caps them there)
  "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
  # 2. GaNDLF itself without its pins (it pins torch==2.7.1)
  "${PIP[@]}" --no-deps gandlf==0.1.5
  # 3. GaNDLF 0.1.5's own requirements (its METADATA Requires-Dist) with the torch pin dropped; the pins are its own.
  #    black/pytest/coverage/twine are in its list too but only serve its development: left out.
  "${PIP[@]}" \
    monai==1.4.0 torchio==0.19.6 lightning==2.5.2 numpy==1.26.4 torchmetrics==1.1.2 pydantic==2.10.6 \
    segmentation-models-pytorch==0.4.0 openslide-python==1.4.1 openslide-bin medcam opencv-python \
    scipy 'SimpleITK!=2.0.*,!=2.2.1' tqdm 'pandas>=2.0.0' 'scikit-learn>=0.23.2' 'scikit-image>=0.19.1' setuptools \
    seaborn pyyaml matplotlib gdown==5.1.0 overrides==7.7.0 psutil zarr==2.10.3 'numcodecs<0.16.0' pydicom onnx \
    torchinfo==1.7.0 ACSConv==0.1.1 'requests>=2.32.2' docker dicom-anonymizer==1.0.12 keyring click==8.1.8 \
    deprecated packaging==24.0 colorlog opacus==1.5.2 huggingface-hub==0.25.1 lion-pytorch==0.2.2 'panoptica>=1.4.1' \
    ${GANDLF_EXTRA_REQS:-}
fi
# verify: GaNDLF's own check plus the entry point the benchmark runs; only then is the venv marked complete
"$VENV/bin/gandlf" verify-install
"$VENV/bin/python" -c "from GANDLF.entrypoints.cli_tool import gandlf; import GANDLF.models.lightning_module, GANDLF; print('GANDLF', GANDLF.__version__, 'imports')"
touch "$VENV/.complete"
