"""Ape-X on this machine: transitions/s into the replay and learner updates/s with 1 and 2
actors, on Pong and MinAtar Breakout, beside the single-process trainer's update rate.

    python benchmarks/bench_apex.py                         # Pong and MinAtar, ~12 minutes
    python benchmarks/bench_apex.py --games minatar --actors 2 --sample-batches 1 4 8
    python benchmarks/bench_apex.py --out table.md

Each row is one run of python/apex.py (or python/train.py for the single-process rows) as a
subprocess, measured from its own metrics.jsonl over the progress windows that start
--warmup transitions after learning starts (the first update's tracing excluded): agent
steps per second (for apex.py: transitions received by the replay, all actors together) and
learner updates per second, each the total over the measured windows divided by their
duration. Both trainers learn the same way per update: prioritized replay (alpha 0.6),
3-step returns, batch 32, the importance-weighted loss of the op.

- Pong: `ALE/Pong-v5` with DQN 3.0's network and preprocessing, a 100,000-transition
  replay, learning from 5,000 transitions. train.py makes one update per 4 agent steps
  (DQN 3.0); apex.py's learner updates as fast as it can while the actors act as fast as
  they can (Ape-X: no fixed ratio; --max-steps-per-update 0, unless --limits says otherwise),
  asking the replay for --sample-batches minibatches per call.
- MinAtar: `MinAtar/Breakout-v0 --preset minatar` (one update per frame in train.py).

train.py's epsilon reaches its final value 1,000 steps after learning starts, so most of its
actions need the network, as most of an Ape-X actor's do (epsilon 0.4 for one actor, 0.4 and
0.00066 for two). Everything shares this machine's cores: actors, the replay server and the
learner compete for them, so these rates say how the parts share 2 cores, not how they
scale; docs/SCALING.md projects past this machine from the per-part figures.
"""

import argparse
import os
import platform
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APEX = os.path.join(REPO, "python", "apex.py")
from _machine import cpu_name  # noqa: E402
from bench_train import metrics, run_train  # noqa: E402

LEARN_START = 5_000
GAMES = {
    # name: (flags, transitions measured after the warm-up)
    "pong": (["--env", "ALE/Pong-v5", "--replay-memory", "100000"], 12_000),
    "minatar": (["--env", "MinAtar/Breakout-v0", "--preset", "minatar"], 40_000),
}
COMMON = ["--learn-start", str(LEARN_START), "--n-step", "3", "--eval-freq", "0",
          "--save-freq", "0", "--prog-freq", "1000"]


def rates(run_dir, first_step):
    """(agent steps/s, updates/s) over the train records after first_step."""
    records = metrics(run_dir, "train")
    steps = updates = seconds = 0.0
    for before, after in zip(records, records[1:]):
        if before["step"] < first_step or not after["sps"]:
            continue
        delta = after["step"] - before["step"]
        steps += delta
        updates += after["updates"] - before["updates"]
        seconds += delta / after["sps"]
    if seconds == 0:
        raise RuntimeError(f"{run_dir}: no progress windows after step {first_step}")
    return steps / seconds, updates / seconds


def run(game, actors, warmup, workdir, window=None, sample_batches=None, limit="0"):
    """One row: actors None = train.py (one process), else apex.py with that many actors,
    the learner asking for sample_batches minibatches per call, the actors held to `limit`
    agent steps per update (0: none)."""
    flags, default_window = GAMES[game]
    window = window or default_window
    run_dir = os.path.join(workdir, f"{game}-{actors or 'train'}-{sample_batches}-{limit}")
    steps = LEARN_START + warmup + window
    args = [*flags, *COMMON, "--steps", str(steps), "--run-dir", run_dir]
    if actors is None:
        args += ["--prioritized", "--ep-endt", "1000"]
        script = os.path.join(REPO, "python", "train.py")
    else:
        args += ["--actors", str(actors), "--sample-batches", str(sample_batches),
                 "--max-steps-per-update", limit]
        script = APEX
    wall = run_train(args, workdir, script=script)
    steps_per_s, updates_per_s = rates(run_dir, LEARN_START + warmup)
    command = f"python python/{os.path.basename(script)} " + " ".join(
        a if a != run_dir else "RUN_DIR" for a in args)
    trainer = "train.py" if actors is None else (
        f"apex.py, {actors} actor{'s' if actors > 1 else ''}, {sample_batches} batch"
        f"{'es' if sample_batches > 1 else ''} per call, limit {limit}")
    return dict(game=game, trainer=trainer, steps_per_s=steps_per_s,
                updates_per_s=updates_per_s, wall=wall, command=command)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", nargs="+", choices=sorted(GAMES), default=["pong", "minatar"])
    p.add_argument("--actors", nargs="+", type=int, default=[1, 2])
    p.add_argument("--warmup", type=int, default=2_000,
                   help="transitions after learning starts before measuring (default 2,000)")
    p.add_argument("--window", type=int, default=None,
                   help="transitions measured per run (default: 12,000 Pong, 40,000 MinAtar)")
    p.add_argument("--sample-batches", nargs="+", type=int, default=[1, 4],
                   help="apex.py's --sample-batches values to run (1: a call per update, "
                        "as before several per call; default: 1 4)")
    p.add_argument("--limits", nargs="+", default=["0"],
                   help="apex.py's --max-steps-per-update values to run (default: 0, no "
                        "limit, the actors as fast as they can)")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for game in args.games:
            base = run(game, None, args.warmup, workdir, args.window)
            rows.append(base)
            print(f"{game} train.py: {base['steps_per_s']:.0f} steps/s, "
                  f"{base['updates_per_s']:.1f} updates/s", flush=True)
            for n in args.actors:
                for k in args.sample_batches:
                    for limit in args.limits:
                        row = run(game, n, args.warmup, workdir, args.window, k, limit)
                        row["vs_train"] = row["updates_per_s"] / base["updates_per_s"]
                        rows.append(row)
                        print(f"{game} {row['trainer']}: {row['steps_per_s']:.0f} steps/s, "
                              f"{row['updates_per_s']:.1f} updates/s", flush=True)

    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}", "",
             "| game | trainer | transitions/s into replay | learner updates/s | "
             "updates/s vs train.py | agent steps per update |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = f"{r['vs_train']:.2f}x" if "vs_train" in r else "1.00x"
        lines.append(f"| {r['game']} | {r['trainer']} | {r['steps_per_s']:,.0f} | "
                     f"{r['updates_per_s']:,.1f} | {ratio} | "
                     f"{r['steps_per_s'] / max(r['updates_per_s'], 1e-9):.1f} |")
    lines += ["", "Commands (RUN_DIR a temporary directory):", ""]
    lines += [f"    {r['command']}" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
