"""Helpers shared by the Ape-X tests."""

import time

import ray


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
