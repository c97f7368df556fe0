"""What a run prints: the ETA (from the phases ahead, not the rate before learning starts)
and no CUDA start-up noise on a machine without a GPU."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer import quiet_tf  # noqa: E402
from tfdqn_trainer.logger import EtaEstimator, multiples_in  # noqa: E402


def test_multiples_in():
    assert multiples_in(0, 1_000_000, 250_000) == 4
    assert multiples_in(250_000, 1_000_000, 250_000) == 3
    assert multiples_in(249_999, 250_000, 250_000) == 1
    assert multiples_in(10, 20, 0) == 0


def test_eta_waits_for_a_rate_measured_after_learning_starts():
    # Pong-like: 1,300 steps/s while only acting, 140/s once updates start.
    eta = EtaEstimator(1_000_000, learn_start=50_000, eval_freq=250_000, save_freq=0)
    eta.window(0, 10_000, 10_000 / 1300)
    assert eta.seconds_left(10_000) is None
    assert eta.describe(10_000) == "ETA after learning starts"
    eta.window(40_000, 60_000, 20_000 / 1300)  # straddles learn_start: says nothing
    assert eta.describe(60_000) == "ETA measuring"
    eta.window(60_000, 70_000, 10_000 / 140)
    # 930k steps at 140/s, 4 evaluations ahead not yet timed, one final checkpoint of 0 s
    assert eta.seconds_left(70_000) == pytest.approx(930_000 / 140)
    assert eta.describe(70_000).endswith("+ 4 evaluations")
    eta.evaluation_took(300.0)
    eta.checkpoint_took(20.0)
    assert eta.seconds_left(70_000) == pytest.approx(930_000 / 140 + 4 * 300 + 20)
    assert "+" not in eta.describe(70_000)
    # the default Pong run: the old ETA (rate before learning) was ten times too short
    assert eta.seconds_left(70_000) > 9 * 930_000 / 1300


def test_eta_counts_checkpoints_and_evaluations_ahead():
    eta = EtaEstimator(1000, learn_start=100, eval_freq=250, save_freq=300)
    eta.window(100, 200, 100.0)  # 1 s per step
    eta.evaluation_took(10.0)
    eta.checkpoint_took(2.0)
    # from 200: evaluations at 250, 500, 750, 1000; checkpoints at 300, 600, 900 and the end
    assert eta.seconds_left(200) == pytest.approx(800 + 4 * 10 + 4 * 2)
    assert eta.seconds_left(1000) == 0


def test_filtered_stderr_drops_only_matching_lines(tmp_path):
    """fd-level: C++ writes to fd 2, so the filter must work below sys.stderr."""
    script = (
        "import os, re, sys\n"
        "from tfdqn_trainer.quiet_tf import filtered_stderr\n"
        "with filtered_stderr(re.compile('noise')):\n"
        "    os.write(2, b'keep one\\nnoise here\\n')\n"
        "    print('keep two', file=sys.stderr)\n"
        "os.write(2, b'noise after\\n')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))  # the source trainer
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["keep one", "keep two", "noise after"]


def test_the_known_cuda_lines_match():
    lines = [
        "I0000 00:00:1796171909.091871   19704 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.",
        "E0000 00:00:1796171912.989571   19704 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ]
    assert all(quiet_tf.CUDA_ABSENT_LINES.search(line) for line in lines)
    assert not quiet_tf.CUDA_ABSENT_LINES.search("E0000 kernel.cc:1] something else failed")


@pytest.mark.skipif(quiet_tf.has_nvidia_driver(), reason="checks a machine without a GPU")
def test_a_run_prints_no_cuda_lines_and_an_honest_eta(tmp_path):
    pytest.importorskip("gymnasium")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user starts it
    result = subprocess.run(
        [sys.executable, str(REPO / "python" / "train.py"), "--preset", "classic",
         "--steps", "1500", "--learn-start", "1000", "--eval-freq", "0", "--prog-freq", "500",
         "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"cuInit|cudart_stub|cuda_platform|E0000", result.stderr), \
        result.stderr
    progress = [ln for ln in result.stdout.splitlines() if ln.startswith("step ")]
    assert "ETA after learning starts" in progress[0]  # step 500, before learning
    assert re.search(r"ETA \d\d:\d\d:\d\d", progress[-1])  # after learning
