"""What the trainer's fused next-action forward pass saves, on this machine.

python/train.py's learner runs the last update before an action selection and Q of the
states the actor is about to act on in one call (tfdqn_trainer.trainer.Learner.learn's next_states;
Agent.update_then_q), instead of an update call followed by the actor's own
forward call (Agent.q_values). Both give the same Q (the updated weights). This times the
two ways interleaved, per update, for the Nature network (DQN 3.0: one update every 4 agent
steps) and the MinAtar network (one update per frame), one environment acting:

    python benchmarks/bench_prefetch.py
    python benchmarks/bench_prefetch.py --rounds 40 --tf-threads 1
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _machine import cpu_name  # noqa: E402
from bench_precision import SETTINGS, make_agent, make_batch  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10, help="updates timed per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--networks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--tf-threads", type=int, default=0, help="0: TensorFlow's default")
    args = parser.parse_args()
    if args.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
    rng = np.random.default_rng(0)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; "
          f"batch {args.batch}; {args.rounds} rounds x {args.per_round} updates; "
          f"tf threads {args.tf_threads or 'default'}\n")
    print("| network | update + next Q, fused (ms) | update, then q_values (ms) | saved (ms) "
          "| saved per agent step |")
    print("|---|---:|---:|---:|---:|")
    for kind in args.networks:
        agent = make_agent(kind, "float32")
        batch = make_batch(kind, args.batch, rng)
        shape = SETTINGS[kind][1]
        states = make_batch(kind, 1, rng)[0][0, :, :shape[0]]  # one env's acting state

        def fused():
            stats, q = agent.update_then_q(*batch, states)
            float(stats.loss)
            return q

        def separate():
            float(agent.update(*batch).loss)
            return agent.q_values(states)

        ways = {"fused": fused, "separate": separate}
        for way in ways.values():  # trace and warm up
            for _ in range(5):
                way()
        times = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                t0 = time.perf_counter()
                for _ in range(args.per_round):
                    way()
                times[name].append((time.perf_counter() - t0) / args.per_round * 1e3)
        fused_ms = statistics.median(times["fused"])
        separate_ms = statistics.median(times["separate"])
        steps_per_update = 1 if kind == "minatar" else 4  # MinAtar: one per frame; else 4
        print(f"| {kind} | {fused_ms:.2f} | {separate_ms:.2f} | {separate_ms - fused_ms:.2f} "
              f"| {(separate_ms - fused_ms) / steps_per_update:.2f} ms "
              f"({100 * (separate_ms - fused_ms) / separate_ms:.0f}% of an update) |",
              flush=True)


if __name__ == "__main__":
    main()
