"""Shared test setup: make sure the INSTALLED, COMPILED op is what gets tested."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import tfdqn_ops  # noqa: E402

_SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionstart(session):
    # Importing the source tree's package (no .so inside) would silently test the pure-TF
    # fallback against itself. Fail loudly instead, unless explicitly allowed.
    if os.environ.get("TFDQN_ALLOW_REFERENCE"):
        return
    if not tfdqn_ops.uses_compiled_op():
        from tfdqn_ops import _loader
        raise pytest.UsageError(
            f"tfdqn_ops imported from {tfdqn_ops.__file__} is not using the compiled op "
            f"({_loader.load_error()}). Install with `pip install .` and run `pytest` from the "
            "repository root (not `python -m pytest`, which puts the source tree first).")


def pytest_collection_modifyitems(config, items):
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU visible to TensorFlow")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def source_tree():
    return _SOURCE_TREE


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU Ray for one test module (the Ape-X tests), its workers importing this
    checkout's python/ (apex_helpers.TEST_RUNTIME_ENV); shut down after the module."""
    ray = pytest.importorskip("ray", reason="Ape-X needs ray (pip install '.[distributed]')")
    from apex_helpers import TEST_RUNTIME_ENV
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 << 20, runtime_env=TEST_RUNTIME_ENV)
    yield
    ray.shutdown()
