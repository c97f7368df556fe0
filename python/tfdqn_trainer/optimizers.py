"""The optimizers of the update: DQN 3.0's centered RMSprop (Keras 3's), TF1's (Dopamine's)
and PyTorch's (MinAtar's dqn.py) centered RMSprop written out, Adam, and dynamic loss scaling
for float16 networks. Each RMSprop variant is tested against a transcription of its original
(tests/test_trainer.py, test_dopamine.py, test_minatar.py)."""

from typing import List, Sequence

import keras
import tensorflow as tf


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
