"""Seconds to validate a GaNDLF config in a fresh process: `medlab.load_config` against reading the same YAML with PyYAML.

Goal (issue 12): `load_config` of GaNDLF's largest sample config, in a fresh process, under 1 s, without importing torch
or MONAI. Each measurement is a new interpreter (as a papermill kernel or a CLI call is); the reference is a fresh
interpreter that only parses the file with `yaml.safe_load`, so the ratio shows what validation adds to reading.

    python benchmarks/config_load.py                 # every GaNDLF config of tests/gandlf_configs that loads, 7 runs each
    python benchmarks/config_load.py --runs 15 FILE  # one file
"""
import argparse
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'tests' / 'gandlf_configs'

MEDLAB = '''import time, sys, warnings; t = time.perf_counter()
warnings.simplefilter("ignore")
from medlab.config import load_config; load_config(sys.argv[1])
import json; print(json.dumps({"seconds": time.perf_counter() - t, "torch": "torch" in sys.modules, "monai": "monai" in sys.modules}))'''
YAML_ONLY = '''import time, sys; t = time.perf_counter()
import yaml; yaml.safe_load(open(sys.argv[1]))
import json; print(json.dumps({"seconds": time.perf_counter() - t}))'''


def fresh(code: str, path: Path) -> dict:
    "Run `code` in a new interpreter on `path`; its JSON line."
    out = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def loads(path: Path) -> bool:
    sys.path.insert(0, str(ROOT))
    from medlab.config import load_config
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            load_config(path)
        return True
    except Exception: return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('files', nargs='*', type=Path)
    p.add_argument('--runs', type=int, default=7)
    args = p.parse_args()
    files = args.files or sorted(f for f in CONFIGS.glob('*.yaml') if loads(f))
    print(f'{"config":48s} {"bytes":>6s} {"medlab s":>9s} {"yaml s":>7s} {"ratio":>6s}  torch/monai imported')
    worst = 0.0
    for f in files:
        m = [fresh(MEDLAB, f) for _ in range(args.runs)]
        y = [fresh(YAML_ONLY, f)['seconds'] for _ in range(args.runs)]
        ms, ys = statistics.median(r['seconds'] for r in m), statistics.median(y)
        worst = max(worst, ms)
        imported = any(r['torch'] or r['monai'] for r in m)
        print(f'{f.name:48s} {f.stat().st_size:6d} {ms:9.3f} {ys:7.3f} {ms / ys:6.1f}  {"YES" if imported else "no"}')
    print(f'\nslowest median load_config: {worst:.3f} s; goal < 1 s: {"MET" if worst < 1 else "MISSED"}')


if __name__ == '__main__':
    main()
