"""Per-row discounts and float64 precision of the hyperparameters (DqnTargetsV2).

`dqn_targets(..., discount=d)` with d of shape [batch] (gamma^k for n-step returns cut
short, 0 and 1 allowed) against the numpy transcription of DQN 3.0's update, natively and
under XLA; float64 inputs get discount, r_max and clip_delta at float64 precision; bad
discounts and bad hyperparameter inputs give clear errors.
"""

import numpy as np
import pytest
import tensorflow as tf

import dqn_numpy
import tfdqn_ops
from op_inputs import make_inputs

DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
TOL = {tf.float16: 1e-3, tf.bfloat16: 8e-3, tf.float32: 1e-6, tf.float64: 1e-15}


def as_np(t):
    return tf.cast(t, tf.float64).numpy() if t.dtype in (tf.float16, tf.bfloat16) else t.numpy()


def n_step_discounts(rng, batch, acc):
    """gamma^k for k = 1..5 with some 0 (terminal inside) and 1 (no discount)."""
    d = 0.99 ** rng.integers(1, 6, batch).astype(np.float64)
    d[rng.random(batch) < 0.15] = 0.0
    d[rng.random(batch) < 0.1] = 1.0
    return d.astype(acc)


def run(q, q_next, actions, rewards, terminals, online, discount, xla, **kwargs):
    def fn(q, q_next, actions, rewards, terminals, discount):
        return tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, discount=discount,
                                     q_next_online=online, **kwargs)
    if xla:
        fn = tf.function(fn, jit_compile=True)
    return fn(q, q_next, actions, rewards, terminals, discount)


@pytest.mark.parametrize("xla", [False, True], ids=["native", "xla"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("num_actions", [1, 6, 18, 33])
@pytest.mark.parametrize("double_dqn", [False, True])
def test_per_row_discount_matches_dqn3_numpy(xla, dtype, num_actions, double_dqn):
    rng = np.random.default_rng(num_actions * 10 + double_dqn)
    batch = 77
    q, q_next, actions, rewards, terminals, online = make_inputs(rng, batch, num_actions, dtype)
    online = online if double_dqn else None
    acc = np.float64 if dtype == tf.float64 else np.float32
    discount = tf.constant(n_step_discounts(rng, batch, acc))
    kwargs = dict(r_max=2.5, clip_delta=1.0)
    got = run(q, q_next, actions, rewards, terminals, online, discount, xla, **kwargs)
    want = dqn_numpy.get_q_update(
        as_np(q).astype(acc), as_np(q_next).astype(acc), actions.numpy(), as_np(rewards),
        terminals.numpy(), q2_online=None if online is None else as_np(online),
        discount=discount.numpy(), **kwargs)
    for name, w in zip(("loss", "targets", "delta", "q_next_max"), want):
        g = as_np(getattr(got, name)).astype(np.float64)
        np.testing.assert_allclose(g, np.asarray(w, np.float64), rtol=TOL[dtype],
                                   atol=TOL[dtype], err_msg=name)
    # Discounts in q's dtype act as their (exact) float32 values.
    in_q_dtype = tf.cast(discount, dtype)
    widened = tf.cast(in_q_dtype, acc)
    a = run(q, q_next, actions, rewards, terminals, online, in_q_dtype, xla, **kwargs)
    b = run(q, q_next, actions, rewards, terminals, online, widened, xla, **kwargs)
    np.testing.assert_array_equal(as_np(a.loss), as_np(b.loss))


@pytest.mark.parametrize("xla", [False, True], ids=["native", "xla"])
def test_float64_is_exact_in_float64(xla):
    """discount 0.99, r_max 3 and clip_delta 0.7 act as float64 values: the outputs equal a
    float64 numpy transcription to rounding (float32(0.99) would be ~1e-8 off)."""
    rng = np.random.default_rng(7)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 500, 6, tf.float64)
    kwargs = dict(r_max=3.0, clip_delta=0.7)
    for discount in (0.99, tf.constant(n_step_discounts(rng, 500, np.float64))):
        got = run(q, q_next, actions, rewards, terminals, None, discount, xla, **kwargs)
        d = discount if isinstance(discount, float) else discount.numpy()
        err = (rewards.numpy() / 3.0 + q_next.numpy().max(1) * d * (1 - terminals.numpy())
               - q.numpy()[np.arange(500), actions.numpy()])
        np.testing.assert_allclose(got.delta.numpy(), np.clip(err, -0.7, 0.7), rtol=0,
                                   atol=1e-15)
        loss = np.where(np.abs(err) <= 0.7, 0.5 * err**2, 0.7 * (np.abs(err) - 0.35))
        np.testing.assert_allclose(got.loss.numpy(), loss, rtol=1e-15, atol=1e-15)
    # float32(0.99) in place of 0.99 would be visible at this precision: the test can fail.
    off = q_next.numpy().max(1) * (np.float64(np.float32(0.99)) - 0.99)
    assert np.abs(off).max() > 1e-9


def test_scalar_tensor_discount_equals_the_python_float():
    rng = np.random.default_rng(2)
    inputs = make_inputs(rng, 40, 6, tf.float32)[:5]
    a = tfdqn_ops.dqn_targets(*inputs, discount=0.97)
    b = tfdqn_ops.dqn_targets(*inputs, discount=tf.constant(0.97))
    c = tfdqn_ops.dqn_targets(*inputs, discount=tf.fill([40], 0.97))
    for name in ("loss", "targets", "delta", "q_next_max"):
        np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
        np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(c, name).numpy())


