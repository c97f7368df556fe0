"""The fused op against DQN 3.0's formulas (numpy), the pure-TF reference, and autodiff."""

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfdqn_ops
from tfdqn_ops import reference

import dqn_numpy
from op_inputs import conv_net_minibatch, make_inputs

DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
# Closeness of the op to the numpy transcription, per dtype: both compute in float32 (or
# float64), so outputs agree to the rounding of the output dtype.
TOL = {tf.float16: 1e-3, tf.bfloat16: 8e-3, tf.float32: 1e-6, tf.float64: 1e-12}


def as_np(t):
    return np.asarray(tf.cast(t, tf.float64))


def assert_outputs_close(got, want, dtype):
    tol = TOL[dtype]
    for name in ("loss", "targets", "delta", "q_next_max"):
        np.testing.assert_allclose(as_np(getattr(got, name)),
                                   np.asarray(getattr(want, name), np.float64),
                                   rtol=tol, atol=tol, err_msg=name)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("batch", [0, 1, 7, 32, 1000])
@pytest.mark.parametrize("num_actions", [1, 2, 4, 6, 9, 18])  # 4, 6, 9, 18: specialized loops
@pytest.mark.parametrize("clip_delta", [1.0, 0.0])
@pytest.mark.parametrize("double_dqn", [False, True])
def test_forward_matches_dqn3_numpy_and_reference(dtype, batch, num_actions, clip_delta,
                                                  double_dqn):
    rng = np.random.default_rng(batch * 100 + num_actions)
    q, q_next, actions, rewards, terminals, online = make_inputs(
        rng, batch, num_actions, dtype, ties=num_actions == 2)
    online = online if double_dqn else None
    kwargs = dict(discount=0.99, r_max=1.0, clip_delta=clip_delta)
    got = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, q_next_online=online,
                                **kwargs)
    for name, t in got._asdict().items():
        assert t.dtype == dtype, name
    assert got.targets.shape == (batch, num_actions)
    assert got.loss.shape == got.delta.shape == got.q_next_max.shape == (batch,)
    # Against DQN 3.0's formula, transcribed in numpy from the dtype-rounded inputs.
    np_in = [as_np(t) for t in (q, q_next)]
    want = dqn_numpy.get_q_update(
        np_in[0].astype(np.float64 if dtype == tf.float64 else np.float32),
        np_in[1].astype(np.float64 if dtype == tf.float64 else np.float32),
        actions.numpy(), as_np(rewards), terminals.numpy(),
        q2_online=None if online is None else as_np(online), **kwargs)
    want = tfdqn_ops.DqnTargets(*want)
    assert_outputs_close(got, want, dtype)
    # Against the pure-TF reference: same conventions, so equal to the output rounding.
    ref = reference.dqn_targets(q, q_next, actions, rewards, terminals, q_next_online=online,
                                **kwargs)
    assert_outputs_close(got, tfdqn_ops.DqnTargets(*[as_np(t) for t in ref]), dtype)


def test_float32_is_bit_exact_with_dqn3_order_of_operations():
    rng = np.random.default_rng(0)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 4096, 18)
    got = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, r_max=2.0)
    want = dqn_numpy.get_q_update(q.numpy(), q_next.numpy(), actions.numpy(), rewards.numpy(),
                                  terminals.numpy(), discount=0.99, r_max=2.0, clip_delta=1.0)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.astype(np.float32))


