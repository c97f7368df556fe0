"""Learning curves as the MinAtar paper and Dopamine draw them, and the curve data behind them.

    python python/plot.py RUN_DIR [RUN_DIR ...] --out curves.png
    python python/plot.py docs/results/atari/Breakout-s1.csv --out docs/results/breakout.png \\
        --reference docs/results/atari/dopamine_dqn_breakout.json
    python python/plot.py RUN_DIR ... --csv-dir docs/results/minatar     # write the curve data
    python python/plot.py docs/results/minatar/*.csv --table 500000,1000000  # values at steps
    python python/plot.py RUN_DIR --statistic iteration --csv-dir docs/results/atari-dopamine \
        --reference docs/results/atari/dopamine_dqn_breakout.json --out breakout.png

Each input is a run directory written by train.py (its config.json and metrics.jsonl) or a
curve file written by --csv-dir (`<Game>-s<seed>.csv`). One panel per game; in each, one line
per run: the mean training return of the last 100 games against environment frames (MinAtar:
one frame = one action) or agent steps (Atari: one step = 4 emulator frames), with a band
from the lowest to the highest seed and their mean where several seeds share a game (on a
common grid of 400 points), evaluation scores as markers where the run has them, and
published reference values as crosses (--reference).

--statistic iteration draws Dopamine's statistic instead: the mean return of the training
games finished in each iteration of --iteration-steps agent steps (250,000: Dopamine's
Runner.training_steps), one point at each iteration's end, for the iterations the run has
completed. (Dopamine finishes an iteration's last game inside it, so its iterations run a
few hundred steps long; here a game counts in the iteration it ends in.) A reference with
"runs" ([x, lowest, highest] per game) is drawn as a band.

--csv-dir writes `<Game>-s<seed>.csv`: for MinAtar `frames,mean_return_100`, for Atari
`agent_steps,mean_return_100,eval_mean_score` (eval empty where none), and a last column
`learner_updates` where the run logs its updates (the learner's updates by then, interpolated
between progress records: Ape-X's are not a fixed multiple of its steps), one row every
--every steps (10,000) from the first finished game to the last step the run reached: the
value at a row's step is the mean of the last 100 games finished at or before it. With
--statistic iteration: `agent_steps,iteration_mean_return`, one row per iteration.

--x updates draws (and tabulates) the curves against the learner's updates instead of frames
or agent steps: each game's step mapped through the updates the run logged (a run directory
of train.py or apex.py, or a curve file with a learner_updates column); an input without
them is refused.

Exit codes: 0 done; 2 bad input (a path that is neither a run nor a curve file, no games).
"""

import argparse
import csv
import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfdqn_trainer.config import program_name

PROG = program_name("plot.py")


class PlotError(ValueError):
    """Bad input; the message names the path and what is wrong with it."""


@dataclass
class Curve:
    game: str                  # "Breakout"
    env: str                   # "MinAtar/Breakout-v0"
    seed: int
    x_name: str                # "frames" or "agent_steps"
    steps: np.ndarray          # x of each finished game (or CSV row)
    mean_100: np.ndarray       # mean return of the last 100 games at that x
    evals: List[Tuple[int, float]] = field(default_factory=list)
    settings: str = ""         # for the title: the preset
    scores: Optional[np.ndarray] = None  # each game's score (runs only, not curve files)
    end: int = 0               # the last step the run reached (>= the last game's)
    sampled: bool = False      # read from a curve file (rows every N steps), not per game
    variant: str = ""          # what sets it apart from other curves of the game: a curve
    #                            file's directory name, or a run's replay options
    statistic: str = "last100"  # mean_100 holds: "last100" (the mean of the last 100 games)
    #                             or "iteration" (the mean of each iteration's games)
    games: int = 0             # finished training games behind the curve (0: not known)
    updates: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (steps, learner updates) of
    #                            the run's train records (runs only)

    def at(self, xs: np.ndarray) -> np.ndarray:
        """mean_100 at each of xs: the value of the last game at or before it (NaN before the
        first)."""
        index = np.searchsorted(self.steps, xs, side="right") - 1
        return np.where(index >= 0, self.mean_100[np.maximum(index, 0)], np.nan)