def test_gradient_with_per_row_discounts_is_minus_targets_and_nothing_else():
    rng = np.random.default_rng(3)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 16, 4, tf.float64)
    discount = tf.constant(n_step_discounts(rng, 16, np.float64))
    weights = tf.constant(rng.random(16))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, q_next, discount])
        out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, discount=discount)
        objective = tf.reduce_sum(weights * out.loss)
    np.testing.assert_array_equal(tape.gradient(objective, q).numpy(),
                                  -weights.numpy()[:, None] * out.targets.numpy())
    assert tape.gradient(objective, discount) is None
    assert tape.gradient(objective, q_next) is None


def test_bad_discount_values_are_errors_natively_and_nan_rows_under_xla():
    rng = np.random.default_rng(4)
    inputs = make_inputs(rng, 8, 6, tf.float32)[:5]
    for bad in (1.5, -0.25, float("nan")):
        discount = np.full(8, 0.9, np.float32)
        discount[5] = bad
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"discount\[5\] = {bad} is not in \[0, 1\]"):
            tfdqn_ops.dqn_targets(*inputs, discount=tf.constant(discount))
        jitted = tf.function(lambda d: tfdqn_ops.dqn_targets(*inputs, discount=d),
                             jit_compile=True)(tf.constant(discount))
        nan_rows = np.isnan(jitted.targets.numpy()).all(axis=1)
        assert list(np.flatnonzero(nan_rows)) == [5]
        assert np.isnan(jitted.loss.numpy()[5]) and np.isfinite(jitted.loss.numpy()[:5]).all()


@pytest.mark.parametrize("discount, message", [
    (tf.zeros([8], tf.int32), r"discount: expected a Python float or a tensor of dtype float32"),
    (tf.zeros([8], tf.float64), r"discount: .*float32.*got float64"),
    (tf.zeros([2, 4]), r"discount: expected a scalar or shape \[batch\], got shape \(2, 4\)"),
    (tf.zeros([7]), r"discount: expected a scalar or shape \[8\]"),
    (1.5, r"discount: expected a value in \[0, 1\], got 1.5"),
    ("0.9", r"discount: expected a real number"),
])
def test_bad_discount_arguments(discount, message):
    rng = np.random.default_rng(5)
    inputs = make_inputs(rng, 8, 6, tf.float32)[:5]
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=message):
        tfdqn_ops.dqn_targets(*inputs, discount=discount)