@pytest.mark.parametrize("num_actions", [6, 7])  # a specialized loop and the generic one
@pytest.mark.parametrize("double_dqn", [False, True])
@pytest.mark.parametrize("terminal_dtype", [tf.bool, tf.float32])
def test_large_batch_with_finite_and_poisoned_blocks_is_bit_exact(num_actions, double_dqn,
                                                                 terminal_dtype):
    # The CPU kernel checks blocks of 256 rows for NaN/Inf and runs a block that is all
    # finite without the per-element checks: both loops must give DQN 3.0's values bit for
    # bit, and a non-finite value must still poison exactly its own row. 1030 rows: four
    # full blocks and a partial one; per-row discounts (n-step returns) included.
    rng = np.random.default_rng(num_actions)
    q, q_next, actions, rewards, terminals, online = make_inputs(
        rng, 1030, num_actions, terminal_dtype=terminal_dtype)
    q, q_next, online, rewards = (t.numpy() for t in (q, q_next, online, rewards))
    discounts = rng.choice([0.0, 0.99, 0.99 ** 2, 0.99 ** 3, 1.0], 1030).astype(np.float32)
    poisoned = [300, 520, 700, 1029]  # blocks 1, 2 and 4; blocks 0 and 3 stay finite
    q[300, (actions.numpy()[300] + 1) % num_actions] = np.nan  # not the taken action
    q_next[700, 0] = np.inf
    rewards[1029] = -np.inf
    if double_dqn:
        online[520, 2] = np.nan
    else:
        q_next[520, 1] = -np.inf
    online = online if double_dqn else None
    got = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, q_next_online=online,
                                discount=discounts, r_max=2.0, clip_delta=1.0)
    want = dqn_numpy.get_q_update(q, q_next, actions.numpy(), rewards, terminals.numpy(),
                                  discount=discounts, r_max=2.0, clip_delta=1.0,
                                  q2_online=online)
    finite = np.setdiff1d(np.arange(1030), poisoned)
    for name, g, w in zip(got._fields, got, want):
        g = g.numpy()
        np.testing.assert_array_equal(g[finite], w[finite].astype(np.float32), err_msg=name)
        assert np.isnan(g[poisoned]).all(), name


def test_known_values_by_hand():
    # Row 0: err = 1 + 0.5 * 4 - 1 = 2 -> clipped to 1, Huber = 1 * (2 - 0.5) = 1.5.
    # Row 1: terminal, err = -0.5 - 0.25 = -0.75 -> not clipped, loss = 0.5 * 0.5625.
    out = tfdqn_ops.dqn_targets(
        q=[[1.0, 9.0], [3.0, 0.25]], q_next=[[4.0, -2.0], [100.0, 100.0]], actions=[0, 1],
        rewards=[1.0, -0.5], terminals=[False, True], discount=0.5)
    np.testing.assert_allclose(out.delta.numpy(), [1.0, -0.75])
    np.testing.assert_allclose(out.loss.numpy(), [1.5, 0.28125])
    np.testing.assert_allclose(out.q_next_max.numpy(), [4.0, 100.0])
    np.testing.assert_allclose(out.targets.numpy(), [[1.0, 0.0], [0.0, -0.75]])


def test_double_dqn_takes_first_index_on_ties():
    q_next = tf.constant([[10.0, 20.0, 30.0]])
    online = tf.constant([[5.0, 7.0, 7.0]])  # tie between actions 1 and 2: action 1 wins
    out = tfdqn_ops.dqn_targets(tf.zeros([1, 3]), q_next, [0], [0.0], [True], q_next_online=online)
    assert out.q_next_max.numpy()[0] == 20.0
    ref = reference.dqn_targets(tf.zeros([1, 3]), q_next, [0], [0.0], [True], q_next_online=online)
    assert ref.q_next_max.numpy()[0] == 20.0


def test_r_max_and_discount_and_float_terminals():
    rng = np.random.default_rng(3)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 64, 6, terminal_dtype=tf.float32,
                                                           action_dtype=tf.int64)
    got = tfdqn_ops.dqn_targets(q, q_next, actions, rewards * 7, terminals, discount=0.9, r_max=7.0,
                                clip_delta=0.5)
    ref = reference.dqn_targets(q, q_next, actions, rewards * 7, terminals, discount=0.9, r_max=7.0,
                                clip_delta=0.5)
    assert_outputs_close(got, ref, tf.float32)
    # A terminal of another number type is cast (0/1 are exact in every float type).
    got16 = tfdqn_ops.dqn_targets(tf.cast(q, tf.float16), tf.cast(q_next, tf.float16), actions,
                                  tf.cast(rewards, tf.float16), terminals)  # float32 terminals
    ref16 = reference.dqn_targets(tf.cast(q, tf.float16), tf.cast(q_next, tf.float16), actions,
                                  tf.cast(rewards, tf.float16), tf.cast(terminals, tf.bool))
    assert_outputs_close(got16, ref16, tf.float16)


