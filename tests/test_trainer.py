"""The trainer (python/train.py, python/evaluate.py, python/tfdqn_trainer/): schedules, acting, the
update, the Atari wrapper, bad input, and whole runs (Pong smoke + exact resume, crash and
signal safety, CartPole learning).

Whole runs go through subprocesses exactly as a user starts them. The file takes about 2-3
minutes on a 2-core CPU; the CartPole learning test is marked slow but runs by default.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")
pytest.importorskip("ale_py", reason="the trainer needs ale-py (pip install .[atari])")
pytest.importorskip("cv2", reason="the trainer needs opencv-python-headless")

import tensorflow as tf  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import optimizers  # noqa: E402
from tfdqn_trainer import checkpoint, config, envs, networks  # noqa: E402
from tfdqn_trainer import trainer as trainer_lib  # noqa: E402
from tfdqn_trainer.build import make_pool  # noqa: E402
from tfdqn_ops import ReplayMemory  # noqa: E402

TRAIN = str(REPO / "python" / "train.py")
EVALUATE = str(REPO / "python" / "evaluate.py")

# A Pong run small enough for a test: learning from step 50, an evaluation long enough to
# finish a game (an untrained greedy agent loses 0-21 in ~800 steps), two environments.
PONG_TINY = ["--steps", "300", "--learn-start", "50", "--replay-memory", "2000",
             "--update-freq", "4", "--target-q", "100", "--ep-endt", "500",
             "--eval-freq", "250", "--eval-steps", "1500", "--save-freq", "150",
             "--prog-freq", "100", "--num-envs", "2"]


def run(args, cwd, timeout=240, env_extra=None, script=TRAIN):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


def load_networks(ckpt_dir):
    """{name: array} of a checkpoint's networks and optimizer (its tf.train.Checkpoint)."""
    reader = tf.train.load_checkpoint(os.path.join(ckpt_dir, checkpoint.AGENT))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


# ---------------------------------------------------------------------------------------------
# Schedules


def test_epsilon_schedule_dqn3_defaults():
    cfg = config.Config()
    eps = lambda s: agent_lib.linearly_decaying_epsilon(  # noqa: E731
        s, learn_start=cfg.learn_start, ep_start=cfg.ep_start, ep_end=cfg.ep_end,
        ep_endt=cfg.ep_endt)
    assert eps(0) == 1.0 and eps(50_000) == 1.0                # random play until learn_start
    assert eps(50_001) == pytest.approx(1.0 - 0.9 / 1_000_000)
    assert eps(550_000) == pytest.approx(0.55)                 # halfway
    assert eps(1_050_000) == pytest.approx(0.1)                # the end of the ramp
    assert eps(5_000_000) == pytest.approx(0.1)                # then constant
    values = [eps(s) for s in range(0, 1_200_000, 997)]
    assert all(a >= b for a, b in zip(values, values[1:]))     # never increases


def test_update_and_target_copy_timing():
    assert not agent_lib.is_update_step(50_000, 50_000, 4)     # numSteps > learn_start
    assert agent_lib.is_update_step(50_004, 50_000, 4)
    assert not agent_lib.is_update_step(50_005, 50_000, 4)
    copies = [c for c in range(1, 40_003) if agent_lib.is_target_copy_step(c, 10_000)]
    assert copies == [1, 10_001, 20_001, 30_001, 40_001]       # step % target_q == 1
    # After agent step s comes its update, then the count s + 1 decides the copy: the target
    # picks up the update made at the step that is a multiple of target_q.
    events = agent_lib.learning_events(0, 21, learn_start=0, update_freq=4, n_replay=1,
                                       target_q=8)
    assert events == [("copy", 0), ("update", 2), ("copy", 0), ("update", 2), ("copy", 0),
                      ("update", 1)]


@pytest.mark.parametrize("num_envs", [2, 3, 4, 8])
def test_num_envs_keeps_updates_and_copies_per_agent_step(num_envs):
    """N envs run the same sequence of updates and copies as one env over the same steps."""
    kw = dict(learn_start=10, update_freq=4, n_replay=2, target_q=24)

    def flat(events):
        return "".join("u" * k if e == "update" else "c" for e, k in events)

    total = 24 * 10 * num_envs
    one = flat(agent_lib.learning_events(0, total, **kw))
    many = "".join(flat(agent_lib.learning_events(s, num_envs, **kw))
                   for s in range(0, total, num_envs))
    assert many == one
    assert one.count("u") == 2 * len([s for s in range(total) if s > 10 and s % 4 == 0])


# ---------------------------------------------------------------------------------------------
# Acting


def test_greedy_ties_are_broken_uniformly_at_random():
    rng = np.random.default_rng(0)
    q = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]] * 6000, np.float32)
    picks = agent_lib.greedy_actions(q, rng)
    counts = np.bincount(picks, minlength=5)
    assert counts[0] == counts[3] == 0
    # each of the 3 tied actions: binomial(6000, 1/3), sd ~36.5; 5 sd bounds
    assert np.all(np.abs(counts[[1, 2, 4]] - 2000) < 185), counts


