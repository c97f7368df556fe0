"""What a run shows and leaves: a console progress line, TensorBoard summaries, metrics.jsonl.

metrics.jsonl has one JSON object per line, each with "type" and "step":
  {"type": "train", "step", "sps", "epsilon", "loss", "mean_q", "games", "mean_return", ...}
  {"type": "eval", "step", "eval_mean_score", "eval_max_score", "eval_episodes", "best", ...}
  {"type": "game", "step", "score", "length", "mean_return_100"} for every finished training
      game; mean_return_100 is the mean score of the last 100 games up to this one (what the
      MinAtar paper and Dopamine plot), so a plot reads it instead of recomputing it.
"""

import json
import math
import os
import sys
import time
from typing import Optional

import tensorflow as tf

METRICS = "metrics.jsonl"


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


def truncate_metrics(run_dir: str, step: int) -> None:
    """On resume: drop lines written after the checkpoint the run continues from."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except ValueError:  # a line cut short by a crash
                continue
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLogger:
    def __init__(self, run_dir: str, total_steps: int, start_step: int):
        self.run_dir = run_dir
        self.total_steps = total_steps
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "tb"))
        self.metrics = open(os.path.join(run_dir, METRICS), "a")
        self.tty = sys.stdout.isatty()
        self._last_time = time.time()
        self._last_step = start_step
        self._last_print = 0.0
        self.sps = float("nan")
        self.last_eval: Optional[str] = None

    def write(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def scalars(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(name, value)

    def game(self, step: int, score: float, length: int, mean_return_100: float) -> None:
        self.write({"type": "game", "step": step, "score": score, "length": length,
                    "mean_return_100": mean_return_100})
        self.scalars(step, {"train/episode_return": score, "train/episode_length": length,
                            "train/mean_return_100": mean_return_100})

    def train(self, step: int, record: dict) -> None:
        now = time.time()
        if step > self._last_step:
            self.sps = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        record = dict({"type": "train", "step": step, "sps": self.sps}, **record)
        self.write(record)
        self.scalars(step, {f"train/{k}": v for k, v in record.items()
                            if k not in ("type", "step") and isinstance(v, (int, float))})
        self.writer.flush()

    def evaluation(self, step: int, record: dict) -> None:
        record = dict({"type": "eval", "step": step}, **record)
        self.write(record)
        self.scalars(step, {"eval/mean_score": record["eval_mean_score"],
                            "eval/max_score": record["eval_max_score"],
                            "eval/episodes": record["eval_episodes"]})
        self.writer.flush()
        mean = record["eval_mean_score"]
        self.last_eval = (f"{mean:.1f} ({record['eval_episodes']} games)"
                          if mean is not None else "no finished game")
        self.progress(step, epsilon=None, force=True, newline=True)

    def progress(self, step: int, epsilon: Optional[float], *, extra: str = "",
                 force: bool = False, newline: bool = False) -> None:
        """The console line; on a terminal redrawn in place at most 2x a second."""
        now = time.time()
        if not force and (not self.tty or now - self._last_print < 0.5):
            return
        self._last_print = now
        done = step / max(self.total_steps, 1)
        eta = (self.total_steps - step) / self.sps if self.sps and self.sps > 0 else float("nan")
        parts = [f"step {step:,}/{self.total_steps:,} ({100 * done:.1f}%)",
                 f"{self.sps:,.0f} SPS" if math.isfinite(self.sps) else "- SPS",
                 f"ETA {format_duration(eta)}"]
        if epsilon is not None:
            parts.append(f"eps {epsilon:.3f}")
        if extra:
            parts.append(extra)
        parts.append(f"eval {self.last_eval}" if self.last_eval else "eval -")
        line = " | ".join(parts)
        if self.tty and not newline:
            sys.stdout.write("\r" + line[:200].ljust(120))
        else:
            sys.stdout.write(("\r" if self.tty else "") + line + "\n")
        sys.stdout.flush()

    def message(self, text: str) -> None:
        sys.stdout.write(("\n" if self.tty else "") + text + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        self.metrics.close()