def game_name(env_id: str) -> str:
    """'MinAtar/SpaceInvaders-v0' -> 'SpaceInvaders'; 'ALE/Breakout-v5' -> 'Breakout'."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def x_name_for(env_id: str) -> str:
    return "frames" if env_id.startswith("MinAtar/") else "agent_steps"


def read_run(run_dir: str) -> Curve:
    config_path = os.path.join(run_dir, "config.json")
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(config_path) or not os.path.isfile(metrics_path):
        raise PlotError(f"{run_dir!r} is not a run directory (needs config.json and "
                        "metrics.jsonl)")
    with open(config_path) as f:
        config = json.load(f)
    steps, means, scores, evals, recent, end = [], [], [], [], [], 0
    updates: List[Tuple[int, int]] = []
    with open(metrics_path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            end = max(end, int(record.get("step", 0)))
            if record.get("type") == "game":
                recent = (recent + [record["score"]])[-100:]
                steps.append(record["step"])
                scores.append(record["score"])
                # runs before mean_return_100 was logged: recompute it
                means.append(record.get("mean_return_100", float(np.mean(recent))))
            elif record.get("type") == "eval" and record.get("eval_mean_score") is not None:
                evals.append((record["step"], record["eval_mean_score"]))
            elif record.get("type") == "train" and "updates" in record:
                updates.append((int(record["step"]), int(record["updates"])))
    if not steps:
        raise PlotError(f"{run_dir!r} has no finished training game in metrics.jsonl yet")
    env = config["env"]
    return Curve(game_name(env), env, int(config.get("seed", 0)), x_name_for(env),
                 np.asarray(steps, np.int64), np.asarray(means, np.float64), evals,
                 settings=f"preset {config.get('preset', '?')}", end=end,
                 variant=run_variant(config), scores=np.asarray(scores, np.float64),
                 updates=(np.array([u[0] for u in updates], np.int64),
                          np.array([u[1] for u in updates], np.int64)) if updates else None)


def iteration_curve(curve: Curve, iteration_steps: int) -> Curve:
    """Dopamine's statistic from a run's games: the mean score of the games finished in each
    iteration (i * N, (i + 1) * N], at (i + 1) * N, for every iteration the run completed."""
    if curve.scores is None:
        raise PlotError(f"{curve.game} seed {curve.seed}: --statistic iteration needs a run "
                        "directory (its games), not a curve file of another statistic")
    ends, means = [], []
    for end in range(iteration_steps, curve.end + 1, iteration_steps):
        in_iteration = (curve.steps > end - iteration_steps) & (curve.steps <= end)
        if in_iteration.any():
            ends.append(end)
            means.append(float(curve.scores[in_iteration].mean()))
    if not ends:
        raise PlotError(f"{curve.game} seed {curve.seed}: no iteration of {iteration_steps:,} "
                        f"steps completed yet (the run reached {curve.end:,})")
    return dataclasses.replace(curve, steps=np.asarray(ends, np.int64),
                               mean_100=np.asarray(means), end=ends[-1], sampled=True,
                               statistic="iteration", evals=[])


def run_variant(config: dict) -> str:
    """The replay options a run adds to its preset ("n-step 3, prioritized"), or its preset
    when it adds none: what tells two runs of a game apart in one panel."""
    parts = []
    if int(config.get("n_step", 1)) > 1:
        parts.append(f"n-step {config['n_step']}")
    if config.get("prioritized"):
        parts.append("prioritized")
    return ", ".join(parts) or f"preset {config.get('preset', '?')}"


CSV_NAME = re.compile(r"^(?P<game>[A-Za-z0-9]+)-s(?P<seed>\d+)\.csv$")


def read_csv(path: str) -> Curve:
    match = CSV_NAME.match(os.path.basename(path))
    if not match:
        raise PlotError(f"{path!r}: a curve file is named <Game>-s<seed>.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PlotError(f"{path!r} has no rows")
    x_name = "frames" if "frames" in rows[0] else "agent_steps"
    column = "iteration_mean_return" if "iteration_mean_return" in rows[0] else "mean_return_100"
    if x_name not in rows[0] or column not in rows[0]:
        raise PlotError(f"{path!r}: expected the header frames,mean_return_100 or "
                        "agent_steps,mean_return_100,eval_mean_score or "
                        "agent_steps,iteration_mean_return")
    steps = np.array([int(r[x_name]) for r in rows], np.int64)
    means = np.array([float(r[column]) for r in rows])
    evals = [(int(r[x_name]), float(r["eval_mean_score"])) for r in rows
             if r.get("eval_mean_score")]
    updates = ((steps, np.array([int(r["learner_updates"]) for r in rows], np.int64))
               if "learner_updates" in rows[0] else None)
    game = match["game"]
    env = f"MinAtar/{game}-v0" if x_name == "frames" else f"ALE/{game}-v5"
    preset = "minatar" if x_name == "frames" else "atari"
    statistic = "iteration" if column == "iteration_mean_return" else "last100"
    if statistic == "iteration":
        preset = "dopamine"
    return Curve(game, env, int(match["seed"]), x_name, steps, means, evals,
                 settings=f"preset {preset}", end=int(steps[-1]), sampled=True,
                 variant=os.path.basename(os.path.dirname(os.path.abspath(path))),
                 statistic=statistic, updates=updates)


def against_updates(curve: Curve, path: str) -> Curve:
    """The curve with the learner's updates as its x (see --x updates): every step (games,
    evaluations, the end) mapped through the run's (step, updates) records, linearly
    between them."""
    if curve.updates is None:
        raise PlotError(f"{path!r} has no learner updates (a run directory whose metrics log "
                        "them, or a curve file with a learner_updates column), so --x updates "
                        "cannot place it")

    def mapped(steps) -> np.ndarray:
        return np.interp(steps, *curve.updates).round().astype(np.int64)

    return dataclasses.replace(
        curve, x_name="learner_updates", steps=mapped(curve.steps),
        evals=[(int(mapped(x)), v) for x, v in curve.evals], end=int(mapped(curve.end)),
        updates=None)


def read_input(path: str) -> Curve:
    if os.path.isdir(path):
        return read_run(path)
    if path.endswith(".csv") and os.path.isfile(path):
        return read_csv(path)
    raise PlotError(f"{path!r} is neither a run directory nor a <Game>-s<seed>.csv file")


def write_csv(curve: Curve, out_dir: str, every: int = 10_000) -> str:
    """The curve sampled every `every` steps (an iteration curve: one row per iteration; see
    the module docstring); written atomically."""
    if curve.statistic == "iteration":
        return _write_rows(out_dir, curve, [curve.x_name, "iteration_mean_return"],
                           [[int(x), f"{v:.4f}"] for x, v in zip(curve.steps, curve.mean_100)])
    start = -(-int(curve.steps[0]) // every) * every
    xs = np.arange(start, max(curve.end, int(curve.steps[-1])) + 1, every, dtype=np.int64)
    values = curve.at(xs)
    evals = dict(curve.evals)
    atari = curve.x_name == "agent_steps"
    # learner updates at each row (runs that log them: train.py and apex.py), interpolated
    # between the progress records: for Ape-X they are not a fixed multiple of the steps
    updates = (np.interp(xs, curve.updates[0], curve.updates[1]).round().astype(np.int64)
               if curve.updates is not None else None)
    rows = []
    for i, (x, value) in enumerate(zip(xs, values)):
        row = [int(x), f"{value:.4f}"]
        if atari:
            row.append(f"{evals[int(x)]:.4f}" if int(x) in evals else "")
        if updates is not None:
            row.append(int(updates[i]))
        rows.append(row)
    header = ([curve.x_name, "mean_return_100"] + (["eval_mean_score"] if atari else [])
              + (["learner_updates"] if updates is not None else []))
    return _write_rows(out_dir, curve, header, rows)


def _write_rows(out_dir: str, curve: Curve, header: List[str], rows: List[list]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{curve.game}-s{curve.seed}.csv")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def read_reference(path: str) -> dict:
    """{"label": str, "x": "frames" | "agent_steps", "games": {"Breakout": [[x, value], ...],
    ...}} (values read from a published figure or data file; "source" says which)."""
    with open(path) as f:
        reference = json.load(f)
    games = reference.get("games") if isinstance(reference, dict) else None
    if not isinstance(games, dict):
        raise PlotError(f"{path!r}: expected an object with 'label' and 'games'")
    for game, points in games.items():
        if not (isinstance(points, list) and all(
                isinstance(p, list) and len(p) == 2 for p in points)):
            raise PlotError(f"{path!r}: games[{game!r}] must be a list of [x, value] pairs")
    return reference


def reference_at(points: List[List[float]], x: int) -> float:
    """The published curve at x, linearly interpolated between its points (a figure read at
    every 100,000 frames gives 250,000 as the mean of 200,000 and 300,000); NaN outside it."""
    xs, ys = zip(*sorted(points))
    if not xs[0] <= x <= xs[-1]:
        return float("nan")
    return float(np.interp(x, xs, ys))


def plot(curves: List[Curve], out: str, references: List[dict], title: Optional[str] = None,
         columns: int = 3) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games: Dict[str, List[Curve]] = {}
    for curve in sorted(curves, key=lambda c: (c.game, c.seed)):
        games.setdefault(curve.game, []).append(curve)
    n = len(games)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    for ax, (game, runs) in zip(axes.flat, games.items()):
        x_name = runs[0].x_name
        unit = 1e6
        variants: Dict[str, List[Curve]] = {}
        for curve in runs:
            variants.setdefault(curve.variant, []).append(curve)
        several = len(variants) > 1  # then each variant has a color, each seed a line style
        for k, (variant, group) in enumerate(variants.items()):
            prefix = f"{variant}: " if several else ""
            if len(group) > 1:  # the seed band: lowest to highest seed on a common grid
                grid = np.linspace(0, max(max(c.end, int(c.steps[-1])) for c in group), 400)
                stacked = np.vstack([c.at(grid) for c in group])
                covered = np.all(np.isfinite(stacked), axis=0)
                if covered.any():
                    band = f"C{k}" if several else "k"
                    ax.fill_between(grid[covered] / unit, stacked[:, covered].min(0),
                                    stacked[:, covered].max(0), alpha=0.15, color=band, lw=0,
                                    label=f"{prefix}range of {len(group)} seeds")
                    ax.plot(grid[covered] / unit, stacked[:, covered].mean(0), color=band,
                            lw=2, label=f"{prefix}mean of {len(group)} seeds")
            for i, curve in enumerate(group):
                color = f"C{k}" if several else f"C{i}"
                style = ("-", "--", ":", "-.")[i % 4] if several else "-"
                xs = np.append(curve.steps, max(curve.end, int(curve.steps[-1])))
                ax.plot(xs / unit, np.append(curve.mean_100, curve.mean_100[-1]), lw=1.0,
                        color=color, ls=style, label=f"{prefix}seed {curve.seed}",
                        drawstyle="default" if curve.sampled else "steps-post",
                        marker="o" if curve.statistic == "iteration" else None, ms=3)
                if curve.evals:
                    ex, ey = zip(*curve.evals)
                    ax.plot(np.asarray(ex) / unit, ey, "o", ms=4, color=color, mfc="none",
                            label=f"{prefix}evaluation, seed {curve.seed}")
        x_max = max(max(c.end, int(c.steps[-1])) for c in runs)
        for j, reference in enumerate(references):
            # only the published points within the runs' range (+5%): the comparison
            points = [p for p in reference["games"].get(game, []) if p[0] <= 1.05 * x_max]
            if points:
                rx, ry = zip(*points)
                ax.plot(np.asarray(rx) / unit, ry, "x", ms=8, mew=2, color=f"C{7 + j}",
                        label=reference.get("label", "reference"))
            spans = [p for p in reference.get("runs", {}).get(game, []) if p[0] <= 1.05 * x_max]
            if spans:  # the published runs' lowest to highest value at each point
                sx, low, high = zip(*spans)
                ax.fill_between(np.asarray(sx) / unit, low, high, color=f"C{7 + j}",
                                alpha=0.2, lw=0, label=reference.get(
                                    "runs_label", f"{reference.get('label', 'reference')}: "
                                    "range of its runs"))
        env = runs[0].env
        if several:
            ax.set_title(f"{game} ({env}, {len(variants)} settings, {len(runs)} runs)",
                         fontsize=9)
        else:
            ax.set_title(f"{game} ({env}, {runs[0].settings}, {len(runs)} "
                         f"seed{'s' if len(runs) > 1 else ''})", fontsize=9)
        ax.set_xlabel(X_LABELS[x_name])
        ax.set_ylabel(Y_LABELS[runs[0].statistic])
        ax.grid(alpha=0.3)
        # "best": where it hides the fewest points (curves of very different heights can
        # share a panel, so no fixed corner is always free)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


X_LABELS = {"frames": "environment frames (millions)",
            "agent_steps": "agent steps (millions; 1 step = 4 frames)",
            "learner_updates": "learner updates (millions)"}
Y_LABELS = {"last100": "mean return, last 100 training games",
            "iteration": "mean return of each iteration's training games"}


def value_cell(value: float) -> str:
    """A table cell: the value to 2 decimals, '-' where there is none (NaN)."""
    return "-" if np.isnan(value) else f"{value:.2f}"


def table(curves: List[Curve], at: List[int], references: Optional[List[dict]] = None) -> str:
    """A markdown table: per game and seed, mean_return_100 at each step of `at` (the mean of
    the last 100 games finished by then), the mean over seeds, and the last evaluation; under
    each game's rows, a row per reference that has the game (seeds "-", see reference_at)."""
    several = len({c.variant for c in curves}) > 1  # then a row per game and variant
    games: Dict[str, List[Curve]] = {}
    for curve in sorted(curves, key=lambda c: (c.game, c.variant, c.seed)):
        name = f"{curve.game} ({curve.variant})" if several else curve.game
        games.setdefault(name, []).append(curve)
    x_name = curves[0].x_name.replace("_", " ")
    with_evals = any(c.evals for c in curves)  # MinAtar's curve files have none
    header = (["game", "seeds"] + [f"at {x:,} {x_name}" for x in at]
              + (["last evaluation"] if with_evals else []))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    last_row_of = {runs[0].game: name for name, runs in games.items()}
    for game, runs in games.items():
        cells = [game, ", ".join(str(c.seed) for c in runs)]
        for x in at:
            values = [float(c.at(np.array([x]))[0]) if c.end >= x else float("nan")
                      for c in runs]
            per_seed = " / ".join(value_cell(v) for v in values)
            done = [v for v in values if not np.isnan(v)]
            cells.append(f"{np.mean(done):.2f}" + (f" ({per_seed})" if len(runs) > 1 else "")
                         if len(done) == len(values) else per_seed)
        if with_evals:
            evals = [f"{c.evals[-1][1]:.2f} at {c.evals[-1][0]:,}" for c in runs if c.evals]
            cells.append("; ".join(evals) or "-")
        lines.append("| " + " | ".join(cells) + " |")
        if last_row_of[runs[0].game] == game:  # a game's references after its last row
            for reference in references or []:
                points = reference["games"].get(runs[0].game)
                if points:
                    spans = {int(p[0]): p[1:] for p in reference.get("runs", {}).get(
                        runs[0].game, [])}
                    cells = [value_cell(reference_at(points, x))
                             + (" ({:.2f}-{:.2f})".format(*spans[x]) if x in spans else "")
                             for x in at]
                    lines.append("| " + " | ".join(
                        [f"{runs[0].game}: {reference.get('label', 'reference')}", "-"]
                        + cells + (["-"] if with_evals else [])) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="run directories or <Game>-s<seed>.csv files")
    parser.add_argument("--out", help="the PNG to write (one panel per game)")
    parser.add_argument("--csv-dir", help="also write each run's curve data here")
    parser.add_argument("--every", type=int, default=10_000,
                        help="steps between the rows of --csv-dir files (default: 10000)")
    parser.add_argument("--reference", action="append", default=[],
                        help="a JSON file of published values to mark (repeatable)")
    parser.add_argument("--title", help="a title above all panels")
    parser.add_argument("--table", help="print a markdown table of each run's mean return of "
                        "the last 100 games (or --statistic) at these steps, e.g. "
                        "500000,1000000; a reference's range of runs in brackets")
    parser.add_argument("--statistic", choices=sorted(Y_LABELS), default="last100",
                        help="last100: the mean return of the last 100 training games "
                        "(default); iteration: Dopamine's, the mean return of the games of "
                        "each --iteration-steps iteration")
    parser.add_argument("--iteration-steps", type=int, default=250_000,
                        help="agent steps per iteration of --statistic iteration (default: "
                        "250000, Dopamine's)")
    parser.add_argument("--x", choices=("steps", "updates"), default="steps",
                        help="steps: against environment frames (MinAtar) or agent steps "
                        "(default); updates: against the learner's updates (inputs that "
                        "logged them)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.out and not args.csv_dir and not args.table:
            raise PlotError("nothing to do: give --out FILE.png, --csv-dir DIR and/or --table")
        at = []
        if args.table:
            try:
                at = [int(x) for x in args.table.split(",")]
            except ValueError:
                raise PlotError(f"--table expects comma-separated steps, got {args.table!r}")
        if args.every < 1:
            raise PlotError(f"--every must be a positive integer, got {args.every}")
        if args.iteration_steps < 1:
            raise PlotError(f"--iteration-steps must be a positive integer, got "
                            f"{args.iteration_steps}")
        if args.x == "updates" and args.csv_dir:
            raise PlotError("--csv-dir writes curves against steps (with a learner_updates "
                            "column); leave out --x updates")
        if args.x == "updates" and args.statistic == "iteration":
            raise PlotError("--x updates draws the last-100-games statistic, not "
                            "--statistic iteration")
        curves = [read_input(path) for path in args.inputs]
        if args.statistic == "iteration":
            curves = [c if c.statistic == "iteration"
                      else iteration_curve(c, args.iteration_steps) for c in curves]
        if args.x == "updates":
            curves = [against_updates(c, path) for c, path in zip(curves, args.inputs)]
        for path, curve in zip(args.inputs, curves):
            if curve.statistic != args.statistic:
                raise PlotError(f"{path!r} holds --statistic {curve.statistic}, not "
                                f"{args.statistic} (give --statistic to match)")
        references = [read_reference(path) for path in args.reference]
        x_names = {c.x_name for c in curves}
        for path, reference in zip(args.reference, references):
            if reference.get("x", curves[0].x_name) not in x_names:
                raise PlotError(f"--reference {path!r} is against {reference['x']}, the runs "
                                f"against {' and '.join(sorted(x_names))}")
    except (PlotError, OSError, ValueError, KeyError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.csv_dir:
        for curve in curves:
            print("wrote", write_csv(curve, args.csv_dir, args.every))
    if args.out:
        plot(curves, args.out, references, args.title)
        print("wrote", args.out)
    if at:
        print(table(curves, at, references))
    return 0


if __name__ == "__main__":
    sys.exit(main())
