"""How much one Ape-X replay server takes in and gives out: the figure that decides when to
shard it (python/tfdqn_trainer/distributed.py).

    python benchmarks/bench_apex_replay.py            # 84x84 frames, Ray on this machine
    python benchmarks/bench_apex_replay.py --frame-shape 10 10 4 --history 1   # MinAtar's

A ReplayServer actor (prioritized, n-step 3, 200,000 transitions of --frame-shape) is fed by S
sender processes (Ray tasks), each sending batches of --send-every frames with their
initial priorities as an actor does, while a learner-side loop samples batches of 32 and
sends back priorities. Prints a markdown table: frames/s in (alone, and while sampling),
batches/s out (alone, as apex.py's learner asks for them, and while frames come in), and
what that means in agent steps per second of acting.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import ray

HERE = os.path.dirname(os.path.abspath(__file__))


@ray.remote(num_cpus=0)
def sender(replay, stream, batches, send_every, shape, max_in_flight=4):
    rng = np.random.default_rng(stream)
    frames = rng.integers(0, 256, (send_every,) + tuple(shape), dtype=np.uint8)
    actions = np.zeros(send_every, np.int64)
    rewards = np.zeros(send_every, np.float32)
    terminals = np.zeros(send_every, bool)
    sequence, in_flight = 0, []
    for _ in range(batches):
        # priorities for the transitions this batch completes, as an actor sends them
        sequences = list(range(max(0, sequence - 3), sequence + send_every - 3))
        in_flight.append(replay.add.remote(stream, frames, actions, rewards, terminals,
                                           sequences, [1.0] * len(sequences), []))
        sequence += send_every
        if len(in_flight) > max_in_flight:
            _, in_flight = ray.wait(in_flight, num_returns=1)
    ray.get(in_flight)
    return batches * send_every


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--send-every", type=int, default=50)
    p.add_argument("--batches", type=int, default=400, help="sends per sender")
    p.add_argument("--capacity", type=int, default=200_000)
    p.add_argument("--samples", type=int, default=300, help="minibatches sampled")
    p.add_argument("--frame-shape", type=int, nargs="+", default=[84, 84],
                   help="one stored frame (default 84 84, Atari; MinAtar Breakout: 10 10 4)")
    p.add_argument("--history", type=int, default=4, help="frames per state (default 4)")
    args = p.parse_args(argv)
    shape = tuple(args.frame_shape)

    from tfdqn_trainer.commands import apex as apex_cli  # the workers' runtime environment
    from tfdqn_trainer.distributed import ReplayServer
    from _machine import cpu_name

    ray.init(num_cpus=args.senders + 1, include_dashboard=False, log_to_driver=False,
             object_store_memory=1 << 30, runtime_env=apex_cli.runtime_env())
    replay = ReplayServer.remote(capacity=args.capacity, frame_shape=shape,
                                 history=args.history, num_streams=args.senders, seed=0,
                                 n_step=3, discount=0.99, priority_exponent=0.6)
    ray.get(replay.counts.remote())
    rows = []

    # frames in, nothing sampled
    t = time.perf_counter()
    sent = sum(ray.get([sender.remote(replay, s, args.batches, args.send_every, shape)
                        for s in range(args.senders)]))
    alone = sent / (time.perf_counter() - t)
    rows.append(("frames in (no sampling)", f"{alone:,.0f} frames/s",
                 f"{args.senders} senders x {args.batches} sends of {args.send_every}"))

    # minibatches out, nothing coming in: the learner's loop of python/apex.py (two sample
    # requests in flight, priorities sent back without waiting, at most 4 outstanding)
    t = time.perf_counter()
    requests, pending = [replay.sample.remote(32, 0.4) for _ in range(2)], []
    for i in range(args.samples):
        batch = ray.get(requests.pop(0))
        if i + 2 < args.samples:
            requests.append(replay.sample.remote(32, 0.4))
        pending.append(replay.update_priorities.remote(batch[6], np.full(32, 0.5)))
        if len(pending) > 4:
            _, pending = ray.wait(pending, num_returns=1)
    ray.get(pending)
    rows.append(("minibatches out (no frames in)",
                 f"{args.samples / (time.perf_counter() - t):,.0f} /s",
                 "apex.py's learner loop: 2 sample_batch(32) requests in flight, priorities "
                 "sent back"))

    # frames in while a learner samples and sends back priorities
    jobs = [sender.remote(replay, s, args.batches, args.send_every, shape)
            for s in range(args.senders)]
    t = time.perf_counter()
    sampled, pending = 0, []
    while True:
        done, _ = ray.wait(jobs, num_returns=len(jobs), timeout=0)
        if len(done) == len(jobs) and sampled >= args.samples:
            break
        batch = ray.get(replay.sample.remote(32, 0.4))
        pending.append(replay.update_priorities.remote(batch[6], np.full(32, 0.5)))
        if len(pending) > 4:
            _, pending = ray.wait(pending, num_returns=1)
        sampled += 1
    elapsed = time.perf_counter() - t
    sent = sum(ray.get(jobs))
    rows.append(("frames in (while sampling)", f"{sent / elapsed:,.0f} frames/s",
                 "the same senders, the learner loop sampling meanwhile"))
    rows.append(("minibatches out (while taking frames in)", f"{sampled / elapsed:,.0f} /s",
                 f"sample_batch(32) ({2 * 32 * args.history * np.prod(shape) / 1e6:.3g} MB of s "
                 "and s2) + update_priorities, one at a time"))
    ray.shutdown()

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); Python {platform.python_version()}, "
          f"Ray {ray.__version__}")
    print(f"command: python {' '.join([sys.argv[0]] + (argv or sys.argv[1:]))}\n")
    print("| what | rate | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    size = "x".join(map(str, shape))
    print(f"\nOne replay server takes {alone:,.0f} frames/s of {size} bytes: actors stepping "
          f"{alone:,.0f} agent steps/s together (one stored frame per agent step). Beyond "
          f"that, shard it.")


if __name__ == "__main__":
    main()
