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
from tfdqn_trainer.optimizers import DynamicLossScale, make_optimizer


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
