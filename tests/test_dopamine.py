"""`--preset dopamine`: Dopamine's DQN as its published Atari baselines ran (google/dopamine),
and the two departures from DQN 3.0's alewrap that the Atari wrapper no longer makes.

Each Dopamine setting is pinned to the file it comes from; the optimizer is checked against
TF1's own kernel and a float64 transcription of it; the environment against Dopamine's
AtariPreprocessing.step written out here over the raw emulator.
"""

import sys
import pathlib

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")
ale_py = pytest.importorskip("ale_py", reason="the trainer needs ale-py (pip install .[atari])")
cv2 = pytest.importorskip("cv2", reason="the trainer needs opencv-python-headless")

import tensorflow as tf  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import optimizers  # noqa: E402
from tfdqn_trainer import config, envs, networks  # noqa: E402

# Every setting of the preset and where Dopamine sets it (paths in google/dopamine).
DQN_GIN = "dopamine/agents/dqn/configs/dqn.gin"
ATARI_LIB = "dopamine/discrete_domains/atari_lib.py"
DQN_AGENT = "dopamine/agents/dqn/dqn_agent.py"
RUNNER = "dopamine/atari/run_experiment.py"
DOPAMINE_SETTINGS = {
    # name: (value, source)
    "discount": (0.99, DQN_GIN + " DQNAgent.gamma"),
    "n_step": (1, DQN_GIN + " DQNAgent.update_horizon"),
    "learn_start": (20_000, DQN_GIN + " DQNAgent.min_replay_history"),
    "update_freq": (4, DQN_GIN + " DQNAgent.update_period"),
    "n_replay": (1, DQN_AGENT + " _train_step: one minibatch per update period"),
    "target_q": (8_000, DQN_GIN + " DQNAgent.target_update_period"),
    "ep_start": (1.0, DQN_AGENT + " linearly_decaying_epsilon starts at 1"),
    "ep_end": (0.01, DQN_GIN + " DQNAgent.epsilon_train"),
    "ep_endt": (250_000, DQN_GIN + " DQNAgent.epsilon_decay_period"),
    "eval_ep": (0.001, DQN_GIN + " DQNAgent.epsilon_eval"),
    "optimizer": ("rmsprop-tf1", DQN_GIN + " DQNAgent.optimizer = @tf.train.RMSPropOptimizer"),
    "lr": (2.5e-4, DQN_GIN + " RMSPropOptimizer.learning_rate"),
    "rms_epsilon": (1e-5, DQN_GIN + " RMSPropOptimizer.epsilon"),
    "loss_reduction": ("mean", DQN_AGENT + " minimize(tf.reduce_mean(huber_loss))"),
    "clip_delta": (1.0, DQN_AGENT + " tf.losses.huber_loss, delta 1"),
    "replay_memory": (1_000_000, DQN_GIN + " WrappedReplayBuffer.replay_capacity"),
    "minibatch_size": (32, DQN_GIN + " WrappedReplayBuffer.batch_size"),
    "eval_freq": (250_000, DQN_GIN + " Runner.training_steps"),
    "eval_steps": (125_000, DQN_GIN + " Runner.evaluation_steps"),
    "sticky_actions": (0.25, ATARI_LIB + " create_atari_environment: NoFrameskip-v0"),
    "random_starts": (0, ATARI_LIB + " create_atari_environment: no no-op starts"),
    "life_loss_terminal": (False, ATARI_LIB + " AtariPreprocessing terminal_on_life_loss"),
    "actrep": (4, ATARI_LIB + " AtariPreprocessing frame_skip"),
    "preprocess": ("dopamine", ATARI_LIB + " AtariPreprocessing grayscale, max, INTER_AREA"),
    "hist_len": (4, ATARI_LIB + " NATURE_DQN_STACK_SIZE"),
    "network": ("nature", ATARI_LIB + " nature_dqn_network"),
    "init": ("glorot", ATARI_LIB + " slim defaults: xavier_initializer, zero biases"),
    "conv_padding": ("same", ATARI_LIB + " slim.conv2d default padding SAME"),
    "reward_clip": (1.0, RUNNER + " np.clip(reward, -1, 1)"),
    "count_terminal_steps": (False, RUNNER + " one agent step per env.step"),
}


