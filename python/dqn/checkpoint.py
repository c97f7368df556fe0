"""Atomic checkpoints of a run, and its best network.

    RUN_DIR/checkpoints/ckpt-000000250000/
        networks.npz   online + target weights and the RMSprop state
        replay.bin     the replay memory (ReplayMemory.save)
        state.pkl      counters, RNG states, environment states, evaluation history
        info.json      step and time, for people
    RUN_DIR/best_network.npz   online weights of the best evaluation (+ its step and score)

A checkpoint is written into `checkpoints/.tmp-...`, every file fsynced, then renamed to its
final name (atomic) and the directory fsynced; only then are older checkpoints deleted. A
`kill -9` at any moment therefore leaves either the new complete checkpoint or the previous
one, and at worst a `.tmp-` directory, which `latest()` ignores and the next save removes.
"""

import json
import os
import pickle
import shutil
import signal
import tempfile
import time
from typing import Optional

import numpy as np

PREFIX = "ckpt-"
TMP_PREFIX = ".tmp-"
FILES = ("networks.npz", "replay.bin", "state.pkl", "info.json")
BEST = "best_network.npz"

# Test hook: kill this process with SIGKILL in the middle of the next checkpoint save
# (after the replay file is written, before the rename), to prove a crash mid-save is safe.
CRASH_ENV = "DQN_TEST_CRASH_DURING_SAVE"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _save_arrays(path: str, arrays: dict) -> None:
    _write_file(path, lambda f: np.savez(f, **arrays))


# What Agent.get_state holds; loss_scale only with --precision mixed_float16.
AGENT_PARTS = ("online", "target", "optimizer", "loss_scale")


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def save(run_dir: str, step: int, agent_state: dict, trainer_state: dict, replay) -> str:
    """Write a complete checkpoint of step `step`; returns its directory."""
    root = checkpoints_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"{PREFIX}{step:012d}")
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{PREFIX}{step:012d}-", dir=root)
    os.chmod(tmp, 0o755)
    arrays = {f"{name}_{i:03d}": value for name in AGENT_PARTS if name in agent_state
              for i, value in enumerate(agent_state[name])}
    _save_arrays(os.path.join(tmp, "networks.npz"), arrays)
    _write_file(os.path.join(tmp, "state.pkl"),
                lambda f: pickle.dump(trainer_state, f, protocol=pickle.HIGHEST_PROTOCOL))
    replay.save(replay_path(tmp))
    if os.environ.get(CRASH_ENV):
        os.kill(os.getpid(), signal.SIGKILL)
    info = {"step": step, "saved_at": time.time(), "files": list(FILES)}
    _write_file(os.path.join(tmp, "info.json"), lambda f: f.write(json.dumps(info).encode()))
    _fsync_dir(tmp)
    if os.path.exists(final):  # the same step saved twice (e.g. SIGTERM right after a save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for name in os.listdir(root):  # the new one is durable: older ones may go
        path = os.path.join(root, name)
        if path != final and (name.startswith(PREFIX) or name.startswith(TMP_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
    return final


def latest(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint directory of a run, or None."""
    root = checkpoints_dir(run_dir)
    if not os.path.isdir(root):
        return None
    done = sorted(name for name in os.listdir(root)
                  if name.startswith(PREFIX)
                  and all(os.path.isfile(os.path.join(root, name, f)) for f in FILES))
    return os.path.join(root, done[-1]) if done else None


def replay_path(path: str) -> str:
    """The replay memory file of checkpoint directory `path` (ReplayMemory.load reads it)."""
    return os.path.join(path, "replay.bin")


def load_agent_state(path: str) -> dict:
    """{'online', 'target', 'optimizer'[, 'loss_scale']}: lists of arrays, in variable
    order ('loss_scale' only from a float16 run)."""
    with np.load(os.path.join(path, "networks.npz")) as data:
        state = {}
        for name in AGENT_PARTS:
            keys = sorted(k for k in data.files if k.startswith(name + "_"))
            if keys or name != "loss_scale":
                state[name] = [data[k] for k in keys]
    return state


def load_trainer_state(path: str) -> dict:
    with open(os.path.join(path, "state.pkl"), "rb") as f:
        return pickle.load(f)


def save_best(run_dir: str, weights, step: int, score: float) -> None:
    """The online weights of the best evaluation so far, replaced atomically."""
    path = os.path.join(run_dir, BEST)
    tmp = os.path.join(run_dir, f"{TMP_PREFIX}{os.getpid()}-{BEST}")
    arrays = {f"online_{i:03d}": w for i, w in enumerate(weights)}
    _save_arrays(tmp, dict(arrays, step=np.int64(step), score=np.float64(score)))
    os.replace(tmp, path)
    _fsync_dir(run_dir)


def load_best(run_dir: str):
    """(weights, step, score) of the run's best network, or None."""
    path = os.path.join(run_dir, BEST)
    if not os.path.isfile(path):
        return None
    with np.load(path) as data:
        keys = sorted(k for k in data.files if k.startswith("online_"))
        return [data[k] for k in keys], int(data["step"]), float(data["score"])


def write_json_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    _write_file(tmp, lambda f: f.write(text.encode()))
    os.replace(tmp, path)
    _fsync_dir(directory)
