"""Every architecture in the catalog, in each dimension it takes, builds, maps a batch to the right shape and trains:
one backward pass gives every trainable parameter a finite gradient. Small widths and the smallest patches keep it fast."""
import pytest
import torch

from medlab import catalog
from medlab.config import ModelConfig
from medlab.models import build_model

CASES = [(name, dimension) for name, info in catalog.ARCHITECTURES.items() for dimension in info.dimensions]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "The cases are small, and two threads on two busy cores wait on each other (see benchmarks/README.md): one thread, restored after."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('name,dimension', CASES, ids=[f'{name}-{dimension}d' for name, dimension in CASES])
def test_forward_backward(name, dimension):
    info = catalog.ARCHITECTURES[name]
    torch.manual_seed(0)
    cfg = ModelConfig(dimension=dimension, architecture=name, num_channels=2, class_list=[0, 1, 2], base_filters=8)
    net = build_model(cfg).train()
    patch = [info.patch_multiple] * dimension   # the smallest patch the catalog allows
    out = net(torch.randn(2, 2, *patch))
    assert out.shape == ((2, 3, *patch) if info.task == 'segmentation' else (2, 3))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'{len(missing)} trainable parameters got no finite gradient: {missing[:5]}'
