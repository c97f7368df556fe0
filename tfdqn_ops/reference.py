"""A pure-TensorFlow implementation of `dqn_targets`: the test oracle and the fallback.

Composed from ordinary TF ops with `tf.stop_gradient` on the target, so plain autodiff of
the summed loss gives the same gradient as the compiled op's registered gradient. It
follows the compiled op's conventions exactly: float16/bfloat16 computed in float32 and the
hyperparameters at the precision of the computation (float32, or float64 for float64
inputs), first index on argmax ties, and a row with any NaN/Inf input produces NaN in all of
that row's outputs. Out-of-range actions and discounts raise InvalidArgumentError, as on
the compiled CPU kernel.
"""

import tensorflow as tf

from tfdqn_ops import _common


def _row_all_finite(x):
    return tf.reduce_all(tf.math.is_finite(x), axis=1)


def dqn_targets(q, q_next, actions, rewards, terminals, *, discount=0.99, r_max=1.0,
                clip_delta=1.0, q_next_online=None):
    """Same contract as `tfdqn_ops.dqn_targets`, in composed TF ops."""
    discount, r_max, clip_delta = _common.check_hyperparameters(discount, r_max, clip_delta)
    q, q_next, actions, rewards, terminals, q_next_online = _common.prepare_inputs(
        q, q_next, actions, rewards, terminals, q_next_online)
    discount = _common.prepare_discount(discount, q)
    _check_shapes(q, q_next, actions, rewards, terminals, q_next_online)
    dtype = q.dtype
    acc = _common.accumulator_dtype(dtype)
    num_actions = tf.shape(q, out_type=actions.dtype)[1]
    tf.debugging.assert_greater(num_actions, tf.zeros([], actions.dtype),
                                message="q: expected at least one action, got num_actions = 0")
    tf.debugging.assert_non_negative(actions, message="actions: values must be in [0, num_actions)")
    tf.debugging.assert_less(actions, num_actions,
                             message="actions: values must be in [0, num_actions)")

    # The compiled op takes the hyperparameters in the accumulator type; round the same way.
    gamma = tf.constant(discount, acc) if isinstance(discount, float) else discount
    if gamma.shape.rank == 1 and q.shape.rank == 2 and None not in (gamma.shape[0], q.shape[0]) \
            and gamma.shape[0] != q.shape[0]:
        raise ValueError(f"discount: expected a scalar or shape [{q.shape[0]}] (the batch size "
                         f"of q), got {gamma.shape}")
    tf.debugging.assert_greater_equal(gamma, tf.zeros([], acc),
                                      message="discount: values must be in [0, 1]")
    tf.debugging.assert_less_equal(gamma, tf.ones([], acc),
                                   message="discount: values must be in [0, 1]")
    scale = tf.constant(r_max, acc)
    clip = tf.constant(clip_delta, acc)

    q_acc = tf.cast(q, acc)
    q_next_acc = tf.stop_gradient(tf.cast(q_next, acc))
    finite = _row_all_finite(q_acc) & _row_all_finite(q_next_acc)
    if q_next_online is None:
        q_next_max = tf.reduce_max(q_next_acc, axis=1)
    else:
        online = tf.stop_gradient(tf.cast(q_next_online, acc))
        finite &= _row_all_finite(online)
        # First index among ties (tf.argmax does not promise which).
        best = tf.reduce_max(online, axis=1, keepdims=True)
        positions = tf.range(tf.shape(online)[1])[tf.newaxis, :]
        first = tf.reduce_min(
            tf.where(online == best, positions, tf.shape(online)[1]), axis=1)
        first = tf.minimum(first, tf.shape(online)[1] - 1)
        q_next_max = tf.gather(q_next_acc, first, axis=1, batch_dims=1)
    reward = tf.stop_gradient(tf.cast(rewards, acc))
    terminal = tf.stop_gradient(tf.cast(terminals, acc))
    finite &= tf.math.is_finite(reward) & tf.math.is_finite(terminal)

    target = tf.stop_gradient(reward / scale + q_next_max * gamma * (1 - terminal))
    q_taken = tf.gather(q_acc, actions, axis=1, batch_dims=1)
    err = target - q_taken
    if clip_delta > 0:
        delta = tf.clip_by_value(err, -clip, clip)
        abs_err = tf.abs(err)
        loss = tf.where(abs_err <= clip, 0.5 * tf.square(err), clip * (abs_err - 0.5 * clip))
    else:
        delta = err
        loss = 0.5 * tf.square(err)
    delta = tf.stop_gradient(delta)

    nan = tf.constant(float("nan"), acc)
    loss = tf.where(finite, loss, nan)
    delta = tf.where(finite, delta, nan)
    q_next_max = tf.where(finite, q_next_max, nan)
    one_hot = tf.one_hot(actions, tf.shape(q)[1], dtype=acc)
    targets = tf.where(finite[:, tf.newaxis], one_hot * delta[:, tf.newaxis], nan)
    return _common.DqnTargets(
        loss=tf.cast(loss, dtype),
        targets=tf.stop_gradient(tf.cast(targets, dtype)),
        delta=tf.cast(delta, dtype),
        q_next_max=tf.stop_gradient(tf.cast(q_next_max, dtype)))


def _check_shapes(q, q_next, actions, rewards, terminals, q_next_online):
    """Static checks where shapes are known (the compiled op's shape function does the same)."""
    for name, t, rank in (("q", q, 2), ("q_next", q_next, 2), ("actions", actions, 1),
                          ("rewards", rewards, 1), ("terminals", terminals, 1)) + (
                              (("q_next_online", q_next_online, 2),)
                              if q_next_online is not None else ()):
        if t.shape.rank is not None and t.shape.rank != rank:
            raise ValueError(f"{name}: expected rank {rank}, got shape {t.shape}")
    if q.shape.rank == 2:
        batch, num_actions = q.shape[0], q.shape[1]
        if num_actions == 0:
            raise ValueError("q: expected at least one action, got num_actions = 0")
        for name, t in (("q_next", q_next), ("q_next_online", q_next_online)):
            if t is not None and t.shape.rank == 2 and not t.shape.is_compatible_with(q.shape):
                raise ValueError(f"{name}: expected the shape of q {q.shape}, got {t.shape}")
        for name, t in (("actions", actions), ("rewards", rewards), ("terminals", terminals)):
            if (t.shape.rank == 1 and batch is not None and t.shape[0] is not None
                    and t.shape[0] != batch):
                raise ValueError(
                    f"{name}: expected shape [{batch}] (the batch size of q), got {t.shape}")
