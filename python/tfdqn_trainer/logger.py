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


def multiples_in(after: int, upto: int, period: int) -> int:
    """How many multiples of period lie in (after, upto] (0 for period <= 0)."""
    return max(0, upto // period - after // period) if period > 0 else 0


class EtaEstimator:
    """Time left, from the phases ahead rather than from the rate so far.

    A DQN run's speed changes where learning starts: before --learn-start it only acts (Pong on
    2 cores: about 1,300 agent steps/s), after it also updates (about 100/s, docs/BENCHMARKS.md
    section 5), so an ETA taken from the first rate is off by a factor of ten. Until a rate
    has been measured after learning started, the ETA says so ("ETA after learning
    starts"). Then: training steps left / the training rate of the latest window that lies
    wholly after learning started (evaluation and checkpoint time excluded), plus, for each
    evaluation and checkpoint still ahead, the duration of the last one. Evaluations not yet
    timed are named ("+ 3 evaluations") instead of guessed.
    """

    def __init__(self, total_steps: int, learn_start: int, eval_freq: int = 0,
                 save_freq: int = 0):
        self.total_steps, self.learn_start = total_steps, learn_start
        self.eval_freq, self.save_freq = eval_freq, save_freq
        self.seconds_per_step: Optional[float] = None
        self.eval_seconds: Optional[float] = None
        self.checkpoint_seconds = 0.0

    def window(self, first_step: int, last_step: int, training_seconds: float) -> None:
        """A stretch of training from first_step to last_step that took training_seconds
        (wall time less evaluations and checkpoints)."""
        if first_step >= self.learn_start and last_step > first_step and training_seconds > 0:
            self.seconds_per_step = training_seconds / (last_step - first_step)

    def evaluation_took(self, seconds: float) -> None:
        self.eval_seconds = seconds

    def checkpoint_took(self, seconds: float) -> None:
        self.checkpoint_seconds = seconds

    def evaluations_ahead(self, step: int) -> int:
        # the trainer evaluates when the step crosses a multiple of eval_freq after learn_start
        return multiples_in(max(step, self.learn_start), self.total_steps, self.eval_freq)

    def seconds_left(self, step: int) -> Optional[float]:
        """Estimated seconds to the end, without untimed evaluations; None while unknown."""
        if self.seconds_per_step is None:
            return None
        left = max(self.total_steps - step, 0) * self.seconds_per_step
        if self.eval_seconds is not None:
            left += self.evaluations_ahead(step) * self.eval_seconds
        checkpoints = multiples_in(step, self.total_steps, self.save_freq)
        if self.total_steps > step and (self.save_freq <= 0 or self.total_steps % self.save_freq):
            checkpoints += 1  # the final one
        return left + checkpoints * self.checkpoint_seconds

    def describe(self, step: int) -> str:
        left = self.seconds_left(step)
        if left is None:
            return "ETA after learning starts" if step < self.learn_start else "ETA measuring"
        text = f"ETA {format_duration(left)}"
        untimed = self.evaluations_ahead(step) if self.eval_seconds is None else 0
        if untimed:
            text += f" + {untimed} evaluation{'s' if untimed > 1 else ''}"
        return text


class RunLogger:
    def __init__(self, run_dir: str, total_steps: int, start_step: int,
                 eta: Optional[EtaEstimator] = None):
        self.run_dir = run_dir
        self.total_steps = total_steps
        self.eta = eta or EtaEstimator(total_steps, learn_start=0)
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

    def train(self, step: int, record: dict, paused_seconds: float = 0.0) -> None:
        """A summary record; paused_seconds: evaluation and checkpoint time since the last one
        (counted in SPS, which is wall time, but not in the training rate behind the ETA)."""
        now = time.time()
        if step > self._last_step:
            self.sps = (step - self._last_step) / max(now - self._last_time, 1e-9)
            self.eta.window(self._last_step, step, now - self._last_time - paused_seconds)
        self._last_time, self._last_step = now, step
        record = dict({"type": "train", "step": step, "sps": self.sps}, **record)
        self.write(record)
        self.scalars(step, {f"train/{k}": v for k, v in record.items()
                            if k not in ("type", "step") and isinstance(v, (int, float))})
        self.writer.flush()

    def evaluation(self, step: int, record: dict) -> None:
        record = dict({"type": "eval", "step": step}, **record)
        if record.get("eval_seconds") is not None:
            self.eta.evaluation_took(record["eval_seconds"])
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
        parts = [f"step {step:,}/{self.total_steps:,} ({100 * done:.1f}%)",
                 f"{self.sps:,.0f} SPS" if math.isfinite(self.sps) else "- SPS",
                 self.eta.describe(step)]
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
