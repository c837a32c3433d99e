"""Federated learning (issue 23): sites, the ClientAlgo-shaped site client, Flower's FedAvg, the run folder, evaluation."""
import threading
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import medlab
import medlab.datasets.loader as loader
import medlab.datasets.tasks as tasks
from medlab.datasets.split import Split
from medlab.engine.run import RunFolder
from medlab.workflows.federated import (FederationError, SiteClient, evaluate, site_splits, site_subjects, train_federated)

from conftest import tiny_config

pytest.importorskip('flwr')


def sited(tmp_path: Path, sites: list[str], **changes) -> medlab.MedlabConfig:
    "`tiny_config`'s six subjects with a Site column (one entry per subject) and a federated block."
    cfg = tiny_config(tmp_path, num_epochs=1)
    csv = Path(cfg.data_csv)
    table = pd.read_csv(csv)
    table['Site'] = sites
    table.to_csv(csv, index=False)
    fed = changes.pop('federated', {'rounds': 2, 'local_steps': 1})
    return medlab.MedlabConfig(**{**cfg.model_dump(mode='json'), 'federated': fed,
                                  'nested_training': {'testing': 1, 'validation': -2}, **changes})


def test_sites_are_refused_before_any_work(tmp_path):
    cfg = sited(tmp_path, list('aaaabb'))
    assert {k: [s.subject_id for s in v] for k, v in site_subjects(cfg).items()} == {
        'a': ['sub000', 'sub001', 'sub002', 'sub003'], 'b': ['sub004', 'sub005']}
    csv = Path(cfg.data_csv)
    table = pd.read_csv(csv)
    table.drop(columns='Site').to_csv(csv, index=False)
    with pytest.raises(FederationError, match="no 'Site' column"): site_subjects(cfg)
    table.assign(Site='a').to_csv(csv, index=False)
    with pytest.raises(FederationError, match="every subject is at site 'a'.*two sites"): site_subjects(cfg)
    table.assign(PatientID=['p1', 'p2', 'p3', 'p4', 'p1', 'p5']).to_csv(csv, index=False)
    with pytest.raises(FederationError, match="PatientID 'p1' is at site 'a' and at site 'b'"): site_subjects(cfg)
    table.assign(Site=list('aaaaab')).to_csv(csv, index=False)
    with pytest.raises(FederationError, match="site 'b' has 1 subject.*too few"): site_splits(cfg, tasks.task_of(cfg))
    with pytest.raises(FederationError, match='no federated block'): train_federated(tiny_config(tmp_path / 'plain'))
    with pytest.raises(medlab.ConfigError, match=r'federated: this config trains across sites; run it with medlab.train_federated'):
        medlab.train(cfg)   # an ordinary run refuses a federated config rather than pool the sites silently
    assert not (Path(cfg.output_dir) / 'model_latest.pt').exists()


def test_a_csv_per_site_is_the_same_federation(tmp_path):
    cfg = sited(tmp_path, list('aaaabb'))
    table, home = pd.read_csv(cfg.data_csv), Path(cfg.data_csv).parent
    (home / 'b').mkdir()
    table[table.Site == 'a'].drop(columns='Site').to_csv(home / 'a.csv', index=False)
    b = table[table.Site == 'b'].drop(columns='Site')
    b[['Channel_0', 'Label']] = '../' + b[['Channel_0', 'Label']]   # b's CSV in a subfolder: its paths are relative to it
    b.to_csv(home / 'b' / 'b.csv', index=False)
    raw = {**cfg.model_dump(mode='json'), 'data_csv': {'a': 'a.csv', 'b': 'b/b.csv'}}
    per_site = medlab.core.config.config_from_dict(raw, base=home)
    assert per_site.data_csv is None and per_site.federated.sites == {'a': str(home / 'a.csv'), 'b': str(home / 'b' / 'b.csv')}
    ids = lambda c: {k: [(s.subject_id, s.channels[0]) for s in v] for k, v in site_subjects(c).items()}
    assert ids(per_site) == ids(cfg)
    b.assign(Site='x').to_csv(home / 'b' / 'b.csv', index=False)
    with pytest.raises(FederationError, match=r"b.csv: its 'Site' column says 'x', but federated.sites lists it as 'b'"):
        site_subjects(per_site)


def test_each_site_is_split_inside_itself(tmp_path):
    cfg = sited(tmp_path, list('aaaabb'))
    splits = site_splits(cfg, tasks.task_of(cfg))
    for site, members in {'a': {'sub000', 'sub001', 'sub002', 'sub003'}, 'b': {'sub004', 'sub005'}}.items():
        split = splits[site]
        assert {s.subject_id for s in split.subjects} == members
        assert split.training and split.validation and not split.testing


