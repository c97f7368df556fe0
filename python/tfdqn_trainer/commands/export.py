"""Export a run's trained policy as a TensorFlow SavedModel that needs no tfdqn_ops.

    python python/export.py RUN_DIR --out policy/            # best network (else latest)
    python python/export.py RUN_DIR --out policy/ --latest   # latest checkpoint's network

The SavedModel has one serving signature, `serving_default`, that takes the observations as
the agent sees them and returns Q values and the greedy action:

    observations: the last --hist-len observations of N environments, oldest first:
                  Atari uint8 [N, hist, 84, 84] (the preprocessed frames), MinAtar uint8
                  [N, hist, 10, 10, C] (0/1 planes), vector envs float32 [N, hist, d]
    -> q_values float32 [N, A], action int64 [N] (the first of equal maxima)

Acting needs only the network (the custom op is part of learning), so the SavedModel loads
with plain TensorFlow: TF Serving, `tf.saved_model.load` in any TF program, or a TFLite
conversion. In Python:

    policy = tf.saved_model.load("policy").signatures["serving_default"]
    out = policy(observations=tf.constant(states))
    out["action"], out["q_values"]

Exit codes: 0 done; 2 bad input (not a run directory, no network saved, --out not empty).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdqn_trainer import config as config_lib  # noqa: E402
from tfdqn_trainer.commands.evaluate import read_run_config, read_run_network  # noqa: E402
from tfdqn_trainer.config import ConfigError  # noqa: E402

PROG = config_lib.program_name("export.py")
SIGNATURE = "serving_default"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a directory written by train.py or apex.py")
    parser.add_argument("--out", required=True, help="the SavedModel directory to write (new "
                        "or empty)")
    parser.add_argument("--latest", action="store_true",
                        help="export the latest checkpoint's network instead of the best one")
    return parser


def export_policy(model, spec, out: str) -> None:
    """`model` (a Q-network taking spec-shaped states) as a SavedModel at `out` with the
    serving signature of the module docstring, written into a temporary directory beside
    `out` and renamed (so `out` is complete or absent)."""
    import shutil
    import tempfile

    import tensorflow as tf

    class Policy(tf.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape], spec.dtype,
                                                    name="observations")])
        def serve(self, observations):
            q = tf.cast(self.network(observations, training=False), tf.float32)
            return {"q_values": q, "action": tf.argmax(q, axis=1, output_type=tf.int64)}

    policy = Policy(model)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        tf.saved_model.save(policy, tmp, signatures={SIGNATURE: policy.serve})
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked before): replaced by the complete export
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = read_run_config(args.run_dir, args.latest)
        if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
            raise ConfigError(f"--out {args.out!r} exists and is not an empty directory")
    except ConfigError as e:
        config_lib.fail(str(e), PROG)

    from tfdqn_trainer.quiet_tf import import_tensorflow
    import_tensorflow()
    from tfdqn_trainer.build import make_pool, network_factory

    pool = make_pool(cfg, 1, training=False)  # the observation shape and the action count
    _, spec, build_network = network_factory(cfg, pool)
    pool.close()
    model = build_network()
    source = read_run_network(args.run_dir, model, args.latest)
    export_policy(model, spec, args.out)
    print(f"exported the {source} of {args.run_dir} to {args.out}: signature {SIGNATURE!r}, "
          f"observations {spec.dtype.name} [N, {', '.join(map(str, spec.shape))}] -> "
          f"q_values, action")
    return 0


if __name__ == "__main__":
    sys.exit(main())