@pytest.mark.parametrize("num_actions", [4, 5, 18])  # specialized short, generic, specialized SSE
def test_nan_and_inf_poison_only_their_row(num_actions):
    A = num_actions
    q = np.zeros([5, A], np.float32)
    q_next = np.ones([5, A], np.float32)
    rewards = np.zeros(5, np.float32)
    actions = [0, 1, 2, 3, 0]
    q[0, A - 1] = np.nan      # not the taken action: still poisons row 0
    q_next[1, A - 2] = np.inf
    rewards[2] = -np.inf
    out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, [False] * 5)
    for name in ("loss", "delta", "q_next_max"):
        v = getattr(out, name).numpy()
        assert np.isnan(v[:3]).all(), name
        assert np.isfinite(v[3:]).all(), name
    t = out.targets.numpy()
    assert np.isnan(t[:3]).all() and np.isfinite(t[3:]).all()
    ref = reference.dqn_targets(q, q_next, actions, rewards, [False] * 5)
    np.testing.assert_array_equal(np.isnan(ref.targets.numpy()), np.isnan(t))
    # Double DQN: a NaN in the selecting network poisons the row too.
    online = np.zeros([5, A], np.float32)
    online[4, A - 1] = np.nan
    out = tfdqn_ops.dqn_targets(np.zeros([5, A], np.float32), np.ones([5, A], np.float32),
                                [0] * 5, np.zeros(5, np.float32), [False] * 5, q_next_online=online)
    assert np.isnan(out.loss.numpy()[4]) and np.isfinite(out.loss.numpy()[:4]).all()


def test_empty_batch_gives_empty_outputs_and_gradient():
    q = tf.zeros([0, 6])
    with tf.GradientTape() as tape:
        tape.watch(q)
        out = tfdqn_ops.dqn_targets(q, tf.zeros([0, 6]), tf.zeros([0], tf.int32), tf.zeros([0]),
                                    tf.zeros([0], tf.bool))
        loss = tf.reduce_sum(out.loss)
    assert out.targets.shape == (0, 6) and out.loss.shape == (0,)
    assert tape.gradient(loss, q).shape == (0, 6)


# ---------------------------------------------------------------- gradient


def grads(fn, q, q_next, actions, rewards, terminals, weights=None, **kwargs):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, q_next, rewards])
        out = fn(q, q_next, actions, rewards, terminals, **kwargs)
        w = tf.ones_like(out.loss) if weights is None else weights
        total = tf.reduce_sum(w * out.loss)
    return tape.gradient(total, q), tape.gradient(total, q_next), tape.gradient(total, rewards), out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("double_dqn", [False, True])
@pytest.mark.parametrize("clip_delta", [1.0, 0.0])
def test_gradient_is_minus_targets_and_matches_reference(dtype, double_dqn, clip_delta):
    rng = np.random.default_rng(7)
    q, q_next, actions, rewards, terminals, online = make_inputs(rng, 33, 6, dtype)
    weights = tf.constant(rng.uniform(0.5, 2.0, size=33), dtype)  # e.g. importance weights
    kwargs = dict(clip_delta=clip_delta, q_next_online=online if double_dqn else None)
    g_q, g_next, g_r, out = grads(tfdqn_ops.dqn_targets, q, q_next, actions, rewards, terminals,
                                  weights, **kwargs)
    assert g_next is None and g_r is None  # nothing flows into the target side
    expected = -as_np(weights)[:, None] * as_np(out.targets)
    np.testing.assert_allclose(as_np(g_q), expected, rtol=TOL[dtype], atol=TOL[dtype])
    r_q, _, _, _ = grads(reference.dqn_targets, q, q_next, actions, rewards, terminals, weights,
                         **kwargs)
    np.testing.assert_allclose(as_np(g_q), as_np(r_q), rtol=4 * TOL[dtype], atol=4 * TOL[dtype])


@pytest.mark.parametrize("clip_delta", [1.0, 0.0])
def test_gradient_matches_numeric_gradient_float64(clip_delta):
    rng = np.random.default_rng(11)
    q, q_next, actions, rewards, terminals, online = make_inputs(rng, 9, 5, tf.float64)
    # Stay away from the Huber kink |err| == clip_delta, where the derivative jumps.
    err = as_np(reference.dqn_targets(q, q_next, actions, rewards, terminals, clip_delta=0.0,
                                      q_next_online=online).delta)  # unclipped
    assert np.all(np.abs(np.abs(err) - 1.0) > 1e-3)

    def loss_of_q(qq):
        return tfdqn_ops.dqn_targets(qq, q_next, actions, rewards, terminals,
                                     clip_delta=clip_delta, q_next_online=online).loss
    theoretical, numerical = tf.test.compute_gradient(loss_of_q, [q], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-6)


