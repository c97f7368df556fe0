"""Atomic checkpoints of a run, and its best network. Data only: no pickle anywhere, so a
checkpoint directory from elsewhere cannot run code when it is loaded.

    RUN_DIR/checkpoints/ckpt-000000250000/
        agent.index, agent.data-*   online + target networks, the optimizer's state (and
                                    float16's loss scale): tf.train.Checkpoint, restored by
                                    their place in the object graph, mismatches reported
        replay.bin                  the replay memory (ReplayMemory.save); Ape-X with
                                    --replay-shards K: shard 0, and replay-shard-<k>.bin
        state.json                  counters, RNG states, environment states (plain_state:
                                    JSON with arrays and bytes; Atari: the emulator's bytes)
        info.json                   step and time, for people
    RUN_DIR/best/best-000000250000/
        network.index, network.data-*   online network of the best evaluation (tf.train)
        info.json                       its step and evaluation score

Each is written into a `.tmp-...` directory, every file fsynced, then renamed to its final
name (atomic) and the parent directory fsynced; only then are older ones deleted. A
`kill -9` at any moment therefore leaves either the new complete directory or the previous
one, and at worst a `.tmp-` directory, which `latest()` ignores and the next save removes.

Checkpoints of earlier versions (state.pkl, networks.npz) are refused with a message that
says how to convert them (python/convert_checkpoint.py); an earlier best_network.npz (arrays
only) is still read.
"""

import json
import os
import shutil
import tempfile
import time
from typing import Callable, Optional, Tuple

import numpy as np

from tfdqn_trainer import plain_state

PREFIX = "ckpt-"
BEST_PREFIX = "best-"
TMP_PREFIX = ".tmp-"
AGENT = "agent"      # tf.train.Checkpoint prefix inside a checkpoint directory
NETWORK = "network"  # ... inside a best-network directory
FILES = (AGENT + ".index", "replay.bin", "state.json", "info.json")
BEST_DIR = "best"
OLD_BEST = "best_network.npz"  # earlier versions: online weights by position, + step, score
OLD_FORMAT = "state.pkl"

class CheckpointFormatError(ValueError):
    """A checkpoint this version does not read (an earlier version's pickle format)."""


def fsync(path: str) -> None:
    """Makes a file's contents, or a directory's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def _save_atomic(root: str, name: str, prefix: str, write: Callable[[str], None]) -> str:
    """Creates root/name through a temporary directory that write(tmp) fills; removes every
    other directory starting with `prefix` (and stale temporaries) once it is durable."""
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, name)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=root)
    os.chmod(tmp, 0o755)
    write(tmp)
    for entry in os.listdir(tmp):
        fsync(os.path.join(tmp, entry))
    fsync(tmp)
    if os.path.exists(final):  # the same step saved twice (e.g. SIGTERM right after a save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync(root)
    for entry in os.listdir(root):  # the new one is durable: older ones may go
        path = os.path.join(root, entry)
        if path != final and (entry.startswith(prefix) or entry.startswith(TMP_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
    return final


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def save(run_dir: str, step: int, agent, trainer_state: dict, replay) -> str:
    """Write a complete checkpoint of step `step`; returns its directory. trainer_state: plain
    data (plain_state.dumps)."""
    def write(tmp: str) -> None:
        agent.write(os.path.join(tmp, AGENT))
        _write_text(os.path.join(tmp, "state.json"), plain_state.dumps(trainer_state))
        replay.save(replay_path(tmp))
        _write_text(os.path.join(tmp, "info.json"),
                    json.dumps({"step": step, "saved_at": time.time(), "files": list(FILES)}))

    return _save_atomic(checkpoints_dir(run_dir), f"{PREFIX}{step:012d}", PREFIX, write)


def latest(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint directory of a run (of this version's format or an
    earlier one: check_format tells), or None."""
    root = checkpoints_dir(run_dir)
    if not os.path.isdir(root):
        return None
    done = sorted(name for name in os.listdir(root)
                  if name.startswith(PREFIX)
                  and os.path.isfile(os.path.join(root, name, "info.json")))
    return os.path.join(root, done[-1]) if done else None


