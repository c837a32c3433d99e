"""The plain MONAI training loop an expert writes by hand: the benchmark's reference for medlab.

It reads the training settings from the same medlab YAML the medlab run uses (data_csv, patch_size,
batch_size, learning_rate, num_epochs, q_samples_per_volume, q_max_length, model.base_filters,
model.dimension, model.norm_type, seed) and writes into `--out`:

- `log.jsonl`: one JSON object per line; `{"event": "start"}` when the script starts running Python,
  `{"event": "first_step"}` right before the first forward pass, then one `{"event": "epoch", ...}`
  per epoch with train/validation seconds, the loss, its own foreground Dice and `t` (time.time()
  when the epoch's predictions were written);
- `predictions/epoch_<N>/<SubjectID>_prediction.nii.gz`: argmax masks of the validation subjects
  (classification: `predictions/epoch_<N>/predictions.csv` with SubjectID, prediction (class value),
  probability_<c> per class: the same layout as medlab's);
- `model_best.pt` whenever validation improves; after the last epoch the best weights score the test split
  (`testing` in the YAML's data_csv), written to `predictions/testing/` and logged as `{"event": "test", ...}`:
  the same end-of-run work medlab does, so wall times compare like for like.

What it does: BasicUNet with features (f, f, 2f, 4f, 8f, f) and the configured norm, Dice loss
(softmax, one-hot labels), Adam at constant lr, uniform random crops (`q_samples_per_volume` per
volume) from images read lazily with SimpleITK each epoch, shuffled through a `q_max_length` buffer,
and sliding-window validation (no overlap) on whole images with foreground Dice of argmax masks.
MONAI has no SimpleITK reader (and nibabel/itk are not installed), so the reading is a small function.

Classification (the split CSVs have `ValueToPredict` instead of `Label`, e.g. cls2d): MONAI has no VGG, so the
network is medlab's own `vgg11` (`medlab.models.build_model`: MONAI `Convolution` blocks with the configured norm,
max-pooling, global average pooling, dropout 0.2, a linear head; the same network medlab trains), with
cross-entropy loss, Adam at constant lr, whole images (no cropping: patch == image) read with SimpleITK each
epoch in a seeded shuffled order, batches of `batch_size`; validation is one forward pass per whole image,
softmax probabilities, argmax class, and its own balanced accuracy (mean per-class recall) logged as `bacc`.

    python benchmarks/monai_loop.py --config CFG.yaml --out OUT
"""
from __future__ import annotations

import time

T_START = time.time()  # before the heavy imports: start-up includes them

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import yaml
from monai.data import DataLoader, Dataset, PatchDataset, ShuffleBuffer
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, RandSpatialCropSamplesd, SpatialPadd
from monai.utils import set_determinism


def read(path: str, dim: int) -> tuple[np.ndarray, sitk.Image]:
    "Channel-first (1, x, y[, z]) float32 array of an image file, and the image (for its geometry)."
    img = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr = arr.reshape(arr.shape[-dim:]) if arr.ndim > dim else arr
    return np.ascontiguousarray(arr.T)[None], img


def load(row: dict, dim: int) -> dict:
    return {'image': read(row['Channel_0'], dim)[0], 'label': read(row['Label'], dim)[0]}


def resolve(csv_path: Path) -> list[dict]:
    "Rows of a split CSV with paths made absolute (relative paths are relative to the CSV)."
    df = pd.read_csv(csv_path)
    for col in [c for c in ('Channel_0', 'Label') if c in df]:
        df[col] = [str(p) if Path(p).is_absolute() else str((csv_path.parent / p).resolve()) for p in df[col]]
    return df.to_dict('records')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--config', required=True)
    p.add_argument('--out', required=True)
    a = p.parse_args()
    cfg_path = Path(a.config).resolve()
    cfg = yaml.safe_load(cfg_path.read_text())
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    logf = open(out / 'log.jsonl', 'w', buffering=1)
    log = lambda **kw: logf.write(json.dumps(kw) + '\n')
    log(event='start', t=T_START, t_imported=time.time())

    m, dim = cfg['model'], cfg['model']['dimension']
    patch = tuple(cfg['patch_size'][:dim])
    bs, spv, qlen, epochs = cfg['batch_size'], cfg['q_samples_per_volume'], cfg['q_max_length'], cfg['num_epochs']
    seed = cfg.get('seed', 0)
    csv = {k: (cfg_path.parent / v).resolve() for k, v in cfg['data_csv'].items()}
    train_rows, val_rows = resolve(csv['training']), resolve(csv['validation'])
    test_rows = resolve(csv['testing']) if csv.get('testing') else []
    set_determinism(seed)
    if 'ValueToPredict' in pd.read_csv(csv['training'], nrows=1):
        return classify(cfg, train_rows, val_rows, test_rows, out, log)

    f = m.get('base_filters', 16)
    norm = {'instance': ('instance', {'affine': True}), 'batch': 'batch', 'none': None}[m.get('norm_type', 'instance')]
    net = BasicUNet(spatial_dims=dim, in_channels=1, out_channels=len(m['class_list']),
                    features=(f, f, 2 * f, 4 * f, 8 * f, f), norm=norm)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg['learning_rate'])
    dice = DiceMetric(include_background=False, reduction='mean')
    n_classes = len(m['class_list'])

    keys = ['image', 'label']
    sampler = Compose([lambda row: load(row, dim), SpatialPadd(keys, spatial_size=patch),
                       RandSpatialCropSamplesd(keys, roi_size=patch, num_samples=spv, random_size=False)])
    def evaluate(rows: list[dict], pred_dir: Path) -> float:
        "Sliding window over whole images (no overlap); writes the argmax masks; mean foreground Dice."
        net.eval()
        pred_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for row in rows:
                image, ref = read(row['Channel_0'], dim)
                label = torch.as_tensor(read(row['Label'], dim)[0]).long()[None]
                logits = sliding_window_inference(torch.as_tensor(image)[None], patch, bs, net, overlap=0)
                pred = logits.argmax(1, keepdim=True)
                dice(torch.nn.functional.one_hot(pred[:, 0], n_classes).movedim(-1, 1),
                     torch.nn.functional.one_hot(label[:, 0], n_classes).movedim(-1, 1))
                mask = sitk.GetImageFromArray(np.ascontiguousarray(pred[0, 0].numpy().astype(np.int16).T))
                mask.CopyInformation(ref)
                sitk.WriteImage(mask, str(pred_dir / f"{row['SubjectID']}_prediction.nii.gz"), useCompression=True)
        value = float(dice.aggregate()); dice.reset()
        return value

    def loader(epoch: int) -> DataLoader:
        "Lazily read volumes in a seeded order, spv random crops each, shuffled through a bounded buffer."
        order = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
        sampler.set_random_state(seed=seed + epoch)
        patches = PatchDataset([train_rows[i] for i in order], sampler, spv)
        return DataLoader(ShuffleBuffer(patches, buffer_size=qlen, seed=seed + epoch), batch_size=bs, num_workers=0)

    fit(net, opt, lambda batch: loss_fn(net(batch['image']), batch['label']), loader, evaluate, epochs, 'dice',
        val_rows, test_rows, out, log)


