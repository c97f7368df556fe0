"""Ape-X on Ray (tfdqn_trainer/commands/apex.py and distributed.py) with one local Ray instance
shared by the module (ray.init(num_cpus=2); starting Ray takes seconds): the actors' initial
priorities, CartPole learning with two actors, an actor killed mid-run, resume."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ape-X needs ray (pip install '.[distributed]')")
pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer.commands import apex  # noqa: E402
from tfdqn_trainer import distributed  # noqa: E402
from tfdqn_trainer import checkpoint  # noqa: E402
from apex_helpers import actor_places  # noqa: E402

pytestmark = pytest.mark.slow


def read_metrics(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


def test_apex_epsilons():
    eps = [distributed.apex_epsilon(i, 8) for i in range(8)]
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4 ** 8)
    assert all(a > b for a, b in zip(eps, eps[1:]))
    assert distributed.apex_epsilon(0, 1) == 0.4


@pytest.mark.parametrize("args, limit", [
    (["--preset", "classic", "--env", "CartPole-v1"], 4 / 2),  # --update-freq 4, --n-replay 2
    (["--env", "ALE/Pong-v5"], 4.0),  # DQN 3.0: an update every 4 agent steps
    (["--preset", "minatar", "--env", "MinAtar/Breakout-v0"], 1.0),
    (["--preset", "classic", "--env", "CartPole-v1", "--max-steps-per-update", "0"], 0.0),
    (["--env", "ALE/Pong-v5", "--max-steps-per-update", "16"], 16.0),
])
def test_rate_limit_defaults_to_the_trainers_ratio(args, limit):
    """Unless given, Ape-X's actors run at most train.py's agent steps per update (a 0 is
    the paper's unlimited mode); a run saved with an explicit value keeps it on --resume."""
    from tfdqn_trainer import config as config_lib
    cfg = apex.parse(args)
    assert config_lib.steps_per_update_limit(cfg) == limit
    saved = json.loads(config_lib.config_to_json(cfg))
    assert config_lib.steps_per_update_limit(config_lib.config_from_dict(saved)) == limit


def test_actor_priorities_are_the_n_step_td_errors():
    """Entries with Q rows; the priorities of the transitions they complete, written out."""
    gamma, n = 0.9, 3
    p = distributed.StreamPriorities(n, gamma, 1e-6, first_sequence=10)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(8, 2))
    actions = [0, 1, 1, 0, 1, 0, 0, 1]
    rewards = [1.0, 0.0, 2.0, 0.5, 1.0, 0.0, 3.0, 0.0]
    terminals = [False, False, False, False, True, False, False, False]
    for k in range(8):
        p.add(q[k], actions[k], rewards[k], terminals[k])
    sequences, priorities = p.ready()

    def td(t):
        ret, scale, m = 0.0, 1.0, 0
        while m < n:
            ret += scale * rewards[t + m]
            scale *= gamma
            m += 1
            if terminals[t + m]:
                return ret - q[t, actions[t]]
        return ret + scale * q[t + m].max() - q[t, actions[t]]
    # t = 0..4 complete (t + 3 <= 7, or a terminal at 4 stops t = 1..3 early); t = 4 is the
    # terminal entry itself (no transition); t = 5 needs entries up to 8.
    assert sequences == [10, 11, 12, 13]
    np.testing.assert_allclose(priorities, [abs(td(t)) + 1e-6 for t in range(4)])
    assert [e[0] for e in p.entries] == [15, 16, 17]  # waiting for what follows


