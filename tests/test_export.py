"""tfdqn-export: a run's network as a SavedModel that plain TensorFlow runs (no tfdqn_ops
importable), acting as the trainer acts on the same states, for each kind of observation."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import checkpoint, config, networks  # noqa: E402
from tfdqn_trainer.build import make_pool, network_factory  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
EXPORT = str(REPO / "python" / "export.py")

RUNS = {  # a run of each kind of observation: its flags
    "vector": ["--preset", "classic", "--env", "CartPole-v1"],
    "minatar": ["--preset", "minatar", "--env", "MinAtar/Breakout-v0"],
    "atari": ["--preset", "dopamine", "--env", "ALE/Breakout-v5"],
}

# What a process without tfdqn_ops runs: the SavedModel on the given states.
PLAY = """
import json, sys
import numpy as np
try:
    import tfdqn_ops
except ImportError:
    pass
else:
    sys.exit("tfdqn_ops is importable here; the test needs a process without it")
import tensorflow as tf
policy = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
states = np.load(sys.argv[2])
out = policy(observations=tf.constant(states))
np.savez(sys.argv[3], q=out["q_values"].numpy(), action=out["action"].numpy())
"""


def _run_with_a_network(tmp_path, kind):
    """A run directory holding a config and a best network (freshly initialized: what is
    tested is the export, not learning)."""
    cfg, _ = config.parse_args(RUNS[kind])
    run_dir = tmp_path / kind
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.config_to_json(cfg))
    pool = make_pool(cfg, 1, training=False)
    _, spec, build = network_factory(cfg, pool)
    pool.close()
    model = build()
    checkpoint.save_best(str(run_dir), model, step=1000, score=1.5)
    return cfg, spec, model, str(run_dir)


def _states(spec, rng, n=64):
    if spec.dtype.name == "uint8" and spec.shape[-1] != 84:  # MinAtar: 0/1 planes
        return rng.integers(0, 2, (n, *spec.shape)).astype(np.uint8)
    if spec.dtype.name == "uint8":
        return rng.integers(0, 256, (n, *spec.shape)).astype(np.uint8)
    return rng.normal(size=(n, *spec.shape)).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_export_acts_as_the_trainer_without_tfdqn_ops(tmp_path, kind):
    cfg, spec, model, run_dir = _run_with_a_network(tmp_path, kind)
    out = tmp_path / f"{kind}-policy"
    result = subprocess.run([sys.executable, EXPORT, run_dir, "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1000:]
    assert "best network (step 1,000" in result.stdout
    states = _states(spec, np.random.default_rng(0))
    np.save(tmp_path / "states.npy", states)
    # a process where `import tfdqn_ops` fails: a stand-in package first on its path
    blocker = tmp_path / "blocker" / "tfdqn_ops"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tfdqn_ops is not installed')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"), TF_CPP_MIN_LOG_LEVEL="2")
    played = subprocess.run([sys.executable, "-c", PLAY, str(out), str(tmp_path / "states.npy"),
                             str(tmp_path / "played.npz")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert played.returncode == 0, played.stderr[-1000:]
    served = np.load(tmp_path / "played.npz")
    # the trainer's forward pass and greedy choice on the same states
    q = networks.compile_q(model, spec)(states)
    np.testing.assert_allclose(served["q"], q, rtol=1e-5, atol=1e-6)
    greedy = agent_lib.greedy_actions(q, np.random.default_rng(1))
    np.testing.assert_array_equal(served["action"], greedy)
    assert np.ptp(q, axis=0).min() > 0  # the states reach the network: Q differs among them


def test_export_refuses_bad_input(tmp_path):
    result = subprocess.run([sys.executable, EXPORT, str(tmp_path), "--out",
                             str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a run directory" in result.stderr
    cfg, spec, model, run_dir = _run_with_a_network(tmp_path, "vector")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    result = subprocess.run([sys.executable, EXPORT, run_dir, "--out", str(taken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "exists and is not an empty directory" in result.stderr
    assert json.loads((pathlib.Path(run_dir) / "config.json").read_text())["env"] == cfg.env