def test_no_gradient_through_targets_delta_or_q_next_max():
    rng = np.random.default_rng(5)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 8, 4)
    with tf.GradientTape() as tape:
        tape.watch(q)
        out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals)
        only_constants = (tf.reduce_sum(out.targets) + tf.reduce_sum(out.delta)
                          + tf.reduce_sum(out.q_next_max))
    g = tape.gradient(only_constants, q)
    # TF hands the gradient function zeros for the unused `loss` output, so the result is
    # an all-zero gradient (or None): in either case nothing flows through these outputs.
    assert g is None or not np.any(g.numpy())


def test_keras_conv_net_gradient_equals_dqn3_dw_and_reference():
    online, target, s, s2, actions, rewards, terminals = conv_net_minibatch()

    def grads_with(fn):
        with tf.GradientTape() as tape:
            q = online(s)
            out = fn(q, target(s2), actions, rewards, terminals)
            loss = tf.reduce_sum(out.loss)
        return tape.gradient(loss, online.trainable_variables), out

    g_op, out = grads_with(tfdqn_ops.dqn_targets)
    g_ref, _ = grads_with(reference.dqn_targets)
    # DQN 3.0: dw = network:backward(s, targets) = J(q wrt w)^T targets, a sum over the batch.
    with tf.GradientTape() as tape:
        q = online(s)
    dw = tape.gradient(q, online.trainable_variables, output_gradients=out.targets)
    assert all(g is not None for g in g_op)
    for a, b, c in zip(g_op, g_ref, dw):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.numpy(), -c.numpy(), rtol=1e-5, atol=1e-6)
    assert not any(np.allclose(g.numpy(), 0) for g in g_op[::2])  # the check is not vacuous


def test_keras_fit_with_the_op_in_the_loss():
    rng = np.random.default_rng(2)

    class TinyDqn(tf.keras.Model):
        # The plain (non-XLA) path through Keras' fit: jit_compile=False below, since Keras 3
        # turns jit_compile="auto" into True on GPU machines (the XLA lowering has its own
        # tests in test_xla.py).
        def train_step(self, data):
            s, a, r, t, q_next = data
            with tf.GradientTape() as tape:
                out = tfdqn_ops.dqn_targets(self(s), q_next, a, r, t)
                loss = tf.reduce_sum(out.loss)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"td_loss": loss}

    inputs = tf.keras.Input((4,))
    model = TinyDqn(inputs, tf.keras.layers.Dense(3)(inputs))
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), jit_compile=False)
    before = [v.numpy().copy() for v in model.trainable_variables]
    n = 64
    data = (rng.random((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32),
            rng.random(n).astype(np.float32), np.zeros(n, bool),
            rng.random((n, 3)).astype(np.float32))
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=5, verbose=0)
    losses = history.history["td_loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


# ---------------------------------------------------------------- graph modes


def test_tf_function_equals_eager_with_unknown_shapes():
    rng = np.random.default_rng(9)
    args = make_inputs(rng, 50, 18)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)] * 2 + [
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.bool)])
    def step(q, q_next, actions, rewards, terminals):
        with tf.GradientTape() as tape:
            tape.watch(q)
            out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals)
            loss = tf.reduce_sum(out.loss)
        return out, tape.gradient(loss, q)

    out_g, grad_g = step(*args[:5])
    q = args[0]
    with tf.GradientTape() as tape:
        tape.watch(q)
        out_e = tfdqn_ops.dqn_targets(*args[:5])
        loss = tf.reduce_sum(out_e.loss)
    grad_e = tape.gradient(loss, q)
    for a, b in zip(out_g, out_e):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(grad_g.numpy(), grad_e.numpy())


@pytest.mark.parametrize("double_dqn", [False, True])
def test_in_place_targets_inside_tf_function(double_dqn):
    # Inside a graph, q below is an intermediate that only the op consumes, so the kernel
    # may write targets into q's buffer (and the gradient into targets'): results must not
    # change.
    rng = np.random.default_rng(12)
    x, q_next, actions, rewards, terminals, online = make_inputs(rng, 257, 18)
    online = online if double_dqn else None

    @tf.function
    def fused(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tfdqn_ops.dqn_targets(x * 2.0, q_next, actions, rewards, terminals,
                                        q_next_online=online)
            loss = tf.reduce_sum(out.loss)
        return out, tape.gradient(loss, x)

    out, grad = fused(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        ref = reference.dqn_targets(x * 2.0, q_next, actions, rewards, terminals,
                                    q_next_online=online)
        ref_loss = tf.reduce_sum(ref.loss)
    assert_outputs_close(out, ref, tf.float32)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(ref_loss, x).numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 32, 4096, 4097])  # 4096: the kernel's reuse limit
