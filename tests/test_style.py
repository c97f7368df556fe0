"""The tree is clean under the project's linters: ruff with pyproject.toml's configuration."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_python_tree_is_clean_under_ruff():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is part of pip install '.[test]')")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
