"""Every loss and metric the catalog names, on small cases: losses train (finite value and gradient, lower nearer the
target, weights as documented); metrics write their columns, with values worked out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from medlab import catalog
from medlab.losses import build_loss
from medlab.metrics import build_metrics

SEG_LOSSES = sorted(n for n, i in catalog.LOSSES.items() if 'segmentation' in i.tasks)
IMAGE_LOSSES = sorted(set(catalog.LOSSES) - set(SEG_LOSSES))


def one_hot(label: torch.Tensor, n: int) -> torch.Tensor:
    "(B, *spatial) class indices -> (B, n, *spatial) float one-hot."
    return F.one_hot(label, n).movedim(-1, 1).float()


def seg_case(final_layer: str, spatial: tuple, seed: int = 0):
    "Random logits and a target that fits `final_layer`: one-hot classes, or nested multi-hot regions with a background."
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, *spatial, generator=g)
    label = torch.randint(0, 3, (2, *spatial), generator=g)
    if final_layer == 'softmax': return logits, one_hot(label, 3)
    regions = torch.stack([label == 0, label >= 1, label == 2], 1).float()  # background, region >= 1, region 2 inside it
    return logits, regions


def image_case(name: str):
    "Outputs and targets of the image-level task `name` serves."
    g = torch.Generator().manual_seed(0)
    if name == 'cel': return torch.randn(4, 3, generator=g), torch.tensor([[0], [2], [1], [2]])
    return torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g)


def toward(name: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    "`out` moved some way toward `target`."
    if name in SEG_LOSSES: return out + (2 * target - 1)
    if name == 'cel': return out + 2 * one_hot(target[:, 0], out.shape[1]) - 1
    return out + 0.5 * (target - out)


@pytest.mark.parametrize('spatial', [(8, 8), (6, 6, 6)], ids=['2d', '3d'])
@pytest.mark.parametrize('final_layer', ['softmax', 'sigmoid'])
@pytest.mark.parametrize('name', SEG_LOSSES)
def test_segmentation_loss_trains(name, final_layer, spatial):
    logits, target = seg_case(final_layer, spatial)
    for weights in (None, [0.2, 0.5, 0.3]):
        loss = build_loss(name, final_layer, weights)
        x = logits.clone().requires_grad_()
        value = loss(x, target)
        assert value.ndim == 0 and torch.isfinite(value), (name, final_layer, weights, value)
        value.backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, (name, final_layer, weights)
        assert loss(toward(name, logits, target), target) < value.detach(), (name, final_layer, weights)


@pytest.mark.parametrize('name', IMAGE_LOSSES)
def test_image_loss_trains(name):
    out, target = image_case(name)
    loss = build_loss(name, 'softmax' if name == 'cel' else 'none')
    x = out.clone().requires_grad_()
    value = loss(x, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert loss(toward(name, out, target), target) < value.detach()


# One 2x2 image, class 1 at one voxel: softmax(log p) = p, so each loss is a formula in these numbers.
P = torch.tensor([[0.4, 0.7, 0.9, 0.8], [0.6, 0.3, 0.1, 0.2]]).reshape(1, 2, 2, 2)
T = torch.tensor([[0., 1, 1, 1], [1, 0, 0, 0]]).reshape(1, 2, 2, 2)
W = [1.0, 3.0]  # GaNDLF's penalties 1 - n_c/N = 0.25, 0.75, as any multiple


def test_weighted_dice_by_hand():
    d0, d1 = 2 * 2.4 / (2.8 + 3), 2 * 0.6 / (1.2 + 1)
    assert build_loss('dc', weights=W)(P.log(), T) == pytest.approx(0.25 * (1 - d0) + 0.75 * (1 - d1), abs=1e-4)
    assert build_loss('dc_log', weights=W)(P.log(), T) == pytest.approx(-(0.25 * math.log(d0) + 0.75 * math.log(d1)), abs=1e-4)
    assert build_loss('dc', 'sigmoid', W)(torch.logit(P), T) == pytest.approx(0.25 * (1 - d0) + 0.75 * (1 - d1), abs=1e-4)


def test_weighted_cross_entropy_by_hand():
    nll = [-math.log(p) for p in (0.6, 0.7, 0.9, 0.8)]  # voxel 0 is class 1
    want = (3 * nll[0] + sum(nll[1:])) / (3 + 3 * 1)     # torch's weighted mean: sum w_y l / sum w_y
    assert build_loss('ce', weights=W)(P.log(), T) == pytest.approx(want, abs=1e-5)
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    want = -(1 * math.log(0.5) + 3 * math.log(0.8)) / 4
    assert build_loss('cel', weights=[1, 1, 3])(probs.log(), torch.tensor([[0], [2]])) == pytest.approx(want, abs=1e-5)


# softmax ce and dcce use torch's weight=, which weighs voxels by their class (checked by hand above), not class losses
@pytest.mark.parametrize('name, final_layer', [(n, f) for n in SEG_LOSSES for f in ('softmax', 'sigmoid')
                                               if not (f == 'softmax' and n in ('ce', 'dcce'))])
def test_weights_are_a_normalised_sum_of_class_losses(name, final_layer):
    "sum_c w_c l_c / sum_c w_c, where l_c is the loss weighted on class c alone."
    logits, target = seg_case(final_layer, (6, 6), seed=1)
    w = [0.2, 0.5, 0.3]
    per_class = [build_loss(name, final_layer, [float(i == c) for i in range(3)])(logits, target) for c in range(3)]
    want = sum(wc * lc for wc, lc in zip(w, per_class)) / sum(w)
    assert build_loss(name, final_layer, [2 * x for x in w])(logits, target) == pytest.approx(float(want), abs=1e-5)
    plain = sum(per_class) / 3
    assert build_loss(name, final_layer)(logits, target) == pytest.approx(float(plain), abs=1e-5)


def test_loss_options():
    assert build_loss('focal', gamma=0)(P.log(), T) == pytest.approx(float(build_loss('ce')(P.log(), T)) / 2, abs=1e-6)
    assert build_loss('mse', 'none', reduction='sum')(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.5]])) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="did you mean 'beta'"): build_loss('tversky', betta=0.7)
    with pytest.raises(ValueError, match='final_layer'): build_loss('dc', 'none')


# Metrics: a 2D and a 3D case per task, values worked out by hand.
def seg_masks(spatial: int):
    "Truth: class 1 a 2x4(x2) block, class 2 a 2x2(x2) block; prediction misses one row of class 1."
    y = torch.zeros((1,) + (6,) * spatial, dtype=torch.long)
    y[(0, slice(0, 2), slice(0, 4)) + (slice(0, 2),) * (spatial - 2)] = 1
    y[(0, slice(4, 6), slice(4, 6)) + (slice(0, 2),) * (spatial - 2)] = 2
    p = y.clone()
    p[(0, 1, slice(0, 4)) + (slice(0, 2),) * (spatial - 2)] = 0
    return one_hot(p, 3), one_hot(y, 3)


def seg_expected(spatial: int) -> dict:
    "Per class: class 1 is found on half its voxels, with nothing predicted elsewhere; class 2 is right."
    n = 6 ** spatial
    c1 = dict(dice=2 / 3, jaccard=0.5, iou=0.5, sensitivity=0.5, recall=0.5, precision=1.0, specificity_segmentation=1.0,
              specificity=1.0, accuracy=(n - 4 * 2 ** (spatial - 2)) / n, f1=2 / 3, hd95=1.0, hd100=1.0, nsd=1.0)
    c2 = dict(c1, dice=1.0, jaccard=1.0, iou=1.0, sensitivity=1.0, recall=1.0, accuracy=1.0, f1=1.0, hd95=0.0, hd100=0.0)
    return {k: (c1[k], c2[k]) for k in c1}


@pytest.mark.parametrize('spatial', [2, 3], ids=['2d', '3d'])
def test_every_segmentation_metric(spatial):
    names = sorted(n for n, i in catalog.METRICS.items() if 'segmentation' in i.tasks)
    scores = build_metrics(names, [0, 'a', 'b'], 'segmentation')
    pred, truth = seg_masks(spatial)
    for s in scores:
        s.update(pred, truth); s.update(truth, truth)  # a half-missed class, then a perfect subject
    expected = seg_expected(spatial)
    perfect = {k: 0.0 if k.startswith('hd') else 1.0 for k in expected}
    for name, s in zip(names, scores):
        got = s.aggregate()
        stem = name.removesuffix('_per_label')
        want = [(a + perfect[stem]) / 2 for a in expected[stem]]  # two subjects, per class
        if name.endswith('_per_label'):
            assert list(got) == [f'{stem}_a', f'{stem}_b'], name
            assert list(got.values()) == pytest.approx(want, abs=1e-4), name
        else:
            assert list(got) == [name]
            assert got[name] == pytest.approx(sum(want) / 2, abs=1e-4), name
        assert s.higher_is_better == catalog.METRICS[name].higher_is_better


PROBS = torch.tensor([[.7, .2, .1], [.6, .3, .1], [.3, .5, .2], [.1, .8, .1], [.1, .3, .6], [.2, .2, .6]])
TRUE = torch.tensor([0, 0, 0, 1, 1, 2])  # decided 0, 0, 1, 1, 2, 2: per class precision 1, 1/2, 1/2; recall 2/3, 1/2, 1
CLASSIFICATION = {
    'accuracy': 4 / 6, 'classification_accuracy': 4 / 6, 'balanced_accuracy': (2 / 3 + 1 / 2 + 1) / 3,
    'precision': (3 * 1 + 2 * 0.5 + 1 * 0.5) / 6, 'recall': 4 / 6, 'specificity': (3 * 1 + 2 * 3 / 4 + 1 * 4 / 5) / 6,
    'f1': (3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6, 'iou': (3 * 2 / 3 + 2 * 1 / 3 + 1 * 1 / 2) / 6,
    'cel': -sum(map(math.log, (.7, .6, .3, .8, .3, .6))) / 6,
    'per_label_one_hot_accuracy_x': 5 / 6, 'per_label_one_hot_accuracy_y': 4 / 6, 'per_label_one_hot_accuracy_z': 5 / 6,
}


def test_every_classification_metric():
    names = sorted(n for n, i in catalog.METRICS.items() if 'classification' in i.tasks)
    scores = build_metrics(names, ['x', 'y', 'z'], 'classification')
    got = {}
    for s in scores:
        s.update(PROBS[:3], TRUE[:3]); s.update(PROBS[3:], TRUE[3:])  # two batches
        got.update(s.aggregate())
    assert got == pytest.approx(CLASSIFICATION, abs=1e-4)


def test_binary_classification_threshold():
    probs, true = torch.tensor([[.1, .9], [.4, .6], [.6, .4], [.8, .2]]), torch.tensor([1, 1, 0, 0])
    low, high = build_metrics(['recall'], [0, 1], 'classification')[0], \
        build_metrics(['recall'], [0, 1], 'classification', {'recall': {'threshold': 0.7}})[0]
    for s in (low, high): s.update(probs, true)
    assert (low.aggregate(), high.aggregate()) == ({'recall': 1.0}, {'recall': 0.5})


def test_every_regression_metric():
    names = sorted(n for n, i in catalog.METRICS.items() if 'regression' in i.tasks)
    got = {}
    for s in build_metrics(names, [], 'regression'):
        s.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 5.0]))
        got.update(s.aggregate())
        assert not s.higher_is_better
    assert got == pytest.approx({'mse': 5 / 3, 'mae': 1.0, 'rmse': math.sqrt(5 / 3)})


def test_columns_are_unique():
    with pytest.raises(ValueError, match='more than once'): build_metrics(['dice_per_label'], [0, 1, 1], 'segmentation')
    with pytest.raises(ValueError, match='does not score regression'): build_metrics(['f1'], [], 'regression')
