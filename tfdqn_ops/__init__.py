"""tfdqn_ops: DeepMind DQN 3.0's update as a fused TensorFlow op, and its replay memory.

    import tfdqn_ops  # before loading a SavedModel that uses the op
    out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals)
    loss = tf.reduce_sum(out.loss)  # its gradient at q is -targets (DQN 3.0's backward)
"""

import os as _os


def _compiled_parts_from_installed_copy() -> None:
    """Lets `import tfdqn_ops` work from a checkout's root after `pip install .`.

    There Python finds this source tree first (the current directory leads sys.path, and
    Ray puts the driver's current directory on its workers' paths too), and the source tree
    holds no compiled files. Where they are missing here and an installed copy of the package
    has them, that copy's directory joins this package's __path__, so the op library and the
    replay module load from it. The source's Python files and the installed binaries then
    come from the same checkout whenever it was installed with `pip install .` after the
    last edit; _loader checks the op library against this TensorFlow as always."""
    from importlib import machinery, metadata
    here = _os.path.dirname(_os.path.abspath(__file__))

    def has_binaries(folder):
        names = _os.listdir(folder) if _os.path.isdir(folder) else []
        return "_dqn_ops.so" in names or any(
            n.startswith("_replay.") and n.endswith(tuple(machinery.EXTENSION_SUFFIXES))
            for n in names)

    if has_binaries(here):
        return
    for dist in metadata.distributions(name="tfdqn_ops"):
        installed = _os.path.abspath(str(dist.locate_file("tfdqn_ops")))
        if installed != here and has_binaries(installed):
            __path__.append(installed)
            return


_compiled_parts_from_installed_copy()

from tfdqn_ops import reference  # noqa: E402 - after __path__ is complete
from tfdqn_ops._common import DqnTargets  # noqa: E402
from tfdqn_ops.ops import dqn_targets, uses_compiled_op  # noqa: E402

def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    from importlib import metadata
    try:
        return metadata.version("tfdqn_ops")
    except metadata.PackageNotFoundError:  # the source tree, never installed
        return "0+unknown"


__version__ = _version()

try:
    from tfdqn_ops.replay import ReplayMemory
except ImportError as _replay_error:  # the pybind11 module was not built
    _replay_reason = str(_replay_error)

    def _unavailable():
        return ImportError(
            "tfdqn_ops.ReplayMemory is unavailable: the compiled module tfdqn_ops._replay "
            f"could not be imported ({_replay_reason}); reinstall with `pip install .`")

    class ReplayMemory:  # noqa: D101 - stands in to explain the failure on use
        def __init__(self, *args, **kwargs):
            raise _unavailable()

        @staticmethod
        def load(*args, **kwargs):
            raise _unavailable()

__all__ = ["DqnTargets", "ReplayMemory", "dqn_targets", "reference", "uses_compiled_op"]
