"""Q-networks: the Nature convnet (DQN 3.0 convnet_atari3.lua), MinAtar's small convnet and an
MLP for vector states.

All are Keras 3 models, by default with Torch7's initialization, U(-1/sqrt(fan_in),
+1/sqrt(fan_in)) for weights AND biases (nn.SpatialConvolution / nn.Linear `reset`), fan_in =
inputs per output; init 'glorot' gives Dopamine's (Glorot-uniform weights, zero biases).
PyTorch's default initialization of nn.Conv2d / nn.Linear (kaiming_uniform with a = sqrt(5)
for weights, U(+-1/sqrt(fan_in)) for biases) has the same bounds, so the MinAtar network
starts as MinAtar's PyTorch dqn.py starts it.
"""

import math
from typing import Sequence

import keras
import tensorflow as tf

from tfdqn_trainer.config import PRECISIONS


def torch7_uniform(fan_in: int) -> keras.initializers.Initializer:
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def dtype_policy(precision: str) -> keras.DTypePolicy:
    """'float32', or Keras' mixed policies: layers compute in bfloat16 / float16 while their
    variables (and so the optimizer's state and the checkpoints) stay float32. The Q head
    stays float32 (Q_HEAD_POLICY)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return keras.DTypePolicy(precision)


# The Q head computes in float32 in every precision: Q values reach ~10 (Atari) to ~100
# (CartPole), where bfloat16's 8-bit mantissa has steps of 0.03 to 0.5, coarser than the
# TD errors and action gaps DQN learns from (with a bfloat16 head the classic preset's
# CartPole stalls below 195 in 30k steps; with this one it learns as float32 does). The head
# is a small share of the work (512 x actions of the Nature network's 1.7M weights).
Q_HEAD_POLICY = keras.DTypePolicy("float32")


INITS = ("torch7", "glorot")
PADDINGS = ("valid", "same")


def _initializers(init: str, fan_in: int):
    """(kernel, bias) initializers: 'torch7' U(+-1/sqrt(fan_in)) for both (DQN 3.0);
    'glorot' Glorot-uniform kernels and zero biases (Dopamine's slim layers: slim's
    xavier_initializer is Glorot uniform over fan_in + fan_out, as Keras' GlorotUniform)."""
    if init == "torch7":
        return torch7_uniform(fan_in), torch7_uniform(fan_in)
    if init == "glorot":
        return keras.initializers.GlorotUniform(), keras.initializers.Zeros()
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")


def _conv(filters, kernel, stride, in_channels, name, policy, init="torch7", padding="valid"):
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    kernel_init, bias_init = _initializers(init, in_channels * kernel * kernel)
    return keras.layers.Conv2D(filters, kernel, strides=stride, activation="relu", name=name,
                               padding=padding, kernel_initializer=kernel_init,
                               bias_initializer=bias_init, dtype=policy)


def _dense(units, fan_in, name, policy, activation=None, init="torch7"):
    kernel_init, bias_init = _initializers(init, fan_in)
    return keras.layers.Dense(units, activation=activation, name=name,
                              kernel_initializer=kernel_init, bias_initializer=bias_init,
                              dtype=policy)


def nature_network(n_actions: int, hist_len: int = 4, size: int = 84,
                   precision: str = "float32", init: str = "torch7",
                   padding: str = "valid") -> keras.Model:
    """uint8 [B, hist_len, 84, 84] -> Q [B, n_actions] float32 (reference §4); the layers
    before the Q head compute in `precision`'s compute dtype.

    Frames / 255 -> Conv 32 8x8 s4 -> ReLU -> Conv 64 4x4 s2 -> ReLU -> Conv 64 3x3 s1 -> ReLU
    -> flatten (3136; 7744 with padding 'same', Dopamine's) -> Dense 512 -> ReLU -> Dense
    n_actions, initialized as `init` says (_initializers). The input is channels-first as
    the replay stores it and is transposed once to channels-last, the layout TF's CPU
    convolutions support; that only permutes the flattened features, which the uniform
    initialization does not see. The uint8 frames are converted once, straight to the compute
    dtype.
    """
    policy = dtype_policy(precision)
    frames = keras.Input((hist_len, size, size), dtype="uint8", name="frames")
    x = keras.ops.cast(frames, policy.compute_dtype) / 255.0
    x = keras.ops.transpose(x, (0, 2, 3, 1))
    x = _conv(32, 8, 4, hist_len, "conv1", policy, init, padding)(x)
    x = _conv(64, 4, 2, 32, "conv2", policy, init, padding)(x)
    x = _conv(64, 3, 1, 64, "conv3", policy, init, padding)(x)
    x = keras.layers.Flatten(name="flatten", dtype=policy)(x)
    fan_in = int(x.shape[-1])  # 7 * 7 * 64 = 3136 for 84x84 ('same': 11 * 11 * 64 = 7744)
    x = _dense(512, fan_in, "fc", policy, activation="relu", init=init)(x)
    q = _dense(n_actions, 512, "q", Q_HEAD_POLICY, init=init)(x)
    return keras.Model(frames, q, name="nature_dqn")


def minatar_network(n_actions: int, hist_len: int = 1,
                    obs_shape: Sequence[int] = (10, 10, 4),
                    precision: str = "float32", init: str = "torch7",
                    padding: str = "valid") -> keras.Model:
    """uint8 [B, hist_len, 10, 10, C] (0/1 planes) -> Q [B, n_actions] float32.

    MinAtar's examples/dqn.py QNetwork: Conv 16 3x3 s1 (valid) -> ReLU -> flatten (8*8*16 =
    1024) -> Dense 128 -> ReLU -> Dense n_actions, on the raw 0/1 planes (no scaling). The
    observation is already channels-last; a history > 1 stacks its frames' channels.
    """
    policy = dtype_policy(precision)
    height, width, channels = obs_shape
    planes = keras.Input((hist_len, height, width, channels), dtype="uint8", name="planes")
    x = keras.ops.cast(planes, policy.compute_dtype)  # 0/1: exact in every dtype
    if hist_len > 1:  # [B, h, H, W, C] -> [B, H, W, h * C]
        x = keras.ops.transpose(x, (0, 2, 3, 1, 4))
    x = keras.layers.Reshape((height, width, hist_len * channels), name="stack", dtype=policy)(x)
    x = _conv(16, 3, 1, hist_len * channels, "conv", policy, init, padding)(x)
    x = keras.layers.Flatten(name="flatten", dtype=policy)(x)
    fan_in = int(x.shape[-1])  # (10 - 2) * (10 - 2) * 16 = 1024 ('same': 1600)
    x = _dense(128, fan_in, "fc", policy, activation="relu", init=init)(x)
    q = _dense(n_actions, 128, "q", Q_HEAD_POLICY, init=init)(x)
    return keras.Model(planes, q, name="minatar_dqn")


def mlp_network(n_actions: int, obs_dim: int, hist_len: int = 1,
                hidden: Sequence[int] = (256, 256), precision: str = "float32",
                init: str = "torch7") -> keras.Model:
    """float32 [B, hist_len, obs_dim] -> Q [B, n_actions] float32: flatten, ReLU layers,
    linear."""
    policy = dtype_policy(precision)
    obs = keras.Input((hist_len, obs_dim), dtype="float32", name="observations")
    x = keras.layers.Flatten(name="flatten", dtype=policy)(obs)
    fan_in = hist_len * obs_dim
    for i, units in enumerate(hidden):
        x = _dense(units, fan_in, f"fc{i + 1}", policy, activation="relu", init=init)(x)
        fan_in = units
    q = _dense(n_actions, fan_in, "q", Q_HEAD_POLICY, init=init)(x)
    return keras.Model(obs, q, name="mlp_dqn")


# The network each observation rank fits: frames [84, 84], planes [10, 10, C], vectors [d].
KIND_OF_RANK = {2: "nature", 3: "minatar", 1: "mlp"}
RANK_OF_KIND = {kind: rank for rank, kind in KIND_OF_RANK.items()}


def network_kind(requested: str, obs_shape: Sequence[int]) -> str:
    """--network auto -> 'nature' for Atari frames, 'minatar' for MinAtar's planes, 'mlp' for
    vector observations; an explicit kind must fit the observation's rank."""
    rank = len(obs_shape)
    if requested == "auto":
        if rank not in KIND_OF_RANK:
            raise ValueError(f"no network fits observations of shape {tuple(obs_shape)}")
        return KIND_OF_RANK[rank]
    if RANK_OF_KIND.get(requested) != rank:
        raise ValueError(f"--network {requested} does not fit observations of shape "
                         f"{tuple(obs_shape)}")
    return requested


def state_spec(kind: str, hist_len: int, obs_shape) -> tf.TensorSpec:
    """One network input without the batch dim: uint8 [hist, 84, 84], uint8 [hist, 10, 10, C]
    or float32 [hist, d]."""
    dtype = tf.float32 if kind == "mlp" else tf.uint8
    return tf.TensorSpec([hist_len, *obs_shape], dtype)


def build_network(kind: str, n_actions: int, spec: tf.TensorSpec,
                  mlp_hidden: Sequence[int] = (256, 256),
                  precision: str = "float32", init: str = "torch7",
                  padding: str = "valid") -> keras.Model:
    """kind 'nature' (spec [hist, 84, 84]), 'minatar' (spec [hist, 10, 10, C]) or 'mlp'
    (spec [hist, obs_dim]); precision one of PRECISIONS (the weights are float32 in all);
    init one of INITS; padding one of PADDINGS (convolutions only)."""
    hist_len, obs_shape = spec.shape[0], spec.shape[1:]
    if kind == "nature":
        return nature_network(n_actions, hist_len, obs_shape[0], precision, init, padding)
    if kind == "minatar":
        return minatar_network(n_actions, hist_len, obs_shape, precision, init, padding)
    if kind == "mlp":
        return mlp_network(n_actions, obs_shape[0], hist_len, mlp_hidden, precision, init)
    raise ValueError(f"unknown network kind {kind!r} (expected 'nature', 'minatar' or 'mlp')")


def compile_q(model: keras.Model, spec: tf.TensorSpec, jit_compile: bool = False):
    """states [N, *spec.shape] (numpy) -> Q [N, A] float32 numpy, through one traced
    tf.function (a mixed-precision network's Q is cast up once, inside it).

    jit_compile: XLA, about 0.5 ms faster per call for the Nature network at batch 1-8 on
    CPU (each new batch size compiles once).
    """
    batched = tf.TensorSpec([None, *spec.shape], spec.dtype)
    forward = tf.function(lambda s: tf.cast(model(s, training=False), tf.float32),
                          input_signature=[batched],
                          jit_compile=jit_compile)
    concrete = forward.get_concrete_function()  # calling it directly skips ~0.3 ms of dispatch
    return lambda states: concrete(states).numpy()


def compute_dtypes(model: keras.Model) -> set:
    """The dtypes the model's layers compute in, e.g. {'float32', 'bfloat16'}."""
    return {layer.dtype_policy.compute_dtype for layer in model.layers}


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    for s, t in zip(source.weights, target.weights):
        t.assign(s)


def count_parameters(model: keras.Model) -> int:
    return int(sum(tf.size(w).numpy() for w in model.weights))