def test_outputs_still_held_are_never_reused_eager(batch):
    # The CPU kernel hands its last per-row outputs (loss, delta, q_next_max) out again when
    # nothing else holds them. Results a caller keeps must survive later calls.
    rng = np.random.default_rng(21)
    first = make_inputs(rng, batch, 6)
    second = make_inputs(rng, batch, 6)
    kept = tfdqn_ops.dqn_targets(*first[:5])
    kept_values = [t.numpy().copy() for t in kept]
    for _ in range(3):
        tfdqn_ops.dqn_targets(*second[:5])
    later = tfdqn_ops.dqn_targets(*second[:5])
    for got, want in zip(kept, kept_values):
        np.testing.assert_array_equal(got.numpy(), want)
    q, q_next, actions, rewards, terminals = second[:5]
    want = dqn_numpy.get_q_update(q.numpy(), q_next.numpy(), actions.numpy(), rewards.numpy(),
                                  terminals.numpy(), discount=0.99, r_max=1.0, clip_delta=1.0)
    assert_outputs_close(later, tfdqn_ops.DqnTargets(*want), tf.float32)


def test_outputs_of_every_loop_iteration_are_distinct_inside_tf_function():
    # One graph node run 8 times in a loop: each iteration's loss/delta/q_next_max is kept by
    # a TensorArray while later iterations run, so none may be written again.
    rng = np.random.default_rng(22)
    q, q_next, actions, rewards, terminals, _ = make_inputs(rng, 32, 18)
    iterations = 8

    @tf.function
    def loop(q):
        arrays = [tf.TensorArray(tf.float32, size=iterations) for _ in range(3)]
        for i in tf.range(iterations):
            out = tfdqn_ops.dqn_targets(q + tf.cast(i, tf.float32), q_next, actions, rewards,
                                        terminals)
            arrays = [a.write(i, t) for a, t in zip(arrays, (out.loss, out.delta, out.q_next_max))]
        return [a.stack() for a in arrays]

    stacked = loop(q)
    for i in range(iterations):
        want = reference.dqn_targets(q + float(i), q_next, actions, rewards, terminals)
        for got, name in zip(stacked, ("loss", "delta", "q_next_max")):
            np.testing.assert_allclose(got[i].numpy(), getattr(want, name).numpy(),
                                       rtol=1e-6, atol=1e-6, err_msg=f"{name}, iteration {i}")


def test_savedmodel_round_trip_in_a_fresh_process(tmp_path):
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)] * 2 + [
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.bool)])
        def __call__(self, q, q_next, actions, rewards, terminals):
            return tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, discount=0.9).delta

    path = str(tmp_path / "model")
    tf.saved_model.save(Module(), path)
    args = ([[0.0, 1.0, 2.0]], [[3.0, 4.0, 5.0]], [1], [0.25], [False])
    expected = Module()(*[tf.constant(a) for a in args]).numpy()
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        import tfdqn_ops  # registers the op before loading
        m = tf.saved_model.load({path!r})
        args = {args!r}
        print(repr(float(m(*[tf.constant(a) for a in args]).numpy()[0])))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(float(expected[0]))
    assert expected[0] == pytest.approx(min(1.0, 0.25 + 0.9 * 5.0 - 1.0))


# ---------------------------------------------------------------- bad input


def valid_args(batch=4, num_actions=3):
    return dict(q=tf.zeros([batch, num_actions]), q_next=tf.zeros([batch, num_actions]),
                actions=tf.zeros([batch], tf.int32), rewards=tf.zeros([batch]),
                terminals=tf.zeros([batch], tf.bool))