def test_action_selection_with_a_fixed_network():
    """A real network whose Q(s, .) is fixed to [2, 5, 5, 1]: epsilon 0 picks actions 1 and 2
    about equally and nothing else; epsilon 0.5 adds uniform random actions."""
    spec = networks.state_spec("mlp", 1, (3,))
    model = networks.build_network("mlp", 4, spec, (8,))
    for w in model.weights:
        w.assign(tf.zeros_like(w))
    model.get_layer("q").bias.assign([2.0, 5.0, 5.0, 1.0])
    q_values = networks.compile_q(model, spec)
    states = np.random.default_rng(1).standard_normal((4000, 1, 3)).astype(np.float32)
    rng = np.random.default_rng(2)
    greedy = agent_lib.select_actions(q_values, states, 0.0, 4, rng)
    counts = np.bincount(greedy, minlength=4)
    assert counts[0] == counts[3] == 0 and abs(counts[1] - 2000) < 160, counts
    mixed = np.bincount(agent_lib.select_actions(q_values, states, 0.5, 4, rng), minlength=4)
    # P(action 0) = P(action 3) = 0.5 / 4; P(1) = P(2) = 0.5 / 4 + 0.5 / 2
    assert all(abs(mixed[a] - 500) < 120 for a in (0, 3)), mixed
    assert all(abs(mixed[a] - 1500) < 160 for a in (1, 2)), mixed


def test_epsilon_one_never_runs_the_network():
    def no_network(states):
        raise AssertionError("the network ran at epsilon 1")

    actions = agent_lib.select_actions(no_network, np.zeros((5, 1)), 1.0, 3,
                                       np.random.default_rng(0))
    assert actions.shape == (5,) and set(actions) <= {0, 1, 2}


# ---------------------------------------------------------------------------------------------
# The update


def _mlp_agent(optimizer="rmsprop", double_dqn=False):
    spec = networks.state_spec("mlp", 2, (3,))
    tf.keras.utils.set_random_seed(0)
    agent = agent_lib.Agent(lambda: networks.build_network("mlp", 4, spec, (16,)), spec,
                            discount=0.99, clip_delta=1.0, lr=1e-3, double_dqn=double_dqn,
                            optimizer=optimizer)
    for w in agent.target.weights:  # a target that differs from the online network
        w.assign(w * 1.5)
    return agent, spec


def _batches(k, b=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((k, b, 3, 3)).astype(np.float32),
            rng.integers(0, 4, (k, b)).astype(np.int32),
            rng.choice([-1.0, 0.0, 1.0], (k, b)).astype(np.float32),
            (rng.random((k, b)) < 0.2).astype(np.float32))


def test_dqn3_rmsprop_is_dqn3s_formula_in_float64():
    """optimizers.rmsprop against NeuralQLearner.lua's update written out in numpy: dw is the
    NEGATIVE gradient, g = .95 g + .05 dw, g2 = .95 g2 + .05 dw^2,
    w += lr dw / sqrt(g2 - g^2 + 0.01)."""
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal(5), 3.0 * rng.standard_normal((6, 5))
    var = tf.Variable(w0, dtype=tf.float64)
    optimizer = optimizers.rmsprop(2.5e-4)
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), var)])
    w, g, g2 = w0.copy(), np.zeros(5), np.zeros(5)
    for grad in grads:
        dw = -grad
        g = 0.95 * g + 0.05 * dw
        g2 = 0.95 * g2 + 0.05 * dw * dw
        w += 2.5e-4 * dw / np.sqrt(g2 - g * g + 0.01)
    # Keras keeps the learning rate in float32: 2.5e-4 is off by 5e-8 relative.
    np.testing.assert_allclose(var.numpy() - w0, w - w0, rtol=1e-7, atol=0)
    assert np.max(np.abs(w - w0)) > 1e-4  # the steps are not negligible


@pytest.mark.parametrize("double_dqn", [False, True])
def test_update_is_huber_sum_with_dqn3_rmsprop(double_dqn):
    """K fused updates == K steps of a plain-TF Huber(sum) loss with the same RMSprop."""
    agent, spec = _mlp_agent(double_dqn=double_dqn)
    online = networks.build_network("mlp", 4, spec, (16,))
    target = networks.build_network("mlp", 4, spec, (16,))
    networks.copy_weights(agent.online, online)
    networks.copy_weights(agent.target, target)
    optimizer = optimizers.rmsprop(1e-3)
    optimizer.build(online.trainable_variables)
    windows, actions, rewards, terminals = _batches(3)
    agent.update(windows, actions, rewards, terminals)
    huber = tf.keras.losses.Huber(delta=1.0, reduction=None)
    for k in range(3):
        s, s2 = windows[k][:, :-1], windows[k][:, 1:]
        if double_dqn:
            best = tf.argmax(online(s2), axis=1, output_type=tf.int32)
            next_q = tf.gather(target(s2), best, batch_dims=1)
        else:
            next_q = tf.reduce_max(target(s2), axis=1)
        y = rewards[k] + 0.99 * (1 - terminals[k]) * next_q
        with tf.GradientTape() as tape:
            q = tf.gather(online(s), actions[k], batch_dims=1)
            loss = tf.reduce_sum(huber(y[:, None], q[:, None]))
        grads = tape.gradient(loss, online.trainable_variables)
        optimizer.apply_gradients(zip(grads, online.trainable_variables))
    for got, want in zip(agent.online.weights, online.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(w))) for w in online.weights) > 0  # not all zero


