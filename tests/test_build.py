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