def exact_config(tmp_path, sites):
    "Full-batch plain SGD on whole 32x32 images, no normalisation layers: a step is linear in the per-subject gradients."
    return sited(tmp_path, sites, batch_size=6, learning_rate=0.5, loss_function='ce',
                 optimizer={'type': 'sgd', 'momentum': 0.0, 'weight_decay': 0.0, 'nesterov': False},
                 model={'class_list': [0, 1, 2], 'base_filters': 4, 'norm_type': 'none'},
                 federated={'rounds': 1, 'local_steps': 1})


def fedavg(replies: list[tuple[dict, int]]) -> dict:
    "Flower's own FedAvg (`aggregate_train`) over client replies given as (weights, examples)."
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg
    # a Message needs a running Flower app; the strategy reads only `has_error()` and `content` of a reply
    messages = [SimpleNamespace(content=RecordDict({'arrays': ArrayRecord(w), 'metrics': MetricRecord({'num-examples': n})}),
                                has_error=lambda: False) for w, n in replies]
    arrays, _ = FedAvg().aggregate_train(1, messages)
    return arrays.to_torch_state_dict()


def test_fedavg_of_one_full_batch_step_equals_pooled_gradient_descent(tmp_path):
    # the site clients' real training step and Flower's real FedAvg, called directly (no Ray): deterministic
    cfg = exact_config(tmp_path, list('aaaabb'))
    subjects = site_subjects(cfg)
    clients = [SiteClient(cfg, s, Split(tuple(v), tuple(v[:1])), tmp_path / s) for s, v in subjects.items()]
    everyone = tuple(s for v in subjects.values() for s in v)
    pooled = SiteClient(cfg, 'pooled', Split(everyone, everyone[:1]), tmp_path / 'pooled')
    start = clients[0].get_weights()
    replies = [c.train(start, 1)[:2] for c in clients]
    assert [n for _, n in replies] == [4, 2]
    merged, central = fedavg(replies), pooled.train(start, 1)[0]
    moved = max(float((central[k] - start[k]).abs().max()) for k in start)
    gap = max(float((merged[k] - central[k]).abs().max()) for k in start)
    unweighted = max(float(((replies[0][0][k] + replies[1][0][k]) / 2 - central[k]).abs().max()) for k in start)
    assert moved > 1e-3            # the step did something
    assert gap < 1e-6, gap         # FedAvg weighted by examples is the pooled step
    assert unweighted > 1e-5       # and the weighting matters: unequal sites


def test_no_client_opens_another_sites_files(tmp_path, monkeypatch):
    cfg = sited(tmp_path, list('aaaabb'))
    splits = site_splits(cfg, tasks.task_of(cfg))
    files = {site: {str(p) for s in split.subjects for p in (*s.channels, s.label)} for site, split in splits.items()}
    opened, current = [], {'site': None}
    real = loader.read_image
    def spy(path, *a, **k):
        opened.append((current['site'], str(path)))
        return real(path, *a, **k)
    monkeypatch.setattr(loader, 'read_image', spy)
    monkeypatch.setattr(tasks, 'read_image', spy)
    for site, split in splits.items():
        current['site'] = site
        client = SiteClient(cfg, site, split, tmp_path / site)
        weights, _, _ = client.train(client.get_weights(), 1)
        client.evaluate(weights)
    assert {site for site, _ in opened} == {'a', 'b'}
    assert {p for _, p in opened} == files['a'] | files['b']      # every file was read, by someone...
    assert all(path in files[site] for site, path in opened), [(s, p) for s, p in opened if p not in files[s]]


@pytest.fixture(scope='module')
def federation(tmp_path_factory):
    "A 2-site FedProx federation of 2 rounds through Flower's simulation (Ray), stopped after round 1 and resumed."
    tmp = tmp_path_factory.mktemp('federation')
    cfg = sited(tmp, list('aaaabb'), federated={'rounds': 2, 'local_steps': 1, 'strategy': 'fedprox', 'proximal_mu': 0.01})
    stop, rounds = threading.Event(), []
    def stop_after_first(record): rounds.append(record['round']); stop.set()
    stopped = train_federated(cfg, on_round=stop_after_first, stop=stop, cpus=1)
    run = RunFolder(stopped.output_dir)
    first = run.checkpoint('latest')['epoch']
    finished = train_federated(cfg, on_round=lambda r: rounds.append(r['round']), cpus=1)
    return cfg, run, first, rounds, (stopped, finished)


