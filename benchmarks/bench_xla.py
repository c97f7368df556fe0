"""A whole DQN update step (Nature network) with and without XLA, on this machine.

One update, as the trainer does it: the online network on s (with a GradientTape), the
target network on s2, the target block, the summed loss, and Keras' centered RMSprop
(DQN's: lr 2.5e-4, rho 0.95, eps 0.01) applying the gradient. Minibatch 32, 84x84x4 uint8
frames scaled by 1/255, 6 actions. Variants, each as a tf.function with jit_compile
False and True:

  op         tfdqn_ops.dqn_targets (the fused op; under XLA its HLO lowering)
  op-double  the same with double DQN (one more forward of the online network on s2)
  plain      plain Keras/TF without the op: reduce_max, one-hot gather, Huber

Every variant is timed per update (the loss is fetched, so the step has finished) in
interleaved rounds, so slow drifts of the machine hit all variants alike; the table gives
the median and the 10th-90th percentiles in ms per update.

    python benchmarks/bench_xla.py                               # prints the table
    python benchmarks/bench_xla.py --out /tmp/xla.md    # and writes it (docs/BENCHMARKS.md §4)
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdqn_ops  # noqa: E402
from _machine import cpu_name  # noqa: E402

BATCH, NUM_ACTIONS = 32, 6
DISCOUNT, R_MAX, CLIP = 0.99, 1.0, 1.0


def nature_network(seed):
    tf.keras.utils.set_random_seed(seed)
    frames = tf.keras.Input((84, 84, 4), dtype="uint8")
    x = tf.keras.layers.Rescaling(1.0 / 255)(frames)
    x = tf.keras.layers.Conv2D(32, 8, strides=4, activation="relu")(x)
    x = tf.keras.layers.Conv2D(64, 4, strides=2, activation="relu")(x)
    x = tf.keras.layers.Conv2D(64, 3, strides=1, activation="relu")(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(512, activation="relu")(x)
    return tf.keras.Model(frames, tf.keras.layers.Dense(NUM_ACTIONS)(x))


def op_targets(online, target, s, s2, actions, rewards, terminals, double):
    q = online(s)
    q_next = target(s2)
    online_next = online(s2) if double else None
    out = tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals, discount=DISCOUNT,
                                r_max=R_MAX, clip_delta=CLIP, q_next_online=online_next)
    return tf.reduce_sum(out.loss)


def plain_targets(online, target, s, s2, actions, rewards, terminals, double):
    """What a Keras user writes without the op."""
    del double
    q = online(s)
    not_done = 1.0 - tf.cast(terminals, tf.float32)
    y = tf.stop_gradient(rewards / R_MAX + DISCOUNT * not_done * tf.reduce_max(target(s2), axis=1))
    q_taken = tf.reduce_sum(q * tf.one_hot(actions, NUM_ACTIONS), axis=1)
    err = tf.abs(y - q_taken)
    quadratic = tf.minimum(err, CLIP)
    return tf.reduce_sum(0.5 * tf.square(quadratic) + CLIP * (err - quadratic))


def make_update(loss_fn, double, jit_compile):
    online, target = nature_network(1), nature_network(2)
    optimizer = tf.keras.optimizers.RMSprop(learning_rate=2.5e-4, rho=0.95, epsilon=0.01,
                                            centered=True)

    @tf.function(jit_compile=jit_compile)
    def update(s, s2, actions, rewards, terminals):
        with tf.GradientTape() as tape:
            loss = loss_fn(online, target, s, s2, actions, rewards, terminals, double)
        grads = tape.gradient(loss, online.trainable_variables)
        optimizer.apply_gradients(zip(grads, online.trainable_variables))
        return loss

    return update


def minibatches(rng, count):
    out = []
    for _ in range(count):
        out.append((
            tf.constant(rng.integers(0, 256, (BATCH, 84, 84, 4), dtype=np.uint8)),
            tf.constant(rng.integers(0, 256, (BATCH, 84, 84, 4), dtype=np.uint8)),
            tf.constant(rng.integers(0, NUM_ACTIONS, BATCH), tf.int32),
            tf.constant(rng.choice([-1.0, 0.0, 0.0, 1.0], BATCH), tf.float32),
            tf.constant(rng.random(BATCH) < 0.05),
        ))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="timed updates per variant and round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if not tfdqn_ops.uses_compiled_op():
        sys.exit("tfdqn_ops is not using the compiled op library "
                 "(run from outside the source tree)")

    variants = [("op", op_targets, False), ("op-double", op_targets, True),
                ("plain", plain_targets, False)]
    updates = {}
    for name, fn, double in variants:
        for jit in (False, True):
            updates[(name, jit)] = make_update(fn, double, jit)
    batches = minibatches(np.random.default_rng(0), 8)
    for update in updates.values():  # trace, compile, warm up
        for i in range(args.warmup):
            update(*batches[i % len(batches)]).numpy()

    times = {key: [] for key in updates}
    for r in range(args.rounds):
        for key, update in updates.items():
            for i in range(args.steps):
                b = batches[(r * args.steps + i) % len(batches)]
                t0 = time.perf_counter()
                update(*b).numpy()
                times[key].append(time.perf_counter() - t0)

    def ms(values, q):
        return 1e3 * float(np.percentile(values, q))

    base = statistics.median(times[("plain", False)])
    rows = ["| update step | jit_compile | median ms/update | p10-p90 ms | vs plain, no XLA |",
            "|---|---|---|---|---|"]
    for (name, jit), values in times.items():
        median = statistics.median(values)
        rows.append(f"| {name} | {jit} | {1e3 * median:.1f} | "
                    f"{ms(values, 10):.1f}-{ms(values, 90):.1f} "
                    f"| {median / base:.2f}x |")
    table = "\n".join(rows)
    command = "python benchmarks/bench_xla.py " + " ".join(sys.argv[1:])
    machine = (f"{cpu_name()}, {os.cpu_count()} logical CPUs, TensorFlow {tf.__version__}, "
               f"Keras {keras.__version__}, "
               f"Python {platform.python_version()}, "
               f"GPU visible to TF: {bool(tf.config.list_physical_devices('GPU'))}")
    load = os.getloadavg()
    legend = ("op: `tfdqn_ops.dqn_targets` (under XLA, its HLO lowering fused with the "
              "networks); op-double: the same with double DQN (one more online forward, on "
              "s2); plain: plain Keras/TF targets without the op (reduce_max, one-hot "
              "gather, Huber). Every update: online forward on s, target forward on s2, "
              "summed loss, gradient, centered RMSprop (lr 2.5e-4, rho 0.95, eps 0.01).")
    header = (f"Nature-network DQN update, minibatch {BATCH}, {NUM_ACTIONS} actions, centered "
              f"RMSprop; {args.rounds} rounds x {args.steps} updates per variant "
              f"(after {args.warmup} warm-up updates), interleaved.")
    print(header)
    print(f"Machine: {machine}; 1-minute load average {load_before:.2f} at the start, "
          f"{load[0]:.2f} at the end (the benchmark itself keeps both cores busy)")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# The DQN update step with and without XLA (CPU)\n\n")
            f.write(f"Command: `{command.strip()}` (from the repository root, with the package "
                    "installed by `pip install --no-build-isolation .`).\n\n")
            f.write(f"Machine: {machine}. 1-minute load average {load_before:.2f} at the start "
                    f"of the run, {load[0]:.2f} at the end (the benchmark itself keeps both "
                    "cores busy).\n\n")
            f.write(header + " " + legend + "\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