@pytest.mark.parametrize("change, error, pattern", [
    (dict(discount=1.5), ValueError, r"discount: expected a value in \[0, 1\], got 1.5"),
    (dict(discount=-0.1), ValueError, r"discount: expected a value in \[0, 1\]"),
    (dict(r_max=0.0), ValueError, r"r_max: expected a value > 0, got 0.0"),
    (dict(clip_delta=-1.0), ValueError, r"clip_delta: expected a value >= 0"),
    (dict(discount=float("nan")), ValueError, r"discount: expected a finite number"),
    (dict(q=tf.zeros([4, 3], tf.int32)), ValueError,
     r"q: expected dtype float16, bfloat16, float32 or float64, got int32"),
    (dict(q_next=tf.zeros([4, 3], tf.float64)), ValueError,
     r"q_next: expected dtype float32 \(the dtype of q\), got float64"),
    (dict(rewards=tf.zeros([4], tf.float64)), ValueError,
     r"rewards: expected dtype float32 \(the dtype of q\), got float64"),
    (dict(actions=tf.zeros([4], tf.float32)), ValueError,
     r"actions: expected dtype int32 or int64, got float32"),
    (dict(terminals=tf.constant(["a"] * 4)), ValueError,
     r"terminals: expected dtype bool or a number type, got string"),
    (dict(q_next_online=tf.zeros([4, 3], tf.float16)), ValueError,
     r"q_next_online: expected dtype float32"),
])
def test_bad_arguments_raise_value_error(change, error, pattern):
    args = valid_args()
    args.update(change)
    with pytest.raises(error, match=pattern):
        tfdqn_ops.dqn_targets(**args)


@pytest.mark.parametrize("change, pattern", [
    (dict(q=tf.zeros([4, 3, 1])), r"q: expected rank 2"),
    (dict(q_next=tf.zeros([4, 2])), r"q_next: expected the shape of q \[4,3\], got \[4,2\]"),
    (dict(q_next=tf.zeros([5, 3])), r"q_next: expected the shape of q"),
    (dict(actions=tf.zeros([3], tf.int32)),
     r"actions: expected shape \[4\] \(the batch size of q\), got \[3\]"),
    (dict(rewards=tf.zeros([4, 1])), r"rewards: expected shape \[4\]"),
    (dict(terminals=tf.zeros([5], tf.bool)), r"terminals: expected shape \[4\]"),
    (dict(q=tf.zeros([4, 0]), q_next=tf.zeros([4, 0])), r"q: expected at least one action"),
])
def test_bad_shapes_raise_in_eager(change, pattern):
    args = valid_args()
    args.update(change)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        tfdqn_ops.dqn_targets(**args)


@pytest.mark.parametrize("change, pattern", [
    (dict(q=tf.TensorSpec([4, 3, 1])), r"q: expected rank 2"),
    (dict(q_next=tf.TensorSpec([4, 2])),
     r"number of actions of q and q_next: sizes differ, 3 vs 2"),
    (dict(actions=tf.TensorSpec([3], tf.int32)),
     r"batch size of q and actions: sizes differ, 4 vs 3"),
    (dict(rewards=tf.TensorSpec([4, 1])), r"rewards: expected rank 1"),
    (dict(q=tf.TensorSpec([4, 0]), q_next=tf.TensorSpec([4, 0])),
     r"q: expected at least one action"),
])
def test_bad_shapes_rejected_when_the_graph_is_built(change, pattern):
    specs = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in valid_args().items()}
    specs.update(change)
    names = list(specs)
    fn = tf.function(lambda *a: tfdqn_ops.dqn_targets(**dict(zip(names, a))))
    with pytest.raises(ValueError, match=pattern):
        fn.get_concrete_function(*specs.values())


@pytest.mark.parametrize("action_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize("bad", ["A", -1, 2**31 - 1])
# 3: the generic row loop; 4, 6, 9, 18: the loops specialized for Atari action counts.
@pytest.mark.parametrize("num_actions", [3, 4, 6, 9, 18])
def test_out_of_range_action_names_position_and_value(action_dtype, bad, num_actions):
    bad = num_actions if bad == "A" else bad
    args = valid_args(batch=10, num_actions=num_actions)
    actions = np.zeros(10, np.int64)
    actions[7] = bad
    actions[9] = bad  # the FIRST offending position is reported
    args["actions"] = tf.constant(actions, action_dtype)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"actions\[7\] = {bad} is not in \[0, {num_actions}\)"):
        tfdqn_ops.dqn_targets(**args)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"actions"):
        reference.dqn_targets(**args)


