"""The op under XLA (`jit_compile=True`): the lowerings in csrc/dqn_targets_xla.cc.

Every test here checks that the XLA path really ran, not a silent fallback to the native
kernels: either through the out-of-range action (the native CPU kernel raises
InvalidArgumentError; the XLA lowering returns a NaN row) or by reading the compiled HLO.
"""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import kernels

import tfdqn_ops

from op_inputs import conv_net_minibatch, make_inputs

OPS = ("TfdqnOps>DqnTargets", "TfdqnOps>DqnTargetsV2", "TfdqnOps>DqnTargetsGrad")
DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
# XLA against the native kernels. Both compute in float32 (float64) with the same order of
# operations; the tolerance is what the task allows, the bit-exact test below is stricter.
TOL = {tf.float16: 2 * 2.0**-10, tf.bfloat16: 2 * 2.0**-7, tf.float32: 1e-6, tf.float64: 1e-12}
OUTPUTS = ("loss", "targets", "delta", "q_next_max", "grad_q")
# (clip_delta, terminals, double DQN): every variant is computed in each compiled function.
VARIANTS = [(clip, term, double) for clip in (1.0, 0.0) for term in ("bool", "float")
            for double in (False, True)]


def forward_and_grad(q, q_next, actions, rewards, t_bool, t_float, online, weights, *,
                     discount=0.97, r_max=2.5, variants=VARIANTS):
    """Outputs and d(sum w * loss)/dq of every variant; the same code runs native or jitted."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(q)
        results = []
        for clip, term, double in variants:
            out = tfdqn_ops.dqn_targets(
                q, q_next, actions, rewards, t_bool if term == "bool" else t_float,
                discount=discount, r_max=r_max, clip_delta=clip,
                q_next_online=online if double else None)
            results.append((out, tf.reduce_sum(weights * out.loss)))
    return [tuple(out) + (tape.gradient(total, q),) for out, total in results]


def variant_inputs(rng, batch, num_actions, dtype, *, ties=False, action_dtype=tf.int32):
    q, q_next, actions, rewards, t_bool, online = make_inputs(
        rng, batch, num_actions, dtype, action_dtype=action_dtype, ties=ties)
    t_float = tf.cast(t_bool, dtype)
    weights = tf.constant(rng.uniform(0.5, 2.0, size=batch), dtype)  # grad_loss != 1
    return q, q_next, actions, rewards * 2.5, t_bool, t_float, online, weights


def as_f64(t):
    return np.asarray(tf.cast(t, tf.float64))


def assert_variants_close(got, want, dtype, variants=VARIANTS, exact=False):
    assert len(got) == len(want) == len(variants)
    for variant, g, w in zip(variants, got, want):
        for name, a, b in zip(OUTPUTS, g, w):
            assert a.dtype == b.dtype and a.shape == b.shape, (variant, name)
            msg = f"{variant} {name}"
            if exact:
                np.testing.assert_array_equal(as_f64(a), as_f64(b), err_msg=msg)
            else:
                np.testing.assert_allclose(as_f64(a), as_f64(b), rtol=TOL[dtype], atol=TOL[dtype],
                                           err_msg=msg)


def hlo_instructions(hlo_text):
    """(opcode, op_type) for each instruction of an HLO module's text."""
    found = []
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%\S+ = \S+ ([a-z][a-z0-9-]*)\(", line)
        if m:
            op_type = re.search(r'op_type="([^"]*)"', line)
            found.append((m.group(1), op_type.group(1) if op_type else None))
    return found


# ---------------------------------------------------------------- XLA == native


BATCHES = [0, 1, 7, 1000]
NUM_ACTIONS = [1, 6, 18]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
def test_jit_equals_native_forward_and_gradient(dtype, batch, num_actions):
    # Two of the eight (clip, terminals, double DQN) variants per shape, rotating so that
    # each dtype meets every variant (each XLA compilation costs ~0.25 s per variant); the
    # bit-exact test below runs all eight on every dtype.
    k = (2 * (BATCHES.index(batch) * len(NUM_ACTIONS) + NUM_ACTIONS.index(num_actions))
         + 3 * DTYPES.index(dtype))
    variants = [VARIANTS[k % 8], VARIANTS[(k + 1) % 8]]
    rng = np.random.default_rng(batch * 100 + num_actions)
    # Small integers make ties: double DQN's first-index rule and the max are exercised.
    args = variant_inputs(rng, batch, num_actions, dtype, ties=num_actions == 6)
    native = forward_and_grad(*args, variants=variants)
    jitted = tf.function(lambda *a: forward_and_grad(*a, variants=variants),
                         jit_compile=True)(*args)
    assert_variants_close(jitted, native, dtype, variants)
    for out in jitted:
        assert out[1].shape == (batch, num_actions) and out[0].shape == (batch,)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_jit_is_bit_exact_with_native(dtype):
    # All eight variants, and the two XLA rewrites that would change the last bit, which
    # the lowering avoids: r / r_max with r_max not a power of two (XLA turns a division
    # by a constant into a multiplication by its reciprocal) and fractional float
    # terminals (LLVM contracts multiply + add into a fused multiply-add). Equal as
    # numbers: -0.0 == +0.0 here (the sign of a zero maximum is not pinned down).
    rng = np.random.default_rng(99)
    q, q_next, actions, rewards, t_bool, _, online, weights = variant_inputs(rng, 2000, 18, dtype)
    t_frac = tf.constant(rng.random(2000), dtype)
    args = (q, q_next, actions, rewards * 3.7, t_bool, t_frac, online, weights)
    kwargs = dict(discount=0.97, r_max=3.0)
    native = forward_and_grad(*args, **kwargs)
    jitted = tf.function(lambda *a: forward_and_grad(*a, **kwargs), jit_compile=True)(*args)
    assert_variants_close(jitted, native, dtype, exact=True)


def test_jit_nan_and_inf_poison_the_same_rows_as_native():
    q = np.zeros([6, 4], np.float32)
    q_next = np.ones([6, 4], np.float32)
    online = np.zeros([6, 4], np.float32)
    rewards = np.zeros(6, np.float32)
    terminals = np.zeros(6, np.float32)
    q[0, 3] = np.nan          # not the taken action: still poisons row 0
    q_next[1, 2] = np.inf
    rewards[2] = -np.inf
    terminals[3] = np.nan
    online[4, 1] = np.nan     # only read by double DQN
    args = [tf.constant(x) for x in (q, q_next, [0, 1, 2, 3, 0, 1], rewards, terminals, online)]

    def both(q, q_next, actions, rewards, terminals, online):
        return (tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals),
                tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, q_next_online=online))

    native = both(*args)
    jitted = tf.function(both, jit_compile=True)(*args)
    for n, j, bad_rows in zip(native, jitted, ([0, 1, 2, 3], [0, 1, 2, 3, 4])):
        for name in ("loss", "targets", "delta", "q_next_max"):
            a, b = getattr(j, name).numpy(), getattr(n, name).numpy()
            np.testing.assert_array_equal(a, b, err_msg=name)
            nan_rows = np.isnan(a.reshape(6, -1)).all(axis=1)
            assert list(np.flatnonzero(nan_rows)) == bad_rows, name