def _dopamine_cfg(*flags):
    cfg, _ = config.parse_args(["--preset", "dopamine", "--env", "ALE/Breakout-v5", *flags])
    config.validate(cfg)
    envs.check_env(cfg)
    return cfg


def test_preset_is_dopamines_dqn_gin_setting_by_setting():
    cfg = _dopamine_cfg()
    wrong = {name: (getattr(cfg, name), value, source)
             for name, (value, source) in DOPAMINE_SETTINGS.items()
             if getattr(cfg, name) != value}
    assert not wrong, wrong
    assert config.PRESETS["dopamine"].keys() <= DOPAMINE_SETTINGS.keys()  # nothing unpinned
    # Runner.max_steps_per_episode = 27,000 agent steps: ALE/<Game>-v5's own frame cap at
    # frame skip 4.
    assert gym.spec(cfg.env).kwargs["max_num_frames_per_episode"] == 27_000 * cfg.actrep


def test_explicit_flags_win_over_the_dopamine_preset():
    cfg = _dopamine_cfg("--sticky-actions", "0", "--init", "torch7", "--target-q", "100")
    assert (cfg.sticky_actions, cfg.init, cfg.target_q) == (0.0, "torch7", 100)
    assert cfg.optimizer == "rmsprop-tf1" and cfg.ep_end == 0.01  # the rest from the preset


def test_epsilon_follows_dopamines_linearly_decaying_epsilon():
    cfg = _dopamine_cfg()

    def dopamine_epsilon(step):  # dqn_agent.py linearly_decaying_epsilon, written out
        steps_left = 250_000 + 20_000 - step
        bonus = np.clip((1.0 - 0.01) * steps_left / 250_000, 0.0, 1.0 - 0.01)
        return 0.01 + bonus

    for step in (0, 19_999, 20_000, 20_001, 100_000, 269_999, 270_000, 1_000_000):
        got = agent_lib.linearly_decaying_epsilon(
            step, learn_start=cfg.learn_start, ep_start=cfg.ep_start, ep_end=cfg.ep_end,
            ep_endt=cfg.ep_endt)
        assert got == pytest.approx(dopamine_epsilon(step), abs=1e-12), step


@pytest.mark.parametrize("args, message", [
    (["--sticky-actions", "1.5"], "--sticky-actions is a probability and must be in [0, 1]"),
    (["--rms-epsilon", "0"], "--rms-epsilon must be > 0, got 0.0"),
])
def test_bad_new_settings_are_clear_errors(args, message):
    cfg, _ = config.parse_args(["--preset", "dopamine", *args])
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.validate(cfg)


def test_sticky_actions_are_refused_outside_atari():
    cfg, _ = config.parse_args(["--preset", "classic", "--sticky-actions", "0.25"])
    config.validate(cfg)
    with pytest.raises(config.ConfigError, match="--sticky-actions 0.25 applies to ALE Atari"):
        envs.check_env(cfg)


# ---------------------------------------------------------------------------------------------
# TF1's centered RMSProp


def _tf1_centered_rmsprop_float64(w0, grads, lr, rho, epsilon):
    """TF1's ApplyCenteredRMSProp (tensorflow/core/kernels/training_ops.cc) with momentum 0,
    its slots as tf.compat.v1.train.RMSPropOptimizer creates them: ms = 1, mg = 0."""
    w, ms, mg = w0.astype(np.float64).copy(), np.ones_like(w0, np.float64), np.zeros_like(w0)
    for grad in grads:
        ms = ms + (grad * grad - ms) * (1 - rho)
        mg = mg + (grad - mg) * (1 - rho)
        w = w - lr * grad / np.sqrt(ms - mg * mg + epsilon)
    return w


def test_tf1_rmsprop_is_tf1s_formula_in_float64():
    rng = np.random.default_rng(0)
    # small gradients, as a DQN's early ones: where TF1's ms = 1 start matters most
    w0, grads = rng.standard_normal(7), 1e-2 * rng.standard_normal((40, 7))
    var = tf.Variable(w0, dtype=tf.float64)
    optimizer = optimizers.make_optimizer("rmsprop-tf1", 2.5e-4, epsilon=1e-5)
    optimizer.build([var])
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), var)])
    want = _tf1_centered_rmsprop_float64(w0, grads, 2.5e-4, 0.95, 1e-5)
    np.testing.assert_allclose(var.numpy() - w0, want - w0, rtol=1e-12, atol=0)
    assert np.max(np.abs(want - w0)) > 1e-5  # the steps are not negligible