def test_fused_updates_equal_one_call_per_minibatch():
    fused, _ = _mlp_agent("adam")
    single, _ = _mlp_agent("adam")
    w, a, r, t = _batches(4, seed=3)
    stats = fused.update(w, a, r, t)
    for k in range(4):
        single.update(w[k:k + 1], a[k:k + 1], r[k:k + 1], t[k:k + 1])
    for x, y in zip(fused.online.weights + fused.optimizer.variables,
                    single.online.weights + single.optimizer.variables):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=1e-7)
    assert int(fused.optimizer.iterations.numpy()) == 4
    assert np.isfinite(float(stats.loss)) and float(stats.loss) > 0


def test_update_can_return_the_next_actions_q_values():
    agent, _ = _mlp_agent()
    w, a, r, t = _batches(2, seed=5)
    next_states = np.random.default_rng(6).standard_normal((3, 2, 3)).astype(np.float32)
    before = agent.q_values(next_states)
    stats, q = agent.update_then_q(w, a, r, t, next_states)
    np.testing.assert_allclose(q, agent.q_values(next_states), rtol=1e-5, atol=1e-6)
    assert not np.allclose(q, before)  # computed after the updates, not before


def test_torch7_default_initialization():
    model = networks.nature_network(6)
    bounds = {"conv1": 1 / np.sqrt(4 * 8 * 8), "conv2": 1 / np.sqrt(32 * 4 * 4),
              "conv3": 1 / np.sqrt(64 * 3 * 3), "fc": 1 / np.sqrt(3136), "q": 1 / np.sqrt(512)}
    for name, bound in bounds.items():
        kernel, bias = model.get_layer(name).weights
        for w in (kernel.numpy(), bias.numpy()):
            assert np.abs(w).max() <= np.float32(bound) * (1 + 1e-6)  # float32 rounding
        # uniform over the whole range (kernels: thousands of draws; the head's 6 biases
        # would miss 0.9 of the bound half the time)
        assert np.abs(kernel.numpy()).max() > 0.9 * bound
        assert np.count_nonzero(bias.numpy()) == bias.shape[0]  # unlike Keras' zero biases
    assert model.output_shape == (None, 6)
    assert networks.count_parameters(model) == 1_687_206  # the Nature network for 6 actions


# ---------------------------------------------------------------------------------------------
# Atari preprocessing and the life-loss wrapper


