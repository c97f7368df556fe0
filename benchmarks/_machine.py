"""What machine a benchmark ran on, for the header line of its table, and what a process that
runs Stable-Baselines3 must leave out."""

import platform
import sys


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def keep_tensorflow_out():
    """Call before importing Stable-Baselines3. SB3 imports tensorboard, which imports
    TensorFlow when it is installed; with TensorFlow 2.21 loaded, torch 2.14's triton
    segfaults on import (seen here). SB3 needs neither, so `import tensorflow` is made to fail
    in this process and tensorboard uses its stub. Run our trainer in a subprocess."""
    if sys.modules.get("tensorflow") is not None:
        raise RuntimeError("TensorFlow is already imported in this process; run "
                           "Stable-Baselines3 in a process of its own")
    sys.modules["tensorflow"] = None