# ---------------------------------------------------------------- proof that XLA ran


def test_compiled_hlo_is_the_lowering_not_a_fallback():
    rng = np.random.default_rng(3)
    args = variant_inputs(rng, 32, 6, tf.float32)
    fn = tf.function(lambda *a: forward_and_grad(*a, variants=[(1.0, "bool", True)]),
                     jit_compile=True)
    hlo = fn.experimental_get_compiler_ir(*args)(stage="hlo")
    instructions = hlo_instructions(hlo)
    assert instructions, "no HLO instruction parsed"
    assert "custom-call" not in {op for op, _ in instructions}
    forward = {op for op, t in instructions if t == "TfdqnOps>DqnTargetsV2"}
    grad = {op for op, t in instructions if t == "TfdqnOps>DqnTargetsGrad"}
    # The op's own HLO: row reductions (max, argmax, finiteness, the one-hot pick), the
    # one-hot compare and select, the true division by r_max, the conversions.
    assert {"reduce", "compare", "select", "iota", "divide", "is-finite"} <= forward, forward
    assert "multiply" in grad, grad
    # The optimized module runs the lowering fused with the rest: still no custom call.
    optimized = fn.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
    assert "custom-call" not in {op for op, _ in hlo_instructions(optimized)}


@pytest.mark.parametrize("action_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize("double_dqn", [False, True])
def test_out_of_range_action_gives_a_nan_row_under_xla_and_raises_natively(action_dtype,
                                                                           double_dqn):
    rng = np.random.default_rng(17)
    q, q_next, actions, rewards, terminals, online = make_inputs(rng, 10, 3,
                                                                 action_dtype=action_dtype)
    online = online if double_dqn else None
    bad = actions.numpy().copy()
    bad[[2, 5, 7]] = [3, -1, 2**31 - 1]
    if action_dtype == tf.int64:
        bad[9] = -(2**40)
    bad_rows = np.flatnonzero((bad < 0) | (bad >= 3))
    good_rows = np.setdiff1d(np.arange(10), bad_rows)
    bad = tf.constant(bad, action_dtype)

    def step(q, actions):
        with tf.GradientTape() as tape:
            tape.watch(q)
            out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals,
                                        q_next_online=online)
            loss = tf.reduce_sum(out.loss)
        return out, tape.gradient(loss, q)

    # The native CPU kernel refuses the batch ...
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"actions\[2\] = 3 is not in \[0, 3\)"):
        step(q, bad)
    # ... the XLA lowering cannot raise: those rows are NaN (loss, delta, q_next_max, the
    # whole targets row, hence the gradient row), the others are exactly the native ones.
    out, grad = tf.function(step, jit_compile=True)(q, bad)
    want, want_grad = step(q, actions)
    for name in ("loss", "delta", "q_next_max"):
        v = getattr(out, name).numpy()
        assert np.isnan(v[bad_rows]).all(), name
        np.testing.assert_array_equal(v[good_rows], getattr(want, name).numpy()[good_rows])
    for got, ref in ((out.targets.numpy(), want.targets.numpy()),
                     (grad.numpy(), want_grad.numpy())):
        assert np.isnan(got[bad_rows]).all()
        np.testing.assert_array_equal(got[good_rows], ref[good_rows])


