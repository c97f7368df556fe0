"""`pip install .` builds the op library (and the replay memory) with CMake.

CUDA kernels are built when nvcc is found (PATH or CUDACXX); set TFDQN_CUDA=OFF to force a
CPU-only build or TFDQN_CUDA=ON to fail without nvcc. TFDQN_BUILD_JOBS sets the parallelism.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _forget_stale_cmake_cache(build_dir):
    """An earlier `pip install .` leaves its CMake cache in build/, naming the build tools
    (ninja) of its own temporary build environment, which pip has deleted since; CMake would
    fail on them ("ninja --version: no such file"). Start that configuration afresh."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if not os.path.isfile(cache):
        return
    with open(cache) as f:
        tools = [line.split("=", 1)[1].strip() for line in f
                 if line.startswith(("CMAKE_MAKE_PROGRAM:", "CMAKE_COMMAND:"))]
    if any(tool and not os.path.exists(tool) for tool in tools):
        os.remove(cache)
        shutil.rmtree(os.path.join(build_dir, "CMakeFiles"), ignore_errors=True)


class CMakeBuild(build_ext):
    def get_ext_filename(self, ext_name):
        # tf.load_op_library and pybind11 both want a plain `_name.so`.
        return os.path.join(*ext_name.split(".")) + ".so"

    def run(self):
        source_dir = os.path.dirname(os.path.abspath(__file__))
        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(self.extensions[0].name)))
        build_dir = os.path.abspath(self.build_temp)
        os.makedirs(build_dir, exist_ok=True)
        _forget_stale_cmake_cache(build_dir)
        cuda = os.environ.get("TFDQN_CUDA", "AUTO").upper()
        configure = [
            "cmake", source_dir, "-G", "Ninja",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DTFDQN_OUTPUT_DIR={out_dir}",
            f"-DTFDQN_CUDA={cuda}",
            "-DTFDQN_BUILD_GPU_CHECK=ON",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        jobs = os.environ.get("TFDQN_BUILD_JOBS", str(min(os.cpu_count() or 1, 4)))
        subprocess.check_call(configure, cwd=build_dir)
        subprocess.check_call(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir)


setup(
    ext_modules=[CMakeExtension("tfdqn_ops._dqn_ops")],
    cmdclass={"build_ext": CMakeBuild},
)
