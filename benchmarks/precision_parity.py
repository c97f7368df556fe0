"""Learning parity of --precision: the same runs in float32, mixed_bfloat16 and mixed_float16.

    python benchmarks/precision_parity.py                       # CartPole, seeds 1-3
    python benchmarks/precision_parity.py --seeds 1 2 3 4 5 --steps 30000

Runs `python/train.py --preset classic` (CartPole-v1) for each seed and precision, one after
the other, and prints a markdown table of the evaluation means (every 2,500 agent steps) and
the first step at which an evaluation reached --target (the classic test's 195). This is a
learning check, not a speed benchmark: the runs' wall times are printed for reference only.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "python" / "train.py")

from tfdqn_trainer.config import PRECISIONS  # noqa: E402  (TF-free)


def run(precision, seed, steps, target, root):
    run_dir = os.path.join(root, f"{precision}-s{seed}")
    started = time.perf_counter()
    subprocess.run([sys.executable, TRAIN, "--preset", "classic", "--seed", str(seed),
                    "--steps", str(steps), "--stop-score", str(target), "--precision",
                    precision, "--run-dir", run_dir], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["type"] == "eval"]
    return evals, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--target", type=float, default=195.0)
    args = parser.parse_args()
    print(f"CartPole-v1, --preset classic, {args.steps:,} agent steps at most, stop at an "
          f"evaluation mean >= {args.target:g}\n")
    print("| precision | seed | evaluation means (every 2,500 steps) | reached at step | "
          "wall s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for precision in PRECISIONS:
            for seed in args.seeds:
                evals, seconds = run(precision, seed, args.steps, args.target, root)
                means = [e["eval_mean_score"] or 0.0 for e in evals]
                reached = next((e["step"] for e in evals
                                if (e["eval_mean_score"] or 0) >= args.target), None)
                print(f"| {precision} | {seed} | {', '.join(f'{m:.0f}' for m in means)} | "
                      f"{reached if reached is not None else 'not within ' + str(args.steps)}"
                      f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
