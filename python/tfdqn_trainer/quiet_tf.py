"""Import TensorFlow without its CUDA start-up noise on machines that have no GPU.

TensorFlow's PyPI wheel is built with CUDA, so on a CPU-only machine every process prints
lines such as

    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

The first comes from C++ before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot
hide it, and the second is logged as an *error* although nothing is wrong: a user reads them
as a broken install. When no NVIDIA driver is present, `import_tensorflow()` filters exactly
these known lines out of the process's stderr (file descriptor 2, where C++ writes) while
TensorFlow loads and finds its devices, and lets every other line through as it comes. With
a driver present nothing is filtered: a CUDA error on a GPU machine is real news.
"""

import os
import re
import sys
import threading
from contextlib import contextmanager

# Printed by TensorFlow 2.21's CUDA build when the machine has no NVIDIA driver, and nothing
# else; every pattern names the source file it comes from.
CUDA_ABSENT_LINES = re.compile(
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc:\d+\] computation placer already registered"
    # absl's notice that precedes the first of them, and oneDNN's start-up note
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written"
    r"|port\.cc:\d+\] oneDNN custom operations are on")


def has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


@contextmanager
def filtered_stderr(pattern: "re.Pattern[str]"):
    """Within the block, lines written to fd 2 that match pattern are dropped; the others are
    passed on line by line while the block runs (so a crash inside loses at most a line)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    out_fd = os.dup(saved)  # the thread's own copy: `saved` is closed when the block ends

    def forward():
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(out_fd, "wb", 0) as out:
            for line in pipe:
                if not pattern.search(line.decode("utf-8", "replace")):
                    out.write(line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees EOF
        os.close(saved)
        thread.join(timeout=5)


def import_tensorflow():
    """`import tensorflow` and its device discovery, quiet about a missing GPU; returns tf."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if has_nvidia_driver():
        import tensorflow as tf
        return tf
    with filtered_stderr(CUDA_ABSENT_LINES):
        import tensorflow as tf
        tf.config.list_physical_devices()  # cuInit happens here, inside the filter
    return tf
