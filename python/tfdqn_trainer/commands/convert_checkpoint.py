"""Convert a run's latest checkpoint from the earlier pickle format to the current one.

    python python/convert_checkpoint.py RUN_DIR

Earlier versions wrote state.pkl (a pickle) and networks.npz (arrays by position). train.py
and evaluate.py no longer read pickles, since loading one from elsewhere can run code; this
script reads it once, so run it only on checkpoints you trust (e.g. written by your own
runs). The new files (agent.*, state.json) are written next to the old ones and fsynced;
removing state.pkl last is what switches the checkpoint to the new format, so an
interruption leaves it readable in one format or the other.
Exit codes: 0 converted or nothing to do; 2 bad input.
"""

import argparse
import json
import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdqn_trainer import checkpoint  # noqa: E402
from tfdqn_trainer import config as config_lib  # noqa: E402
from tfdqn_trainer.config import ConfigError  # noqa: E402

PROG = config_lib.program_name("convert_checkpoint.py")
OLD_NETWORKS = "networks.npz"


def old_agent_state(path: str) -> dict:
    """networks.npz of the earlier format: {'online', 'target', 'optimizer'[, 'loss_scale']},
    each a list of arrays in variable order."""
    import numpy as np
    with np.load(os.path.join(path, OLD_NETWORKS)) as data:
        state = {}
        for name in ("online", "target", "optimizer", "loss_scale"):
            keys = sorted(k for k in data.files if k.startswith(name + "_"))
            if keys:
                state[name] = [data[k] for k in keys]
    return state


def convert_envs(old: dict) -> dict:
    """The earlier pool state (pickled emulator states and environments) as data."""
    from tfdqn_trainer import plain_state
    envs = []
    for kind, value in old["envs"]["envs"]:
        if kind == "wrapper":  # DQN3Atari: the emulator state was a pickled ALEState
            value = dict(value, ale=pickle.loads(value["ale"]).serialize())
            envs.append(("wrapper", value))
        elif kind == "pickle":
            envs.append(("plain", plain_state.capture(pickle.loads(value))))
        else:
            raise ConfigError("the checkpoint holds an environment saved without its state "
                              "(it would restart its episode); this converter cannot keep "
                              "that exact")
    return dict(old, envs=dict(old["envs"], envs=envs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a directory written by train.py --run-dir")
    args = parser.parse_args(argv)
    try:
        config_path = os.path.join(args.run_dir, "config.json")
        if not os.path.isfile(config_path):
            raise ConfigError(f"{args.run_dir!r} is not a run directory (no config.json)")
        path = checkpoint.latest(args.run_dir)
        if path is None:
            raise ConfigError(f"{args.run_dir!r} has no checkpoint")
        old_state = os.path.join(path, checkpoint.OLD_FORMAT)
        if not os.path.isfile(old_state):
            checkpoint.check_format(path)
            print(f"{path} is already in the current format")
            return 0
        with open(config_path) as f:
            cfg = config_lib.config_from_dict(json.load(f))
    except (ConfigError, checkpoint.CheckpointFormatError) as e:
        config_lib.fail(str(e), PROG)

    from tfdqn_trainer.quiet_tf import import_tensorflow
    import_tensorflow()
    from tfdqn_trainer import plain_state
    from tfdqn_trainer.build import make_agent, make_pool

    with open(old_state, "rb") as f:
        old = pickle.load(f)  # the one pickle this project still reads: see the docstring
    try:
        state = convert_envs(old)
    except ConfigError as e:
        config_lib.fail(str(e), PROG)
    version, words, gauss = state["python_random"]
    state["python_random"] = [version, list(words), gauss]
    name, key, pos, has_gauss, cached = state["numpy_global"]
    state["numpy_global"] = {"bit_generator": name, "state": {"key": key, "pos": pos},
                             "has_gauss": has_gauss, "gauss": cached}
    plain_state.dumps(state)  # fails here, before anything is written, if not plain data

    pool = make_pool(cfg, 1, training=True)  # for the network's input and action count
    _, agent = make_agent(cfg, pool)
    pool.close()
    agent.set_state(old_agent_state(path))
    agent.write(checkpoint.agent_prefix(path))
    with open(os.path.join(path, "state.json"), "w") as f:
        f.write(plain_state.dumps(state))
    for entry in os.listdir(path):
        checkpoint.fsync(os.path.join(path, entry))
    os.remove(old_state)  # the switch: from here on the checkpoint is in the new format
    checkpoint.fsync(path)
    os.remove(os.path.join(path, OLD_NETWORKS))
    checkpoint.check_format(path)
    print(f"converted {path} (step {state['step']:,}); continue with: "
          f"python python/train.py --resume {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