@pytest.mark.parametrize("first_bad", [45_000, 60_000])
def test_out_of_range_action_in_a_large_finite_batch_names_the_first(first_bad):
    # 100,000 rows: finite blocks (checked once per block, not per element) split over the
    # intra-op threads; the first offending row is reported whichever thread meets it.
    args = valid_args(batch=100_000, num_actions=6)
    actions = np.zeros(100_000, np.int32)
    actions[[first_bad, 60_001, 99_999]] = 6
    args["actions"] = tf.constant(actions)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"actions\[{first_bad}\] = 6 is not in \[0, 6\)"):
        tfdqn_ops.dqn_targets(**args)


def test_out_of_range_action_inside_tf_function_with_unknown_shapes():
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)] * 2 + [
        tf.TensorSpec(None, tf.int32), tf.TensorSpec(None, tf.float32),
        tf.TensorSpec(None, tf.bool)])
    def fn(*a):
        return tfdqn_ops.dqn_targets(*a).loss
    args = valid_args(batch=3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"actions\[1\] = 5 is not in \[0, 3\)"):
        fn(args["q"], args["q_next"], tf.constant([0, 5, 1]), args["rewards"], args["terminals"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"q: expected rank 2"):
        fn(tf.zeros([3]), args["q_next"], args["actions"][:3], args["rewards"], args["terminals"])


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(0, 40), num_actions=st.integers(1, 20), seed=st.integers(0, 2**31),
       clip=st.sampled_from([0.0, 0.5, 1.0, 3.0]), discount=st.floats(0.0, 1.0),
       r_max=st.floats(0.1, 10.0), double=st.booleans(),
       dtype=st.sampled_from([tf.float32, tf.float64, tf.float16]))
def test_property_matches_reference(batch, num_actions, seed, clip, discount, r_max, double, dtype):
    rng = np.random.default_rng(seed)
    q, q_next, actions, rewards, terminals, online = make_inputs(
        rng, batch, num_actions, dtype, ties=bool(seed % 2))
    kw = dict(discount=discount, r_max=r_max, clip_delta=clip,
              q_next_online=online if double else None)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(q)
        got = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, **kw)
        ref = reference.dqn_targets(q, q_next, actions, rewards, terminals, **kw)
        l_got, l_ref = tf.reduce_sum(got.loss), tf.reduce_sum(ref.loss)
    assert_outputs_close(got, ref, dtype)
    tol = 4 * TOL[dtype]
    np.testing.assert_allclose(as_np(tape.gradient(l_got, q)), as_np(tape.gradient(l_ref, q)),
                               rtol=tol, atol=tol)
    if clip > 0:
        assert np.all(np.abs(as_np(got.delta)) <= np.float32(clip))


# ---------------------------------------------------------------- build facts


def test_both_ops_have_cpu_kernels_and_gpu_kernels_when_built_with_cuda():
    from tensorflow.python.framework import kernels

    from tfdqn_ops import _loader
    info = _loader.build_info()
    assert info["tensorflow"] == tf.__version__ and isinstance(info["cuda"], bool)
    built_with_cuda = info["cuda"]
    for op in ("TfdqnOps>DqnTargets", "TfdqnOps>DqnTargetsV2", "TfdqnOps>DqnTargetsGrad"):
        devices = {k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}
        assert "CPU" in devices, op
        if built_with_cuda:
            assert "GPU" in devices, f"{op}: built with CUDA but no GPU kernel is registered"


@pytest.mark.parametrize("change, reason", [
    ({"tensorflow": "0.0.0"}, "the op library is built for TensorFlow 0.0.0 but TensorFlow"),
    (None, "_build_info.json is missing or unreadable"),
])
def test_loader_refuses_a_library_built_for_another_tensorflow(tmp_path, change, reason):
    """The loader compares TensorFlow's version with the one the build recorded (no
    version literal in the package), and says why it falls back to the pure-TF op."""
    import json
    import pathlib
    import shutil
    installed = pathlib.Path(tfdqn_ops.__file__).parent
    copy = tmp_path / "tfdqn_ops"
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("__pycache__"))
    info = copy / "_build_info.json"
    if change is None:
        info.unlink()
    else:
        info.write_text(json.dumps(dict(json.loads(info.read_text()), **change)))
    code = ("import warnings; warnings.simplefilter('ignore'); import tfdqn_ops; "
            "from tfdqn_ops import _loader; "
            "print(tfdqn_ops.uses_compiled_op(), _loader.load_error())")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False ") and reason in result.stdout, result.stdout


