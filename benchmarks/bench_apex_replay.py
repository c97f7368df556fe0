"""How much Ape-X's replay takes in and gives out, with one server or K shards: the figures
that decide when to shard it (python/tfdqn_trainer/distributed.py).

    python benchmarks/bench_apex_replay.py            # 84x84 frames, Ray on this machine
    python benchmarks/bench_apex_replay.py --frame-shape 10 10 4 --history 1   # MinAtar's
    python benchmarks/bench_apex_replay.py --shards 1 2 --sample-batches 1 4

For each --shards K: K ReplayServer actors (prioritized, n-step 3, --capacity transitions in
all) fed by S sender processes (Ray tasks; sender s feeds shard s % K, as actor s does),
each sending batches of --send-every frames with their initial priorities as an actor does,
while a learner-side loop (ShardedReplay, as apex.py's learner: two requests in flight,
--sample-batches minibatches of 32 per request, priorities sent back per request) samples.
Prints a markdown table: frames/s in (alone, and while sampling), minibatches/s out (alone,
and while frames come in), and the learner's time per request.
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


def learner_loop(replay, samples, per_call, until=None):
    """apex.py's learner loop without the update: two requests in flight, `per_call`
    minibatches each, their priorities sent back per request (at most 4 calls per shard
    outstanding). Runs for `samples` minibatches, and on while until() is False. Returns
    (minibatches, requests)."""
    requests, pending, sampled, calls = [], [], 0, 0
    while sampled < samples or (until is not None and not until()):
        while len(requests) < 2:
            requests.append(replay.request(per_call, 32, 0.4))
            calls += 1
        batches = replay.collect(requests.pop(0))
        if batches:
            pending += replay.send_priorities([(b.index, np.full(32, 0.5), b.incarnations)
                                               for b in batches])
            if len(pending) > 4 * replay.k:
                _, pending = ray.wait(pending, num_returns=len(pending) - 4 * replay.k)
        sampled += len(batches)
    ray.get(pending + [r for request in requests for r in request[1] if r is not None])
    return sampled, calls


def measure(args, shape, shards, per_call):
    """The rows of one configuration: K shards, `per_call` minibatches per request."""
    from tfdqn_trainer.distributed import ReplayServer, ShardedReplay, shard_of
    servers = []
    for k in range(shards):
        on_shard = shard_of(k, args.senders, shards)[2]
        servers.append(ReplayServer.remote(
            capacity=args.capacity * on_shard // args.senders, frame_shape=shape,
            history=args.history, num_streams=on_shard, seed=k, n_step=3, discount=0.99,
            priority_exponent=0.6))
    replay = ShardedReplay(servers, seed=0)
    ray.get([server.counts.remote() for server in servers])

    def senders():
        return [sender.remote(servers[shard_of(s, args.senders, shards)[0]],
                              shard_of(s, args.senders, shards)[1], args.batches,
                              args.send_every, shape) for s in range(args.senders)]
    label = f"{shards} shard{'s' if shards > 1 else ''}, {per_call} per request"
    # frames in, nothing sampled
    t = time.perf_counter()
    alone = sum(ray.get(senders())) / (time.perf_counter() - t)
    replay.stats()  # the shards' priority totals, for the first split
    # minibatches out, nothing coming in
    t = time.perf_counter()
    sampled, calls = learner_loop(replay, args.samples, per_call)
    elapsed = time.perf_counter() - t
    out_alone, per_request = sampled / elapsed, elapsed / calls * 1e3
    # frames in while the learner samples
    jobs = senders()
    t = time.perf_counter()
    sampled, _ = learner_loop(replay, args.samples, per_call,
                              until=lambda: len(ray.wait(jobs, num_returns=len(jobs),
                                                         timeout=0)[0]) == len(jobs))
    elapsed = time.perf_counter() - t
    both_in = sum(ray.get(jobs)) / elapsed
    for server in servers:
        ray.kill(server)
    return (label, f"{alone:,.0f}", f"{out_alone:,.0f}", f"{per_request:.1f}",
            f"{both_in:,.0f}", f"{sampled / elapsed:,.0f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--send-every", type=int, default=50)
    p.add_argument("--batches", type=int, default=400, help="sends per sender")
    p.add_argument("--capacity", type=int, default=200_000)
    p.add_argument("--samples", type=int, default=600, help="minibatches sampled")
    p.add_argument("--frame-shape", type=int, nargs="+", default=[84, 84],
                   help="one stored frame (default 84 84, Atari; MinAtar Breakout: 10 10 4)")
    p.add_argument("--history", type=int, default=4, help="frames per state (default 4)")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2],
                   help="replay shards to measure (default: 1 2)")
    p.add_argument("--sample-batches", type=int, nargs="+", default=[1, 4],
                   help="minibatches per request to measure (default: 1 4; 1 is the learner "
                        "before several per call)")
    args = p.parse_args(argv)
    shape = tuple(args.frame_shape)
    if max(args.shards) > args.senders:
        p.error(f"--shards: each shard needs a sender; got {max(args.shards)} shards for "
                f"--senders {args.senders}")

    from _machine import cpu_name

    # This process and Ray's workers import the installed trainer (pip install .).
    ray.init(num_cpus=args.senders + 1, include_dashboard=False, log_to_driver=False,
             object_store_memory=1 << 30)
    rows = [measure(args, shape, k, n) for k in args.shards for n in args.sample_batches]
    ray.shutdown()

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); Python {platform.python_version()}, "
          f"Ray {ray.__version__}")
    print(f"command: python {' '.join([sys.argv[0]] + (argv or sys.argv[1:]))}")
    size = "x".join(map(str, shape))
    print(f"frames of {size} bytes, history {args.history}; {args.senders} senders x "
          f"{args.batches} sends of {args.send_every}; minibatches of 32\n")
    print("| replay | frames/s in (alone) | minibatches/s out (alone) | ms per request "
          "(alone) | frames/s in (while sampling) | minibatches/s out (while frames come "
          "in) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
