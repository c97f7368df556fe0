"""The tree is clean under the project's linters: ruff (pyproject.toml) and clang-format
(.clang-format)."""

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


def test_cpp_tree_is_clean_under_clang_format():
    """csrc/ and benchmarks/ follow .clang-format (clang-format 18, pinned in the test extra:
    other releases format some constructs differently)."""
    import shutil
    binary = shutil.which("clang-format")
    if binary is None:
        pytest.skip("clang-format is not installed (it is part of pip install '.[test]')")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    if "version 18." not in version:
        pytest.skip(f"the style is checked with clang-format 18, this is: {version.strip()}")
    sources = sorted(str(p) for pattern in ("csrc/**/*.h", "csrc/**/*.cc", "csrc/**/*.cu",
                                            "benchmarks/*.cc") for p in REPO.glob(pattern))
    assert sources
    result = subprocess.run([binary, "--dry-run", "--Werror", *sources], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
