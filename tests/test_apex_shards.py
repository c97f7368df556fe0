"""Ape-X's sharded replay (distributed.ShardedReplay over K ReplayServer actors): draws with
exactly the probabilities of one prioritized memory of all transitions (a chi-square test
that a per-shard-uniform split fails), one memory's importance weights, priorities routed to
their shard, a killed shard restarted empty while the run goes on, and resume with K
shards."""

import os
import signal
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ape-X needs ray (pip install '.[distributed]')")
pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

from tfdqn_trainer import checkpoint  # noqa: E402
from tfdqn_trainer import distributed  # noqa: E402
from tfdqn_trainer.commands import apex  # noqa: E402
from test_apex import CARTPOLE, read_metrics, run_in_thread  # noqa: E402

pytestmark = pytest.mark.slow

ALPHA = 0.6


def filled_shards(lengths, rng):
    """One single-stream shard per length (history 1, n-step 1, no terminals: a stream of m
    entries has the m - 1 transitions t = 0 .. m - 2, id t), each transition given a random
    priority, spread so that the shards' totals differ. Returns (servers, {(shard, id): p})."""
    servers, priorities = [], {}
    for k, m in enumerate(lengths):
        server = distributed.ReplayServer.remote(
            capacity=m, frame_shape=(1,), history=1, num_streams=1, seed=20 + k, n_step=1,
            discount=0.9, priority_exponent=ALPHA)
        frames = (np.arange(m) % 256).astype(np.uint8).reshape(m, 1)
        ray.get(server.add.remote(0, frames, np.zeros(m, np.int32), np.zeros(m, np.float32),
                                  np.zeros(m, np.float32), [], [], []))
        ids = np.arange(m - 1)
        p = rng.uniform(0.1, 2.0, m - 1) * (k + 1) ** 2
        assert ray.get(server.update_priorities_many.remote([(ids, p, None)])) == 1
        priorities.update({(k, int(i)): float(v) for i, v in zip(ids, p)})
        servers.append(server)
    return servers, priorities


def draw(replay, rounds, batches, batch_size, beta):
    replay.stats()  # the shards' totals
    drawn = []
    for _ in range(rounds):
        got = replay.collect(replay.request(batches, batch_size, beta))
        assert len(got) == batches and all(len(b.index) == batch_size for b in got)
        drawn += got
    return drawn


def test_shards_draw_exactly_as_one_memory_with_one_memorys_weights(local_ray):
    rng = np.random.default_rng(0)
    lengths = [21, 31, 41]
    servers, priorities = filled_shards(lengths, rng)
    replay = distributed.ShardedReplay(servers, seed=3)
    keys = sorted(priorities)
    scaled = np.array([priorities[key] ** ALPHA for key in keys])
    one_memory = scaled / scaled.sum()  # P(i) = p_i^alpha / sum over every shard
    beta = 0.5
    batches = draw(replay, rounds=150, batches=4, batch_size=32, beta=beta)
    counts = dict.fromkeys(keys, 0)
    smallest = scaled.min()
    for batch in batches:
        shard, local = batch.index % 3, batch.index // 3
        for k, i, w, s in zip(shard, local, batch.weight, batch.s[:, 0, 0]):
            counts[(int(k), int(i))] += 1  # KeyError: not a transition of that shard
            assert s == int(i) % 256  # the frames of the transition the id names
            # one memory's weight ("memory" normalisation): (q_i / q_min)^-beta
            want = (priorities[(int(k), int(i))] ** ALPHA / smallest) ** -beta
            assert w == pytest.approx(want, rel=1e-5)
    observed = np.array([counts[key] for key in keys])
    draws = observed.sum()
    dof = len(keys) - 1
    bound = dof + 6 * np.sqrt(2 * dof)  # chi-square: mean dof, standard deviation sqrt(2 dof)

    def chi2(probabilities):
        return np.sum((observed - draws * probabilities) ** 2 / (draws * probabilities))
    assert chi2(one_memory) < bound
    # the test can tell: shards chosen uniformly (each its third of every batch), or each
    # transition by its priority without the exponent, fail it
    shard_of_key = np.array([key[0] for key in keys])
    per_shard = np.array([scaled[shard_of_key == k].sum() for k in range(3)])
    uniform_shards = scaled / per_shard[shard_of_key] / 3
    assert chi2(uniform_shards) > bound
    raw = np.array([priorities[key] for key in keys])
    assert chi2(raw / raw.sum()) > bound


