"""Inputs shared by the op's test modules (test_dqn_targets.py, test_xla.py): random
minibatches for the op and a small Keras conv net with a minibatch for it."""

import numpy as np
import tensorflow as tf


def make_inputs(rng, batch, num_actions, dtype=tf.float32, *, terminal_dtype=tf.bool,
                action_dtype=tf.int32, ties=False):
    def values(*shape):
        if ties:
            return rng.integers(-2, 3, size=shape).astype(np.float64)
        return rng.normal(0, 1.5, size=shape)
    q = tf.constant(values(batch, num_actions), dtype)
    q_next = tf.constant(values(batch, num_actions), dtype)
    q_next_online = tf.constant(values(batch, num_actions), dtype)
    actions = tf.constant(rng.integers(0, num_actions, size=batch), action_dtype)
    rewards = tf.constant(rng.choice([-1.0, 0.0, 0.0, 1.0, 0.5], size=batch), dtype)
    terminals = tf.constant(rng.random(batch) < 0.25, tf.bool)
    if terminal_dtype != tf.bool:
        terminals = tf.cast(terminals, terminal_dtype)
    return q, q_next, actions, rewards, terminals, q_next_online


def small_conv_net(num_actions, seed):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential([
        tf.keras.layers.Input((12, 12, 2)),
        tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(num_actions),
    ])


def conv_net_minibatch(seed=21, num_actions=6, batch=32):
    """Online and target small_conv_net and a random minibatch (s, s2, a, r, term) for them."""
    rng = np.random.default_rng(seed)
    online, target = small_conv_net(num_actions, 1), small_conv_net(num_actions, 2)
    s = tf.constant(rng.random((batch, 12, 12, 2)), tf.float32)
    s2 = tf.constant(rng.random((batch, 12, 12, 2)), tf.float32)
    actions = tf.constant(rng.integers(0, num_actions, batch), tf.int32)
    rewards = tf.constant(rng.choice([-1.0, 0.0, 1.0], batch), tf.float32)
    terminals = tf.constant(rng.random(batch) < 0.2)
    return online, target, s, s2, actions, rewards, terminals