def check_format(path: str) -> None:
    """CheckpointFormatError unless `path` is a complete checkpoint this version reads."""
    if os.path.isfile(os.path.join(path, OLD_FORMAT)):
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        raise CheckpointFormatError(
            f"checkpoint {path} was written by an earlier version (state.pkl, a pickle); this "
            "version reads no pickles, since loading one from elsewhere could run code. If "
            "you trust it (e.g. you wrote it), convert it once with: python "
            f"python/convert_checkpoint.py {run_dir}")
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointFormatError(f"checkpoint {path} is incomplete: no {', '.join(missing)}")


def replay_path(path: str, shard: int = 0) -> str:
    """The replay memory file of checkpoint directory `path` (ReplayMemory.load reads it);
    an Ape-X run with --replay-shards K writes one per shard: replay.bin is shard 0,
    replay-shard-<k>.bin shard k."""
    return os.path.join(path, "replay.bin" if shard == 0 else f"replay-shard-{shard}.bin")


def replay_shards(path: str) -> int:
    """How many replay shards checkpoint directory `path` holds (1: replay.bin alone)."""
    shards = 1
    while os.path.isfile(replay_path(path, shards)):
        shards += 1
    return shards


def agent_prefix(path: str) -> str:
    """The tf.train.Checkpoint prefix of checkpoint directory `path` (Agent.read reads it)."""
    return os.path.join(path, AGENT)


def load_trainer_state(path: str) -> dict:
    with open(os.path.join(path, "state.json")) as f:
        return plain_state.loads(f.read())


def read_online_network(path: str, model) -> None:
    """The online network of checkpoint directory `path` into a model built as the run's."""
    import tensorflow as tf
    tf.train.Checkpoint(online=model).read(agent_prefix(path)).expect_partial()


def save_best(run_dir: str, model, step: int, score: float) -> str:
    """The online network of the best evaluation so far (replacing the previous best)."""
    import tensorflow as tf

    def write(tmp: str) -> None:
        tf.train.Checkpoint(online=model).write(os.path.join(tmp, NETWORK))
        _write_text(os.path.join(tmp, "info.json"), json.dumps({"step": step, "score": score}))

    return _save_atomic(os.path.join(run_dir, BEST_DIR), f"{BEST_PREFIX}{step:012d}",
                        BEST_PREFIX, write)


def load_best(run_dir: str, model) -> Optional[Tuple[int, float]]:
    """Reads the run's best network into model; returns (step, score), or None if the run has
    none. Reads an earlier version's best_network.npz too."""
    import tensorflow as tf
    root = os.path.join(run_dir, BEST_DIR)
    done = sorted(name for name in os.listdir(root) if name.startswith(BEST_PREFIX)
                  and os.path.isfile(os.path.join(root, name, "info.json"))
                  ) if os.path.isdir(root) else []
    if done:
        path = os.path.join(root, done[-1])
        with open(os.path.join(path, "info.json")) as f:
            info = json.load(f)
        status = tf.train.Checkpoint(online=model).read(os.path.join(path, NETWORK))
        status.assert_consumed()
        return int(info["step"]), float(info["score"])
    old = os.path.join(run_dir, OLD_BEST)
    if not os.path.isfile(old):
        return None
    with np.load(old) as data:  # allow_pickle is off: arrays only
        keys = sorted(k for k in data.files if k.startswith("online_"))
        model.set_weights([data[k] for k in keys])
        return int(data["step"]), float(data["score"])


def has_best(run_dir: str) -> bool:
    root = os.path.join(run_dir, BEST_DIR)
    return os.path.isfile(os.path.join(run_dir, OLD_BEST)) or (os.path.isdir(root) and any(
        name.startswith(BEST_PREFIX) for name in os.listdir(root)))


def write_json_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    _write_text(tmp, text)
    fsync(tmp)
    os.replace(tmp, path)
    fsync(directory)
