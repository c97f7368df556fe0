"""Data-only snapshots for checkpoints: JSON that carries numpy arrays, bytes and tuples, and
the state of environment objects as their plain attributes. Never pickle: loading a
checkpoint directory from elsewhere must not be able to run code, so what is read back is
data that is assigned to objects this process built itself.

    text = dumps({"rng": generator.bit_generator.state, "frames": array, "ale": b"..."})
    loads(text)  # the same values, the same types (tuple stays tuple, float32 stays float32)

    snapshot = capture(env)   # plain attributes of env and of the objects it wraps
    restore(other_env, snapshot)  # other_env: built the same way (same classes)
"""

import base64
import json
from typing import Any

import numpy as np

# Markers of the JSON encoding (a dict with exactly one of these keys).
_ARRAY, _BYTES, _TUPLE = "__ndarray__", "__bytes__", "__tuple__"
# Markers of a captured attribute that is restored in place rather than assigned.
_GENERATOR, _RANDOM_STATE, _OBJECT = "__generator__", "__random_state__", "__object__"

# Classes whose instances capture() walks into (the wrapped environment, a MinAtar game) or
# leaves alone (spaces: their RNGs draw nothing here; specs: constants of the registration).
_WALK_MODULES = ("gymnasium.", "minatar", "dqn.")
_SKIP_MODULES = ("gymnasium.spaces", "gymnasium.envs.registration")


# ---- JSON with arrays, bytes and tuples -------------------------------------------------------

def to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError("object arrays are not plain data")
        return {_ARRAY: base64.b64encode(np.ascontiguousarray(array).tobytes()).decode(),
                "dtype": array.dtype.str, "shape": list(array.shape),
                "scalar": isinstance(value, np.generic)}
    if isinstance(value, (bytes, bytearray)):
        return {_BYTES: base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple):
        return {_TUPLE: [to_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"dict keys must be strings, got {sorted(map(repr, value))[:3]}")
        return {k: to_jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} is not plain data")


def from_jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _ARRAY in value:
        raw = base64.b64decode(value[_ARRAY])
        array = np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        return array[()] if value.get("scalar") else array
    if _BYTES in value:
        return base64.b64decode(value[_BYTES])
    if _TUPLE in value:
        return tuple(from_jsonable(v) for v in value[_TUPLE])
    return {k: from_jsonable(v) for k, v in value.items()}


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value))


def loads(text: str) -> Any:
    return from_jsonable(json.loads(text))


def is_plain(value: Any) -> bool:
    try:
        to_jsonable(value)
    except TypeError:
        return False
    return True


# ---- environment objects ----------------------------------------------------------------------

def _walks_into(value: Any) -> bool:
    module = type(value).__module__ or ""
    return (hasattr(value, "__dict__") and module.startswith(_WALK_MODULES)
            and not module.startswith(_SKIP_MODULES))


def capture(obj: Any) -> dict:
    """obj's attributes that are plain data, numpy generators (as their state) and, walked
    the same way, the gymnasium / MinAtar objects it holds (a wrapper's env, a game)."""
    out = {}
    for name, value in vars(obj).items():
        if isinstance(value, np.random.Generator):
            out[name] = {_GENERATOR: value.bit_generator.state}
        elif isinstance(value, np.random.RandomState):
            out[name] = {_RANDOM_STATE: value.get_state(legacy=False)}
        elif _walks_into(value):
            out[name] = {_OBJECT: capture(value)}
        elif is_plain(value):
            out[name] = value
    return out


def restore(obj: Any, snapshot: dict) -> None:
    """Puts a capture() of an object built the same way back into obj. Raises ValueError
    when obj lacks a captured attribute or holds another kind of object there."""
    for name, value in snapshot.items():
        marker = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else None
        if marker in (_GENERATOR, _RANDOM_STATE, _OBJECT):
            current = getattr(obj, name, None)
            expected = {_GENERATOR: np.random.Generator,
                        _RANDOM_STATE: np.random.RandomState}.get(marker)
            if current is None or (expected is not None and not isinstance(current, expected)):
                raise ValueError(f"{type(obj).__name__}.{name}: the saved state holds a "
                                 f"{marker.strip('_')}, this object "
                                 f"{type(current).__name__}")
            if marker == _GENERATOR:
                current.bit_generator.state = value[marker]
            elif marker == _RANDOM_STATE:
                current.set_state(value[marker])
            else:
                restore(current, value[marker])
        else:
            setattr(obj, name, value)
