"""`dqn_targets`: the fused DQN 3.0 target block as one compiled op, with its gradient."""

import warnings

import tensorflow as tf

from tfdqn_ops import _common, _loader, reference

# DqnTargetsV2 takes discount, r_max and clip_delta as inputs (per-row discounts, float64
# precision); DqnTargets (float32 attributes) stays registered for graphs that hold it.
_OP_NAMES = ("TfdqnOps>DqnTargets", "TfdqnOps>DqnTargetsV2")


def dqn_targets(q, q_next, actions, rewards, terminals, *, discount=0.99, r_max=1.0,
                clip_delta=1.0, q_next_online=None):
    """DQN 3.0's target computation (`getQUpdate`) fused into one op, one pass over the data.

    For each row i of the minibatch:

        q_next_max[i] = max_a q_next[i, a]
                        (double DQN: q_next[i, argmax_a q_next_online[i, a]], the FIRST
                        index among ties)
        err[i]        = rewards[i] / r_max + discount[i] * (1 - terminals[i]) * q_next_max[i]
                        - q[i, actions[i]]
        delta[i]      = clamp(err[i], -clip_delta, clip_delta)   (clip_delta = 0: no clip)
        targets[i, :] = 0, except targets[i, actions[i]] = delta[i]
        loss[i]       = Huber_{clip_delta}(err[i])               (0.5 * err[i]^2 if no clip)

    Gradient contract: the only differentiable output is `loss`, and the only input that
    receives a gradient is `q`: d(sum_i w[i] * loss[i]) / dq = -w[:, None] * targets,
    computed by one fused gradient op. So `tape.gradient(tf.reduce_sum(loss), variables)`
    is exactly the negative of DQN 3.0's `dw` from `network:backward(s, targets)` (a sum
    over the batch); an optimizer that descends it performs DQN 3.0's ascent on `dw`.
    `targets`, `delta` and `q_next_max` are constants to autodiff, and nothing flows into
    `q_next`, `q_next_online`, `rewards`, `terminals` or `actions`.

    Args:
      q: float Tensor [batch, num_actions], the online network's Q(s, .). float16,
        bfloat16 (computed in float32), float32 or float64.
      q_next: Tensor [batch, num_actions] of q's dtype, the target network's Q(s2, .).
      actions: int32 or int64 Tensor [batch], each in [0, num_actions).
      rewards: Tensor [batch] of q's dtype (Python or numpy values are converted).
      terminals: Tensor [batch], bool or numbers (1 = terminal); a number type other than
        q's dtype is cast to it.
      discount: gamma in [0, 1]: a Python float for the whole batch, or a Tensor of shape
        [batch] (one per row, e.g. gamma^k for n-step returns cut short; 0 allowed) or []
        of q's dtype or the dtype the op computes in (float32; float64 for float64 q).
      r_max: rewards are divided by r_max (> 0), DQN 3.0's rescale_r.
      clip_delta: >= 0; the TD error is clipped to +-clip_delta, and the loss is the Huber
        loss with that threshold. 0 disables clipping.
      q_next_online: optional Tensor [batch, num_actions] of q's dtype, the ONLINE network's
        Q(s2, .), which selects the action for double DQN.

    Returns:
      A `DqnTargets(loss, targets, delta, q_next_max)` named tuple, all of q's dtype.

    Raises:
      ValueError: bad hyperparameters or dtypes; bad ranks or mismatched sizes when the
        shapes are known while building a graph.
      tf.errors.InvalidArgumentError: at run time, for shapes that were not known before,
        num_actions == 0, or an action outside [0, num_actions) or a discount outside
        [0, 1] on the CPU kernel (the message names the first offending position and
        value).

    Notes:
      The op computes in float32 (float16, bfloat16 and float32 inputs) or float64
      (float64 inputs), and discount, r_max and clip_delta act at that precision: with
      float64 inputs the results equal a float64 transcription of the formula. batch == 0
      gives empty outputs. A row with any
      NaN or +-Inf among its inputs (any entry of q[i], q_next[i], q_next_online[i], or
      rewards[i], terminals[i]) gets NaN in all its outputs: never a crash, never a
      plausible number.

      An action outside [0, num_actions) (or a per-row discount outside [0, 1]), by where
      the op runs:

        native CPU kernel   raises InvalidArgumentError naming the first offending
                            position and value.
        native GPU kernel   cannot raise (that would need a synchronisation): the row's
                            loss, delta, q_next_max and whole targets row are NaN, so its
                            gradient row is NaN too; the other rows are unaffected.
        XLA (CPU and GPU)   as the GPU kernel: XLA cannot raise a data-dependent error.
                            Nothing is read or written out of bounds.

      XLA: inside `tf.function(jit_compile=True)` (and Keras `jit_compile=True`) the op
      and its gradient are lowered to plain HLO, fused with the surrounding network. On
      CPU the results equal the native kernels' bit for bit (tested; a zero maximum may
      differ in sign). The GPU lowering is the same HLO, registered but not yet run on a
      GPU. num_actions == 0 fails compilation. Shapes are static under XLA: each new
      batch size compiles again. r_max and clip_delta are compile-time constants there (a
      per-row discount is data).
    """
    discount, r_max, clip_delta = _common.check_hyperparameters(discount, r_max, clip_delta)
    library = _loader.library()
    if library is None:
        return reference.dqn_targets(q, q_next, actions, rewards, terminals, discount=discount,
                                     r_max=r_max, clip_delta=clip_delta,
                                     q_next_online=q_next_online)
    q, q_next, actions, rewards, terminals, q_next_online = _common.prepare_inputs(
        q, q_next, actions, rewards, terminals, q_next_online)
    discount = _common.prepare_discount(discount, q)
    acc = _common.accumulator_dtype(q.dtype)
    double_dqn = q_next_online is not None
    # When double_dqn is False the op never reads q_next_online; passing q_next keeps one
    # signature (TF ops have no optional inputs) without allocating anything.
    outputs = library.tfdqn_ops_dqn_targets_v2(
        q=q, q_next=q_next, q_next_online=q_next_online if double_dqn else q_next,
        actions=actions, rewards=rewards, terminals=terminals,
        discount=tf.constant(discount, acc) if isinstance(discount, float) else discount,
        r_max=tf.constant(r_max, acc), clip_delta=tf.constant(clip_delta, acc),
        double_dqn=double_dqn)
    return _common.DqnTargets(*outputs)


def uses_compiled_op():
    """True when `dqn_targets` runs the compiled kernels (False: the pure-TF fallback)."""
    return _loader.library() is not None


def _dqn_targets_grad(op, grad_loss, grad_targets, grad_delta, grad_q_next_max):
    # targets, delta and q_next_max are constants to autodiff: their upstream gradients are
    # ignored by design (see the docstring); only q gets a gradient.
    del grad_targets, grad_delta, grad_q_next_max
    if grad_loss is None:
        grad_q = None
    else:
        grad_q = _loader.library().tfdqn_ops_dqn_targets_grad(
            grad_loss=grad_loss, targets=op.outputs[1])
    return [grad_q] + [None] * (len(op.inputs) - 1)


def _register_gradient():
    for name in _OP_NAMES:
        tf.RegisterGradient(name)(_dqn_targets_grad)


if _loader.library() is not None:
    _register_gradient()
else:
    warnings.warn(
        "tfdqn_ops: the compiled op library is not in use, so dqn_targets runs the slower "
        f"pure-TF reference implementation. Reason: {_loader.load_error()}",
        RuntimeWarning, stacklevel=2)
