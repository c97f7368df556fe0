"""MinAtar in the trainer: the preset against the paper's examples/dqn.py, the network, the
optimizer and loss against PyTorch's formulas, every game through the replay memory, frames
counted as MinAtar counts them, resume, the plot script, and (slow) a short run that learns.
"""

import csv
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium", reason="needs gymnasium (pip install .[minatar])")
pytest.importorskip("minatar", reason="needs minatar (pip install .[minatar])")

import tensorflow as tf  # noqa: E402

from tfdqn_ops import ReplayMemory  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import optimizers  # noqa: E402
from tfdqn_trainer import config, envs, networks  # noqa: E402

TRAIN = str(REPO / "python" / "train.py")
PLOT = str(REPO / "python" / "plot.py")
GAMES = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}


def run(script, args, cwd, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_records(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


# ---------------------------------------------------------------------------------------------
# The preset is the paper's DQN


def test_preset_equals_the_papers_dqn():
    """Each constant of kenjyoung/MinAtar examples/dqn.py, and where this trainer keeps it."""
    cfg, _ = config.parse_args(["--preset", "minatar"])
    paper = {  # dqn.py constant -> (Config field, value)
        "BATCH_SIZE": ("minibatch_size", 32),
        "REPLAY_BUFFER_SIZE": ("replay_memory", 100_000),
        "TARGET_NETWORK_UPDATE_FREQ": ("target_q", 1_000),   # one update per frame
        "TRAINING_FREQ": ("update_freq", 1),
        "FIRST_N_FRAMES": ("ep_endt", 100_000),
        "REPLAY_START_SIZE": ("learn_start", 5_000),
        "END_EPSILON": ("ep_end", 0.1),
        "EPSILON": ("ep_start", 1.0),
        "STEP_SIZE": ("lr", 2.5e-4),
        "GAMMA": ("discount", 0.99),
    }
    for constant, (name, value) in paper.items():
        assert getattr(cfg, name) == value, (constant, name, getattr(cfg, name))
    assert cfg.env == "MinAtar/Breakout-v0" and cfg.network == "minatar"
    assert cfg.optimizer == "rmsprop-torch"           # centered, eps 0.01 after the sqrt
    assert cfg.loss_reduction == "mean"               # f.smooth_l1_loss
    assert cfg.clip_delta == 1.0                      # smooth_l1's beta
    assert cfg.n_replay == 1 and cfg.hist_len == 1 and cfg.actrep == 1
    assert cfg.reward_clip == 0.0 and cfg.random_starts == 0
    assert cfg.count_terminal_steps is False          # t counts env.act calls only
    assert cfg.double_dqn is False and cfg.num_envs == 1
    # explicit flags still win over the preset
    cfg, _ = config.parse_args(["--preset", "minatar", "--lr", "1e-3", "--env",
                                "MinAtar/Seaquest-v0"])
    assert cfg.lr == 1e-3 and cfg.env == "MinAtar/Seaquest-v0" and cfg.target_q == 1_000


def dqn_py_epsilon(t):
    """examples/dqn.py's epsilon at frame t, written as it does it."""
    if t < 5000:
        return 1.0
    if t - 5000 >= 100_000:
        return 0.1
    return (0.1 - 1.0) / 100_000 * (t - 5000) + 1.0


EPSILON_CHECK_FRAMES = [0, 4999, 5000, 5001, 55_000, 104_999, 105_000, 400_000]


def test_schedules_match_dqn_py():
    """dqn.py: random actions while t < 5000, then epsilon 1 -> 0.1 over 100,000 frames;
    train while t > 5000 every frame; copy the target after every 1000th update."""
    cfg, _ = config.parse_args(["--preset", "minatar"])
    for t in EPSILON_CHECK_FRAMES:
        ours = agent_lib.linearly_decaying_epsilon(t, learn_start=cfg.learn_start,
                                                   ep_start=cfg.ep_start, ep_end=cfg.ep_end,
                                                   ep_endt=cfg.ep_endt)
        assert ours == pytest.approx(dqn_py_epsilon(t)), t
    # dqn.py: the update at frame t happens when t > 5000; the copy follows update number
    # 1000, 2000, ... (updates are counted from t = 5001)
    events = agent_lib.learning_events(0, 12_000, learn_start=cfg.learn_start,
                                       update_freq=cfg.update_freq, n_replay=cfg.n_replay,
                                       target_q=cfg.target_q)
    ours, updates = [], 0
    for event, k in events:
        if event == "update":
            updates += k
        elif updates:
            ours.append(updates)
    assert updates == 12_000 - 5_001
    paper, counter = [], 0
    for t in range(12_000):
        if t > 5000:
            counter += 1
            if counter % 1000 == 0:
                paper.append(counter)
    assert ours == paper


def load_sb3_minatar():
    spec = importlib.util.spec_from_file_location(
        "sb3_minatar", REPO / "benchmarks" / "sb3_minatar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sb3_reference_uses_dqn_py_epsilon():
    """The Stable-Baselines3 reference run (benchmarks/sb3_minatar.py) replaces SB3's
    schedule, which decays from frame 0, by dqn.py's."""
    sb3_minatar = load_sb3_minatar()
    for t in EPSILON_CHECK_FRAMES:
        assert sb3_minatar.paper_epsilon(t) == pytest.approx(dqn_py_epsilon(t)), t


def test_sb3_reference_run_logs_games_as_train_py_does(tmp_path):
    """A short SB3 run: the epsilon SB3 acts with is dqn.py's, every finished game is logged
    with its frame and the mean of the last 100, and plot.py reads the run directory."""
    # found, not imported: torch beside TensorFlow in one process crashes (see
    # benchmarks/_machine.py), so SB3 runs in the subprocess only
    if importlib.util.find_spec("stable_baselines3") is None:
        pytest.skip("stable-baselines3 is not installed (pip install torch stable-baselines3)")
    run_dir = tmp_path / "sb3"
    result = run(str(REPO / "benchmarks" / "sb3_minatar.py"),
                 ["--game", "Breakout", "--frames", "7000", "--prog-freq", "1000",
                  "--run-dir", str(run_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    games = read_records(run_dir, "game")
    assert len(games) >= 10
    recent = []
    for g in games:
        recent = (recent + [g["score"]])[-100:]
        assert g["mean_return_100"] == pytest.approx(np.mean(recent))
    assert games[-1]["step"] <= 7000
    progress = read_records(run_dir, "train")
    assert [r["step"] for r in progress] == list(range(1000, 7001, 1000))
    # the epsilon SB3 acted with (set after the previous frame) is dqn.py's
    for r in progress:
        assert r["epsilon"] == pytest.approx(dqn_py_epsilon(r["step"]), abs=1e-4), r
    result = run(PLOT, [str(run_dir), "--csv-dir", str(tmp_path / "csv")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # a second run into the same directory is refused, not appended to
    result = run(str(REPO / "benchmarks" / "sb3_minatar.py"),
                 ["--frames", "100", "--run-dir", str(run_dir)], cwd=tmp_path)
    assert result.returncode == 2 and "already holds a run" in result.stderr


# ---------------------------------------------------------------------------------------------
# Network, optimizer, loss


@pytest.mark.parametrize("channels", sorted(set(GAMES.values())))
def test_minatar_network_is_the_papers(channels):
    spec = networks.state_spec("minatar", 1, (10, 10, channels))
    assert spec.dtype == tf.uint8
    tf.keras.utils.set_random_seed(channels)
    model = networks.build_network("minatar", 6, spec)
    conv = 3 * 3 * channels * 16 + 16
    hidden = 8 * 8 * 16 * 128 + 128
    assert networks.count_parameters(model) == conv + hidden + 128 * 6 + 6
    bounds = {"conv": 1 / np.sqrt(9 * channels), "fc": 1 / np.sqrt(1024), "q": 1 / np.sqrt(128)}
    for name, bound in bounds.items():  # PyTorch's default init: U(+-1/sqrt(fan_in))
        for w in model.get_layer(name).weights:
            assert np.abs(w.numpy()).max() <= np.float32(bound) * (1 + 1e-6)
            if w.numpy().size >= 100:  # uniform over the whole range (P(fail) < 0.9^100)
                assert np.abs(w.numpy()).max() > 0.9 * bound
    planes = (np.random.default_rng(0).random((3, 1, 10, 10, channels)) < 0.2).astype(np.uint8)
    # the same function written out: channels-last conv, valid padding, on 0/1 floats
    kernel, bias = (w.numpy() for w in model.get_layer("conv").weights)
    x = tf.nn.relu(tf.nn.conv2d(planes[:, 0].astype(np.float32), kernel, 1, "VALID") + bias)
    x = tf.reshape(x, (3, -1))
    w1, b1 = (w.numpy() for w in model.get_layer("fc").weights)
    w2, b2 = (w.numpy() for w in model.get_layer("q").weights)
    want = tf.nn.relu(x @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(model(planes).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_network_kind_follows_the_observation():
    assert networks.network_kind("auto", (84, 84)) == "nature"
    assert networks.network_kind("auto", (10, 10, 4)) == "minatar"
    assert networks.network_kind("auto", (4,)) == "mlp"
    with pytest.raises(ValueError, match="--network nature does not fit"):
        networks.network_kind("nature", (10, 10, 4))


def torch_rmsprop_reference(w, grads, lr, rho=0.95, eps=0.01):
    """torch.optim.RMSprop(centered=True, momentum=0) in float64 numpy (PyTorch's docs)."""
    square_avg, grad_avg = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        square_avg = rho * square_avg + (1 - rho) * g * g
        grad_avg = rho * grad_avg + (1 - rho) * g
        w = w - lr * g / (np.sqrt(square_avg - grad_avg ** 2) + eps)
    return w


def test_torch_rmsprop_is_pytorchs_formula_exactly_in_float64():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 3))
    grads = [rng.standard_normal(w0.shape) * (0.01 if t % 3 else 1.0) for t in range(25)]
    variable = tf.Variable(w0)
    optimizer = optimizers.make_optimizer("rmsprop-torch", 1e-2)
    optimizer.build([variable])
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    want = torch_rmsprop_reference(w0, grads, 1e-2)
    np.testing.assert_allclose(variable.numpy(), want, rtol=1e-13, atol=1e-15)
    assert len(optimizer.variables) == 2  # g2 and g of the one variable
    # Keras' (DQN 3.0's) centered RMSprop, epsilon inside the sqrt, is a different step
    keras_variable = tf.Variable(w0)
    keras_optimizer = optimizers.make_optimizer("rmsprop", 1e-2)
    keras_optimizer.build([keras_variable])
    for g in grads:
        keras_optimizer.apply_gradients([(tf.constant(g), keras_variable)])
    assert np.abs(keras_variable.numpy() - want).max() > 1e-3


def test_mean_loss_update_is_smooth_l1_mean_with_torch_rmsprop():
    """Two updates of the MinAtar agent == two steps of mean Huber (smooth_l1_loss) written in
    plain TF, with PyTorch's RMSprop applied in numpy."""
    spec = networks.state_spec("minatar", 1, (10, 10, 4))
    tf.keras.utils.set_random_seed(3)
    agent = agent_lib.Agent(lambda: networks.build_network("minatar", 6, spec), spec,
                            discount=0.99, clip_delta=1.0, lr=1e-3, optimizer="rmsprop-torch",
                            loss_reduction="mean")
    for w in agent.target.weights:
        w.assign(w * 1.3)
    online = networks.build_network("minatar", 6, spec)
    networks.copy_weights(agent.online, online)
    target_q = agent.target
    rng = np.random.default_rng(4)
    k, b = 2, 32
    windows = (rng.random((k, b, 2, 10, 10, 4)) < 0.15).astype(np.uint8)
    actions = rng.integers(0, 6, (k, b)).astype(np.int32)
    rewards = rng.choice([0.0, 1.0, 3.0], (k, b)).astype(np.float32)   # not clipped
    terminals = (rng.random((k, b)) < 0.2).astype(np.float32)
    for i in range(k):  # one call per minibatch: the K = 1 path the trainer uses
        agent.update(windows[i:i + 1], actions[i:i + 1], rewards[i:i + 1], terminals[i:i + 1])
    weights = [w.numpy().astype(np.float64) for w in online.trainable_variables]
    grads_seen = [[] for _ in weights]
    for i in range(k):
        s, s2 = windows[i][:, :-1], windows[i][:, 1:]
        y = rewards[i] + 0.99 * (1 - terminals[i]) * tf.reduce_max(target_q(s2), axis=1)
        with tf.GradientTape() as tape:
            q = tf.gather(online(s), actions[i], batch_dims=1)
            err = y - q
            huber = tf.where(tf.abs(err) < 1, 0.5 * err ** 2, tf.abs(err) - 0.5)
            loss = tf.reduce_mean(huber)
        for j, g in enumerate(tape.gradient(loss, online.trainable_variables)):
            grads_seen[j].append(g.numpy().astype(np.float64))
        for j, var in enumerate(online.trainable_variables):  # step the reference network
            var.assign(torch_rmsprop_reference(weights[j], grads_seen[j], 1e-3))
    for got, want in zip(agent.online.trainable_variables, online.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=2e-6)
    moved = max(np.abs(w.numpy() - w0).max()
                for w, w0 in zip(agent.online.trainable_variables, weights))
    assert moved > 1e-4  # the check compares real steps


# ---------------------------------------------------------------------------------------------
# Every game through the pool and the replay memory


@pytest.mark.parametrize("game", sorted(GAMES))
def test_each_game_steps_stores_and_samples_right(game):
    cfg, _ = config.parse_args(["--preset", "minatar", "--env", f"MinAtar/{game}-v0"])
    envs.check_env(cfg)
    env = envs.make_env(cfg, training=True)
    codec = envs.make_codec(env)
    assert codec.frame_shape == (10, 10, GAMES[game]) and codec.image
    pool = envs.EnvPool([env], codec)
    assert pool.n_actions == 6  # -v0: the full action set, as in the paper
    replay = ReplayMemory(5000, frame_shape=codec.frame_shape, history=1, num_envs=1, seed=7)
    pool.reset([11])
    rng = np.random.default_rng(0)
    # what went in, entry by entry: (frame, action, reward, terminal of the frame)
    record, acted, finished_games = [], 0, []
    while len(record) < 3000:  # Freeway's games last 2,500 frames
        actions = rng.integers(0, 6, 1)
        frame, terminal = pool.frames.copy(), pool.terminals.copy()
        assert frame.dtype == np.uint8 and set(np.unique(frame)) <= {0, 1}
        rewards, finished = pool.step(actions)
        acted += int(pool.acted.sum())
        assert pool.acted[0] == (not terminal[0])  # a terminal frame's step only resets
        replay.add(frame, actions, rewards.astype(np.float32), terminal)
        record.append((frame[0], int(actions[0]), float(rewards[0]), bool(terminal[0])))
        finished_games += finished
    terminals = [i for i, entry in enumerate(record) if entry[3]]
    assert terminals, f"no {game} game ended in 3000 random steps"
    assert acted == len(record) - len(terminals)
    assert sum(length for _, length in finished_games) <= acted
    # the current observation equals what the env shows, as 0/1 bytes
    np.testing.assert_array_equal(pool.frames[0], env.unwrapped.game.state().astype(np.uint8))
    # samples: each is a stored transition (s_i, a_i, r_i, s_{i+1}, term_{i+1}) with s_i not
    # terminal (a terminal frame's action and "next frame" are not a transition)
    s, a, r, s2, term = replay.sample(256)
    assert s.shape == (256, 1, 10, 10, GAMES[game]) and s.dtype == np.uint8
    valid = {}
    for i in range(len(record) - 1):
        if not record[i][3]:
            key = (record[i][0].tobytes(), record[i + 1][0].tobytes(), record[i][1])
            valid.setdefault(key, set()).add((record[i][2], record[i + 1][3]))
    for j in range(256):
        key = (s[j, 0].tobytes(), s2[j, 0].tobytes(), int(a[j]))
        assert key in valid, f"sample {j} is not a stored transition"
        assert (float(r[j]), bool(term[j])) in valid[key]
    assert term.any() or len(terminals) < 5  # terminal transitions are sampled too


def test_bad_minatar_settings_fail_clearly(tmp_path):
    result = run(TRAIN, ["--preset", "minatar", "--env", "MinAtar/Pong-v0"], cwd=tmp_path)
    assert result.returncode == 2
    assert "MinAtar/Pong-v0" in result.stderr and "MinAtar/{Asterix" in result.stderr
    result = run(TRAIN, ["--preset", "minatar", "--network", "nature"], cwd=tmp_path)
    assert result.returncode == 2 and "--network nature does not fit" in result.stderr


# ---------------------------------------------------------------------------------------------
# A whole run: frames counted as MinAtar counts them, resume, the plot and its data


def test_run_counts_frames_resumes_and_plots(tmp_path):
    run_dir = str(tmp_path / "breakout")
    small = ["--preset", "minatar", "--learn-start", "300", "--ep-endt", "1000",
             "--target-q", "200", "--eval-freq", "1500", "--eval-steps", "400",
             "--save-freq", "1000", "--prog-freq", "500", "--run-dir", run_dir]
    result = run(TRAIN, small + ["--steps", "2000"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(TRAIN, ["--resume", run_dir, "--steps", "3000"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming" in result.stdout and "from step 2,000" in result.stdout
    games = read_records(run_dir, "game")
    # frames are env actions: the step at the end of each game is the sum of the lengths of
    # the games so far, with no extra step for observing a terminal state
    assert [g["step"] for g in games] == list(np.cumsum([g["length"] for g in games]))
    recent = []
    for g in games:
        recent = (recent + [g["score"]])[-100:]
        assert g["mean_return_100"] == pytest.approx(np.mean(recent))
    assert read_records(run_dir, "train")[-1]["step"] == 3000
    assert read_records(run_dir, "eval")
    # the plot and the curve data
    out = str(tmp_path / "curve.png")
    result = run(PLOT, [run_dir, "--out", out, "--csv-dir", str(tmp_path / "csv"),
                        "--every", "500"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "csv" / "Breakout-s1.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frames", "mean_return_100", "learner_updates"]
    frames = [int(row[0]) for row in rows[1:]]
    assert frames[-1] == 3000 and all(b - a == 500 for a, b in zip(frames, frames[1:]))
    updates = [int(row[2]) for row in rows[1:]]  # the learner's, as the run logged them
    assert updates == sorted(updates) and updates[-1] == read_records(run_dir, "train")[-1][
        "updates"] > 0
    by_step = {g["step"]: g["mean_return_100"] for g in games}
    last = max(step for step in by_step if step <= 3000)
    assert float(rows[-1][1]) == pytest.approx(by_step[last], abs=1e-4)
    # the table of values at given frames
    result = run(PLOT, [run_dir, "--table", f"{last},3000"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = result.stdout.strip().splitlines()[-1]
    assert row.startswith("| Breakout | 1 | ")
    assert f"| {by_step[last]:.2f} | {by_step[last]:.2f} |" in row  # no game ended in between
    # against the learner's updates: from the run and from its curve file alike; a curve
    # file without the updates column is refused
    final_updates = read_records(run_dir, "train")[-1]["updates"]
    for source in (run_dir, str(tmp_path / "csv" / "Breakout-s1.csv")):
        result = run(PLOT, [source, "--x", "updates", "--out", out, "--table",
                            str(final_updates)], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"at {final_updates:,} learner updates" in result.stdout
        row = result.stdout.strip().splitlines()[-1]
        assert f"| {by_step[last]:.2f} |" in row  # the value at the run's last step
    no_updates = tmp_path / "plain" / "Breakout-s1.csv"
    no_updates.parent.mkdir()
    no_updates.write_text("frames,mean_return_100\n500,1.0\n1000,2.0\n")
    result = run(PLOT, [str(no_updates), "--x", "updates", "--out", out], cwd=tmp_path)
    assert result.returncode == 2 and "no learner updates" in result.stderr
    # the plot reads its own curve files back, with a reference file
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"label": "paper", "games": {"Breakout": [[2000, 1.0]]}}))
    result = run(PLOT, [str(tmp_path / "csv" / "Breakout-s1.csv"), "--out", out,
                        "--reference", str(reference)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_plot_tells_settings_apart(tmp_path):
    """Curve files of the same game and seed from two directories (e.g. plain DQN and
    n-step prioritized replay) are two variants: one table row each, labelled by directory;
    a run directory is labelled by its replay options."""
    for variant, value in (("plain", 1.5), ("nstep3-per", 4.0)):
        (tmp_path / variant).mkdir()
        for seed in (1, 2):
            (tmp_path / variant / f"Breakout-s{seed}.csv").write_text(
                "frames,mean_return_100\n" + "".join(
                    f"{x},{value + seed}\n" for x in range(10_000, 110_000, 10_000)))
    files = sorted(str(p) for p in tmp_path.glob("*/Breakout-s*.csv"))
    out = str(tmp_path / "both.png")
    result = run(PLOT, files + ["--out", out, "--table", "50000"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(out) > 10_000
    assert "| Breakout (nstep3-per) | 1, 2 | 5.50 (5.00 / 6.00) |" in result.stdout
    assert "| Breakout (plain) | 1, 2 | 3.00 (2.50 / 3.50) |" in result.stdout
    from tfdqn_trainer.commands import plot
    assert plot.run_variant({"n_step": 3, "prioritized": True, "preset": "minatar"}) == \
        "n-step 3, prioritized"
    assert plot.run_variant({"n_step": 1, "preset": "minatar"}) == "preset minatar"


def test_plot_table_puts_published_values_under_each_game(tmp_path):
    """--table with --reference: a row per reference under the game's rows, the published
    curve linearly interpolated between its points and '-' outside them; a reference against
    agent steps cannot be set beside runs against frames."""
    (tmp_path / "Breakout-s1.csv").write_text(
        "frames,mean_return_100\n" + "".join(f"{x},{x / 10_000}\n"
                                             for x in range(10_000, 310_000, 10_000)))
    reference = tmp_path / "paper.json"
    reference.write_text(json.dumps({"label": "paper", "x": "frames", "games": {
        "Breakout": [[0, 0.0], [100_000, 10.0], [200_000, 20.0]], "Pong": [[0, 1.0]]}}))
    result = run(PLOT, [str(tmp_path / "Breakout-s1.csv"), "--table", "50000,150000,300000",
                        "--reference", str(reference)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.strip().splitlines()
    assert rows[-2] == "| Breakout | 1 | 5.00 | 15.00 | 30.00 |"
    assert rows[-1] == "| Breakout: paper | - | 5.00 | 15.00 | - |"
    assert "Pong" not in result.stdout  # a reference's other games have no row
    dopamine = str(REPO / "docs/results/atari/dopamine_dqn_breakout.json")
    result = run(PLOT, [str(tmp_path / "Breakout-s1.csv"), "--table", "50000",
                        "--reference", dopamine], cwd=tmp_path)
    assert result.returncode == 2
    assert "is against agent_steps, the runs against frames" in result.stderr
    reference.write_text(json.dumps({"label": "paper", "games": {"Breakout": [1.0, 2.0]}}))
    result = run(PLOT, [str(tmp_path / "Breakout-s1.csv"), "--table", "50000",
                        "--reference", str(reference)], cwd=tmp_path)
    assert result.returncode == 2 and "must be a list of [x, value] pairs" in result.stderr


def test_committed_paper_values_are_the_figures_four_games():
    """docs/results/minatar_paper_dqn.json (the paper's DQN curve read off its figure) reads
    as a reference: four games (no Seaquest), against frames, every 100,000 from 0 to 5M."""
    from tfdqn_trainer.commands import plot
    paper = plot.read_reference(str(REPO / "docs/results/minatar_paper_dqn.json"))
    assert paper["x"] == "frames" and "source" in paper
    assert sorted(paper["games"]) == ["Asterix", "Breakout", "Freeway", "SpaceInvaders"]
    for points in paper["games"].values():
        assert [x for x, _ in points] == list(range(0, 5_000_001, 100_000))
    assert plot.reference_at(paper["games"]["Breakout"], 1_000_000) == 9.21


def test_plot_rejects_bad_input(tmp_path):
    result = run(PLOT, [str(tmp_path), "--out", str(tmp_path / "x.png")], cwd=tmp_path)
    assert result.returncode == 2 and "is not a run directory (needs config.json" in result.stderr
    result = run(PLOT, [str(tmp_path / "nothing"), "--out", "x.png"], cwd=tmp_path)
    assert result.returncode == 2 and "is neither a run directory" in result.stderr
    (tmp_path / "Breakout.csv").write_text("frames,mean_return_100\n")
    result = run(PLOT, [str(tmp_path / "Breakout.csv"), "--out", "x.png"], cwd=tmp_path)
    assert result.returncode == 2 and "<Game>-s<seed>.csv" in result.stderr
    result = run(PLOT, [str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 2 and "nothing to do" in result.stderr


@pytest.mark.slow
def test_short_breakout_run_beats_random(tmp_path):
    """Random play scores ~0.5 a game in MinAtar Breakout; a short run with the paper's
    settings (only epsilon annealed faster) must clearly beat it."""
    run_dir = str(tmp_path / "learn")
    result = run(TRAIN, ["--preset", "minatar", "--steps", "60000", "--ep-endt", "30000",
                         "--eval-freq", "0", "--run-dir", run_dir], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    games = read_records(run_dir, "game")
    random_phase = [g["score"] for g in games if g["step"] <= 5000]
    assert 0.2 < np.mean(random_phase) < 1.0
    assert games[-1]["mean_return_100"] > 2 * np.mean(random_phase) + 0.5, games[-1]


def test_atari_curve_file_has_agent_steps_and_evaluations(tmp_path):
    """An Atari run's curve: agent steps, the mean of the last 100 games, and the evaluation
    in the row of its step (empty elsewhere); plotted beside Dopamine's baseline."""
    run_dir = tmp_path / "breakout"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"env": "ALE/Breakout-v5", "seed": 3,
                                                     "preset": "atari"}))
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 10, 300).astype(float)
    steps = np.sort(rng.choice(np.arange(1, 520_000), 300, replace=False))
    with open(run_dir / "metrics.jsonl", "w") as f:  # old runs: no mean_return_100 field
        for step, score in zip(steps, scores):
            f.write(json.dumps({"type": "game", "step": int(step), "score": score}) + "\n")
        for step, value in ((250_000, 4.5), (500_000, 7.25)):
            f.write(json.dumps({"type": "eval", "step": step, "eval_mean_score": value}) + "\n")
        f.write(json.dumps({"type": "train", "step": 520_000}) + "\n")
    out = tmp_path / "breakout.png"
    result = run(PLOT, [str(run_dir), "--csv-dir", str(tmp_path / "csv"), "--out", str(out),
                        "--reference", str(REPO / "docs/results/atari/dopamine_dqn_breakout.json")],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000
    with open(tmp_path / "csv" / "Breakout-s3.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["agent_steps", "mean_return_100", "eval_mean_score"]
    by_step = {int(r["agent_steps"]): r for r in rows}
    assert max(by_step) == 520_000 and all(x % 10_000 == 0 for x in by_step)
    assert by_step[250_000]["eval_mean_score"] == "4.5000"
    assert by_step[500_000]["eval_mean_score"] == "7.2500"
    assert sum(1 for r in rows if r["eval_mean_score"]) == 2
    k = int(np.searchsorted(steps, 300_000, side="right"))  # games finished by step 300,000
    assert float(by_step[300_000]["mean_return_100"]) == pytest.approx(
        np.mean(scores[max(0, k - 100):k]), abs=1e-4)
