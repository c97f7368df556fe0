"""Loads the compiled op library once, or says clearly why it could not."""

import os

import tensorflow as tf

_LIBRARY_NAME = "_dqn_ops.so"
_BUILT_FOR_TF = "2.21.0"

_library = None
_load_error = None


def _load():
    global _library, _load_error
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY_NAME)
    if os.environ.get("TFDQN_FORCE_REFERENCE"):
        _load_error = "TFDQN_FORCE_REFERENCE is set"
        return
    if not os.path.exists(path):
        _load_error = (
            f"{path} does not exist: the package was not built (run `pip install .` from the "
            "repository root, and import tfdqn_ops from outside the source tree)")
        return
    if tf.__version__ != _BUILT_FOR_TF:
        _load_error = (
            f"the op library is built for TensorFlow {_BUILT_FOR_TF} but TensorFlow "
            f"{tf.__version__} is installed (pip install tensorflow=={_BUILT_FOR_TF})")
        return
    try:
        _library = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:  # undefined symbols, missing deps
        _load_error = f"tf.load_op_library({path!r}) failed: {e}"


def library():
    """The loaded op module, or None (see load_error())."""
    return _library


def load_error():
    """Why the compiled library is not in use, or None."""
    return _load_error


_load()