@pytest.mark.gpu
def test_gpu_kernels_match_cpu():
    rng = np.random.default_rng(4)
    for dtype, double in itertools.product([tf.float32, tf.float16], [False, True]):
        args = make_inputs(rng, 300, 18, dtype)
        kw = dict(q_next_online=args[5] if double else None)
        with tf.device("/CPU:0"):
            cpu = tfdqn_ops.dqn_targets(*args[:5], **kw)
        with tf.device("/GPU:0"):
            gpu = tfdqn_ops.dqn_targets(*args[:5], **kw)
        assert_outputs_close(gpu, cpu, dtype)


# ---------------------------------------------------------------- the C++ checks themselves

RAW_GOOD = dict(q=tf.zeros([4, 3]), q_next=tf.zeros([4, 3]), q_next_online=tf.zeros([4, 3]),
                actions=tf.zeros([4], tf.int32), rewards=tf.zeros([4]),
                terminals=tf.zeros([4], tf.bool))
RAW_BAD_SHAPES = [
    (dict(q=tf.zeros([4, 3, 1])), r"q: expected rank 2 \[batch, num_actions\], got shape "
                                  r"\[4,3,1\]"),
    (dict(q_next=tf.zeros([4, 2])), r"q_next: expected the shape of q \[4,3\], got \[4,2\]"),
    (dict(rewards=tf.zeros([5])), r"rewards: expected shape \[4\] \(the batch size of q\), "
                                  r"got \[5\]"),
    (dict(q=tf.zeros([4, 0]), q_next=tf.zeros([4, 0]), q_next_online=tf.zeros([4, 0])),
     r"q: expected at least one action"),
]


@pytest.mark.parametrize("change, message", RAW_BAD_SHAPES)
@pytest.mark.parametrize("xla", [False, True], ids=["native", "xla"])
def test_compiled_ops_check_shapes_themselves(change, message, xla):
    """The raw compiled op, past the Python wrapper's checks: the C++ check shared by the
    native kernels and the XLA lowering (dqn_targets_attrs.h) answers. Under XLA the
    shapes are unknown when the graph is built, so the lowering's own check is what runs."""
    from tfdqn_ops import _loader
    raw = _loader.library().tfdqn_ops_dqn_targets
    inputs = dict(RAW_GOOD, **change)
    if xla:
        names = list(inputs)
        run = tf.function(lambda *args: raw(**dict(zip(names, args))), jit_compile=True,
                          input_signature=[tf.TensorSpec(None, t.dtype) for t in inputs.values()])
        call = lambda: run(*inputs.values())  # noqa: E731
    else:
        call = lambda: raw(**inputs)  # noqa: E731
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call()


@pytest.mark.parametrize("attr, message", [
    (dict(discount=1.5), r"discount: expected a value in \[0, 1\], got 1.5"),
    (dict(r_max=0.0), r"r_max: expected a value > 0, got 0"),
    (dict(clip_delta=-1.0), r"clip_delta: expected a value >= 0 \(0 disables clipping\)"),
])
def test_compiled_op_checks_its_attributes(attr, message):
    from tfdqn_ops import _loader
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        _loader.library().tfdqn_ops_dqn_targets(**RAW_GOOD, **attr)


@pytest.mark.parametrize("xla", [False, True], ids=["native", "xla"])
def test_compiled_gradient_op_checks_shapes(xla):
    from tfdqn_ops import _loader
    raw = _loader.library().tfdqn_ops_dqn_targets_grad
    cases = [((tf.zeros([3]), tf.zeros([4, 3])),
              r"grad_loss: expected shape \[4\] \(the batch size of targets\), got \[3\]"),
             ((tf.zeros([4]), tf.zeros([4])),
              r"targets: expected rank 2 \[batch, num_actions\], got shape \[4\]")]
    for (grad_loss, targets), message in cases:
        if xla:
            run = tf.function(lambda g, t: raw(grad_loss=g, targets=t), jit_compile=True,
                              input_signature=[tf.TensorSpec(None, tf.float32)] * 2)
            call = lambda: run(grad_loss, targets)  # noqa: E731
        else:
            call = lambda: raw(grad_loss=grad_loss, targets=targets)  # noqa: E731
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()
