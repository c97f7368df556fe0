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


def accumulator_dtype(dtype):
    """The dtype the op computes in for q of `dtype`: float64 for float64, else float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


def is_scalar_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_hyperparameters(discount, r_max, clip_delta):
    """Validates the scalar settings; returns them as Python floats. `discount` may also be
    a tensor (checked by prepare_discount) and is then returned as it is."""
    values = {}
    settings = (("r_max", r_max), ("clip_delta", clip_delta))
    if is_scalar_number(discount) or isinstance(discount, (str, bytes, type(None), bool)):
        settings = (("discount", discount),) + settings
    else:
        values["discount"] = discount
    for name, value in settings:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}: expected a real number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value}")
        values[name] = value
    if is_scalar_number(values["discount"]) and not 0.0 <= values["discount"] <= 1.0:
        raise ValueError(f"discount: expected a value in [0, 1], got {values['discount']}")
    if not values["r_max"] > 0.0:
        raise ValueError(f"r_max: expected a value > 0, got {values['r_max']}")
    if not values["clip_delta"] >= 0.0:
        raise ValueError(
            f"clip_delta: expected a value >= 0 (0 disables clipping), got {values['clip_delta']}")
    return values["discount"], values["r_max"], values["clip_delta"]


def _to_tensor(name, value, dtype_hint=None):
    # The hint is for Python numbers and lists; an array keeps its own dtype (TensorFlow
    # would otherwise turn a float64 numpy array into float32 when hinted so).
    if hasattr(value, "dtype"):
        dtype_hint = None
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


def prepare_discount(discount, q):
    """The discount as the op takes it: a Python float as is; a tensor (or array) of rank 0
    or 1 in q's dtype or the accumulator dtype, converted to the accumulator dtype (exact:
    float16 and bfloat16 values are float32 values). Values are checked by the op."""
    if is_scalar_number(discount):
        return float(discount)
    acc = accumulator_dtype(q.dtype)
    discount = _to_tensor("discount", discount, acc)
    if discount.dtype not in (q.dtype, acc):
        raise ValueError(f"discount: expected a Python float or a tensor of dtype "
                         f"{q.dtype.name} (the dtype of q) or {acc.name}, got "
                         f"{discount.dtype.name}")
    if discount.shape.rank is not None and discount.shape.rank > 1:
        raise ValueError(f"discount: expected a scalar or shape [batch], got shape "
                         f"{discount.shape}")
    return tf.cast(discount, acc)
