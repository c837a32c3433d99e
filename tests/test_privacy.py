"""Differential privacy in ordinary runs (issue 23): the budget reached, per-example clipping, batch norm, resume, load_run."""
import json

import pytest
import torch

import medlab
from conftest import tiny_config
from medlab.engine.run import RunFolder

pytest.importorskip('opacus')

DP = {'max_grad_norm': 1.0, 'delta': 1e-5}


def privacy_events(run_dir) -> list[dict]:
    return [e for e in RunFolder(run_dir).events() if e['event'] == 'privacy']


def test_epsilon_target_is_reached_and_stored_in_metrics(tmp_path):
    cfg = tiny_config(tmp_path, num_epochs=2, batch_size=2, differential_privacy={**DP, 'epsilon': 8})
    result = medlab.train(cfg)
    stored = json.loads((tmp_path / 'run' / 'metrics.json').read_text())['privacy']
    assert abs(stored['epsilon'] - 8) <= 0.05 * 8, stored
    assert stored['epsilon'] <= 8 * 1.001 and stored['delta'] == 1e-5 and stored['accountant'] == 'rdp'
    assert stored['noise_multiplier'] > 0 and stored['steps'] == 2 * 2   # 4 training patches an epoch, 2 a batch
    assert result.privacy == stored
    epochs = privacy_events(tmp_path / 'run')
    assert [e['epoch'] for e in epochs] == [1, 2] and 0 < epochs[0]['epsilon'] < epochs[1]['epsilon'] == stored['epsilon']


def test_per_example_clipping_bounds_each_update(tmp_path):
    "Noise 0 and a tiny clipping norm: plain SGD moves the weights by at most lr * max_grad_norm per step."
    lr, clip = 0.5, 1e-4
    cfg = tiny_config(tmp_path, num_epochs=1, learning_rate=lr, optimizer={'type': 'sgd', 'momentum': 0.0, 'weight_decay': 0.0, 'nesterov': False},
                      differential_privacy={'noise_multiplier': 0.0, 'max_grad_norm': clip})
    medlab.train(cfg)
    run = RunFolder(tmp_path / 'run')
    before, after = run.checkpoint('initial')['model'], run.checkpoint('latest')['model']
    moved = torch.cat([(after[k].float() - before[k].float()).flatten() for k in before if before[k].is_floating_point()]).norm()
    steps = run.checkpoint('latest')['privacy']['history'][0][2]
    assert 0 < float(moved) <= lr * clip * steps * 1.0001, (float(moved), steps)


def test_clipped_mean_equals_opacus_by_hand():
    from medlab.core.config import DifferentialPrivacyConfig
    from medlab.engine.privacy import dp_sgd
    torch.manual_seed(0)
    lin, x, y = torch.nn.Linear(3, 2), torch.randn(5, 3) * 10, torch.randn(5, 2)
    w0 = [p.detach().clone() for p in lin.parameters()]
    grads = [torch.autograd.grad(((lin(x[i:i + 1]) - y[i:i + 1]) ** 2).mean(), list(lin.parameters())) for i in range(5)]
    scale = [min(1.0, 0.01 / float(torch.cat([g.flatten() for g in gs]).norm())) for gs in grads]
    expected = [sum(s * gs[j] for s, gs in zip(scale, grads)) / 5 for j in range(2)]
    net, opt = dp_sgd(lin, torch.optim.SGD(lin.parameters(), lr=1.0), DifferentialPrivacyConfig(max_grad_norm=0.01), 0.0, 5)
    opt.zero_grad(); ((net(x) - y) ** 2).mean().backward(); opt.step()
    for p, w, e in zip(lin.parameters(), w0, expected): torch.testing.assert_close(w - p.detach(), e, atol=1e-7, rtol=1e-5)


def test_batch_norm_is_swapped_when_allowed_and_refused_naming_layers_when_not(tmp_path):
    from medlab.engine.privacy import OpacusLayersRefused
    from medlab.engine.training import Trainer  # a private name: the trainer builds the network
    from medlab.datasets.split import load_split
    from medlab.datasets.tasks import task_of
    cfg = tiny_config(tmp_path, num_epochs=1, differential_privacy=DP)   # model.norm_type: batch (the default)
    task = task_of(cfg)
    trainer = Trainer(cfg, load_split(cfg, task), task, RunFolder(tmp_path / 'run'))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trainer.model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in trainer.model.modules())
    assert trainer.opacus_swaps['conv_0.conv_0.adn.N'] == 'BatchNorm2d -> GroupNorm'
    refused = cfg.model_copy(update={'differential_privacy': cfg.differential_privacy.model_copy(update={'allow_opacus_model_fix': False})})
    with pytest.raises(OpacusLayersRefused) as info: medlab.train(refused)
    text = str(info.value)
    assert 'conv_0.conv_0.adn.N (BatchNorm2d)' in text and 'allow_opacus_model_fix: true' in text and 'norm_type: instance' in text
    assert not RunFolder(tmp_path / 'run').has('latest')


def test_resume_continues_the_accountant_and_load_run_predicts(tmp_path):
    dp = {**DP, 'noise_multiplier': 1.0}
    whole = tiny_config(tmp_path, num_epochs=2, differential_privacy=dp, model={'class_list': [0, 1, 2], 'base_filters': 4, 'norm_type': 'instance'})
    medlab.train(whole)
    halves = whole.model_copy(update={'output_dir': str(tmp_path / 'halves'), 'num_epochs': 1})
    medlab.train(halves)
    medlab.train(halves.model_copy(update={'num_epochs': 2}))
    a, b = (json.loads((tmp_path / d / 'metrics.json').read_text())['privacy'] for d in ('run', 'halves'))
    assert a['steps'] == b['steps'] > 0 and a['epsilon'] == pytest.approx(b['epsilon'], rel=1e-9)
    assert [e['epsilon'] for e in privacy_events(tmp_path / 'run')] == pytest.approx([e['epsilon'] for e in privacy_events(tmp_path / 'halves')])
    state = RunFolder(tmp_path / 'halves').checkpoint('latest')
    assert not any(k.startswith('_module.') for k in state['model'])
    predictor = medlab.load_run(tmp_path / 'halves')
    image = torch.zeros(1, 1, 32, 32)
    assert predictor.logits(image).shape == (1, 3, 32, 32)


def test_load_run_predicts_with_a_run_whose_batch_norm_was_swapped(tmp_path):
    medlab.train(tiny_config(tmp_path, num_epochs=1, differential_privacy={**DP, 'noise_multiplier': 1.0}))
    assert medlab.load_run(tmp_path / 'run').logits(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)