def test_simulation_trains_stops_resumes_and_predicts(federation):
    cfg, run, first, rounds, _ = federation
    assert (first, rounds) == (1, [1, 2])                           # stopped after round 1, resumed at round 2 only
    starts = [e for e in run.events() if e['event'] == 'start']
    assert [e['resumed_from_round'] for e in starts] == [None, 1]
    assert run.logs('validation').epoch.tolist() == [1, 2]
    for site in ('a', 'b'):
        site_log = pd.read_csv(run.path / 'sites' / site / 'logs_validation.csv')
        assert site_log.epoch.tolist() == [1, 2]
        assert set(pd.read_csv(run.path / 'sites' / site / 'split.csv').SubjectID) == {
            'a': {'sub000', 'sub001', 'sub002', 'sub003'}, 'b': {'sub004', 'sub005'}}[site]
    latest = run.checkpoint('latest')
    assert latest['epoch'] == 2 and latest['federated'] and set(latest['model']) == set(run.checkpoint('best')['model'])
    predictor = medlab.load_run(run.path)
    subject = run.split().validation[0]
    prediction = predictor.predict(subject)
    assert prediction.probabilities.shape == (3, 32, 32) and np.asarray(prediction.labels).shape == (32, 32)
    assert all(torch.equal(v, run.checkpoint('best')['model'][k]) for k, v in predictor.model.state_dict().items())


def test_deployment_on_loopback_is_the_same_run_and_leaves_no_process(federation, tmp_path):
    "A SuperLink and two SuperNodes on 127.0.0.1 (real processes) train the simulation's federation to the same logs."
    import psutil
    cfg, run, _, _, _ = federation
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = train_federated(cfg.model_copy(update={'output_dir': str(tmp_path / 'deployed')}), engine='deployment')
    deployed = RunFolder(result.output_dir)
    assert result.epochs_run == 2 and deployed.checkpoint('latest')['epoch'] == 2 and deployed.metrics()['sites'].keys() == {'a', 'b'}
    for kind in ('training', 'validation'):                         # the same rounds as Flower's simulation of this config
        ours, simulated = deployed.logs(kind), run.logs(kind)
        assert np.allclose(ours.loss, simulated.loss, atol=1e-6), (ours.loss.tolist(), simulated.loss.tolist())
    assert {site: len(list((deployed.path / 'sites' / site).glob('logs_*.csv'))) for site in 'ab'} == {'a': 2, 'b': 2}
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, [(p.pid, p.cmdline()[:3]) for p in left]


def test_the_result_is_a_run_result_with_sites(federation, capsys):
    cfg, run, _, _, (stopped, finished) = federation
    assert stopped.stopped and stopped.stopped_at == 'stopped after round 1 of 2; run again to resume' and stopped.sites['a']['epoch'] == 1
    assert not finished.stopped and finished.epochs_run == 2 and finished.num_epochs == 2
    saved = run.metrics()                                       # metrics.json: the finished federation's record
    assert saved['best_epoch'] == finished.best_epoch and saved['sites'].keys() == {'a', 'b'} and saved['strategy'] == 'fedprox'   # FedProx runs
    site_rows = {s: pd.read_csv(run.path / 'sites' / s / 'logs_validation.csv').set_index('epoch').loc[finished.best_epoch] for s in 'ab'}
    for s, row in site_rows.items():
        assert finished.sites[s]['dice'] == pytest.approx(row.dice, abs=1e-12)
    assert {s: finished.sites[s]['subjects'] for s in 'ab'} == {'a': 2, 'b': 1}
    table = finished.site_table()
    assert table.loc['weighted', 'dice'] == pytest.approx((2 * site_rows['a'].dice + site_rows['b'].dice) / 3, abs=1e-9)
    assert table.loc['weighted', 'subjects'] == 3
    assert finished.summary().loc['site a dice', 'value'] == round(site_rows['a'].dice, 4)
    assert (run.path / 'training_curves.png').stat().st_size > 1000 and run.logs('training').seconds.gt(0).all()
    again = train_federated(cfg, cpus=1)                       # finished: said at once, nothing trained (no Ray)
    assert 'already trained 2 round(s)' in capsys.readouterr().out and again.best == finished.best
    assert [e['event'] for e in run.events()].count('start') == 2


