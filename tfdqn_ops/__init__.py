"""tfdqn_ops: DeepMind DQN 3.0's update as a fused TensorFlow op, and its replay memory.

    import tfdqn_ops  # before loading a SavedModel that uses the op
    out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals)
    loss = tf.reduce_sum(out.loss)  # its gradient at q is -targets (DQN 3.0's backward)
"""

from tfdqn_ops import reference
from tfdqn_ops._common import DqnTargets
from tfdqn_ops.ops import dqn_targets, uses_compiled_op

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
