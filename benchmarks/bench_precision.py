"""The trainer's update step in float32, mixed_bfloat16 and mixed_float16, on this machine.

The update exactly as python/train.py runs it (tfdqn_trainer.agent.Agent with the networks of
dqn.networks: sampling excluded), for the Nature network (DQN 3.0: batch 32, 4x84x84 uint8
frames, centered RMSprop) and the MinAtar network (batch 32, 10x10x4 planes, PyTorch-style
centered RMSprop, mean loss). Precisions are timed in interleaved rounds so drifts of the
machine hit all alike; the table gives the median ms per update, the 10th-90th percentiles
and the speed-up over float32.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --rounds 30 --tf-threads 2
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _machine import cpu_name  # noqa: E402
from tfdqn_trainer import agent as agent_lib  # noqa: E402
from tfdqn_trainer import networks  # noqa: E402
from tfdqn_trainer.config import PRECISIONS  # noqa: E402
# setting -> (network kind, state shape without the batch, actions, optimizer, loss
# reduction, init, convolution padding); "dopamine": --preset dopamine's Nature network
# (SAME padding: 7,744 features into the 512-unit layer) and TF1's RMSProp
SETTINGS = {"nature": ("nature", (4, 84, 84), 6, "rmsprop", "sum", "torch7", "valid"),
            "minatar": ("minatar", (1, 10, 10, 4), 6, "rmsprop-torch", "mean", "torch7",
                        "valid"),
            "dopamine": ("nature", (4, 84, 84), 4, "rmsprop-tf1", "mean", "glorot", "same")}


def make_agent(setting, precision):
    kind, shape, n_actions, optimizer, reduction, init, padding = SETTINGS[setting]
    spec = networks.state_spec(kind, shape[0], shape[1:])
    tf.keras.utils.set_random_seed(1)
    return agent_lib.Agent(
        lambda: networks.build_network(kind, n_actions, spec, precision=precision, init=init,
                                       padding=padding), spec,
        discount=0.99, clip_delta=1.0, lr=2.5e-4, optimizer=optimizer,
        loss_reduction=reduction)


def make_batch(setting, batch, rng):
    kind, shape, n_actions = SETTINGS[setting][:3]
    high = 256 if kind == "nature" else 2
    windows = rng.integers(0, high, (1, batch, shape[0] + 1, *shape[1:])).astype(np.uint8)
    return (windows, rng.integers(0, n_actions, (1, batch)).astype(np.int32),
            rng.choice([-1.0, 0.0, 1.0], (1, batch)).astype(np.float32),
            (rng.random((1, batch)) < 0.05).astype(np.float32))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10, help="updates timed per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--networks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--tf-threads", type=int, default=0, help="0: TensorFlow's default")
    args = parser.parse_args()
    if args.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
    rng = np.random.default_rng(0)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; "
          f"batch {args.batch}; {args.rounds} rounds x {args.per_round} updates; "
          f"tf threads {args.tf_threads or 'default'}\n")
    print("| network | precision | ms/update (median) | p10-p90 | vs float32 |")
    print("|---|---|---:|---:|---:|")
    for kind in args.networks:
        agents = {p: make_agent(kind, p) for p in args.precisions}
        batch = make_batch(kind, args.batch, rng)
        times = {p: [] for p in args.precisions}
        for agent in agents.values():  # trace and warm up
            for _ in range(5):
                float(agent.update(*batch).loss)
        for _ in range(args.rounds):
            for p, agent in agents.items():
                start = time.perf_counter()
                for _ in range(args.per_round):
                    stats = agent.update(*batch)
                float(stats.loss)  # the last update has finished
                times[p].append(1e3 * (time.perf_counter() - start) / args.per_round)
        base = statistics.median(times["float32"]) if "float32" in times else None
        for p, values in times.items():
            deciles = statistics.quantiles(values, n=10)
            median = statistics.median(values)
            ratio = f"{base / median:.2f}x" if base else "-"
            print(f"| {kind} | {p} | {median:.2f} | {deciles[0]:.2f}-{deciles[-1]:.2f} | "
                  f"{ratio} |", flush=True)


if __name__ == "__main__":
    main()
