"""Fused op vs idiomatic composed TF ops: forward + backward of the DQN target block.

Both run inside a tf.function. A tf.function call costs ~100+ us whatever it holds, which
would hide an op of a few us, so each function chains K target+gradient steps (the
gradient with respect to q feeds the next step's q, so none can be pruned or run in
parallel) and the marginal cost per step is (time(K) - time(1)) / (K - 1). The plain
per-call time (K = 1) is reported too. Fused and composed are timed round-robin (one call
of each per repetition), so load changes on a shared machine hit both alike. For large
batches the bytes the fused op must move are compared with a plain memory copy of the
same bytes (numpy, on this machine).

    python benchmarks/bench_op.py            # the table in docs/BENCHMARKS.md
    python benchmarks/bench_op.py --quick    # fewer repetitions
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdqn_ops  # noqa: E402
from _machine import cpu_name  # noqa: E402

tf.get_logger().setLevel("ERROR")  # each table row traces new functions; that is intended

DISCOUNT, R_MAX, CLIP = 0.99, 1.0, 1.0


def fused_step(q, q_next, actions, rewards, terminals):
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = tf.reduce_sum(tfdqn_ops.dqn_targets(q, q_next, actions, rewards, terminals).loss)
    return tape.gradient(loss, q)


def composed_step(q, q_next, actions, rewards, terminals):
    """What a TF user writes today: reduce_max + stop_gradient + gather + Huber."""
    with tf.GradientTape() as tape:
        tape.watch(q)
        not_done = 1.0 - tf.cast(terminals, q.dtype)
        target = tf.stop_gradient(
            rewards / R_MAX + DISCOUNT * not_done * tf.reduce_max(q_next, axis=1))
        q_taken = tf.gather(q, actions, batch_dims=1)
        err = tf.abs(target - q_taken)
        quadratic = tf.minimum(err, CLIP)
        loss = tf.reduce_sum(0.5 * tf.square(quadratic) + CLIP * (err - quadratic))
    return tape.gradient(loss, q)


def chained(step, k):
    @tf.function
    def run(q, q_next, actions, rewards, terminals):
        for _ in range(k):
            q = step(q, q_next, actions, rewards, terminals)
        return q
    return run


def marginal_and_call_seconds(steps, args, k, reps):
    """For each step function: ((median(K) - median(1)) / (K - 1), median(1)).

    The variants are timed round-robin, one call of each per repetition, so a change in
    the machine's load during the run hits all of them alike.
    """
    fns = {name: (chained(step, 1), chained(step, k)) for name, step in steps.items()}
    for one, many in fns.values():  # trace + warm up
        for _ in range(2):
            one(*args).numpy()
            many(*args).numpy()
    times = {name: ([], []) for name in steps}
    for _ in range(reps):
        for name, (one, many) in fns.items():
            for fn, out in ((one, times[name][0]), (many, times[name][1])):
                t0 = time.perf_counter()
                fn(*args).numpy()
                out.append(time.perf_counter() - t0)
    result = {}
    for name, (ones, manys) in times.items():
        t1, tk = statistics.median(ones), statistics.median(manys)
        result[name] = (max(tk - t1, 0.0) / (k - 1), t1)
    return result


def copy_bandwidth(nbytes, reps):
    src = np.ones(max(nbytes // 2, 1), np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times)  # a copy of N/2 bytes moves N bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batches", type=int, nargs="*", default=[32, 256, 4096, 65536, 1048576])
    parser.add_argument("--actions", type=int, nargs="*", default=[6, 18])
    args = parser.parse_args()
    assert tfdqn_ops.uses_compiled_op(), "the compiled op is not loaded"
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}")
    print("| A | B | fused us/step | composed us/step | speed-up | fused us/call (K=1) "
          "| composed us/call (K=1) | fused GB/s | copy GB/s | fused/copy |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for num_actions in args.actions:
        for batch in args.batches:
            inputs = (tf.constant(rng.normal(size=(batch, num_actions)), tf.float32),
                      tf.constant(rng.normal(size=(batch, num_actions)), tf.float32),
                      tf.constant(rng.integers(0, num_actions, batch), tf.int32),
                      tf.constant(rng.choice([-1.0, 0.0, 1.0], batch), tf.float32),
                      tf.constant(rng.random(batch) < 0.1))
            # Enough chained steps that K-1 of them clearly outweigh the call's own noise.
            k = 257 if batch <= 256 else (33 if batch <= 4096 else (9 if batch <= 65536 else 3))
            reps = 300 if batch <= 4096 else (30 if batch <= 65536 else 7)
            if args.quick:
                reps = max(5, reps // 5)
            result = marginal_and_call_seconds(
                {"fused": fused_step, "composed": composed_step}, inputs, k, reps)
            fused_bytes = batch * (5 * num_actions * 4 + 25)  # fwd + grad reads and writes
            bw = fused_bytes / result["fused"][0] if result["fused"][0] > 0 else float("nan")
            copy = copy_bandwidth(fused_bytes, 9)
            big = batch >= 65536
            print(f"| {num_actions} | {batch} | {result['fused'][0] * 1e6:.2f} | "
                  f"{result['composed'][0] * 1e6:.2f} | "
                  f"{result['composed'][0] / result['fused'][0]:.1f}x | "
                  f"{result['fused'][1] * 1e6:.0f} | "
                  f"{result['composed'][1] * 1e6:.0f} | "
                  + (f"{bw / 1e9:.1f} | {copy / 1e9:.1f} | {100 * bw / copy:.0f}% |"
                     if big else "- | - | - |"),
                  flush=True)


if __name__ == "__main__":
    main()