def fit(net, opt, batch_loss, loader, evaluate, epochs: int, name: str, val_rows: list[dict], test_rows: list[dict],
        out: Path, log):
    """Train `epochs` epochs on `loader(epoch)`'s batches, validate after each with `evaluate` (score `name`, higher is
    better) keeping the best weights in `model_best.pt`, then score the test split with them."""
    first_step, best = True, -1.0
    for epoch in range(1, epochs + 1):
        net.train()
        t0, losses = time.perf_counter(), []
        for batch in loader(epoch):
            if first_step:
                log(event='first_step', t=time.time()); first_step = False
            opt.zero_grad(set_to_none=True)
            loss = batch_loss(batch)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        value = evaluate(val_rows, out / 'predictions' / f'epoch_{epoch}')
        if value > best: best = value; torch.save(net.state_dict(), out / 'model_best.pt')
        end_epoch(log, epoch, losses, name, value, train_s, time.perf_counter() - t0)
    test_best(net, out, log, test_rows, lambda: evaluate(test_rows, out / 'predictions' / 'testing'), name)


def test_best(net, out: Path, log, test_rows: list[dict], evaluate, name: str):
    "Score the test split with the best validation weights, as medlab does at the end of a run; log it and end."
    if test_rows:
        t0 = time.perf_counter()
        net.load_state_dict(torch.load(out / 'model_best.pt', weights_only=True))
        log(event='test', **{name: evaluate()}, seconds=time.perf_counter() - t0, t=time.time())
    log(event='end', t=time.time())


def end_epoch(log, epoch: int, losses: list, name: str, value: float, train_s: float, val_s: float):
    "Log and print one epoch's loss, validation score `name`, and timings."
    log(event='epoch', epoch=epoch, loss=float(np.mean(losses)), **{name: value},
        train_seconds=train_s, val_seconds=val_s, t=time.time())
    print(f'epoch {epoch}: loss {np.mean(losses):.4f} val {name} {value:.4f} train {train_s:.1f}s val {val_s:.1f}s', flush=True)


def classify(cfg: dict, train_rows: list[dict], val_rows: list[dict], test_rows: list[dict], out: Path, log):
    "The classification loop: medlab's vgg11 network, CE loss, Adam, whole images; predictions CSV per epoch."
    from medlab.config import ModelConfig  # MONAI has no VGG: the same network medlab builds
    from medlab.models import build_model
    m, dim = cfg['model'], cfg['model']['dimension']
    bs, epochs, seed = cfg['batch_size'], cfg['num_epochs'], cfg.get('seed', 0)
    classes = list(m['class_list'])
    index = {c: i for i, c in enumerate(classes)}
    net = build_model(ModelConfig(**m))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=cfg['learning_rate'])
    load_cls = lambda row: {'image': read(row['Channel_0'], dim)[0], 'label': index[int(row['ValueToPredict'])]}  # noqa: E731
    train_ds = Dataset(train_rows, transform=load_cls)  # re-read every epoch, like the segmentation path

    def evaluate(rows: list[dict], pred_dir: Path) -> float:
        "One forward pass per whole image; writes predictions.csv; balanced accuracy (mean per-class recall)."
        net.eval()
        preds = []
        with torch.no_grad():
            for row in rows:
                probs = torch.softmax(net(torch.as_tensor(read(row['Channel_0'], dim)[0])[None]), 1)[0]
                preds.append({'SubjectID': row['SubjectID'], 'prediction': classes[int(probs.argmax())],
                              **{f'probability_{c}': float(p) for c, p in zip(classes, probs)}})
        pred_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(preds).to_csv(pred_dir / 'predictions.csv', index=False)
        truth = np.array([int(r['ValueToPredict']) for r in rows])
        pred = np.array([r['prediction'] for r in preds])
        return float(np.mean([(pred[truth == c] == c).mean() for c in classes if (truth == c).any()]))

    def loader(epoch: int) -> DataLoader:
        "Whole images in a seeded shuffled order."
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        return DataLoader(train_ds, batch_size=bs, shuffle=True, generator=g, num_workers=0)

    fit(net, opt, lambda batch: loss_fn(net(batch['image']), batch['label'].long()), loader, evaluate, epochs, 'bacc',
        val_rows, test_rows, out, log)

if __name__ == '__main__':
    main()