def test_zero_actions_fails_compilation_with_a_clear_error():
    spec = [tf.TensorSpec([None, None], tf.float32)] * 2 + [
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.bool)]
    fn = tf.function(lambda *a: tfdqn_ops.dqn_targets(*a).loss, input_signature=spec,
                     jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"q: expected at least one action"):
        fn(tf.zeros([4, 0]), tf.zeros([4, 0]), tf.zeros([4], tf.int32), tf.zeros([4]),
           tf.zeros([4], tf.bool))
    # Same function, valid shapes: compiles and runs (the error above was the shape, not XLA).
    assert fn(tf.zeros([4, 2]), tf.zeros([4, 2]), tf.zeros([4], tf.int32), tf.zeros([4]),
              tf.zeros([4], tf.bool)).shape == (4,)


# ---------------------------------------------------------------- models and load order


def test_gradient_tape_in_jit_function_with_keras_networks():
    num_actions = 6
    online, target, s, s2, actions, rewards, terminals = conv_net_minibatch(num_actions=num_actions)

    def grads(actions):
        with tf.GradientTape() as tape:
            out = tfdqn_ops.dqn_targets(online(s), target(s2), actions, rewards, terminals,
                                        q_next_online=online(s2))
            loss = tf.reduce_sum(out.loss)
        return loss, tape.gradient(loss, online.trainable_variables)

    jit_grads = tf.function(grads, jit_compile=True)
    loss_x, g_x = jit_grads(actions)
    loss_n, g_n = grads(actions)
    assert all(g is not None for g in g_x)
    np.testing.assert_allclose(loss_x.numpy(), loss_n.numpy(), rtol=1e-5)
    for a, b in zip(g_x, g_n):  # XLA's convolutions and matmuls round differently
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert not any(np.allclose(g.numpy(), 0) for g in g_x[::2])
    # The same compiled function on a batch with a bad action: NaN, not an error.
    bad = tf.tensor_scatter_nd_update(actions, [[0]], [num_actions])
    assert np.isnan(jit_grads(bad)[0].numpy())


