"""python/apex.py as a user starts it: bad input exits 2 with one message before any long
work; a run that starts Ray itself stops it and leaves no Ray process behind, also when
stopped with SIGINT."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray", reason="Ape-X needs ray (pip install '.[distributed]')")
pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

REPO = pathlib.Path(__file__).resolve().parent.parent
APEX = str(REPO / "python" / "apex.py")
pytestmark = pytest.mark.slow


def ray_processes():
    """PIDs of Ray's own processes (gcs, raylet, workers) on this machine."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    names = ("gcs_server", "raylet", "ray::", "default_worker.py", "dashboard")
    return {line.split()[0] for line in out.splitlines()[1:]
            if any(name in line for name in names)}


@pytest.mark.parametrize("args, message", [
    (["--actors", "0"], "--actors must be a positive integer, got 0"),
    (["--ray-address", "127.0.0.1:9"], "--ray-address '127.0.0.1:9': no Ray cluster answers"),
    (["--ray-address", "no-port"], "--ray-address 'no-port': expected 'auto' or HOST:PORT"),
    (["--send-every", "0"], "--send-every must be a positive integer, got 0"),
    (["--steps", "-1"], "--steps must be a positive integer"),
    # every stream counts: 2 actors x 8 envs share 80 entries (5 each); a stream needs
    # --hist-len 1 (classic) + --n-step 5
    (["--actors", "2", "--num-envs", "8", "--replay-memory", "80", "--n-step", "5"],
     "--replay-memory 80 leaves 5 entries per environment (--actors 2 x --num-envs 8 = 16 "
     "streams); each needs at least --hist-len + --n-step = 6"),
    (["--ep-end", "0.1"], "--ep-end does not apply under Ape-X: each Ape-X actor explores"),
    (["--no-prioritized"], "--no-prioritized: Ape-X always samples by priority"),
    (["--max-steps-per-update", "-1"], "--max-steps-per-update must be >= 0, got -1.0"),
    (["--replay-shards", "0"], "--replay-shards must be a positive integer, got 0"),
    (["--actors", "2", "--replay-shards", "3"],
     "--replay-shards must be at most --actors (2): each shard is fed by its own actors, got 3"),
])
def test_bad_input_exits_2_before_any_long_work(tmp_path, args, message):
    t = time.time()
    result = subprocess.run([sys.executable, APEX, "--preset", "classic", *args, "--run-dir",
                             str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert time.time() - t < 30
    assert not (tmp_path / "r").exists()


def test_a_run_stops_ray_and_leaves_no_process_and_sigint_saves(tmp_path):
    before = ray_processes()
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, APEX, "--preset", "classic", "--actors", "2",
                             "--steps", "10000000", "--learn-start", "500", "--eval-freq", "0",
                             "--save-freq", "0", "--prog-freq", "1000",
                             "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 180
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and any(json.loads(line)["type"] == "train"
                                    for line in metrics.read_text().splitlines()):
            break
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("no training summary within 180 s:\n" + proc.communicate()[0][-3000:])
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGINT" in out and "--resume" in out
    assert any(p.name.startswith("ckpt-") for p in (run_dir / "checkpoints").iterdir())
    time.sleep(2)
    assert ray_processes() <= before, out[-2000:]
