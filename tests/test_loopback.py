"""Loopback (medlab.engine.loopback): a real Flower SuperLink and SuperNodes on 127.0.0.1, the server in this process,
and nothing left behind, after a clean run, an exception in the body, or a failed start."""
import socket
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip('flwr')

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from medlab.core.errors import MedlabError
from medlab.engine import loopback
from medlab.engine.loopback import Loopback, LoopbackError

TOY = '''
"A toy ClientApp: adds step * (partition-id + 1) to every array, and reports 2 * partition-id + 1 examples."
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

@app.train()
def train(msg, context):
    pid, step = int(context.node_config['partition-id']), float(context.run_config['step'])
    arrays = [a + step * (pid + 1) for a in msg.content['arrays'].to_numpy_ndarrays()]
    metrics = {'partition-id': pid, 'num-partitions': int(context.node_config['num-partitions']),
               'site-letter': ord(context.node_config['site']), 'num-examples': 2 * pid + 1}
    return Message(RecordDict({'arrays': ArrayRecord(arrays), 'metrics': MetricRecord(metrics)}), reply_to=msg)
'''


@pytest.fixture(scope='module')
def toy_env(tmp_path_factory) -> dict:
    "The environment that lets the nodes' flwr-clientapp import `loopback_toy:app`."
    folder = tmp_path_factory.mktemp('toy')
    (folder / 'loopback_toy.py').write_text(TOY)
    return {'PYTHONPATH': str(folder)}


def left_behind(pids: list[int], home: Path) -> list[str]:
    "Live (not zombie) processes among `pids`, and any process with `home` in its environment or command line."
    found = []
    for p in psutil.process_iter(['pid', 'cmdline', 'environ', 'status']):
        if p.info['status'] == psutil.STATUS_ZOMBIE: continue
        text = ' '.join(p.info['cmdline'] or []) + ' '.join((p.info['environ'] or {}).values())
        if p.info['pid'] in pids or str(home) in text: found.append(f"{p.info['pid']} {' '.join(p.info['cmdline'] or [])}")
    return found


def new_message() -> Message:
    return Message(RecordDict({}), dst_node_id=1, message_type='train')


@pytest.fixture(scope='module')
def federation(toy_env) -> dict:
    "One Loopback of 2 nodes, 2 rounds of FedAvg, then closed: what was seen inside and after."
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    arrays, seen = ArrayRecord([np.array([0.0, 1.0, 2.0]), np.array([[10.0]])]), {}
    loop = Loopback(2, 'loopback_toy:app', {'step': 1.0}, env=toy_env, node_config=lambda i: {'site': 'ab'[i]})
    with loop as grid:
        seen['nodes'], seen['run_id'] = sorted(grid.get_node_ids()), loop.run_id
        seen['message_run_id'] = new_message().metadata.run_id
        seen['pids'], seen['home'] = loop.pids, loop.home
        for rnd in (1, 2):
            replies = grid.send_and_receive(strategy.configure_train(rnd, arrays, ConfigRecord({}), grid))
            arrays, seen[f'metrics{rnd}'] = strategy.aggregate_train(rnd, replies)
    seen['arrays'] = arrays.to_numpy_ndarrays()
    return seen


def test_two_rounds_of_fedavg_through_real_nodes_give_the_exact_weights(federation):
    "Node i adds i + 1 and weighs 2i + 1: each round adds (1*1 + 3*2) / 4 = 1.75, two rounds 3.5."
    np.testing.assert_array_equal(federation['arrays'][0], [3.5, 4.5, 5.5])
    np.testing.assert_array_equal(federation['arrays'][1], [[13.5]])
    assert dict(federation['metrics2']) == {'partition-id': 0.75, 'num-partitions': 2.0, 'site-letter': (97 + 3 * 98) / 4}
    assert len(federation['nodes']) == 2


def test_messages_can_be_built_inside_and_not_after(federation):
    "Message() reads Flower's process-global task identity: set to our run inside the with, cleared after it."
    assert federation['message_run_id'] == federation['run_id'] > 0
    with pytest.raises(RuntimeError, match='TaskIdentity'): new_message()


def test_nothing_is_left_after_exit(federation):
    "SuperLink, SuperNodes, their SuperExecs and clientapps all ended, and the temporary FLWR_HOME removed."
    assert len(federation['pids']) >= 5, federation['pids']   # live inside: superlink, 2 nodes, their 2 superexecs at least
    assert left_behind(federation['pids'], federation['home']) == []
    assert not federation['home'].exists()


def test_an_exception_in_the_body_still_leaves_nothing(toy_env):
    "A notebook's Stop (KeyboardInterrupt) inside the with: it propagates, and every process and the folder are gone."
    loop = Loopback(1, 'loopback_toy:app', {'step': 1.0}, env=toy_env)
    with pytest.raises(KeyboardInterrupt):
        with loop as grid:
            pids, home = loop.pids, loop.home
            assert list(grid.get_node_ids())
            raise KeyboardInterrupt
    assert pids and left_behind(pids, home) == [] and not home.exists()
    with pytest.raises(RuntimeError, match='TaskIdentity'): new_message()


def test_a_bad_clientapp_string_is_refused_before_anything_starts():
    with pytest.raises(LoopbackError, match="'toy.app' is not 'module:attribute'") as e:
        Loopback(2, 'toy.app', {})
    assert isinstance(e.value, MedlabError)
    with pytest.raises(LoopbackError, match=r"run_config\['sizes'\] is a list"): Loopback(2, 'toy:app', {'sizes': [1, 2]})


def test_an_unknown_clientapp_module_names_it_and_cleans_up(toy_env, monkeypatch):
    "`flwr run` cannot find the module: the error names the command and Flower's reason; no process or folder remains."
    homes = []
    monkeypatch.setattr(loopback, 'stop_all', lambda started, home, **kw: (homes.append((home, [s.popen.pid for s in started])),
                                                                           real_stop_all(started, home)))
    with pytest.raises(LoopbackError) as e:
        with Loopback(1, 'no_such_module:app', {'step': 1.0}, env=toy_env): pass
    assert 'flwr run' in str(e.value) and 'Unable to load module no_such_module' in str(e.value)
    (home, pids), = homes
    assert len(pids) == 2 and left_behind(pids, home) == [] and not home.exists()


real_stop_all = loopback.stop_all


def test_a_taken_port_stops_the_superlink_and_says_so(monkeypatch):
    "Another program holds the SuperLink's port: its exit is reported with the command and its log."
    with socket.socket() as held:
        held.bind(('127.0.0.1', 0)); held.listen()
        port = held.getsockname()[1]
        monkeypatch.setattr(loopback, 'free_ports', lambda n: [port] + real_free_ports(n - 1))
        with pytest.raises(LoopbackError) as e:
            with Loopback(1, 'loopback_toy:app', {'step': 1.0}): pass
    text = str(e.value)
    assert text.startswith('flower-superlink exited with code') and f'--port {port}' in text and 'superlink.log' in text


real_free_ports = loopback.free_ports


def test_a_node_that_dies_is_named_with_its_log(toy_env, monkeypatch):
    "Node 0's Runtime API port is the SuperLink's: that node exits, and the error names it and ends with its log."
    monkeypatch.setattr(loopback, 'free_ports', lambda n: (lambda ports: [ports[0], ports[0], *ports[2:]])(real_free_ports(n)))
    with pytest.raises(LoopbackError) as e:
        with Loopback(2, 'loopback_toy:app', {'step': 1.0}, env=toy_env): pass
    text = str(e.value)
    assert text.startswith('flower-supernode exited with code') and 'supernode0.log' in text, text
