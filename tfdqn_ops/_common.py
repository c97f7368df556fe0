"""Argument checking and the result type shared by the compiled op and the reference."""

import collections
import math
import numbers

import tensorflow as tf

DqnTargets = collections.namedtuple("DqnTargets", ["loss", "targets", "delta", "q_next_max"])
DqnTargets.__doc__ = """Outputs of `dqn_targets`.

Fields:
  loss: [batch] Huber loss (threshold clip_delta) of the unclipped TD error; 0.5 * err^2
    when clip_delta == 0. Differentiable with respect to q only.
  targets: [batch, num_actions] zeros except targets[i, actions[i]] = delta[i]
    (DQN 3.0's `targets`). Constant to autodiff.
  delta: [batch] the TD error clipped to [-clip_delta, clip_delta]. Constant to autodiff.
  q_next_max: [batch] the bootstrap value max_a q_next[i, a] (or the double-DQN
    selection). Constant to autodiff.
"""

FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
INDEX_DTYPES = (tf.int32, tf.int64)


def check_hyperparameters(discount, r_max, clip_delta):
    """Validates the scalar settings; returns them as Python floats."""
    values = {}
    for name, value in (("discount", discount), ("r_max", r_max), ("clip_delta", clip_delta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}: expected a real number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value}")
        values[name] = value
    if not 0.0 <= values["discount"] <= 1.0:
        raise ValueError(f"discount: expected a value in [0, 1], got {values['discount']}")
    if not values["r_max"] > 0.0:
        raise ValueError(f"r_max: expected a value > 0, got {values['r_max']}")
    if not values["clip_delta"] >= 0.0:
        raise ValueError(
            f"clip_delta: expected a value >= 0 (0 disables clipping), got {values['clip_delta']}")
    return values["discount"], values["r_max"], values["clip_delta"]


def _to_tensor(name, value, dtype_hint=None):
    try:
        return tf.convert_to_tensor(value, dtype_hint=dtype_hint)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: could not be converted to a tensor: {e}") from e


def prepare_inputs(q, q_next, actions, rewards, terminals, q_next_online):
    """Converts the inputs to tensors and checks their dtypes (shapes are checked by the op).

    Returns (q, q_next, actions, rewards, terminals, q_next_online) where terminals is bool
    or q's dtype (a float or integer terminal of another dtype is cast: 0/1 are exact in
    every float type), and q_next_online is None for plain DQN.
    """
    q = _to_tensor("q", q, tf.float32)
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"q: expected dtype float16, bfloat16, float32 or float64, got {q.dtype.name}")
    q_next = _to_tensor("q_next", q_next, q.dtype)
    if q_next.dtype != q.dtype:
        raise ValueError(
            f"q_next: expected dtype {q.dtype.name} (the dtype of q), got {q_next.dtype.name}")
    if q_next_online is not None:
        q_next_online = _to_tensor("q_next_online", q_next_online, q.dtype)
        if q_next_online.dtype != q.dtype:
            raise ValueError(f"q_next_online: expected dtype {q.dtype.name} (the dtype of q), "
                             f"got {q_next_online.dtype.name}")
    actions = _to_tensor("actions", actions, tf.int32)
    if actions.dtype not in INDEX_DTYPES:
        raise ValueError(f"actions: expected dtype int32 or int64, got {actions.dtype.name}")
    rewards = _to_tensor("rewards", rewards, q.dtype)
    if rewards.dtype != q.dtype:
        raise ValueError(
            f"rewards: expected dtype {q.dtype.name} (the dtype of q), got {rewards.dtype.name}")
    terminals = _to_tensor("terminals", terminals, tf.bool)
    if terminals.dtype != tf.bool and terminals.dtype != q.dtype:
        if not (terminals.dtype.is_floating or terminals.dtype.is_integer):
            raise ValueError(
                f"terminals: expected dtype bool or a number type, got {terminals.dtype.name}")
        terminals = tf.cast(terminals, q.dtype)
    return q, q_next, actions, rewards, terminals, q_next_online
