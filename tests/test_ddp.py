"""One model trained by two processes with torch DDP (gloo on CPU) under torchrun: only rank 0 writes, the run looks like one process's."""
import json
import subprocess
import sys
from pathlib import Path

import medlab
from medlab.run import RunFolder
from conftest import ROOT, write_yaml


def _config(tmp_path, csv, name):
    return write_yaml(tmp_path / f'{name}.yaml', {
        'data_csv': str(csv), 'output_dir': str(tmp_path / name), 'patch_size': [32, 32], 'num_epochs': 2, 'batch_size': 2,
        'q_samples_per_volume': 1, 'model': {'class_list': [0, 1, 2], 'base_filters': 4}, 'metrics': ['dice', 'dice_per_label'],
        'accelerator': 'cpu', 'export': {'enabled': False}})


def test_two_processes_train_one_model_and_only_rank_0_writes(tmp_path):
    csv = medlab.make_sample_data(tmp_path / 'data', n_subjects=9, size=32)
    torchrun = Path(sys.executable).parent / 'torchrun'
    out = subprocess.run([str(torchrun), '--nproc_per_node', '2', '--master_port', '29517', str(ROOT / 'tests' / 'ddp_train.py'),
                          str(_config(tmp_path, csv, 'ddp'))], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count('rank result') == 2  # both processes ran to the end, with the same best epoch
    medlab.train(medlab.load_config(_config(tmp_path, csv, 'single')))
    ddp, single = RunFolder(tmp_path / 'ddp'), RunFolder(tmp_path / 'single')
    # the same files, the same logs' shape, the same split; the start event says two processes
    assert sorted(p.name for p in ddp.path.iterdir()) == sorted(p.name for p in single.path.iterdir())
    for kind in ('training', 'validation'):
        assert list(ddp.logs(kind).columns) == list(single.logs(kind).columns) and len(ddp.logs(kind)) == 2
    assert ddp.split().table().equals(single.split().table())
    assert next(e for e in ddp.events() if e['event'] == 'start')['processes'] == 2
    assert len([e for e in ddp.events() if e['event'] == 'start']) == 1  # one writer: one start, not two
    assert json.loads((ddp.path / 'metrics.json').read_text()).keys() == json.loads((single.path / 'metrics.json').read_text()).keys()
    assert not list(Path('/tmp').glob('medlab-rank1-*'))  # the other rank's scratch folder is gone
