"""What a machine without a GPU can prove about the CUDA build."""

import os
import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_gpu_check_program_builds_without_tensorflow(source_tree, tmp_path):
    env = dict(os.environ, BUILD_ONLY="1", BUILD_DIR=str(tmp_path / "build"))
    result = subprocess.run(["bash", os.path.join(source_tree, "scripts", "gpu_check.sh")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    binary = tmp_path / "build" / "gpu_check"
    assert binary.exists() and os.access(binary, os.X_OK)


@pytest.mark.parametrize("program", [
    # Bad actions give NaN rows without touching memory outside the row; the warp kernel's
    # partial max/argmax merges equal a plain scan; the SSE2 scan equals the generic one.
    "math_host_test",
    # The replay memory's sum tree against a linear scan; no drift; bad input.
    "sum_tree_test",
])
def test_host_programs(source_tree, tmp_path, program):
    build = tmp_path / "build"
    configure = ["cmake", "-S", source_tree, "-B", str(build), "-DTFDQN_CUDA=OFF",
                 "-DTFDQN_BUILD_TF_OPS=OFF", "-DTFDQN_BUILD_REPLAY=OFF",
                 "-DTFDQN_BUILD_HOST_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release"]
    for cmd in (configure, ["cmake", "--build", str(build), "--target", program]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = subprocess.run([str(build / program)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "PASSED" in result.stdout, result.stdout[-3000:]


def test_source_tree_without_compiled_modules_explains_itself(source_tree):
    """Importing the unbuilt source tree (tfdqn_ops without its .so files) where no copy is
    installed still imports, and the replay memory says how to fix it, from the constructor
    and from load. (Where a copy is installed, the source tree takes its compiled files:
    tests/test_install.py; here importlib.metadata is made to find none.)"""
    import subprocess
    import sys
    script = ("import importlib.metadata\n"
              "importlib.metadata.distributions = lambda **kwargs: iter(())  # none installed\n"
              "import tfdqn_ops\n"
              "for call in (lambda: tfdqn_ops.ReplayMemory(10), "
              "lambda: tfdqn_ops.ReplayMemory.load('x')):\n"
              "    try:\n"
              "        call()\n"
              "    except ImportError as e:\n"
              "        print('ImportError:', e)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=source_tree, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-800:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ImportError")]
    assert len(lines) == 2 and all("reinstall with `pip install .`" in line for line in lines)