def test_tf1_rmsprop_matches_tf1s_own_kernel_in_float32():
    """The same steps as tf.raw_ops.ApplyCenteredRMSProp, TF1's kernel itself, fed the
    slots TF1's optimizer starts from (ms = 1, mg = 0, mom = 0)."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 5)).astype(np.float32)
    grads = (rng.standard_normal((30, 3, 5)) * rng.choice([1e-3, 1.0], (30, 1, 1))
             ).astype(np.float32)
    ours = tf.Variable(w0)
    optimizer = optimizers.TF1CenteredRMSprop(2.5e-4, rho=0.95, epsilon=1e-5)
    optimizer.build([ours])
    var, ms = tf.Variable(w0), tf.Variable(tf.ones_like(w0))
    mg, mom = tf.Variable(tf.zeros_like(w0)), tf.Variable(tf.zeros_like(w0))
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), ours)])
        tf.raw_ops.ResourceApplyCenteredRMSProp(
            var=var.handle, mg=mg.handle, ms=ms.handle, mom=mom.handle, lr=2.5e-4, rho=0.95,
            momentum=0.0, epsilon=1e-5, grad=tf.constant(grad))
    # float32 rounding of two implementations (Eigen's vectorized kernel and TF's ops):
    # the moves agree to ~1e-4 of their size
    moved = var.numpy() - w0
    np.testing.assert_allclose(ours.numpy() - w0, moved, rtol=1e-3, atol=1e-7)
    assert np.abs(moved).max() > 1e-3
    square_avg, grad_avg = optimizer.variables
    np.testing.assert_allclose(square_avg.numpy(), ms.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad_avg.numpy(), mg.numpy(), rtol=1e-6, atol=1e-9)


def test_tf1_rmsprop_differs_from_keras_where_tf1_starts_its_mean_square_at_one():
    """Why the preset does not use Keras 3's RMSprop: for a first gradient of 1e-3, Keras
    (mean square from 0) steps lr * 1e-3 / sqrt(0.05e-6 - 0.05^2 1e-6 + 1e-5) ~ 7.9e-5, TF1
    (from 1) lr * 1e-3 / sqrt(0.95 + ...) ~ 2.6e-7: 300 times smaller."""
    grad = tf.constant([1e-3], tf.float64)
    keras_var, tf1_var = tf.Variable([0.0], dtype=tf.float64), tf.Variable([0.0], tf.float64)
    optimizers.rmsprop(2.5e-4, epsilon=1e-5).apply_gradients([(grad, keras_var)])
    tf1 = optimizers.TF1CenteredRMSprop(2.5e-4, epsilon=1e-5)
    tf1.build([tf1_var])
    tf1.apply_gradients([(grad, tf1_var)])
    keras_step = 2.5e-4 * 1e-3 / np.sqrt(0.05e-6 - (0.05e-3) ** 2 + 1e-5)
    tf1_step = 2.5e-4 * 1e-3 / np.sqrt(1 + (1e-6 - 1) * 0.05 - (0.05e-3) ** 2 + 1e-5)
    assert -float(keras_var[0]) == pytest.approx(keras_step, rel=1e-6)  # Keras' float32 lr
    assert -float(tf1_var[0]) == pytest.approx(tf1_step, rel=1e-12)
    assert keras_step > 300 * tf1_step


def test_tf1_rmsprop_state_round_trips_through_a_checkpoint(tmp_path):
    var = tf.Variable([1.0, 2.0])
    optimizer = optimizers.TF1CenteredRMSprop(1e-2, epsilon=1e-5)
    optimizer.build([var])
    optimizer.apply_gradients([(tf.constant([0.5, -0.5]), var)])
    path = tf.train.Checkpoint(optimizer=optimizer.trackable).write(str(tmp_path / "opt"))
    other = optimizers.TF1CenteredRMSprop(1e-2, epsilon=1e-5)
    other.build([tf.Variable([0.0, 0.0])])
    tf.train.Checkpoint(optimizer=other.trackable).read(path).assert_consumed()
    for got, want in zip(other.variables, optimizer.variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# ---------------------------------------------------------------------------------------------
# The network


def test_dopamine_network_has_same_padding_glorot_weights_and_zero_biases():
    spec = networks.state_spec("nature", 4, (84, 84))
    model = networks.build_network("nature", 4, spec, init="glorot", padding="same")
    assert model.get_layer("flatten").output.shape[-1] == 11 * 11 * 64  # slim's SAME padding
    fans = {"conv1": (4 * 64, 32 * 64), "conv2": (32 * 16, 64 * 16),
            "conv3": (64 * 9, 64 * 9), "fc": (7744, 512), "q": (512, 4)}
    for name, (fan_in, fan_out) in fans.items():
        kernel, bias = model.get_layer(name).weights
        bound = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform = slim's xavier (uniform)
        w = kernel.numpy()
        assert np.abs(w).max() <= np.float32(bound) * (1 + 1e-6)
        assert np.abs(w).max() > 0.9 * bound
        assert not bias.numpy().any()
    # conv 8224 + 32832 + 36928, fc 7744 * 512 + 512, head 512 * 4 + 4
    assert networks.count_parameters(model) == 4_045_476


# ---------------------------------------------------------------------------------------------
# The environment: Dopamine's AtariPreprocessing over the raw emulator, written out


class _DopamineAtari:
    """atari_lib.AtariPreprocessing.step/reset (frame_skip 4, no life-loss terminal) over a
    raw ALE/<Game>-v5 env with frameskip 1 and sticky actions 0.25, as Dopamine wrote them."""

    def __init__(self, game):
        self.env = gym.make(game, frameskip=1, repeat_action_probability=0.25,
                            full_action_space=False)
        self.ale = self.env.unwrapped.ale
        h, w = self.ale.getScreenDims()
        self.buffer = [np.empty((h, w), np.uint8), np.empty((h, w), np.uint8)]

    def reset(self, seed):
        self.env.reset(seed=seed)
        self.ale.getScreenGrayscale(self.buffer[0])
        self.buffer[1].fill(0)
        return self._pool_and_resize()

    def step(self, action):
        total, game_over = 0.0, False
        for t in range(4):
            _, reward, game_over, _, _ = self.env.step(action)
            total += reward
            if game_over:
                break
            elif t >= 2:
                self.ale.getScreenGrayscale(self.buffer[t - 2])
        return self._pool_and_resize(), total, game_over

    def _pool_and_resize(self):
        np.maximum(self.buffer[0], self.buffer[1], out=self.buffer[0])
        return cv2.resize(self.buffer[0], (84, 84), interpolation=cv2.INTER_AREA)


def test_dopamine_env_plays_as_dopamines_atari_preprocessing():
    cfg = _dopamine_cfg()
    ours = envs.make_env(cfg, training=True)
    theirs = _DopamineAtari(cfg.env)
    assert ours.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    obs, info = ours.reset(seed=5)
    np.testing.assert_array_equal(obs, theirs.reset(seed=5))
    assert ours.action_space.n == theirs.env.action_space.n == 4  # the minimal action set
    rng = np.random.default_rng(5)
    compared, games, lives_lost = 0, 0, 0
    while games < 3:
        action = int(rng.integers(4))
        lives = info["lives"]
        obs, reward, terminated, truncated, info = ours.step(action)
        want_obs, want_reward, game_over = theirs.step(action)
        assert reward == want_reward and terminated == game_over  # a lost life is no terminal
        lives_lost += info["lives"] < lives
        if game_over:  # both start the next game (Dopamine's terminal frame is stale)
            games += 1
            obs, info = ours.reset()
            np.testing.assert_array_equal(obs, theirs.reset(seed=None))
            continue
        np.testing.assert_array_equal(obs, want_obs)
        compared += 1
    assert lives_lost >= 3 * 4 and compared > 400


def test_grayscale_preprocessor_is_an_area_average_of_the_max():
    """OpenCV's uint8 INTER_AREA against the area weights in float64 (one level apart at
    most, at .5 rounding)."""
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 256, (2, 210, 160), dtype=np.uint8)
    got = envs.GrayscalePreprocessor(210, 160)(a, b).astype(int)
    rows, cols = envs.shrink_weights(210, 84), envs.shrink_weights(160, 84)
    want = np.rint(rows @ np.maximum(a, b).astype(np.float64) @ cols.T).astype(int)
    assert got.shape == (84, 84) and np.abs(got - want).max() <= 1


# ---------------------------------------------------------------------------------------------
# DQN 3.0 (alewrap GameEnvironment.lua): k + 1 no-op frames, action repeat cut by a life loss


def _dqn3_breakout(training):
    return envs.make_env(config.Config(env="ALE/Breakout-v5"), training=training)


def test_dqn3_noop_starts_are_k_plus_one_frames_2_to_31():
    env = _dqn3_breakout(training=True)
    ale = env.unwrapped.ale
    counts = set()
    for seed in range(60):
        env.reset(seed=seed)  # a new game: frame 0, then the no-op frames
        counts.add(ale.getEpisodeFrameNumber())
    assert min(counts) >= 2 and max(counts) <= 31
    assert len(counts) > 15  # drawn over the whole range
    env.close()


@pytest.mark.parametrize("training", [True, False])
def test_dqn3_action_repeat_stops_at_a_lost_life_in_training_only(training):
    env = _dqn3_breakout(training)
    ale = env.unwrapped.ale
    env.reset(seed=7)
    rng = np.random.default_rng(7)
    short_steps = 0
    for _ in range(20_000):
        before_state = ale.cloneState()
        frame = ale.getEpisodeFrameNumber()
        action = int(rng.integers(4))
        _, _, terminated, _, info = env.step(action)
        played = ale.getEpisodeFrameNumber() - frame
        if info["game_over"]:
            break
        if not info["life_lost"]:
            assert played == 4
            continue
        # Replay the step frame by frame: the life goes at frame `lost_at`.
        after_state = ale.cloneState()
        ale.restoreState(before_state)
        lives = ale.lives()
        lost_at = next(i + 1 for i in range(4)
                       if (ale.act(env.unwrapped._action_set[action]), ale.lives())[1] < lives)
        ale.restoreState(after_state)
        assert played == (lost_at if training else 4)
        short_steps += lost_at < 4
        if terminated:
            env.reset()
    assert short_steps > 0  # some life was lost before the 4th frame (the test can tell)
    env.close()


# ---------------------------------------------------------------------------------------------
# Dopamine's statistic in plot.py


def _fake_run(run_dir, games):
    """A run directory with the given (step, score) games, reaching the last game's step."""
    import json
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(
        {"env": "ALE/Breakout-v5", "seed": 3, "preset": "dopamine"}))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"type": "game", "step": step, "score": score, "length": 100}) + "\n"
        for step, score in games))