def test_priorities_go_back_to_their_shard(local_ray):
    rng = np.random.default_rng(1)
    servers, priorities = filled_shards([9, 13], rng)
    replay = distributed.ShardedReplay(servers, seed=4)
    batch = draw(replay, rounds=1, batches=1, batch_size=16, beta=0.4)[0]
    assert set(batch.index % 2) == {0, 1}  # both shards took part
    new = rng.uniform(5.0, 6.0, len(batch.index))
    # every shard counts the learner update (the fill's and this one), even with no ids
    assert ray.get(replay.send_priorities([(batch.index, new, batch.incarnations)])) == [2, 2]
    # the last priority given to an id wins, as in one memory
    latest = {(int(i) % 2, int(i) // 2): p for i, p in zip(batch.index, new)}
    priorities.update(latest)
    totals = [ray.get(server.stats.remote())["total"] for server in servers]
    for k in range(2):
        want = sum(p ** ALPHA for (shard, _), p in priorities.items() if shard == k)
        assert totals[k] == pytest.approx(want, rel=1e-12)


def test_one_death_is_one_shard_restart_whatever_order_the_replies_come_in():
    """Replies of a shard's old process can be collected after its new process answered (a
    call answered before the death): they are stale, and count no second restart."""
    replay = distributed.ShardedReplay([object()], seed=0)  # no call is made here
    state = dict(total=1.0, min=0.5)
    assert replay._note(0, dict(incarnation=7, **state))
    replay.received = [100]
    replay._failed(0, asked=7)  # a call to the old process failed: it died
    assert replay.take_restarts() == [0] and replay.total_received() == 100
    assert replay._note(0, dict(incarnation=8, **state))  # the new process (first seen)
    assert not replay._note(0, dict(incarnation=7, **state))  # a late reply of the old one
    assert replay._note(0, dict(incarnation=8, **state))
    replay._failed(0, asked=7)  # a late failure of a call to the old one
    assert replay.take_restarts() == [] and replay.incarnations == [8]
    # a new process seen before any failure: one restart, its predecessor's steps kept
    replay.received = [40]
    assert not replay._note(0, dict(incarnation=9, **state))
    assert replay.take_restarts() == [0] and replay.total_received() == 140
    assert not replay._note(0, dict(incarnation=8, **state))
    assert replay.take_restarts() == [] and replay.incarnations == [9]


def replay_pids(timeout=120):
    """{shard: pid} of the running run's replay shards, from Ray's actor table (asking a
    shard would wait behind the calls queued at it, on a busy machine for tens of seconds;
    the table's State can lag, its Pid is set once the process exists)."""
    from ray._private import state
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = {int(actor["Name"].rsplit("-", 1)[1]): actor["Pid"]
                for actor in state.actors().values()
                if actor["Name"].startswith("apex-replay-") and actor["Pid"]}
        if len(pids) == 2:
            return pids
        time.sleep(0.5)
    return {}


def test_a_killed_shard_is_restarted_empty_and_the_run_completes(local_ray, tmp_path):
    run_dir = str(tmp_path / "killed-shard")
    thread, result = run_in_thread(CARTPOLE + ["--replay-shards", "2", "--steps", "14000",
                                               "--run-dir", run_dir])
    pids = replay_pids()
    deadline = time.time() + 240
    while time.time() < deadline:  # into the run: the shards hold transitions, the learner
        if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and any(  # updates
                t["updates"] > 0 for t in read_metrics(run_dir, "train")):
            break
        time.sleep(0.5)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and result.get("code") == 0, result
    train = read_metrics(run_dir, "train")
    assert train[-1]["step"] >= 14000
    assert max(t["shard_restarts"] for t in train) == 1
    assert max(t["actor_restarts"] for t in train) == 0  # the actors rejoined the new shard
    # learning went on after the restart
    after = [t["updates"] for t in train]
    assert after[-1] > after[len(after) // 2] > 0


def test_resume_with_shards_and_a_different_count_is_refused(local_ray, tmp_path, capsys):
    run_dir = str(tmp_path / "sharded")
    assert apex.main(CARTPOLE + ["--replay-shards", "2", "--steps", "4000",
                                 "--save-freq", "2000", "--run-dir", run_dir]) == 0
    first = checkpoint.latest(run_dir)
    assert checkpoint.replay_shards(first) == 2
    with pytest.raises(SystemExit) as refused:
        apex.main(["--resume", run_dir, "--replay-shards", "3"])
    assert refused.value.code == 2 and "--replay-shards" in capsys.readouterr().err
    assert apex.main(["--resume", run_dir, "--steps", "8000"]) == 0
    train = read_metrics(run_dir, "train")
    steps = [t["step"] for t in train]
    assert steps == sorted(steps) and steps[-1] >= 8000
    assert checkpoint.latest(run_dir) != first
    assert checkpoint.replay_shards(checkpoint.latest(run_dir)) == 2