def test_shrink_weights_follow_torch7_area_rule():
    np.testing.assert_allclose(envs.shrink_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    w = envs.shrink_weights(210, 84)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.count_nonzero(w[0]) == 3  # 210 / 84 = 2.5 source rows per output row


def test_preprocessor_matches_the_reference():
    rng = np.random.default_rng(0)
    pre = envs.Preprocessor(210, 160)
    off = 0
    for _ in range(5):
        a, b = rng.integers(0, 256, (2, 210, 160, 3), dtype=np.uint8)
        got = pre(a, b).astype(int)
        want = envs.preprocess_reference(a, b).astype(int)
        assert got.shape == (84, 84)
        assert np.abs(got - want).max() <= 1  # float32 vs float64 at a .5 rounding boundary
        off += np.count_nonzero(got != want)
    assert off < 5 * 84 * 84 // 1000
    # the max of two frames: a pixel lit in either frame is lit
    a = np.zeros((210, 160, 3), np.uint8)
    b = np.zeros_like(a)
    a[:105] = 255
    b[105:] = 255
    assert (pre(a, b) == 255).all()


def _breakout(training):
    cfg = config.Config(env="ALE/Breakout-v5")
    return envs.make_env(cfg, training=training)


def test_life_loss_is_terminal_but_the_game_goes_on():
    env = _breakout(training=True)
    ale = env.unwrapped.ale
    obs, info = env.reset(seed=0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and info["lives"] == 5
    rng = np.random.default_rng(0)
    for _ in range(5000):
        obs, reward, terminated, truncated, info = env.step(rng.integers(env.action_space.n))
        if terminated:
            break
    assert terminated and info["life_lost"] and not info["game_over"]
    assert info["lives"] == 4
    frame_before = ale.getEpisodeFrameNumber()
    obs, info = env.reset()  # continues: 2..31 no-op frames, same game
    assert not info["new_game"] and info["lives"] == 4 == ale.lives()
    assert frame_before + 2 <= ale.getEpisodeFrameNumber() <= frame_before + 31
    # ... until the game is really over; then reset() starts a new game
    lost = 1
    for _ in range(50_000):
        obs, reward, terminated, truncated, info = env.step(rng.integers(env.action_space.n))
        if terminated and not info["game_over"]:
            lost += 1
            env.reset()
        elif info["game_over"]:
            break
    assert info["game_over"] and terminated and lost == 4
    obs, info = env.reset()
    assert info["new_game"] and info["lives"] == 5
    assert 2 <= ale.getEpisodeFrameNumber() <= 31
    env.close()


def test_evaluation_env_ends_only_at_game_over():
    env = _breakout(training=False)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    lives_seen = set()
    for _ in range(50_000):
        obs, reward, terminated, truncated, info = env.step(rng.integers(env.action_space.n))
        lives_seen.add(info["lives"])
        if terminated or truncated:
            break
    assert info["game_over"] and info["lives"] == 0
    assert {1, 2, 3, 4} <= lives_seen  # lives were lost on the way without a terminal
    env.close()


def test_atari_env_state_round_trip():
    """get_state/set_state (used by checkpoints) replays the emulator exactly."""
    env = _breakout(training=True)
    env.reset(seed=3)
    for a in [1, 2, 3, 1, 0, 2]:
        env.step(a)
    saved = env.get_state()
    actions = np.random.default_rng(4).integers(0, 4, 200)
    first = [env.step(a)[0] for a in actions]
    other = _breakout(training=True)
    other.reset(seed=99)
    other.set_state(saved)
    second = [other.step(a)[0] for a in actions]
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert any(not np.array_equal(first[0], x) for x in first[1:])  # the game did move


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, before any slow work


@pytest.mark.parametrize("args, message", [
    (["--steps", "-5"], "--steps must be a positive integer, got -5"),
    (["--replay-memory", "16"], "--replay-memory 16 is smaller than --minibatch-size 32"),
    (["--ep-end", "1.5"], "--ep-end is an epsilon and must be in [0, 1], got 1.5"),
    (["--eval-ep", "-0.1"], "--eval-ep is an epsilon and must be in [0, 1]"),
    (["--env", "NoSuchGame-v9"], "--env 'NoSuchGame-v9'"),
    (["--env", "ALE/NoSuchGame-v5"], "--env 'ALE/NoSuchGame-v5'"),
    (["--env", "Pendulum-v1"], "DQN needs Discrete actions"),
    (["--actors", "4"], "--actors is a setting of Ape-X: run tfdqn-apex"),
    (["--resume", "{tmp}"], "is not a run directory (no config.json)"),
    (["--resume", "{tmp}/missing"], "no such directory"),
])
def test_bad_input_exits_2_with_one_message(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    t = time.time()
    result = run(args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("train.py: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert time.time() - t < 30  # no training, no TensorFlow start-up work beyond import
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_run_without_checkpoint_or_changed_settings(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.config_to_json(config.Config()))
    result = run(["--resume", str(run_dir)], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "has no complete checkpoint" in result.stderr
    (run_dir / "checkpoints" / "ckpt-000000000100").mkdir(parents=True)  # incomplete
    result = run(["--resume", str(run_dir)], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "has no complete checkpoint" in result.stderr


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it creates a file (what a hostile checkpoint could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_earlier_pickle_checkpoints_are_refused_without_running_code(tmp_path):
    import pickle
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "ckpt-000000000100"
    ckpt.mkdir(parents=True)
    (run_dir / "config.json").write_text(config.config_to_json(config.Config()))
    (ckpt / "info.json").write_text(json.dumps({"step": 100}))
    marker = tmp_path / "code-ran"
    (ckpt / "state.pkl").write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    for script, args in ((TRAIN, ["--resume", str(run_dir)]),
                         (EVALUATE, [str(run_dir), "--latest"])):
        result = run(args, cwd=tmp_path, timeout=60, script=script)
        assert result.returncode == 2, result.stderr
        assert "earlier version (state.pkl, a pickle)" in result.stderr
        assert f"python python/convert_checkpoint.py {run_dir}" in result.stderr
    assert not marker.exists()


def test_plain_state_round_trips_values_and_environments():
    from tfdqn_trainer import plain_state
    value = {"tuple": (1, 2.5, None), "bytes": b"\x00\xff", "big": 2 ** 100,
             "array": np.arange(6, dtype=np.uint8).reshape(2, 3), "scalar": np.float32(1.5),
             "nested": [{"generator": np.random.default_rng(3).bit_generator.state}]}
    again = plain_state.loads(plain_state.dumps(value))
    assert again["tuple"] == (1, 2.5, None) and again["bytes"] == b"\x00\xff"
    assert again["big"] == 2 ** 100 and again["scalar"].dtype == np.float32
    assert np.array_equal(again["array"], value["array"]) and again["array"].dtype == np.uint8
    assert again["nested"] == value["nested"]
    with pytest.raises(TypeError, match="not plain data"):
        plain_state.dumps({"f": lambda: 0})

    # an environment continues exactly from a captured state, in an env built the same way
    cfg = _classic()
    a, b = envs.make_env(cfg, training=True), envs.make_env(cfg, training=True)
    a.reset(seed=1)
    b.reset(seed=2)
    actions = np.random.default_rng(0).integers(0, 2, 40)
    for action in actions[:10]:
        a.step(int(action))
    snapshot = plain_state.loads(plain_state.dumps(plain_state.capture(a)))
    plain_state.restore(b, snapshot)
    for action in actions[10:]:
        out_a, out_b = a.step(int(action)), b.step(int(action))
        assert np.array_equal(out_a[0], out_b[0]) and out_a[1:4] == out_b[1:4]
        if out_a[2] or out_a[3]:
            assert np.array_equal(a.reset()[0], b.reset()[0])  # the env's own RNG too


def test_checkpoint_of_other_networks_is_a_clear_error(tmp_path):
    small, _ = _mlp_agent()
    small.write(str(tmp_path / "agent"))
    spec = networks.state_spec("mlp", 2, (3,))
    for hidden in ((32,), (16, 16)):  # other shapes; another layer
        other = agent_lib.Agent(lambda: networks.build_network("mlp", 4, spec, hidden), spec,
                                discount=0.99, clip_delta=1.0, lr=1e-3)
        with pytest.raises(ValueError, match="does not match this run's networks"):
            other.read(str(tmp_path / "agent"))
    same, _ = _mlp_agent()
    same.read(str(tmp_path / "agent"))
    a, b = small.get_state(), same.get_state()
    assert all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k]))


def test_jit_compile_trains(tmp_path):
    run_dir = str(tmp_path / "xla")
    result = run(["--preset", "classic", "--jit-compile", "--steps", "1600", "--eval-freq", "0",
                  "--prog-freq", "800", "--run-dir", run_dir], cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    last = read_metrics(run_dir, "train")[-1]
    assert last["step"] == 1600 and last["updates"] > 0 and np.isfinite(last["loss"])


def test_jit_compile_failure_is_a_clear_error():
    """A network XLA cannot compile (a numpy_function inside) -> JitCompileError, which
    train.py turns into one message and exit code 2, before any update runs."""
    spec = networks.state_spec("mlp", 1, (3,))

    def make_network():
        inputs = tf.keras.Input((1, 3))
        x = tf.keras.layers.Flatten()(inputs)
        x = tf.keras.layers.Lambda(lambda t: tf.reshape(
            tf.numpy_function(lambda a: a, [t], tf.float32), [-1, 3]))(x)
        return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x))

    with pytest.raises(agent_lib.JitCompileError, match="--jit-compile: XLA cannot compile"):
        agent_lib.Agent(make_network, spec, discount=0.99, clip_delta=1.0, lr=1e-3,
                        jit_compile=True)


def test_help_lists_every_setting_with_its_default():
    result = run(["--help"], cwd=REPO, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in ("--steps", "--learn-start", "--replay-memory", "--update-freq", "--target-q",
                 "--ep-end", "--ep-endt", "--minibatch-size", "--lr", "--discount",
                 "--clip-delta", "--eval-freq", "--eval-steps", "--save-freq", "--seed",
                 "--env", "--preset", "--double-dqn", "--num-envs", "--run-dir", "--resume",
                 "--jit-compile"):
        assert name in text
    assert "(default: 50000; dopamine: 20000; minatar: 5000; classic: 1000)" in text
    assert "(default: 0.00025; dopamine: 0.00025; minatar: 0.00025; classic: 0.001)" in text
    assert "(default: ALE/Pong-v5; minatar: MinAtar/Breakout-v0; classic: CartPole-v1)" in text


def test_explicit_flags_override_the_preset():
    cfg, _ = config.parse_args(["--preset", "classic", "--lr", "0.01", "--target-q", "7"])
    assert (cfg.lr, cfg.target_q) == (0.01, 7)
    assert cfg.env == "CartPole-v1" and cfg.hist_len == 1  # the rest from the preset
    cfg, _ = config.parse_args([])
    assert (cfg.learn_start, cfg.ep_endt, cfg.replay_memory) == (50_000, 1_000_000, 1_000_000)


# ---------------------------------------------------------------------------------------------
# The trainer's parts (python/tfdqn_trainer/trainer.py)


def _classic(**overrides):
    cfg, _ = config.parse_args(["--preset", "classic"])
    return config.dataclasses.replace(cfg, **overrides)


def test_actor_runs_alone_with_any_q_function():
    """The acting part needs a Q function, a pool and a replay memory, no learner (what an
    actor process of a distributed trainer runs)."""
    cfg = _classic(num_envs=3, learn_start=0, ep_endt=100, ep_end=0.0)
    pool = make_pool(cfg, cfg.num_envs, training=True)
    replay = ReplayMemory(1000, frame_shape=pool.codec.frame_shape, history=cfg.hist_len,
                          num_envs=cfg.num_envs, seed=1)
    calls = []

    def q_values(states):
        calls.append(len(states))
        return np.tile(np.array([0.0, 1.0], np.float32), (len(states), 1))  # always action 1

    actor = trainer_lib.Actor(cfg, pool, replay, q_values, rng=np.random.default_rng(0),
                              epsilon=trainer_lib.epsilon_schedule(cfg),
                              times=trainer_lib.PhaseTimes())
    pool.reset([1, 2, 3])
    step, games = 0, 0
    for _ in range(200):
        acted = actor.act(step)
        assert acted.epsilon == actor.epsilon(step) and acted.steps == 3
        step += acted.steps
        games += len(acted.finished)
    assert len(replay) == 600 and games > 0  # every env step stored; pushing right ends games
    assert calls and all(n == 3 for n in calls)  # greedy steps ran the network on all envs
    # a prefetched Q is used once instead of the network (epsilon 0: every action greedy)
    taken, env_step = [], pool.step
    pool.step = lambda actions: taken.append(np.array(actions)) or env_step(actions)
    actor.prefetched_q = np.array([[1.0, 0.0]] * 3, np.float32)  # prefers action 0
    before = len(calls)
    actor.act(10_000)
    assert len(calls) == before and actor.prefetched_q is None and list(taken[-1]) == [0] * 3
    actor.act(10_003)
    assert len(calls) == before + 1 and list(taken[-1]) == [1] * 3


def test_replayed_transitions_hold_the_states_the_actor_acted_on():
    """End to end on Atari (4-frame histories, life-loss terminals, two streams): every
    state the network is given is the last 4 observations of its episode (a pure-Python
    reference; zero frames before the episode's first), every sampled transition's s is
    exactly the state the network was given when that action was chosen, s2 the one given
    at the next step of the same environment, and the action, clipped reward and terminal
    flag are the ones of that step. MinAtar's histories have one frame, so only this path
    checks the stacking that acting and learning must agree on."""
    cfg, _ = config.parse_args(["--env", "ALE/Breakout-v5", "--num-envs", "2"])
    pool = make_pool(cfg, 2, training=True)
    replay = ReplayMemory(5000, frame_shape=pool.codec.frame_shape, history=cfg.hist_len,
                          num_envs=2, seed=3)
    actor = trainer_lib.Actor(cfg, pool, replay, lambda s: np.zeros((len(s), 4), np.float32),
                              epsilon=trainer_lib.epsilon_schedule(cfg),
                              rng=np.random.default_rng(0), times=trainer_lib.PhaseTimes())
    pool.reset([11, 12])
    # per agent step, per env: the state acted on, the action, the clipped reward and
    # whether the observation it led to is terminal
    seen, actions, rewards, terminal_after = [], [], [], []
    # An independent reference for the states themselves (acting and sampling share the
    # memory's C++ code): each env's observations since its current episode began, newest
    # last; DQN 3.0's state is the last 4 of them with zero frames before the episode start.
    episode_frames = [[pool.frames[e].copy()] for e in range(2)]
    env_step = pool.step

    def reference_states():
        states = np.zeros((2, cfg.hist_len) + pool.codec.frame_shape, np.uint8)
        for e, frames in enumerate(episode_frames):
            recent = frames[-cfg.hist_len:]
            states[e, cfg.hist_len - len(recent):] = recent
        return states

    def recording_step(chosen):
        actions.append(np.array(chosen))
        was_terminal = pool.terminals.copy()
        got = env_step(chosen)
        rewards.append(np.clip(got[0], -1, 1))
        terminal_after.append(pool.terminals.copy())
        for e in range(2):  # after a terminal observation's own step a new episode begins
            if was_terminal[e]:
                episode_frames[e] = []
            episode_frames[e].append(pool.frames[e].copy())
        return got

    pool.step = recording_step
    steps = 1200
    new_episodes = 0
    for _ in range(steps):
        seen.append(actor.states().copy())
        np.testing.assert_array_equal(seen[-1], reference_states())
        new_episodes += sum(len(frames) < cfg.hist_len for frames in episode_frames)
        actor.act(0)  # epsilon 1 before learning starts: random actions, no network call
    seen.append(actor.states().copy())
    np.testing.assert_array_equal(seen[-1], reference_states())
    assert new_episodes > 0  # states with zeroed frames after lost lives were checked
    terminal_steps = 0
    for _ in range(8):
        batch = replay.sample_batch(256)
        for b, transition_id in enumerate(batch.index):
            k, e = divmod(int(transition_id), 2)  # the k-th entry of stream e: agent step k
            np.testing.assert_array_equal(batch.s[b], seen[k][e])
            np.testing.assert_array_equal(batch.s2[b], seen[k + 1][e])
            assert batch.a[b] == actions[k][e] and batch.r[b] == rewards[k][e]
            assert bool(batch.term[b]) == bool(terminal_after[k][e])
            terminal_steps += int(batch.term[b])
    assert terminal_steps > 0  # lives were lost in the sampled steps
    assert replay.stream_size(0) == steps and len(replay) == 2 * steps


class _ScriptedEnv(gym.Env):
    """Observation [reset count, step count]; step k returns script[k] = (reward,
    terminated, truncated), cycling."""

    def __init__(self, script):
        self.script, self.k, self.resets = script, 0, 0
        self.observation_space = gym.spaces.Box(-1e9, 1e9, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        return np.array([self.resets, 0], np.float32), {}

    def step(self, action):
        reward, terminated, truncated = self.script[self.k % len(self.script)]
        self.k += 1
        return np.array([self.resets, self.k], np.float32), reward, terminated, truncated, {}


def test_env_pool_terminal_is_its_own_step_and_truncation_resets_at_once():
    script = [(1.0, False, False), (2.0, True, False),   # a game of 2 steps: score 3
              (5.0, False, False), (0.5, False, True)]   # a game cut by the time limit
    env = _ScriptedEnv(script)
    pool = envs.EnvPool([env], envs.VectorCodec(2))
    decode = pool.codec.decode
    pool.reset([0])
    rewards, finished = pool.step([1])
    assert rewards[0] == 1.0 and not finished and not pool.terminals[0] and pool.acted[0]
    rewards, finished = pool.step([1])
    assert rewards[0] == 2.0 and finished == [(3.0, 2)] and pool.terminals[0]
    assert list(decode(pool.frames[0])) == [1.0, 2.0]  # the terminal observation is stored
    rewards, finished = pool.step([1])  # the terminal's own step: reset, action ignored
    assert rewards[0] == 0.0 and not finished and not pool.acted[0] and env.resets == 2
    assert not pool.terminals[0] and list(decode(pool.frames[0])) == [2.0, 0.0]
    pool.step([0])
    rewards, finished = pool.step([0])  # truncated: not a terminal, the env resets at once
    assert rewards[0] == 0.5 and finished == [(5.5, 2)] and not pool.terminals[0]
    assert env.resets == 3 and list(decode(pool.frames[0])) == [3.0, 0.0] and pool.acted[0]


def test_vector_codec_round_trips_float32_through_bytes():
    codec = envs.VectorCodec(3)
    obs = np.array([1.5, -2.25, 3e-8], np.float32)
    frame = codec.encode(obs)
    assert frame.dtype == np.uint8 and frame.shape == codec.frame_shape == (12,)
    assert np.array_equal(codec.decode(frame), obs)
    batch = np.stack([frame, np.zeros_like(frame)])[None]  # [1, 2, 12]: a zeroed frame too
    decoded = codec.decode(batch)
    assert decoded.shape == (1, 2, 3) and np.array_equal(decoded[0, 0], obs)
    assert not decoded[0, 1].any()


def test_crossed_says_when_a_period_is_passed():
    assert trainer_lib.crossed(0, 10, 10) and trainer_lib.crossed(9, 10, 10)
    assert not trainer_lib.crossed(10, 19, 10) and trainer_lib.crossed(10, 20, 10)
    assert trainer_lib.crossed(5, 37, 10)  # several multiples at once: still one event
    assert not trainer_lib.crossed(0, 1000, 0)  # period 0: never


class _CountingAgent:
    """Stands in for Agent: records the learner's calls."""

    def __init__(self):
        self.calls = []

    def update(self, windows, actions, rewards, terminals):
        self.calls.append(("update", len(windows)))
        return agent_lib.UpdateStats(np.float32(len(windows)), np.float32(2.0))

    def update_then_q(self, windows, actions, rewards, terminals, next_states):
        stats = self.update(windows, actions, rewards, terminals)
        return stats, np.full((len(next_states), 2), 7.0, np.float32)

    def copy_target(self):
        self.calls.append(("copy", 0))


def test_learner_follows_dqn3_schedule_and_returns_next_q_only_when_asked():
    cfg = _classic(num_envs=1, learn_start=4, update_freq=2, n_replay=3, target_q=6,
                   minibatch_size=4)
    replay = ReplayMemory(100, frame_shape=(4,), history=1, num_envs=1, seed=0)
    for i in range(20):
        replay.add(np.full((1, 4), i, np.uint8), np.array([0]), np.array([1.0], np.float32),
                   np.array([False]))
    agent = _CountingAgent()
    learner = trainer_lib.Learner(cfg, agent, replay, envs.VectorCodec(1),
                                  times=trainer_lib.PhaseTimes())
    total = 0
    for step in range(0, 30, 3):
        result = learner.learn(step, 3)
        assert result.next_q is None
        total += result.updates
    expected = agent_lib.learning_events(0, 30, learn_start=4, update_freq=2, n_replay=3,
                                         target_q=6)
    def flat(events):  # calls of 3 agent steps each merge updates differently than one call
        return "".join("u" * k if e == "update" else "c" for e, k in events)

    assert flat(agent.calls) == flat(expected)
    assert total == 3 * len([s for s in range(30) if s > 4 and s % 2 == 0])
    stats = learner.take_stats()
    assert stats["mean_q"] == 2.0 and learner.take_stats() == dict(loss=None, mean_q=None)
    # next states are computed (and Q returned) only with an update among the events
    asked = []
    result = learner.learn(30, 2, next_states=lambda: asked.append(1) or np.zeros((1, 1, 4)))
    assert result.updates == 3 and result.next_q.shape == (1, 2) and asked == [1]
    result = learner.learn(31, 1, next_states=lambda: asked.append(1) or np.zeros((1, 1, 4)))
    assert result == (0, None) and asked == [1]


def test_trainer_state_round_trip_keeps_the_last_100_games():
    state = trainer_lib.TrainerState(step=5, updates=2, best_score=1.5)
    for score in range(150):
        mean = state.record_game(float(score))
    assert state.games == 150 and mean == np.mean(range(50, 150))
    again = trainer_lib.TrainerState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state and again.recent_scores.maxlen == 100


# ---------------------------------------------------------------------------------------------
# Whole runs


def test_pong_smoke_run_resume_and_evaluate(tmp_path):
    """train 0 -> 150 (checkpoint) -> 300 in two processes, evaluate; the same as one
    uninterrupted 0 -> 300 run, bit for bit."""
    split, straight = str(tmp_path / "split"), str(tmp_path / "straight")
    first = run(PONG_TINY + ["--steps", "150", "--run-dir", split], cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert os.path.isdir(os.path.join(split, "checkpoints", "ckpt-000000000150"))
    second = run(["--resume", split, "--steps", "300"], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout and "from step 150" in second.stdout

    # what the run leaves
    cfg = json.loads(pathlib.Path(split, "config.json").read_text())
    assert cfg["env"] == "ALE/Pong-v5" and cfg["steps"] == 300 and cfg["learn_start"] == 50
    evals = read_metrics(split, "eval")
    assert [e["step"] for e in evals] == [250]
    assert evals[0]["eval_episodes"] >= 1
    # an untrained agent loses Pong: a score that is not (a wrong sign, lost rewards, a
    # game cut short) is a broken evaluation
    assert evals[0]["eval_mean_score"] <= -19
    train = read_metrics(split, "train")
    assert [t["step"] for t in train] == [100, 200, 300]
    assert train[-1]["updates"] == len([s for s in range(300) if s > 50 and s % 4 == 0])
    assert np.isfinite(train[-1]["loss"]) and train[-1]["epsilon"] < 1.0
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(
        os.path.join(split, "tb")))
    assert checkpoint.has_best(split)
    assert checkpoint.latest(split).endswith("ckpt-000000000300")

    # exact resume: the same networks, optimizer state and replay as an unbroken run
    whole = run(PONG_TINY + ["--run-dir", straight], cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    a = load_networks(checkpoint.latest(split))
    b = load_networks(checkpoint.latest(straight))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(k.startswith("optimizer") for k in a) and any(k.startswith("target") for k in a)
    replay_a = pathlib.Path(checkpoint.latest(split), "replay.bin").read_bytes()
    replay_b = pathlib.Path(checkpoint.latest(straight), "replay.bin").read_bytes()
    assert replay_a == replay_b
    assert read_metrics(split, "eval")[0]["eval_mean_score"] == \
        read_metrics(straight, "eval")[0]["eval_mean_score"]

    result = run([split, "--episodes", "1"], cwd=tmp_path, script=EVALUATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best network (step 250" in result.stdout
    assert "mean score" in result.stdout and "over 1 games" in result.stdout


def test_sigterm_saves_and_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    run_dir = str(tmp_path / "cp")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, TRAIN, "--preset", "classic", "--steps", "1000000", "--eval-freq", "0",
         "--save-freq", "0", "--prog-freq", "500", "--run-dir", run_dir],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until it is training
            if line.startswith("step 2,0"):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    stopped_at = int(json.loads(pathlib.Path(checkpoint.latest(run_dir), "info.json")
                                .read_text())["step"])
    assert stopped_at >= 2000

    # a SIGKILL in the middle of the next save: the previous checkpoint survives. The fault is
    # injected from outside (a sitecustomize module that wraps the atomic save so that the
    # process dies once the files are written, before the rename), not by a hook in the code.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "from tfdqn_trainer import checkpoint\n"
        "_save_atomic = checkpoint._save_atomic\n"
        "def _die_before_rename(root, name, prefix, write):\n"
        "    def write_then_die(tmp):\n"
        "        write(tmp)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _save_atomic(root, name, prefix, write_then_die)\n"
        "checkpoint._save_atomic = _die_before_rename\n")
    # (site imports sitecustomize before the script's directory is on the path: the source
    # trainer comes from PYTHONPATH, so that hook and run patch and use the same module)
    path = os.pathsep.join(filter(None, [str(hooks), str(REPO / "python"),
                                         os.environ.get("PYTHONPATH")]))
    crash = run(["--resume", run_dir, "--steps", str(stopped_at + 400), "--save-freq", "200"],
                cwd=tmp_path, env_extra={"PYTHONPATH": path})
    assert crash.returncode == -signal.SIGKILL
    ckpts = os.listdir(os.path.join(run_dir, "checkpoints"))
    assert any(name.startswith(checkpoint.TMP_PREFIX) for name in ckpts)  # the partial save
    assert checkpoint.latest(run_dir).endswith(f"ckpt-{stopped_at:012d}")

    done = run(["--resume", run_dir, "--steps", str(stopped_at + 400)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"from step {stopped_at:,}" in done.stdout
    assert checkpoint.latest(run_dir).endswith(f"ckpt-{stopped_at + 400:012d}")
    assert os.listdir(os.path.join(run_dir, "checkpoints")) == [f"ckpt-{stopped_at + 400:012d}"]


@pytest.mark.slow
def test_cartpole_learns_with_the_classic_preset(tmp_path):
    run_dir = str(tmp_path / "cartpole")
    result = run(["--preset", "classic", "--steps", "30000", "--stop-score", "195",
                  "--run-dir", run_dir], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    evals = read_metrics(run_dir, "eval")
    assert evals and max(e["eval_mean_score"] or 0 for e in evals) >= 195, evals
    assert evals[-1]["step"] <= 30_000 and evals[-1]["eval_episodes"] >= 5
    result = run([run_dir, "--episodes", "5", "--epsilon", "0"], cwd=tmp_path, script=EVALUATE)
    assert result.returncode == 0 and "mean score" in result.stdout
