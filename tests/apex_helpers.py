"""Helpers shared by the Ape-X tests."""

import os
import time

import ray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests' Ray workers import the trainer from this checkout's python/, as the tests do
# (pytest's pythonpath): Ray gives a worker the driver's current directory, not its path.
# Without it they would run the installed copy, which may predate an edit.
TEST_RUNTIME_ENV = {"env_vars": {"PYTHONPATH": os.path.join(REPO, "python")}}


def actor_places(timeout=120):
    """{name: (pid, node id)} of the running Ape-X actors, once there are two."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        names = [n for n in ray.util.list_named_actors() if n.startswith("apex-actor-")]
        if len(names) == 2:
            try:
                return {n: ray.get(ray.get_actor(n).where.remote(), timeout=30) for n in names}
            except (ray.exceptions.RayError, ValueError):
                pass
        time.sleep(0.5)
    return {}