def test_actor_priorities_use_the_replay_memorys_n_step_returns():
    """The actor's Python n-step TD errors (StreamPriorities) against the C++ memory's own
    n-step transitions of the same stream: for every transition the memory draws, its return
    and bootstrap discount give the actor's priority."""
    from tfdqn_ops import ReplayMemory
    gamma, n, count = 0.95, 3, 400
    rng = np.random.default_rng(1)
    q = rng.normal(size=(count, 3))
    actions = rng.integers(0, 3, count)
    rewards = rng.choice([-1.0, 0.0, 1.0, 2.5], count)
    terminals = rng.random(count) < 0.08
    actor = distributed.StreamPriorities(n, gamma, 0.0, first_sequence=0)
    memory = ReplayMemory(count + 8, (1,), 1, 1, 7, n_step=n, discount=gamma,
                          priority_exponent=0.6)
    for t in range(count):  # frame t holds t % 256; the index below undoes the wrap
        actor.add(q[t], actions[t], rewards[t], terminals[t])
        memory.add(np.array([[t % 256]], np.uint8), [actions[t]], [rewards[t]], [terminals[t]])
    sequences, priorities = actor.ready()
    priority_of = dict(zip(sequences, priorities))
    checked = set()
    for _ in range(40):
        batch = memory.sample_batch(32, 1.0)
        for k in range(32):
            t = int(batch.index[k])  # the id of the t-th entry of a fresh single stream
            assert int(batch.s[k, -1, 0]) == t % 256
            bootstrap = 0.0
            if batch.discount[k] != 0:  # s2 is the entry m <= n steps later
                later = next(i for i in range(t + 1, t + n + 1)
                             if i % 256 == batch.s2[k, -1, 0])
                bootstrap = batch.discount[k] * q[later].max()
            td = batch.r[k] + bootstrap - q[t, actions[t]]
            assert priority_of[t] == pytest.approx(abs(td), rel=1e-5, abs=1e-5), t
            checked.add(t)
    assert len(checked) > 150  # most transitions were compared


def run_in_thread(argv):
    result = {}

    def target():
        try:
            result["code"] = apex.main(argv)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            result["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


# The classic preset's CartPole with 3-step returns; the actors held to 4 agent steps per
# learner update (on 2 cores they would otherwise starve the learner).
CARTPOLE = ["--preset", "classic", "--env", "CartPole-v1", "--actors", "2", "--num-envs", "4",
            "--n-step", "3", "--learn-start", "1000", "--replay-memory", "50000",
            "--send-every", "25", "--max-steps-per-update", "4", "--eval-freq", "10000",
            "--prog-freq", "2000", "--save-freq", "0"]


def test_sample_sizes_are_consecutive_draws_and_priorities_go_back_in_order(local_ray):
    """ReplayServer.sample_sizes([B] * k) gives the k minibatches k sample_batch calls give
    on the same memory, and update_priorities_many applies its updates in order, one learner
    update each (the learner's batched calls change no draw); updates of an earlier
    incarnation of the server are dropped but counted."""
    from tfdqn_ops import ReplayMemory
    n, steps, kwargs = 3, 200, dict(n_step=3, discount=0.9, priority_exponent=0.6)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (steps, 1), dtype=np.uint8)
    actions = rng.integers(0, 2, steps).astype(np.int32)
    rewards = rng.normal(size=steps).astype(np.float32)
    terminals = (rng.random(steps) < 0.05).astype(np.float32)
    server = distributed.ReplayServer.remote(capacity=512, frame_shape=(1,), history=1,
                                             num_streams=1, seed=11, **kwargs)
    local = ReplayMemory(512, (1,), 1, 1, 11, **kwargs)
    assert ray.get(server.sample_sizes.remote([8], 0.5)) is None
    incarnation = ray.get(server.streams_start.remote([0]))[0]
    # a send numbered by an earlier process of the server is refused, nothing added
    assert ray.get(server.add.remote(0, frames, actions, rewards, terminals, [], [], [],
                                     incarnation + 1)) is None
    assert ray.get(server.add.remote(0, frames, actions, rewards, terminals, [], [], [],
                                     incarnation)) == (steps, 0)
    local.add_stream(0, frames, actions, rewards, terminals)
    for round_ in range(2):
        reply = ray.get(server.sample_sizes.remote([8] * n, 0.5))
        assert reply["incarnation"] == incarnation and len(reply["pieces"]) == n
        updates = []
        for batch in reply["pieces"]:
            expected = local.sample_batch(8, 0.5)
            np.testing.assert_array_equal(batch.index, expected.index)
            np.testing.assert_array_equal(batch.s, expected.s)
            np.testing.assert_allclose(batch.weight, expected.weight)
            updates.append((batch.index, rng.uniform(0.1, 3.0, 8), incarnation))
        # the same ids twice in a row: the later priorities win, as in one memory
        updates.append((updates[0][0], rng.uniform(0.1, 3.0, 8), incarnation))
        stale = (updates[1][0], np.full(8, 1e3), incarnation + 1)  # dropped
        assert ray.get(server.update_priorities_many.remote(updates + [stale])) == \
            (n + 2) * (round_ + 1)
        assert reply["total"] == pytest.approx(local.priority_total)  # as it was drawn
        for ids, priorities, _ in updates:
            local.update_priorities(ids, priorities)
    assert ray.get(server.sample.remote(8, 0.5)).index.tolist() == \
        local.sample_batch(8, 0.5).index.tolist()


