"""Loads the compiled op library once, or says clearly why it could not."""

import json
import os

import tensorflow as tf

_LIBRARY_NAME = "_dqn_ops.so"
# Written by the build (CMakeLists.txt) next to the library: the TensorFlow release it was
# compiled against (a custom op only loads into that one), and whether it has CUDA kernels
# and the XLA lowerings.
_BUILD_INFO_NAME = "_build_info.json"

_library = None
_load_error = None
_build_info = None


def _library_path() -> str:
    """The op library in the first of the package's folders that has one (the package's own
    folder, or an installed copy's: see tfdqn_ops._compiled_parts_from_installed_copy)."""
    import tfdqn_ops
    folders = list(getattr(tfdqn_ops, "__path__", [])) or [os.path.dirname(__file__)]
    for folder in folders:
        path = os.path.join(os.path.abspath(folder), _LIBRARY_NAME)
        if os.path.exists(path):
            return path
    return os.path.join(os.path.abspath(folders[0]), _LIBRARY_NAME)


def _load():
    global _library, _load_error
    path = _library_path()
    if os.environ.get("TFDQN_FORCE_REFERENCE"):
        _load_error = "TFDQN_FORCE_REFERENCE is set"
        return
    if not os.path.exists(path):
        _load_error = (
            f"{path} does not exist: the package was not built (run `pip install .` from the "
            "repository root)")
        return
    global _build_info
    info_path = os.path.join(os.path.dirname(path), _BUILD_INFO_NAME)
    try:
        with open(info_path) as f:
            _build_info = json.load(f)
        built_for = _build_info["tensorflow"]
    except (OSError, ValueError, KeyError) as e:
        _load_error = (f"{info_path} is missing or unreadable ({e}): the build did not "
                       "finish; reinstall with `pip install .`")
        return
    if tf.__version__ != built_for:
        _load_error = (
            f"the op library is built for TensorFlow {built_for} but TensorFlow "
            f"{tf.__version__} is installed (pip install tensorflow=={built_for}, or rebuild "
            "with `pip install .`)")
        return
    try:
        _library = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:  # undefined symbols, missing deps
        _load_error = f"tf.load_op_library({path!r}) failed: {e}"


def library():
    """The loaded op module, or None (see load_error())."""
    return _library


def build_info():
    """{'tensorflow': version, 'cuda': bool, 'xla': bool} of the installed build, or None."""
    return _build_info


def load_error():
    """Why the compiled library is not in use, or None."""
    return _load_error


_load()
