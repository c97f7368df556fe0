"""The agent: DQN 3.0's schedules as pure functions, action selection, and the update.

Step counting follows NeuralQLearner.lua `perceive`: with `step` the number of agent steps
taken before this one (DQN 3.0's numSteps), an agent step acts with epsilon(step), stores its
transition, learns if `is_update_step(step)`, then counts itself (step + 1) and copies the
target network if `is_target_copy_step(step + 1)`.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

import tfdqn_ops
from tfdqn_trainer import networks


# --------------------------------------------------------------------------------------------
# Schedules (pure functions of the agent step)


def linearly_decaying_epsilon(step: int, *, learn_start: int, ep_start: float, ep_end: float,
                              ep_endt: int) -> float:
    """ep_start until learn_start, then linear to ep_end over ep_endt steps, then ep_end.

    NeuralQLearner.lua eGreedy: ep_end + max(0, (ep_start - ep_end) *
    (ep_endt - max(0, numSteps - learn_start)) / ep_endt).
    """
    if ep_endt <= 0:
        return ep_start if step <= learn_start else ep_end
    remaining = ep_endt - max(0, step - learn_start)
    return ep_end + max(0.0, (ep_start - ep_end) * remaining / ep_endt)


def is_update_step(step: int, learn_start: int, update_freq: int) -> bool:
    """A learning call happens after the transition of agent step `step` (DQN 3.0:
    numSteps > learn_start and numSteps % update_freq == 0)."""
    return step > learn_start and step % update_freq == 0


def is_target_copy_step(count: int, target_q: int) -> bool:
    """The target network is copied when the step count, just incremented, is 1 mod target_q
    (DQN 3.0: numSteps % target_q == 1), so it picks up the update made one step before."""
    return count % target_q == 1 % target_q


def learning_events(step: int, num_steps: int, *, learn_start: int, update_freq: int,
                    n_replay: int, target_q: int) -> List[Tuple[str, int]]:
    """What follows agent steps step .. step + num_steps - 1 (one loop iteration over N envs).

    Returns ("update", k) and ("copy", 0) events in DQN 3.0's order: after agent step s, an
    update call of n_replay minibatches if is_update_step(s), then a target copy if
    is_target_copy_step(s + 1). Updates with no copy between them are merged into one event
    (they see the same replay contents and run in the same order in one call), so N envs
    make exactly the updates and copies that one env makes over the same agent steps.
    """
    events, pending = [], 0
    for s in range(step, step + num_steps):
        if is_update_step(s, learn_start, update_freq):
            pending += n_replay
        if is_target_copy_step(s + 1, target_q):
            if pending:
                events.append(("update", pending))
                pending = 0
            events.append(("copy", 0))
    if pending:
        events.append(("update", pending))
    return events


# --------------------------------------------------------------------------------------------
# Acting


def greedy_actions(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """argmax over actions of q [N, A], ties broken uniformly at random (DQN 3.0 greedy)."""
    q = np.asarray(q)
    best = q == q.max(axis=1, keepdims=True)
    noise = rng.random(q.shape)
    return np.where(best, noise, -1.0).argmax(axis=1)


def select_actions(q_values: Callable[[np.ndarray], np.ndarray], states: np.ndarray,
                   epsilon: float, n_actions: int, rng: np.random.Generator) -> np.ndarray:
    """Epsilon-greedy actions [N] for states [N, ...]; the network runs only if one env is
    greedy (a step at epsilon 1 costs no forward pass)."""
    n = len(states)
    explore = rng.random(n) < epsilon
    actions = rng.integers(0, n_actions, n)
    if not explore.all():
        actions = np.where(explore, actions, greedy_actions(q_values(states), rng))
    return actions


# --------------------------------------------------------------------------------------------
# Learning


class UpdateStats(NamedTuple):
    loss: tf.Tensor     # mean per-transition Huber loss of the batch
    mean_q: tf.Tensor   # mean over the batch of max_a Q(s, a), DQN 3.0's V estimate


class JitCompileError(RuntimeError):
    """--jit-compile was asked for and XLA cannot compile the update."""


def rmsprop(lr: float, epsilon: float = 0.01) -> keras.optimizers.Optimizer:
    """DQN 3.0's optimizer (reference §2): g = .95 g + .05 dw, g2 = .95 g2 + .05 dw^2,
    w += lr dw / sqrt(g2 - g^2 + 0.01). Keras 3 has this form, epsilon inside the sqrt, when
    the loss is a SUM over the batch."""
    return keras.optimizers.RMSprop(learning_rate=lr, rho=0.95, momentum=0.0, epsilon=epsilon,
                                    centered=True)


class _CenteredRMSprop:
    """Centered RMSprop without momentum, in plain TensorFlow ops: the two forms the presets
    need that Keras' RMSprop is not (subclasses give `_step`). Not a Keras optimizer subclass
    (which would lean on Keras' private per-variable slot API); it offers what the agent uses
    of one: build, apply_gradients and variables (the slots, in the order of the variables
    given to build: all mean squares, then all mean gradients). The learning rate is applied
    as a Python float (exact in float64)."""

    initial_square_avg = 0.0

    def __init__(self, learning_rate: float, rho: float = 0.95, epsilon: float = 0.01):
        self.learning_rate = float(learning_rate)
        self.rho = float(rho)
        self.epsilon = float(epsilon)
        self.variables: List[tf.Variable] = []
        self._slots = {}

    def build(self, var_list: Sequence[tf.Variable]) -> None:
        square_avg = [tf.Variable(tf.fill(v.shape, tf.constant(self.initial_square_avg,
                                                                 v.dtype)),
                                  trainable=False, name="square_avg") for v in var_list]
        grad_avg = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="grad_avg")
                    for v in var_list]
        # keyed by identity: the model's variables live as long as the agent
        self._slots = {id(v): slots for v, slots in zip(var_list, zip(square_avg, grad_avg))}
        self.variables = square_avg + grad_avg
        # For tf.train.Checkpoint: the slots in the order of the variables given to build.
        self.trackable = tf.train.Checkpoint(square_avg=square_avg, grad_avg=grad_avg)

    def apply_gradients(self, grads_and_vars) -> None:
        for gradient, variable in grads_and_vars:
            square_avg, grad_avg = self._slots[id(variable)]
            gradient = tf.cast(gradient, variable.dtype)
            new_square_avg, new_grad_avg, step = self._step(gradient, square_avg, grad_avg)
            square_avg.assign(new_square_avg)
            grad_avg.assign(new_grad_avg)
            variable.assign_sub(step)

    def _step(self, gradient, square_avg, grad_avg):
        """-> (new mean square, new mean gradient, the amount to subtract from the weight)."""
        raise NotImplementedError


class TorchCenteredRMSprop(_CenteredRMSprop):
    """PyTorch's `optim.RMSprop(centered=True, momentum=0)`, which MinAtar's dqn.py uses:

        g2 = rho g2 + (1 - rho) dw^2,  g = rho g + (1 - rho) dw,
        w -= lr dw / (sqrt(g2 - g^2) + epsilon)

    Keras' centered RMSprop (DQN 3.0's form) puts epsilon inside the sqrt instead; with
    epsilon 0.01 the two differ by up to 10x in step size where the gradient's variance is
    small, so the MinAtar preset needs this one. g2 - g^2 >= 0 in exact arithmetic; it is
    clamped at 0 against rounding (torch would give NaN there).
    """

    def _step(self, gradient, square_avg, grad_avg):
        rho = self.rho
        new_square_avg = rho * square_avg + (1.0 - rho) * tf.square(gradient)
        new_grad_avg = rho * grad_avg + (1.0 - rho) * gradient
        std = tf.sqrt(tf.maximum(new_square_avg - tf.square(new_grad_avg), 0.0))
        return new_square_avg, new_grad_avg, self.learning_rate * gradient / (std + self.epsilon)


class TF1CenteredRMSprop(_CenteredRMSprop):
    """TF1's `tf.compat.v1.train.RMSPropOptimizer(centered=True, momentum=0)`, which Dopamine's
    DQN uses (dqn.gin: lr 2.5e-4, decay 0.95, epsilon 1e-5). Its kernel, ApplyCenteredRMSProp
    (tensorflow/core/kernels/training_ops.cc), computes

        ms += (dw^2 - ms) (1 - rho),  mg += (dw - mg) (1 - rho),
        w -= lr dw / sqrt(ms - mg^2 + epsilon)

    epsilon inside the sqrt as in Keras 3's centered RMSprop, but TF1 starts the mean square
    `ms` at ONE (tensorflow/python/training/rmsprop.py `_create_slots`: ones_initializer for
    the "rms" slot), where Keras 3 starts it at zero. So TF1's first steps are about lr * dw
    (tiny, for gradients far below 1) instead of about lr * dw / |dw|, and grow as ms decays
    towards the gradients' scale over ~1 / (1 - rho) = 20 updates and more. The update is
    written in the kernel's form (ms + (dw^2 - ms)(1 - rho), not rho ms + (1 - rho) dw^2),
    so float32 rounding follows it too; ms - mg^2 >= 0 holds in exact arithmetic (a variance
    plus the initial one decayed) and is not clamped, as TF1 does not clamp it.
    """

    initial_square_avg = 1.0

    def _step(self, gradient, square_avg, grad_avg):
        # 1 - rho computed in the variable's dtype, as the kernel does (1 - 0.95f is not 0.05f)
        keep = tf.constant(1.0, gradient.dtype) - tf.constant(self.rho, gradient.dtype)
        new_square_avg = square_avg + (tf.square(gradient) - square_avg) * keep
        new_grad_avg = grad_avg + (gradient - grad_avg) * keep
        denominator = tf.sqrt(new_square_avg - tf.square(new_grad_avg) + self.epsilon)
        return new_square_avg, new_grad_avg, gradient * self.learning_rate / denominator


class DynamicLossScale:
    """float16's dynamic loss scaling (Micikevicius et al. 2018, "Mixed Precision Training";
    the rule Keras' LossScaleOptimizer follows): the objective is multiplied by a scale before
    differentiation so that small float16 gradients do not flush to zero, and the float32
    gradients are divided by it again. A step whose gradients are not all finite is skipped
    (weights and optimizer state untouched) and halves the scale; `growth_interval` finite
    steps in a row double it.

    Kept apart from the optimizer, not as Keras' wrapper, so that it works with every
    optimizer here (TorchCenteredRMSprop is not a Keras optimizer) and the optimizer's
    variables are the same in every precision: a checkpoint resumes under another
    --precision.
    """

    def __init__(self, initial_scale: float = 2.0 ** 15, growth_interval: int = 2000):
        self.scale = tf.Variable(initial_scale, trainable=False, dtype=tf.float32,
                                 name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="good_steps")
        self.growth_interval = int(growth_interval)
        self.variables = [self.scale, self.good_steps]
        self.trackable = tf.train.Checkpoint(scale=self.scale, good_steps=self.good_steps)

    def apply(self, optimizer, scaled_gradients, variables) -> None:
        """Unscale; apply with `optimizer` if all finite, else skip; adjust the scale."""
        gradients = [g / self.scale for g in scaled_gradients]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])

        def step():
            optimizer.apply_gradients(zip(gradients, variables))
            grow = self.good_steps + 1 >= self.growth_interval
            self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64),
                                            self.good_steps + 1))
            return tf.constant(True)

        def skip():
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)
            return tf.constant(False)

        tf.cond(finite, step, skip)


OPTIMIZERS = ("rmsprop", "rmsprop-tf1", "rmsprop-torch", "adam")


def make_optimizer(name: str, lr: float, epsilon: float = 0.01):
    """'rmsprop' (DQN 3.0), 'rmsprop-tf1' (Dopamine), 'rmsprop-torch' (MinAtar's dqn.py) or
    'adam'; epsilon is the RMSprop optimizers' (Adam keeps Keras' default).

    Centered RMSprop divides by the gradient's standard deviation plus 0.01: when the
    gradient keeps the same sign (a small task whose values all rise together), its steps
    grow to ~10 x lr x |dw| and Q can diverge; Adam's steps stay near lr. Both see the summed
    loss; Adam does not depend on the gradient's scale.
    """
    if name == "rmsprop":
        return rmsprop(lr, epsilon)
    if name == "rmsprop-tf1":
        return TF1CenteredRMSprop(lr, rho=0.95, epsilon=epsilon)
    if name == "rmsprop-torch":
        return TorchCenteredRMSprop(lr, rho=0.95, epsilon=epsilon)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    raise ValueError(f"unknown optimizer {name!r} (expected one of {', '.join(OPTIMIZERS)})")


class Agent:
    """Online and target networks, the optimizer, and the update as one tf.function.

    Args:
      make_network: builds a fresh Keras model (called twice: online and target).
      state_spec: tf.TensorSpec of one state without the batch dim, e.g. uint8 [4, 84, 84].
      discount, clip_delta, lr, double_dqn, optimizer, optimizer_epsilon: the update's
        settings (make_optimizer).
      loss_reduction: 'sum' (DQN 3.0: the gradient is minus the summed dw) or 'mean' (the sum
        divided by the batch size: PyTorch's smooth_l1_loss, MinAtar's dqn.py). The op's
        Huber loss with clip_delta 1 is smooth_l1_loss's per-element loss (beta 1), so
        sum / B is the same loss and the same gradient, hence the same optimizer step.
      jit_compile: compile the update with XLA (raises JitCompileError if it cannot).
      jit_act: compile the acting forward pass (q_values) with XLA (train.py's default too).

    Mixed precision comes with the networks (networks.build_network's precision): their
    layers compute in bfloat16 or float16, the Q head and so Q, the op and the loss in
    float32; variables and optimizer state stay float32. (Q is cast to float32 where it
    leaves a network, a no-op for this project's networks, so a network given here with a
    low-precision head works too.) A network with float16 layers gets dynamic loss scaling
    (DynamicLossScale).
    """

    def __init__(self, make_network: Callable[[], keras.Model], state_spec: tf.TensorSpec, *,
                 discount: float, clip_delta: float, lr: float, double_dqn: bool = False,
                 optimizer: str = "rmsprop", loss_reduction: str = "sum",
                 optimizer_epsilon: float = 0.01,
                 jit_compile: bool = False, jit_act: bool = True):
        if loss_reduction not in ("sum", "mean"):
            raise ValueError(f"loss_reduction must be 'sum' or 'mean', got {loss_reduction!r}")
        self.mean_loss = loss_reduction == "mean"
        self.online = make_network()
        self.target = make_network()
        networks.copy_weights(self.online, self.target)
        self.optimizer = make_optimizer(optimizer, lr, optimizer_epsilon)
        self.optimizer.build(self.online.trainable_variables)
        float16 = "float16" in networks.compute_dtypes(self.online)
        self.loss_scale = DynamicLossScale() if float16 else None
        self.discount = float(discount)
        self.clip_delta = float(clip_delta)
        self.double_dqn = bool(double_dqn)
        hist = state_spec.shape[0]
        # K minibatches of B windows of hist + 1 frames: s = window[:-1], s2 = window[1:].
        windows = tf.TensorSpec([None, None, hist + 1, *state_spec.shape[1:]], state_spec.dtype)
        batch = tf.TensorSpec([None, None], tf.float32)
        update_args = [windows, tf.TensorSpec([None, None], tf.int32), batch, batch]
        states = tf.TensorSpec([None, *state_spec.shape], state_spec.dtype)
        self._update = tf.function(self._update_steps, jit_compile=jit_compile,
                                   input_signature=update_args)
        self._update_then_q = tf.function(self._update_steps_then_q, jit_compile=jit_compile,
                                          input_signature=update_args + [states])
        self._q = networks.compile_q(self.online, state_spec, jit_compile=jit_act)
        self._copy = tf.function(lambda: networks.copy_weights(self.online, self.target))
        if jit_compile:
            self._check_jit(windows)
        self._update_fn = self._update.get_concrete_function()
        self._update_then_q_fn = self._update_then_q.get_concrete_function()
        # K = 1 (every update of MinAtar's one-update-per-frame schedule, and of DQN 3.0's
        # with one env) without the K loop: a graph while-loop has a fixed cost per call that
        # is a sizeable part of a small network's update on a CPU.
        one = [tf.TensorSpec(spec.shape[1:], spec.dtype) for spec in update_args]
        self._update_one_fn = tf.function(
            lambda *args: UpdateStats(*self._update_step(*args)), jit_compile=jit_compile,
            input_signature=one).get_concrete_function()
        self._update_one_then_q_fn = tf.function(
            self._update_one_then_q, jit_compile=jit_compile,
            input_signature=one + [states]).get_concrete_function()
        # n-step and prioritized updates (traced on first use): s and s2 apart (s2 is n
        # steps later), a bootstrap discount and an importance weight per sample.
        column = tf.TensorSpec([None], tf.float32)
        self._weighted = tf.function(
            self._weighted_step, jit_compile=jit_compile,
            input_signature=[states, states, tf.TensorSpec([None], tf.int32), column, column,
                             column, column])
        self._weighted_fn = None

    def _update_steps(self, windows, actions, rewards, terminals):
        """K minibatch updates in a row, in one call (K = n_replay or more: the updates of
        consecutive agent steps with no target copy between them)."""
        loss_sum = tf.constant(0.0)
        q_sum = tf.constant(0.0)
        k = tf.shape(windows)[0]
        for i in tf.range(k):
            loss, mean_q = self._update_step(windows[i], actions[i], rewards[i], terminals[i])
            loss_sum += loss
            q_sum += mean_q
        k = tf.cast(k, tf.float32)
        return UpdateStats(loss_sum / k, q_sum / k)

    def _update_steps_then_q(self, windows, actions, rewards, terminals, states):
        """The updates, then Q(states) with the updated weights (the reads of the weights are
        ordered after the optimizer's writes by tf.function's automatic control deps)."""
        stats = self._update_steps(windows, actions, rewards, terminals)
        return stats, _q(self.online, states, training=False)

    def _update_one_then_q(self, windows, actions, rewards, terminals, states):
        stats = UpdateStats(*self._update_step(windows, actions, rewards, terminals))
        return stats, _q(self.online, states, training=False)

    def _update_step(self, windows, actions, rewards, terminals):
        stats, _, _ = self._learn(windows[:, :-1], windows[:, 1:], actions, rewards,
                                  terminals, self.discount)
        return stats

    def _weighted_step(self, s, s2, actions, rewards, terminals, discounts, weights):
        """One update on sum_i w_i * loss_i (the op's gradient of a weighted sum is
        -w_i * targets_i), each row bootstrapped with its own discount; also returns the
        unclipped |TD error| of each row (the new priorities)."""
        stats, out, q = self._learn(s, s2, actions, rewards, terminals, discounts, weights)
        # The op's err before clipping, from its q_next_max with its operations in its order
        # (float32): r / r_max + q_next_max * discount * (1 - term) - q[a]. Equal to the op's
        # delta wherever |err| <= clip_delta (tests/test_prioritized_training.py).
        q_taken = tf.gather(q, actions, axis=1, batch_dims=1)
        err = rewards / 1.0 + out.q_next_max * discounts * (1.0 - terminals) - q_taken
        return UpdateStats(*stats), tf.abs(err)

    def _learn(self, s, s2, actions, rewards, terminals, discount, weights=None):
        """One optimizer step on the op's loss, summed (weights None: DQN 3.0's) or weighted
        by `weights`; discount a float or one per row. Returns ((mean loss, mean max Q),
        the op's outputs, Q(s))."""
        q_next = _q(self.target, s2, training=False)
        q_next_online = _q(self.online, s2, training=False) if self.double_dqn else None
        variables = self.online.trainable_variables
        with tf.GradientTape() as tape:
            q = _q(self.online, s, training=True)
            out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals,
                                        discount=discount, r_max=1.0,
                                        clip_delta=self.clip_delta, q_next_online=q_next_online)
            # A SUM: its gradient is DQN 3.0's -dw (see tfdqn_ops.dqn_targets).
            loss = tf.reduce_sum(out.loss if weights is None else weights * out.loss)
            batch = tf.cast(tf.shape(q)[0], loss.dtype)
            objective = loss / batch if self.mean_loss else loss
            if self.loss_scale is not None:
                objective = objective * self.loss_scale.scale
        gradients = tape.gradient(objective, variables)
        if self.loss_scale is None:
            self.optimizer.apply_gradients(zip(gradients, variables))
        else:
            self.loss_scale.apply(self.optimizer, gradients, variables)
        return (loss / batch, tf.reduce_mean(tf.reduce_max(q, axis=1))), out, q

    def update_weighted(self, s, s2, actions, rewards, terminals, discounts, weights):
        """One minibatch step of n-step / prioritized replay: s, s2 [B, hist, ...] (the
        network input's dtype), actions int32 [B], rewards float32 [B] (the n-step returns),
        terminals float32 [B], discounts float32 [B] (the bootstrap discounts: 0 or
        gamma^m), weights float32 [B] (importance weights; ones for uniform sampling).
        Returns (UpdateStats, |TD error| [B] numpy, unclipped, before this step's change)."""
        if self._weighted_fn is None:
            self._weighted_fn = self._weighted.get_concrete_function()
        stats, td_abs = self._weighted_fn(s, s2, actions, rewards, terminals, discounts, weights)
        return stats, td_abs.numpy()

    def _check_jit(self, windows_spec):
        shape = [1 if d is None else d for d in windows_spec.shape]
        dummy = (tf.zeros(shape, windows_spec.dtype), tf.zeros([1, 1], tf.int32),
                 tf.zeros([1, 1]), tf.zeros([1, 1]))
        try:  # lowers to HLO without running (and so without touching the weights)
            self._update.experimental_get_compiler_ir(*dummy)(stage="hlo")
        except Exception as e:  # noqa: BLE001 - any lowering failure means: cannot compile
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            # Only a missing XLA kernel for the op itself points at the install.
            old_install = "TfdqnOps" in str(e) and "XLA" in str(e)
            raise JitCompileError(
                f"--jit-compile: XLA cannot compile the update step ({first[:300]})"
                + ("; an installed tfdqn_ops built without its XLA lowering does this"
                   if old_install else "")
                + ". Run without --jit-compile.") from e

    def update(self, windows, actions, rewards, terminals) -> UpdateStats:
        """K minibatch steps, one after the other. windows [K, B, hist + 1, ...] (the network
        input's dtype), actions int32 [K, B], rewards float32 [K, B] (clipped), terminals
        float32 [K, B] (1: s2 is terminal). Returns UpdateStats (mean loss, mean max Q)."""
        if len(windows) == 1:
            return self._update_one_fn(windows[0], actions[0], rewards[0], terminals[0])
        return self._update_fn(windows, actions, rewards, terminals)

    def update_then_q(self, windows, actions, rewards, terminals,
                      next_states) -> Tuple[UpdateStats, np.ndarray]:
        """update(), then Q(next_states) [N, A] numpy from the updated network, in the same
        call: the next action selection's forward pass (it saves a call, ~1-2 ms on CPU, per
        update). next_states [N, hist, ...]."""
        if len(windows) == 1:
            stats, q = self._update_one_then_q_fn(windows[0], actions[0], rewards[0],
                                                  terminals[0], next_states)
        else:
            stats, q = self._update_then_q_fn(windows, actions, rewards, terminals, next_states)
        return stats, q.numpy()

    def q_values(self, states) -> np.ndarray:
        """Q [N, A] float32 of the online network for states [N, hist, ...]."""
        return self._q(states)

    def copy_target(self) -> None:
        self._copy()

    # Checkpoints: everything the update depends on, written with tf.train.Checkpoint (the
    # variables found by their place in the object graph: network layers, optimizer slots;
    # a mismatch is an error, not a silent partial restore). The same in every precision
    # (float32 variables) except float16's loss scale: a checkpoint without one starts it
    # afresh, and one with it resumes under float32 / bfloat16 without it.
    def _checkpoint(self, loss_scale: Optional["DynamicLossScale"]) -> tf.train.Checkpoint:
        optimizer = getattr(self.optimizer, "trackable", self.optimizer)
        parts = dict(online=self.online, target=self.target, optimizer=optimizer)
        if loss_scale is not None:
            parts["loss_scale"] = loss_scale.trackable
        return tf.train.Checkpoint(**parts)

    def write(self, prefix: str) -> None:
        """Writes the checkpoint files prefix.index and prefix.data-*."""
        self._checkpoint(self.loss_scale).write(prefix)

    def read(self, prefix: str) -> None:
        """Restores what write() wrote; ValueError naming what does not match."""
        saved = {name for name, _ in tf.train.list_variables(prefix)}
        has_scale = any(name.startswith("loss_scale/") for name in saved)
        # A saved loss scale that this precision does not use is read into a throwaway one,
        # so that everything in the checkpoint must still find its place.
        loss_scale = (self.loss_scale or DynamicLossScale()) if has_scale else None
        try:
            self._checkpoint(loss_scale).read(prefix).assert_consumed()
        except (AssertionError, ValueError) as e:  # unmatched objects; other shapes
            raise ValueError(f"checkpoint {prefix} does not match this run's networks and "
                             f"optimizer: {str(e)[:500]}") from None

    def get_state(self) -> dict:
        """The variables as numpy arrays (for comparisons in tests and benchmarks)."""
        state = {"online": [w.numpy() for w in self.online.weights],
                 "target": [w.numpy() for w in self.target.weights],
                 "optimizer": [v.numpy() for v in self.optimizer.variables]}
        if self.loss_scale is not None:
            state["loss_scale"] = [v.numpy() for v in self.loss_scale.variables]
        return state

    def set_state(self, state: dict) -> None:
        for name, variables in (("online", self.online.weights),
                                ("target", self.target.weights),
                                ("optimizer", self.optimizer.variables)):
            _assign_all(variables, state[name], name)
        if self.loss_scale is not None and "loss_scale" in state:
            _assign_all(self.loss_scale.variables, state["loss_scale"], "loss_scale")


def _q(model: keras.Model, states, training: bool) -> tf.Tensor:
    """Q [B, A] float32 of model (the one place Q leaves a network in the update)."""
    return tf.cast(model(states, training=training), tf.float32)


def _assign_all(variables: Sequence[tf.Variable], values: Sequence[np.ndarray], what: str):
    if len(variables) != len(values):
        raise ValueError(f"checkpoint has {len(values)} {what} variables, the model "
                         f"{len(variables)}")
    for var, value in zip(variables, values):
        if tuple(var.shape) != tuple(np.shape(value)):
            raise ValueError(f"checkpoint {what} variable {getattr(var, 'path', var.name)} has "
                             f"shape {np.shape(value)}, the model {tuple(var.shape)}")
        var.assign(value)
