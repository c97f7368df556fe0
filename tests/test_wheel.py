"""The wheel as a user gets it: built and repaired by scripts/build_wheel.py, installed into a
fresh virtual environment with no build step (--only-binary), and the op, its gradient and
the replay memory used from a directory outside the checkout."""

import os
import subprocess
import sys
import json
import zipfile

import pytest

import build_wheel  # scripts/ (pytest's pythonpath)

pytestmark = pytest.mark.slow

CHECK = """
import json, os, sys
import numpy as np
import tensorflow as tf
import tfdqn_ops
assert tfdqn_ops.uses_compiled_op(), "the wheel's op library did not load"
q = tf.Variable([[1.0, 2.0, 0.5], [0.0, -1.0, 4.0]])
q_next = tf.constant([[0.0, 0.5, 1.0], [2.0, 1.0, 0.0]])
with tf.GradientTape() as tape:
    out = tfdqn_ops.dqn_targets(q, q_next, tf.constant([0, 2]), tf.constant([1.0, -1.0]),
                                tf.constant([0.0, 1.0]), discount=0.5, clip_delta=1.0)
    loss = tf.reduce_sum(out.loss)
memory = tfdqn_ops.ReplayMemory(16, frame_shape=(2,), history=1)
print(json.dumps({"package": tfdqn_ops.__file__, "version": tfdqn_ops.__version__,
                  "delta": out.delta.numpy().tolist(),
                  "grad": tape.gradient(loss, q).numpy().tolist(),
                  "capacity": memory.capacity}))
"""


def test_wheel_installs_without_a_build_and_runs_the_op(tmp_path):
    wheel = build_wheel.build_wheel(str(tmp_path / "dist"), isolation=False)
    assert "manylinux" in os.path.basename(wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "tfdqn_ops/_dqn_ops.so" in names
    assert any(n.startswith("tfdqn_ops/_replay.") and n.endswith(".so") for n in names)
    assert any(n.startswith("tfdqn_trainer/") for n in names)
    # TensorFlow's own libraries come from the tensorflow wheel, not grafted into this one.
    assert not [n for n in names if "libtensorflow" in n]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--only-binary", ":all:", wheel],
        cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-2000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([python, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(venv))
    assert result["capacity"] == 16
    from importlib import metadata
    assert result["version"] == metadata.version("tfdqn_ops")
    # Row 0: 1 + 0.5 * 1.0 - 1.0 = 0.5; row 1 (terminal): -1 - 4 = -5, clipped to -1.
    assert result["delta"] == pytest.approx([0.5, -1.0])
    # The op's gradient contract: d sum(loss) / dq = -delta at the action taken.
    assert result["grad"][0] == pytest.approx([-0.5, 0.0, 0.0])
    assert result["grad"][1] == pytest.approx([0.0, 0.0, 1.0])
