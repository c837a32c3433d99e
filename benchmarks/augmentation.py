"""Patches per second through medlab's augmentation pipeline against the same TorchIO pipeline called directly.

One 3D 128^3 single-channel volume with its mask; affine + elastic + noise, each at probability 1, with the settings
medlab's defaults give for a 128^3 patch (affine: scales 1 +- 0.1, +-15 degrees, no translation; elastic: GaNDLF's
13 control points per axis moving up to 1.3 voxels, borders locked; noise: sigma within [0, 0.1]):

- medlab: `build_augmentation` of that config (MONAI's RandAffined and RandGaussianNoised, TorchIO's elastic seeded by
  medlab), on a dict of arrays, as the loader calls it;
- torchio: `tio.Compose([RandomAffine, RandomElasticDeformation, RandomNoise])` on a `tio.Subject`, as GaNDLF calls it.

    python benchmarks/augmentation.py [--threads 1] [--repeats 7]

Each system is warmed up once, then the two run interleaved `--repeats` times; the median seconds per patch, patches
per second and the ratio medlab / torchio (patches per second) are printed, and each transform alone for both.
"""
import argparse
import os
import statistics
import time


def volume(size: int = 128):
    "A smooth 128^3 volume of blobs with noise, and its mask (the blobs above half their height)."
    import numpy as np
    rng = np.random.default_rng(0)
    axes = np.meshgrid(*[np.linspace(-1, 1, size, dtype=np.float32)] * 3, indexing='ij')
    image = sum(np.exp(-8 * sum((a - c) ** 2 for a, c in zip(axes, centre))) for centre in rng.uniform(-0.6, 0.6, (4, 3)))
    image = (image + rng.normal(0, 0.05, image.shape)).astype(np.float32)[None]
    return image, (image > 0.5).astype(np.uint8)


def medlab_pipelines(size: int) -> dict:
    from medlab.augmentation import build_augmentation
    from medlab.config import MedlabConfig
    names = ('affine', 'elastic', 'noise')
    cfg = MedlabConfig(model={'dimension': 3}, patch_size=[size] * 3, data_augmentation={n: {'probability': 1} for n in names})
    build = lambda keep: build_augmentation({n: s for n, s in cfg.augmentations.items() if n in keep}, 3, (size,) * 3).set_random_state(seed=0)
    return {'all': build(names), **{n: build((n,)) for n in names}}


def torchio_pipelines(size: int) -> dict:
    import torchio as tio
    points = max(5, round(size / 10))
    parts = {'affine': tio.RandomAffine(scales=0.1, degrees=15, translation=0),
             'elastic': tio.RandomElasticDeformation(num_control_points=points, max_displacement=points / 10, locked_borders=2),
             'noise': tio.RandomNoise(mean=0, std=(0, 0.1))}
    return {'all': tio.Compose(list(parts.values())), **parts}


def seconds(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); out.append(time.perf_counter() - start)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=1, help='torch, OpenMP and SimpleITK threads')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--size', type=int, default=128)
    args = p.parse_args()
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(args.threads)
    import SimpleITK as sitk
    import torch
    import torchio as tio
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    image, mask = volume(args.size)
    ours, theirs = medlab_pipelines(args.size), torchio_pipelines(args.size)
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image)), label=tio.LabelMap(tensor=torch.from_numpy(mask)))
    run = {'medlab': lambda part: ours[part]({'image': image, 'label': mask}),
           'torchio': lambda part: theirs[part](subject)}
    print(f'{args.size}^3, 1 channel with its mask, {args.threads} thread(s), median of {args.repeats} after one warm-up')
    for part in ('all', 'affine', 'elastic', 'noise'):
        for system in run: run[system](part)  # warm-up
        times = {system: [] for system in run}
        for _ in range(args.repeats):  # interleaved: both systems see the same machine
            for system in run: times[system] += seconds(lambda: run[system](part), 1)
        med = {system: statistics.median(t) for system, t in times.items()}
        label = 'affine + elastic + noise' if part == 'all' else part
        print(f'{label:26s} medlab {med["medlab"]:.3f} s ({1 / med["medlab"]:.2f} patches/s)   '
              f'torchio {med["torchio"]:.3f} s ({1 / med["torchio"]:.2f} patches/s)   '
              f'ratio medlab/torchio {med["torchio"] / med["medlab"]:.2f}', flush=True)


if __name__ == '__main__':
    main()
