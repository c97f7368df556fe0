"""Play a trained run's network and print its mean score.

    python python/evaluate.py RUN_DIR --episodes 30            # best network (else latest)
    python python/evaluate.py RUN_DIR --episodes 5 --latest    # latest checkpoint's network

Games are played as DQN 3.0 evaluated them: full games (no life-loss terminal), the run's
preprocessing and no-op starts, epsilon 0.05 unless --epsilon says otherwise.
Exit codes: 0 done; 2 bad input (not a run directory, no network saved, bad values).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdqn_trainer import checkpoint  # noqa: E402
from tfdqn_trainer import config as config_lib  # noqa: E402
from tfdqn_trainer import envs as envs_lib  # noqa: E402
from tfdqn_trainer.config import ConfigError  # noqa: E402

PROG = config_lib.program_name("evaluate.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a directory written by train.py --run-dir")
    parser.add_argument("--episodes", type=int, default=30, help="games to play (default: 30)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="exploration during play (default: the run's --eval-ep, 0.05)")
    parser.add_argument("--latest", action="store_true",
                        help="use the latest checkpoint's network instead of the best one")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the games (default: "
                        "12345)")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be a positive integer, got {args.episodes}")
    if args.epsilon is not None and not 0.0 <= args.epsilon <= 1.0:
        raise ConfigError(f"--epsilon must be in [0, 1], got {args.epsilon}")
    return args, read_run_config(args.run_dir, args.latest)


def read_run_config(run_dir: str, latest: bool) -> config_lib.Config:
    """The Config of a run that has a network to play (its best, or with `latest` or
    without a best its latest checkpoint's), or ConfigError saying what is missing."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir!r} is not a run directory (no config.json)")
    with open(path) as f:
        cfg = config_lib.config_from_dict(json.load(f))
    if latest or not checkpoint.has_best(run_dir):
        path = checkpoint.latest(run_dir)
        if path is None:
            raise ConfigError(f"{run_dir!r} has neither a best network "
                              f"({checkpoint.BEST_DIR}/) nor a checkpoint")
        try:
            checkpoint.check_format(path)
        except checkpoint.CheckpointFormatError as e:
            raise ConfigError(str(e)) from None
    envs_lib.check_env(cfg)
    return cfg


def read_run_network(run_dir: str, model, latest: bool) -> str:
    """The run's best network (or with `latest` or without a best, its latest checkpoint's)
    into `model`, built as the run's; returns which it was, for people."""
    best = None if latest else checkpoint.load_best(run_dir, model)
    if best is not None:
        step, score = best
        return f"best network (step {step:,}, evaluation mean {score:.2f})"
    path = checkpoint.latest(run_dir)
    checkpoint.read_online_network(path, model)
    return f"latest checkpoint {path}"


def main(argv=None) -> int:
    try:
        args, cfg = parse_args(argv)
    except ConfigError as e:
        config_lib.fail(str(e), PROG)

    import numpy as np

    from tfdqn_trainer.quiet_tf import import_tensorflow
    import_tensorflow()  # before networks imports it: no CUDA noise on a CPU-only machine
    from tfdqn_trainer import networks
    from tfdqn_trainer.build import make_pool, network_factory
    from tfdqn_trainer.evaluation import evaluate

    pool = make_pool(cfg, 1, training=False)
    _, spec, build_network = network_factory(cfg, pool)
    model = build_network()

    source = read_run_network(args.run_dir, model, args.latest)
    q_values = networks.compile_q(model, spec, jit_compile=cfg.jit_act)
    epsilon = cfg.eval_ep if args.epsilon is None else args.epsilon
    print(f"{cfg.env}: {source}; {args.episodes} games at epsilon {epsilon}", flush=True)

    rng = np.random.default_rng(envs_lib.derive_seed(args.seed, 1))
    result = evaluate(q_values, pool, cfg.hist_len, epsilon=epsilon, rng=rng,
                      seeds=[envs_lib.derive_seed(args.seed, 2)], episodes=args.episodes)
    for i, (score, length) in enumerate(zip(result.scores, result.lengths)):
        print(f"game {i + 1}: score {score:g} ({length} steps)")
    print(f"mean score {result.mean:.2f} over {result.episodes} games "
          f"(min {min(result.scores):g}, max {result.max:g})")
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
