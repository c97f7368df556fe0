"""n-step returns and prioritized replay in the trainer (--n-step, --prioritized).

The weighted update against the plain one and against a plain-TF weighted Huber loss; the
new priorities (the unclipped |TD error|) against the op's delta; the importance
exponent's schedule; and whole CartPole runs: learning with both options, exact resume.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

import tensorflow as tf  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import checkpoint, config, networks  # noqa: E402
from tfdqn_trainer import trainer as trainer_lib  # noqa: E402

TRAIN = str(REPO / "python" / "train.py")


def mlp_agent(optimizer="adam", double_dqn=False, clip_delta=1.0):
    spec = networks.state_spec("mlp", 2, (3,))
    tf.keras.utils.set_random_seed(0)
    agent = agent_lib.Agent(lambda: networks.build_network("mlp", 4, spec, (16,)), spec,
                            discount=0.99, clip_delta=clip_delta, lr=1e-3,
                            double_dqn=double_dqn, optimizer=optimizer)
    for w in agent.target.weights:  # a target that differs from the online network
        w.assign(w * 1.5)
    return agent


def batch(b=32, seed=0):
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((b, 3, 3)).astype(np.float32)
    return (windows, rng.integers(0, 4, b).astype(np.int32),
            rng.choice([-1.0, 0.0, 1.0, 4.0], b).astype(np.float32),
            (rng.random(b) < 0.2).astype(np.float32))


@pytest.mark.parametrize("double_dqn", [False, True])
def test_weighted_update_with_unit_weights_is_the_plain_update(double_dqn):
    """One-step discounts (gamma, 0 at terminals) and weights 1: bit for bit DQN 3.0's."""
    plain, weighted = mlp_agent("rmsprop", double_dqn), mlp_agent("rmsprop", double_dqn)
    windows, a, r, t = batch()
    plain.update(windows[None], a[None], r[None], t[None])
    discounts = np.where(t == 1, 0.0, np.float32(0.99)).astype(np.float32)
    weighted.update_weighted(windows[:, :-1], windows[:, 1:], a, r, t, discounts,
                             np.ones(32, np.float32))
    for x, y in zip(plain.online.weights + plain.optimizer.variables,
                    weighted.online.weights + weighted.optimizer.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_weighted_update_is_a_weighted_huber_sum_with_per_row_discounts():
    agent = mlp_agent("adam")
    online = networks.build_network("mlp", 4, networks.state_spec("mlp", 2, (3,)), (16,))
    networks.copy_weights(agent.online, online)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(online.trainable_variables)
    windows, a, r, t = batch(seed=1)
    s, s2 = windows[:, :-1], windows[:, 1:]
    rng = np.random.default_rng(2)
    discounts = np.where(t == 1, 0, 0.99 ** rng.integers(1, 4, 32)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, 32).astype(np.float32)
    next_q = tf.reduce_max(agent.target(s2), axis=1)
    y = r + discounts * (1 - t) * next_q
    with tf.GradientTape() as tape:
        q = tf.gather(online(s), a, batch_dims=1)
        huber = tf.keras.losses.Huber(delta=1.0, reduction=None)(y[:, None], q[:, None])
        loss = tf.reduce_sum(weights * huber)
    optimizer.apply_gradients(zip(tape.gradient(loss, online.trainable_variables),
                                  online.trainable_variables))
    stats, td_abs = agent.update_weighted(s, s2, a, r, t, discounts, weights)
    for got, want in zip(agent.online.weights, online.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(stats.loss), float(loss) / 32, rtol=1e-5)
    np.testing.assert_allclose(td_abs, np.abs(y - q.numpy()), rtol=1e-5, atol=1e-6)


def test_new_priorities_are_the_ops_unclipped_td_error():
    """|err| where the op did not clip equals |delta| bit for bit; where it clipped, it is
    larger than the clip (a clipped |delta| would make every large error look alike)."""
    import tfdqn_ops
    agent = mlp_agent("adam", clip_delta=0.5)
    windows, a, r, t = batch(b=256, seed=3)
    s, s2 = windows[:, :-1], windows[:, 1:]
    discounts = np.where(t == 1, 0.0, np.float32(0.97)).astype(np.float32)
    # Q as the update computes it (the XLA-compiled acting forward pass may differ in the
    # last bit).
    q = agent.online(s, training=True)
    out = tfdqn_ops.dqn_targets(q, agent.target(s2), a, r, t, discount=discounts,
                                clip_delta=0.5)
    _, td_abs = agent.update_weighted(s, s2, a, r, t, discounts, np.ones(256, np.float32))
    delta = np.abs(out.delta.numpy())
    inside = delta < 0.5
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(td_abs[inside], delta[inside])
    assert np.all(td_abs[~inside] >= 0.5)


def test_importance_exponent_rises_from_its_start_to_one():
    cfg = config.Config(steps=1000, importance_exponent=0.4, prioritized=True)
    learner = trainer_lib.Learner.__new__(trainer_lib.Learner)
    learner.cfg = cfg
    assert learner.importance_exponent(0) == 0.4
    assert learner.importance_exponent(500) == pytest.approx(0.7)
    assert learner.importance_exponent(1000) == 1.0
    assert learner.importance_exponent(5000) == 1.0


def test_importance_weights_are_normalized_over_the_batch_or_the_memory():
    weights = np.array([0.02, 0.05, 0.025, 0.01], np.float32)  # the memory's, max over all
    batch = trainer_lib.importance_weights(weights, "batch")
    np.testing.assert_allclose(batch, weights / 0.05, rtol=1e-7)
    assert batch.dtype == np.float32 and batch.max() == 1.0
    assert trainer_lib.importance_weights(weights, "memory") is weights
    with pytest.raises(ValueError, match="must be 'batch' or 'memory', got 'max'"):
        trainer_lib.importance_weights(weights, "max")


def test_runs_saved_before_the_normalization_flag_resume_with_the_memorys():
    saved = config.config_to_json(config.Config(prioritized=True))
    values = json.loads(saved)
    assert values.pop("importance_normalization") == "batch"  # today's default
    assert config.config_from_dict(values).importance_normalization == "memory"


@pytest.mark.parametrize("args, message", [
    (["--importance-normalization", "max"], "--importance-normalization"),
    (["--n-step", "0"], "--n-step must be an integer in [1, 1000], got 0"),
    (["--priority-exponent", "0"], "--priority-exponent must be > 0, got 0.0"),
    (["--importance-exponent", "1.5"], "--importance-exponent must be in [0, 1], got 1.5"),
    (["--priority-epsilon", "-1"], "--priority-epsilon must be > 0, got -1.0"),
    (["--n-step", "40", "--replay-memory", "64", "--num-envs", "2"],
     "each needs at least --hist-len + --n-step = 41"),
])
def test_bad_settings_exit_2_with_one_message(tmp_path, args, message):
    result = subprocess.run([sys.executable, TRAIN, "--preset", "classic", *args,
                             "--run-dir", str(tmp_path / "r")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def run(args, cwd, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_evals(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == "eval"]


def test_cartpole_learns_with_n_step_prioritized_replay(tmp_path):
    run_dir = str(tmp_path / "cartpole")
    result = run(["--preset", "classic", "--n-step", "3", "--prioritized", "--steps", "30000",
                  "--stop-score", "475", "--run-dir", run_dir], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    evals = read_evals(run_dir)
    assert evals and max(e["eval_mean_score"] or 0 for e in evals) >= 475, evals


def test_prioritized_run_resumes_bit_for_bit(tmp_path):
    """0 -> 3000 (checkpoint) -> 6000 in two processes equals one 0 -> 6000 run: networks,
    optimizer, and the replay memory with its priorities. (beta is held at 1: its schedule
    runs to --steps, which the resume extends.)"""
    common = ["--preset", "classic", "--n-step", "2", "--prioritized", "--learn-start", "500",
              "--eval-freq", "0", "--save-freq", "3000", "--importance-exponent", "1"]
    split, straight = str(tmp_path / "split"), str(tmp_path / "straight")
    first = run(common + ["--steps", "3000", "--run-dir", split], cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run(["--resume", split, "--steps", "6000"], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    whole = run(common + ["--steps", "6000", "--run-dir", straight], cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    a, b = checkpoint.latest(split), checkpoint.latest(straight)
    assert a.endswith("ckpt-000000006000") and b.endswith("ckpt-000000006000")
    replay_a = pathlib.Path(a, "replay.bin").read_bytes()
    assert replay_a == pathlib.Path(b, "replay.bin").read_bytes()
    assert replay_a[8:12] == (2).to_bytes(4, "little")  # the version with priorities
    reader_a = tf.train.load_checkpoint(os.path.join(a, checkpoint.AGENT))
    reader_b = tf.train.load_checkpoint(os.path.join(b, checkpoint.AGENT))
    names = [n for n in reader_a.get_variable_to_shape_map()
             if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert names and all(np.array_equal(reader_a.get_tensor(n), reader_b.get_tensor(n))
                         for n in names)