RAW_GOOD = dict(q=tf.zeros([4, 3]), q_next=tf.zeros([4, 3]), q_next_online=tf.zeros([4, 3]),
                actions=tf.zeros([4], tf.int32), rewards=tf.zeros([4]),
                terminals=tf.zeros([4], tf.bool), discount=tf.constant(0.99),
                r_max=tf.constant(1.0), clip_delta=tf.constant(1.0))


@pytest.mark.parametrize("change, message", [
    (dict(discount=tf.zeros([5])), r"discount: expected a scalar or shape \[4\] \(the batch "
                                   r"size of q\), got \[5\]"),
    # (the shape function knows these shapes when the graph is built: "rank 0")
    (dict(r_max=tf.zeros([1])), r"r_max: expected (a scalar|rank 0), got shape \[1\]"),
    (dict(clip_delta=tf.zeros([2])), r"clip_delta: expected (a scalar|rank 0), got shape \[2\]"),
    (dict(r_max=tf.constant(0.0)), r"r_max: expected a value > 0, got 0"),
    (dict(r_max=tf.constant(float("inf"))), r"r_max: expected a value > 0, got inf"),
    (dict(clip_delta=tf.constant(-1.0)), r"clip_delta: expected a value >= 0"),
])
@pytest.mark.parametrize("xla", [False, True], ids=["native", "xla"])
def test_raw_v2_op_checks_its_parameter_inputs(change, message, xla):
    """The compiled DqnTargetsV2 past the Python wrapper: its C++ checks answer (under XLA
    with the shapes unknown until compilation)."""
    from tfdqn_ops import _loader
    raw = _loader.library().tfdqn_ops_dqn_targets_v2
    inputs = dict(RAW_GOOD, **change)
    if xla:
        # r_max and clip_delta must be compile-time constants: made inside the function.
        constants = {k: inputs.pop(k).numpy() for k in ("r_max", "clip_delta")}
        fn = tf.function(
            lambda *args: raw(**dict(zip(list(inputs), args)),
                              **{k: tf.constant(v) for k, v in constants.items()}),
            jit_compile=True,
            input_signature=[tf.TensorSpec(None, t.dtype) for t in inputs.values()])
        call = lambda: fn(*inputs.values())  # noqa: E731
    else:
        call = lambda: raw(**inputs)  # noqa: E731
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        call()


def test_raw_v2_op_wants_parameters_in_the_accumulator_dtype():
    """float64 parameters with float32 q: a graph's shape function says what it wants;
    eagerly TensorFlow finds no kernel and lists the registered ones (Tparams float)."""
    from tfdqn_ops import _loader
    raw = _loader.library().tfdqn_ops_dqn_targets_v2
    inputs = dict(RAW_GOOD, discount=tf.constant(0.99, tf.float64),
                  r_max=tf.constant(1.0, tf.float64), clip_delta=tf.constant(1.0, tf.float64))
    with pytest.raises(tf.errors.NotFoundError, match=r"Tparams=DT_DOUBLE"):
        raw(**inputs)
    with pytest.raises(ValueError, match=r"discount, r_max, clip_delta: expected dtype float "
                                         r"\(the op computes in it for q of dtype float\), "
                                         r"got double"):
        tf.function(lambda: raw(**inputs)).get_concrete_function()


def test_xla_says_when_r_max_is_not_a_compile_time_constant():
    from tfdqn_ops import _loader
    raw = _loader.library().tfdqn_ops_dqn_targets_v2
    inputs = dict(RAW_GOOD)
    fn = tf.function(lambda r_max: raw(**dict(inputs, r_max=r_max)), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Input 7 to node .*DqnTargetsV2.* must be a compile-time constant"):
        fn(tf.constant(1.0))
