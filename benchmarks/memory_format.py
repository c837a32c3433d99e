"""Seconds per BasicUNet training step (medlab's `unet`, 16 base filters), contiguous against channels-last tensors,
for batch and instance norm, in 2D (batch 8, 128^2) and 3D (batch 2, 64^3), on one CPU thread.

    python benchmarks/memory_format.py [--steps 4]

Prints each time and the ratio channels-last / contiguous: the measurement behind `medlab.predictor.memory_format`.
"""
import argparse
import time

import torch
from monai.networks.nets import BasicUNet


def step_seconds(dim: int, norm, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    shape = (8, 1, 128, 128) if dim == 2 else (2, 1, 64, 64, 64)
    fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
    net = BasicUNet(dim, 1, 2, features=(16, 16, 32, 64, 128, 16), norm=norm)
    x = torch.randn(shape)
    if channels_last: net, x = net.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters())
    for i in range(steps + 1):  # the first step warms up and is not timed
        if i == 1: start = time.perf_counter()
        opt.zero_grad(); net(x).mean().backward(); opt.step()
    return (time.perf_counter() - start) / steps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    for dim in (2, 3):
        for name, norm in (('batch', 'batch'), ('instance', ('instance', {'affine': True}))):
            a, b = (step_seconds(dim, norm, cl, args.steps) for cl in (False, True))
            print(f'{dim}D {name:8s} contiguous {a:.3f} s  channels-last {b:.3f} s  ratio {b / a:.2f}', flush=True)


if __name__ == '__main__':
    main()
