"""MinAtar frames per second: train.py --preset minatar against Stable-Baselines3's DQN with the
same settings, side by side in one run.

    python benchmarks/bench_minatar.py                      # Breakout, 3 rounds (~5 minutes)
    python benchmarks/bench_minatar.py --game SpaceInvaders --rounds 5
    python benchmarks/bench_minatar.py --out table.md

Both learn MinAtar/<Game>-v0 with the paper's DQN (examples/dqn.py of kenjyoung/MinAtar):
the same network (Conv 16 3x3 -> ReLU -> Dense 128 -> ReLU -> Dense 6), batch 32, one
update per frame from frame 5,000, a 100,000-transition replay, a target copy every 1,000
updates, centered RMSprop (lr 2.5e-4, alpha 0.95, eps 0.01 after the sqrt), mean Huber
loss, one environment. Only epsilon differs from the paper: it reaches 0.1 1,000 frames
after learning starts in both, so the measured window is the steady state of a long run
(90% of the actions need the network). Frames/s are measured over --window frames that
start 1,000 frames after learning starts (first-call tracing excluded). Rounds alternate
the trainers (ours with the preset's one TF thread, SB3 with 1 torch thread, SB3 with 2),
so drift on a shared machine hits all alike; the table gives the median of the rounds and
the ratio of medians.

SB3 needs torch and stable-baselines3 (`pip install torch stable-baselines3`); its model is
sb3_minatar.make_dqn, which also says where SB3's defaults were changed to the paper's (its
gradient-norm clip is set so large that it never clips, though SB3 still computes the norm).
"""

import argparse
import os
import platform
import statistics
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
from _machine import cpu_name  # noqa: E402
from bench_train import metrics, run_train, sb3_learn_timed  # noqa: E402
from sb3_minatar import make_dqn  # noqa: E402

LEARN_START = 5_000
WARMUP = 1_000


def ours(game, window, workdir, round_index, threads):
    run_dir = os.path.join(workdir, f"ours-{round_index}-t{threads}")
    steps = LEARN_START + WARMUP + window
    cmd = ["--preset", "minatar", "--env", f"MinAtar/{game}-v0", "--steps", str(steps),
           "--ep-endt", str(WARMUP), "--eval-freq", "0", "--save-freq", "0",
           "--prog-freq", "1000", "--tf-threads", str(threads), "--run-dir", run_dir]
    run_train(cmd, workdir)
    windows = [r for r in metrics(run_dir, "train") if r["step"] - 1000 >= LEARN_START + WARMUP]
    seconds = sum(1000 / r["sps"] for r in windows)
    phases = {k: statistics.mean(r[k] for r in windows)
              for k in ("act_ms", "env_ms", "replay_add_ms", "replay_sample_ms", "update_ms")}
    command = "python python/train.py " + " ".join(a if a != run_dir else "RUN_DIR"
                                                    for a in cmd)
    return {"fps": 1000 * len(windows) / seconds, "command": command, **phases}


def sb3(game, window, threads):
    total = LEARN_START + WARMUP + window
    model = make_dqn(game, seed=0, threads=threads, total_frames=total,
                     learn_start=LEARN_START, decay_frames=WARMUP)
    seconds, updates = sb3_learn_timed(model, total, LEARN_START + WARMUP)
    return {"fps": window / seconds, "update_ms": 1e3 * statistics.mean(updates),
            "outside_update_ms": 1e3 * (seconds - sum(updates)) / window}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Breakout",
                        choices=("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=6_000,
                        help="frames measured per run (default 6000)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args()
    if args.window < 1000 or args.rounds < 1:
        parser.error(f"--window must be >= 1000 (our trainer reports its rate every 1,000 "
                     f"frames) and --rounds >= 1; got {args.window} and {args.rounds}")

    from importlib.metadata import version  # TensorFlow stays out of SB3's process


    results = {"train.py --preset minatar (1 TF thread, the preset's)": [],
               "SB3 DQN (1 torch thread)": [], "SB3 DQN (2 torch threads)": []}
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(args.rounds):
            results["train.py --preset minatar (1 TF thread, the preset's)"].append(
                ours(args.game, args.window, workdir, i, 1))
            results["SB3 DQN (1 torch thread)"].append(sb3(args.game, args.window, 1))
            results["SB3 DQN (2 torch threads)"].append(sb3(args.game, args.window, 2))
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{name} {runs[-1]['fps']:.0f}" for name, runs in results.items()), flush=True)

    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python "
             f"{platform.python_version()}, TensorFlow {version('tensorflow')}, torch "
             f"{version('torch')}, Stable-Baselines3 {version('stable-baselines3')}. "
             f"Command: `python benchmarks/bench_minatar.py --game {args.game} --rounds "
             f"{args.rounds} --window {args.window}`.", "",
             f"MinAtar/{args.game}-v0, frames/s after learning starts ({args.window:,} frames, "
             f"median of {args.rounds} rounds; per-round values in brackets):", "",
             "| trainer | frames/s | vs SB3's best | update (ms) | everything else (ms/frame) |",
             "| --- | --- | --- | --- | --- |"]
    medians = {name: statistics.median(r["fps"] for r in runs) for name, runs in results.items()}
    best_sb3 = max(v for k, v in medians.items() if k.startswith("SB3"))
    for name, runs in results.items():
        update = statistics.median(r["update_ms"] for r in runs)
        if "act_ms" in runs[0]:
            other = statistics.median(1e3 / r["fps"] - r["update_ms"] for r in runs)
        else:
            other = statistics.median(r["outside_update_ms"] for r in runs)
        per_round = ", ".join(f"{r['fps']:.0f}" for r in runs)
        lines.append(f"| {name} | {medians[name]:.0f} ({per_round}) | "
                     f"{medians[name] / best_sb3:.2f}x | {update:.2f} | {other:.2f} |")
    ours_runs = results["train.py --preset minatar (1 TF thread, the preset's)"]
    lines += ["", "Our command (one round): `" + ours_runs[0]["command"].replace(
        " --tf-threads 1", "") + "`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