class TinyDqn(tf.keras.Model):
    def train_step(self, data):
        s, a, r, t, q_next = data
        with tf.GradientTape() as tape:
            out = tfdqn_ops.dqn_targets(self(s), q_next, a, r, t)
            loss = tf.reduce_sum(out.loss)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"td_loss": loss}


def fit_tiny_dqn(data, jit_compile, epochs=5):
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((4,))
    model = TinyDqn(inputs, tf.keras.layers.Dense(3)(inputs))
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), jit_compile=jit_compile)
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=epochs,
                        verbose=0)
    return model, history.history["td_loss"]


def test_keras_fit_with_jit_compile():
    rng = np.random.default_rng(2)
    n = 64
    data = (rng.random((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32),
            rng.random(n).astype(np.float32), np.zeros(n, bool),
            rng.random((n, 3)).astype(np.float32))
    model_x, losses_x = fit_tiny_dqn(data, jit_compile=True)
    model_n, losses_n = fit_tiny_dqn(data, jit_compile=False)
    assert np.all(np.isfinite(losses_x)) and losses_x[-1] < losses_x[0]
    np.testing.assert_allclose(losses_x, losses_n, rtol=1e-5)
    for a, b in zip(model_x.trainable_variables, model_n.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # Proof that fit compiled the op with XLA: a bad action is a NaN loss under XLA and an
    # InvalidArgumentError from the native kernel.
    actions = data[1].copy()
    actions[5] = 3
    bad = (data[0], actions) + data[2:]
    _, losses_bad = fit_tiny_dqn(bad, jit_compile=True, epochs=1)
    assert np.isnan(losses_bad[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"is not in \[0, 3\)"):
        fit_tiny_dqn(bad, jit_compile=False, epochs=1)


def test_import_after_graph_functions_have_run(tmp_path):
    # The XLA op registry is frozen once the process has compiled graph functions; the
    # lowerings are kernel registrations, so importing the package late must still work.
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        x = tf.constant([[1.0, 2.0]])
        tf.function(lambda x: tf.reduce_max(x, axis=1))(x)
        tf.function(lambda x: tf.reduce_sum(x * x), jit_compile=True)(x)
        import tfdqn_ops
        assert tfdqn_ops.uses_compiled_op()
        args = ([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], [[3.0, 4.0, 5.0], [1.0, 1.0, 1.0]],
                [1, 7], [0.25, 1.0], [False, True])
        args = [tf.constant(a) for a in args]
        kw = dict(discount=0.9, clip_delta=0.0)
        jit = tf.function(lambda *a: tfdqn_ops.dqn_targets(*a, **kw), jit_compile=True)
        out = jit(*args)
        assert np.isnan(out.delta.numpy()[1]) and np.isnan(out.targets.numpy()[1]).all()
        native = tfdqn_ops.dqn_targets(*args[:2], tf.constant([1, 0]), *args[3:], **kw)
        assert out.delta.numpy()[0] == native.delta.numpy()[0], (out, native)
        print("delta0", repr(float(out.delta.numpy()[0])))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    delta0 = float(result.stdout.strip().splitlines()[-1].split()[1])
    assert delta0 == pytest.approx(0.25 + 0.9 * 5.0 - 1.0)


# ---------------------------------------------------------------- registration


def allowed_combinations(op, device):
    """(T, Tterminal, Tactions) dtype-enum combinations a device's kernels accept."""
    combos = set()
    for k in kernels.get_registered_kernels_for_op(op).kernel:
        if k.device_type != device:
            continue
        lists = {c.name: list(c.allowed_values.list.type) for c in k.constraint}
        for t in lists["T"]:
            for tt in lists.get("Tterminal", [None]):
                for ta in lists.get("Tactions", [None]):
                    combos.add((t, tt, ta))
    return combos


@pytest.mark.parametrize("op", OPS)
def test_xla_cpu_and_gpu_kernels_registered_with_the_native_type_constraints(op):
    devices = {k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}
    assert {"CPU", "XLA_CPU_JIT", "XLA_GPU_JIT"} <= devices, devices
    native = allowed_combinations(op, "CPU")
    assert native  # the check below is not vacuous
    assert allowed_combinations(op, "XLA_CPU_JIT") == native
    assert allowed_combinations(op, "XLA_GPU_JIT") == native