def test_plot_computes_dopamines_iteration_statistic(tmp_path):
    import subprocess
    # iteration 1 (0, 250k]: games 2, 4 (the one at exactly 250k too); iteration 2: 10, 20;
    # iteration 3 is not complete (the run stopped at 600k), so it has no point
    _fake_run(tmp_path / "run", [(1_000, 2.0), (250_000, 4.0), (250_001, 10.0),
                                 (400_000, 20.0), (600_000, 99.0)])
    out_dir, png = tmp_path / "curves", tmp_path / "curves.png"
    reference = str(REPO / "docs/results/atari/dopamine_dqn_breakout.json")
    result = subprocess.run(
        [sys.executable, str(REPO / "python" / "plot.py"), str(tmp_path / "run"),
         "--statistic", "iteration", "--csv-dir", str(out_dir), "--out", str(png),
         "--reference", reference, "--table", "250000,500000"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    csv_text = (out_dir / "Breakout-s3.csv").read_text()
    assert csv_text == "agent_steps,iteration_mean_return\n250000,3.0000\n500000,15.0000\n"
    assert png.stat().st_size > 10_000
    rows = result.stdout.strip().splitlines()
    assert rows[-2] == "| Breakout | 3 | 3.00 | 15.00 |"
    # Dopamine's mean of 5 runs, then their lowest-highest, from the committed JSON
    assert rows[-1] == ("| Breakout: Dopamine DQN (mean of 5 runs) | - | 1.64 (1.57-1.70) | "
                        "3.06 (2.83-3.27) |")
    # the written curve file reads back as the same statistic; the other one is refused
    again = subprocess.run(
        [sys.executable, str(REPO / "python" / "plot.py"), str(out_dir / "Breakout-s3.csv"),
         "--table", "500000"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "holds --statistic iteration, not last100" in again.stderr
    again = subprocess.run(
        [sys.executable, str(REPO / "python" / "plot.py"), str(out_dir / "Breakout-s3.csv"),
         "--statistic", "iteration", "--table", "500000"],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "| Breakout | 3 | 15.00 |" in again.stdout