def test_cartpole_learns_with_two_actors(local_ray, tmp_path):
    run_dir = str(tmp_path / "cartpole")
    code = apex.main(CARTPOLE + ["--steps", "150000", "--stop-score", "475",
                                 "--run-dir", run_dir])
    assert code == 0
    evals = read_metrics(run_dir, "eval")
    assert evals and max(e["eval_mean_score"] or 0 for e in evals) >= 475, evals
    train = read_metrics(run_dir, "train")
    assert train and train[-1]["updates"] > 0
    assert checkpoint.latest(run_dir) is not None
    # the network the best evaluation played is saved, and evaluate.py plays it
    best = max(e["eval_mean_score"] for e in evals)
    info = json.loads(next((pathlib.Path(run_dir) / checkpoint.BEST_DIR).glob("best-*"))
                      .joinpath("info.json").read_text())
    assert info["score"] == best and [e["best"] for e in evals].count(True) >= 1
    played = subprocess.run([sys.executable, str(REPO / "python" / "evaluate.py"), run_dir,
                             "--episodes", "2"], capture_output=True, text=True, timeout=300)
    assert played.returncode == 0, played.stderr[-500:]
    assert "best network" in played.stdout and "mean score" in played.stdout


def test_a_killed_actor_is_replaced_and_the_run_completes(local_ray, tmp_path):
    run_dir = str(tmp_path / "killed")
    thread, result = run_in_thread(CARTPOLE + ["--steps", "12000", "--run-dir", run_dir])
    places = actor_places()
    assert places, "the actors did not start"
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # well into the run
    pid = next(iter(places.values()))[0]
    assert pid is not None, "the actors did not start"
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and result.get("code") == 0, result
    train = read_metrics(run_dir, "train")
    assert train[-1]["step"] >= 12000
    # one death, one restart (calls made while Ray restarts the process are not counted)
    assert max(t["actor_restarts"] for t in train) == 1


def test_resume_continues_the_counters(local_ray, tmp_path):
    run_dir = str(tmp_path / "resumed")
    assert apex.main(CARTPOLE + ["--steps", "4000", "--save-freq", "2000", "--eval-freq",
                                 "4000", "--eval-steps", "500", "--run-dir", run_dir]) == 0
    first = checkpoint.latest(run_dir)
    assert apex.main(["--resume", run_dir, "--steps", "8000", "--actors", "2"]) == 0
    train = read_metrics(run_dir, "train")
    steps = [t["step"] for t in train]
    assert steps == sorted(steps) and steps[-1] >= 8000
    assert checkpoint.latest(run_dir) != first
    # the evaluation started at each leg's step budget is waited for, not dropped
    evals = read_metrics(run_dir, "eval")
    assert [e["weights_step"] >= budget for e, budget in zip(evals, (4000, 8000))] == [True] * 2
    assert len(evals) == 2
