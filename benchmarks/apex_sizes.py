"""Bytes on the wire in Ape-X (python/tfdqn_trainer/distributed.py): per transition an actor
sends, per weight sync, per minibatch the learner pulls. Sizes, not times: the same on every
machine.

    python benchmarks/apex_sizes.py            # Pong (Atari 84x84) and MinAtar Breakout

A send is measured as Ray ships it: the arguments of one ReplayServer.add call of
--send-every transitions (uint8 frames, actions, rewards, terminals, the sequence numbers and
initial priorities of the transitions it completes) serialized with pickle protocol 5, numpy
arrays out of band as Ray's serializer passes them, plus the out-of-band buffers. A weight
sync is one `ray.put` of the online network's float32 weights (each actor then fetches it
once per --weights-poll agent steps). A minibatch is the tuple ReplayServer.sample returns
for batch 32 (s and s2 with their history, a, r, term, discount, index, weight).
"""

import argparse
import os
import pickle

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

GAMES = {
    # name: (env id, preset flags, frame shape, history)
    "pong": ("ALE/Pong-v5", [], (84, 84), 4),
    "minatar": ("MinAtar/Breakout-v0", ["--preset", "minatar"], (10, 10, 4), 1),
}


def shipped_bytes(*args) -> int:
    """pickle protocol 5 with out-of-band buffers: what Ray's serializer writes for args."""
    buffers = []
    head = pickle.dumps(args, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def send_bytes(frame_shape, send_every: int, n_step: int = 3) -> int:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 2, (send_every,) + frame_shape, dtype=np.uint8)
    actions = np.asarray([int(a) for a in rng.integers(0, 6, send_every)])
    rewards = np.zeros(send_every, np.float32)
    terminals = np.zeros(send_every, bool)
    sequences = list(range(1000, 1000 + send_every - n_step + 1))  # as StreamPriorities.ready
    priorities = [float(p) for p in rng.random(len(sequences))]
    return shipped_bytes(0, frames, actions, rewards, terminals, sequences, priorities, [])


def minibatch_bytes(frame_shape, history: int, batch: int = 32) -> int:
    from tfdqn_ops import ReplayMemory
    memory = ReplayMemory(1000, frame_shape, history, 1, 0, n_step=3, discount=0.99,
                          priority_exponent=0.6)
    rng = np.random.default_rng(0)
    for t in range(500):
        memory.add(rng.integers(0, 2, (1,) + frame_shape, dtype=np.uint8), [t % 6], [0.0],
                   [t % 97 == 96])
    return shipped_bytes(tuple(memory.sample_batch(batch, 0.4)))


def weight_bytes(env_id: str, flags) -> tuple:
    from tfdqn_trainer.quiet_tf import import_tensorflow
    import_tensorflow()
    from tfdqn_trainer import config as config_lib
    from tfdqn_trainer.build import make_pool, network_factory
    cfg, _ = config_lib.parse_args(["--env", env_id, *flags])
    pool = make_pool(cfg, 1, training=True)
    _, _, build = network_factory(cfg, pool)
    weights = build().get_weights()
    pool.close()
    return sum(w.size for w in weights), shipped_bytes(weights)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--send-every", type=int, default=50, help="as apex.py's (default 50)")
    args = p.parse_args()
    rows = []
    for name, (env_id, flags, frame_shape, history) in GAMES.items():
        per_send = send_bytes(frame_shape, args.send_every)
        params, weights = weight_bytes(env_id, flags)
        rows.append((name, env_id, int(np.prod(frame_shape)), per_send / args.send_every,
                     params, weights, minibatch_bytes(frame_shape, history)))
    print(f"| game | frame bytes | bytes per transition sent (sends of {args.send_every}) | "
          "network parameters | bytes per weight sync | bytes per minibatch of 32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, env_id, frame, per_transition, params, weights, batch in rows:
        print(f"| {name} ({env_id}) | {frame:,} | {per_transition:,.0f} | {params:,} | "
              f"{weights:,} | {batch:,} |")


if __name__ == "__main__":
    main()
