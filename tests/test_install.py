"""The installed package as a user gets it from `pip install .`: the trainer importable from
any directory, and its console scripts on the PATH with the scripts' flags."""

import os
import shutil
import subprocess
import sys

import pytest

COMMANDS = {  # console script: a flag its --help must list
    "tfdqn-train": "--preset",
    "tfdqn-evaluate": "--episodes",
    "tfdqn-apex": "--actors",
    "tfdqn-plot": "--statistic",
    "tfdqn-export": "--latest",
}


def _clean_env():
    """No PYTHONPATH: only what is installed (pytest's own pythonpath is not inherited)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_trainer_package_is_installed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import tfdqn_trainer.commands.train as t; print(t.__file__)"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, ("the trainer is not installed (pip install .): "
                                    + result.stderr[-500:])
    assert "site-packages" in result.stdout or "dist-packages" in result.stdout


@pytest.mark.parametrize("command, flag", sorted(COMMANDS.items()))
def test_console_script_runs_from_any_directory(tmp_path, command, flag):
    path = shutil.which(command)
    assert path, f"{command} is not on the PATH: install the package with pip install ."
    result = subprocess.run([path, "--help"], cwd=tmp_path, env=_clean_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-800:]
    assert flag in result.stdout


def test_console_script_reports_bad_input_with_exit_code_2(tmp_path):
    result = subprocess.run([shutil.which("tfdqn-train") or "tfdqn-train", "--steps", "-5"],
                            cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 2
    assert "--steps must be a positive integer, got -5" in result.stderr


def test_version_has_one_source():
    """tfdqn_ops.__version__ is the installed distribution's, which is pyproject.toml's."""
    import pathlib
    import re
    from importlib import metadata

    import tfdqn_ops
    pyproject = (pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert tfdqn_ops.__version__ == metadata.version("tfdqn_ops") == declared
    assert metadata.metadata("tfdqn_ops")["License-Expression"] == "Apache-2.0"


def test_import_from_the_checkout_root_uses_the_installed_binaries():
    """Python (and Ray, on its workers) puts the current directory first on the path, so run
    from the repository's root `import tfdqn_ops` finds the source tree, which holds no
    compiled files: it takes them from the installed copy instead of falling back."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(repo, "tfdqn_ops")
    if any(name.endswith(".so") for name in os.listdir(source)):
        pytest.skip("this source tree holds its own build (an in-place build)")
    code = ("import tfdqn_ops, tfdqn_ops._replay as r, numpy as np, tensorflow as tf\n"
            "print(tfdqn_ops.__file__); print(r.__file__)\n"
            "assert tfdqn_ops.uses_compiled_op()\n"
            "m = tfdqn_ops.ReplayMemory(8, frame_shape=(2,), history=1)\n"
            "q = tf.constant([[1.0, 2.0]]); out = tfdqn_ops.dqn_targets(\n"
            "    q, q, tf.constant([1]), tf.constant([1.0]), tf.constant([0.0]))\n"
            "print(float(out.delta[0]))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, env=_clean_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-1500:]
    package_file, replay_file, delta = result.stdout.split()[-3:]
    assert package_file == os.path.join(source, "__init__.py")  # the source tree's package
    assert not replay_file.startswith(source)  # with the installed copy's binaries
    assert float(delta) == pytest.approx(1.0 + 0.99 * 2.0 - 2.0, rel=1e-6)  # r + g max - q