def test_weighted_mean_of_sites_equals_pooled_per_subject_metric(federation):
    cfg, run, _, _, _ = federation
    subjects = site_subjects(cfg)
    table = evaluate(run.path, subjects).set_index('site')
    assert table.subjects.tolist() == [4, 2, 6]
    everyone = evaluate(run.path, {'all': [s for v in subjects.values() for s in v]}).set_index('site')
    for metric in ('loss', 'dice'):
        assert abs(table.loc['pooled', metric] - everyone.loc['all', metric]) < 1e-6
    assert abs(table.loc['a', 'loss'] - table.loc['b', 'loss']) > 1e-6   # the sites differ: the weighting is tested
    assert table.equals(evaluate(run.path, cfg.data_csv).set_index('site'))  # a manifest with a Site column: the same


def test_differential_privacy_at_a_site_goes_on_across_rounds_and_processes(tmp_path):
    "DP-SGD inside rounds: each round's steps join the site's accountant, kept in sites/<site>/privacy.json for the next process."
    from opacus.accountants import RDPAccountant
    from medlab.workflows.federated import GlobalModel
    cfg = sited(tmp_path, list('aaaabb'), federated={'rounds': 3, 'local_steps': 2},
                differential_privacy={'noise_multiplier': 1.5, 'max_grad_norm': 1.0, 'delta': 1e-5})
    splits = site_splits(cfg, tasks.task_of(cfg))
    folder = tmp_path / 'run' / 'sites' / 'a'
    client = SiteClient(cfg, 'a', splits['a'], folder)
    weights = client.get_weights()
    assert not any('running_mean' in k for k in weights)                       # batch norm swapped for group norm (Opacus)
    eps = [client.train(weights, r)[2]['epsilon'] for r in (1, 2)]
    again = SiteClient(cfg, 'a', splits['a'], folder)                            # round 3 in a new client, as a deployed site's next message
    eps.append(again.train(weights, 3)[2]['epsilon'])
    q = 1 / cfg.federated.local_steps   # the sample rate: one batch of a round's local_steps
    for steps, got in zip((2, 4, 6), eps):
        accountant = RDPAccountant()
        accountant.history = [(1.5, q, steps)]
        assert got == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9), (steps, got)
    assert eps[0] < eps[1] < eps[2]
    # the server: every site's last epsilon, and the largest as the federation's
    model = GlobalModel(cfg, tasks.task_of(cfg), RunFolder(tmp_path / 'run'))
    model.site_logs = {('a', 'training'): [{'epoch': 3, 'epsilon': eps[2]}], ('b', 'training'): [{'epoch': 3, 'epsilon': 0.5}]}
    assert model.privacy_spent(['a', 'b']) == {'epsilon': eps[2], 'delta': 1e-5, 'sites': {'a': eps[2], 'b': 0.5}}


def test_strategies_and_the_fedprox_pull(tmp_path):
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx
    from medlab.workflows.federated import build_strategy
    cfg = exact_config(tmp_path, list('aaaabb'))
    made = {name: build_strategy(cfg.model_copy(update={'federated': cfg.federated.model_copy(update={'strategy': name, 'proximal_mu': 0.5})}), 2)
            for name in ('fedavg', 'fedprox', 'fedadam', 'fedmedian')}
    assert [type(s) for s in made.values()] == [FedAvg, FedProx, FedAdam, FedMedian]
    assert made['fedprox'].proximal_mu == 0.5 and made['fedadam'].eta == cfg.federated.server_learning_rate
    with pytest.raises(FederationError, match='min_sites is 3 but the manifest has 2 sites'):
        build_strategy(cfg.model_copy(update={'federated': cfg.federated.model_copy(update={'min_sites': 3})}), 2)
    a = site_subjects(cfg)['a']
    client = SiteClient(cfg, 'a', Split(tuple(a), tuple(a[:1])), tmp_path / 'a')
    start = client.get_weights()
    distance = lambda w: sum(float(((w[k] - start[k]) ** 2).sum()) for k in start)
    free, pulled = distance(client.train(start, 1)[0]), distance(client.train(start, 1, mu=1e4)[0])
    assert 0 < free and pulled == pytest.approx(free)   # one step from the anchor itself: the pull's gradient is zero there
    cfg2 = cfg.model_copy(update={'federated': cfg.federated.model_copy(update={'local_steps': 3})})
    client = SiteClient(cfg2, 'a', Split(tuple(a), tuple(a[:1])), tmp_path / 'a2')
    assert distance(client.train(start, 1, mu=1.0)[0]) < 0.9 * distance(client.train(start, 1)[0])  # later steps are pulled back (lr * mu = 0.5)
