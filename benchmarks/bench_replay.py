"""Benchmark of tfdqn_ops.ReplayMemory against a plain copy, numpy and SB3.

    python benchmarks/bench_replay.py                      # 1M x 84x84 (needs ~8 GB free)
    python benchmarks/bench_replay.py --capacity 100000    # quicker

Prints a markdown table:
  * memory: RSS growth of the process while filling the memory to capacity;
  * add: microseconds per `add` of one 84x84 frame while filling (pages are
    committed then) and once full (steady state, ring overwrites);
  * sample(32): microseconds per batch and GB/s of s + s2 written, for
    `sample` (allocates the batch) and `sample_into` (preallocated), beside
    a plain numpy copy of the same number of bytes (contiguous, warm source:
    the memory-copy bandwidth the issue measures against);
  * NumpyReplay: a vectorized numpy implementation of the same rules (below;
    tests/test_replay.py checks it against the reference);
  * with --n-step-prioritized: n-step (3) uniform and prioritized (alpha 0.6) memories,
    and NumpyPrioritizedReplay, a vectorized numpy sum tree doing what the prioritized
    sample_batch does (tests/test_replay_nstep_priority.py checks it against the
    reference);
  * Stable-Baselines3 `ReplayBuffer.sample` if stable_baselines3 is installed,
    storing 4x84x84 stacked observations (its usual Atari setup) in a buffer of
    --sb3-capacity entries (1M stacked entries would need 28 GB);
  * the read floor (read_floor.cc, compiled with the system C++ compiler): the time
    to merely read the frames of the same number of random windows, the least any
    sampler can take on this machine.

One memory is alive at a time; each is freed before the next is built.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def earlier_episode(terminals):
    """[n, H-1] terminal flags of a window's first H-1 frames -> which of those frames belong
    to an earlier episode: frame f does when any of t[f .. H-2] is set (a reversed
    cumulative OR)."""
    return np.logical_or.accumulate(terminals[:, ::-1], axis=1)[:, ::-1]


class NumpyReplay:
    """The same rules as tfdqn_ops.ReplayMemory, vectorized with numpy.

    One ring segment per stream, like the C++ memory; sampling draws candidate
    windows with numpy's generator (not the C++ sequence), rejects those whose
    entry i+H-1 is terminal, gathers s and s2 with fancy indexing and zeroes
    frames of earlier episodes with a mask computed once for s and s2.
    """

    def __init__(self, capacity, frame_shape=(84, 84), history=4, num_envs=1, seed=0):
        base, extra = divmod(capacity, num_envs)
        if base < history + 1:
            raise ValueError(f"capacity: {capacity} is too small")
        self.history = history
        self.num_envs = num_envs
        self.frame_shape = tuple(frame_shape)
        self.caps = np.array([base + (e < extra) for e in range(num_envs)], np.int64)
        self.begin = np.concatenate([[0], np.cumsum(self.caps)[:-1]]).astype(np.int64)
        self.frames = np.empty((capacity,) + self.frame_shape, np.uint8)
        self.actions = np.zeros(capacity, np.int32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, np.bool_)
        self.sizes = np.zeros(num_envs, np.int64)
        self.write = np.zeros(num_envs, np.int64)
        self.rng = np.random.default_rng(seed)
        self._envs = np.arange(num_envs)

    def add(self, frames, actions, rewards, terminals):
        slots = self.begin + self.write
        self.frames[slots] = frames
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminals[slots] = terminals
        self.write = (self.write + 1) % self.caps
        self.sizes = np.minimum(self.sizes + 1, self.caps)

    def window_slots(self, envs, starts):
        """Flat slots [n, H+1] of the windows at logical positions `starts`."""
        oldest = np.where(self.sizes[envs] == self.caps[envs], self.write[envs], 0)
        offsets = oldest[:, None] + starts[:, None] + np.arange(self.history + 1)
        return self.begin[envs][:, None] + offsets % self.caps[envs][:, None]

    def windows(self, envs, starts):
        """(s, a, r, s2, term) of the given windows (all assumed valid)."""
        h = self.history
        slots = self.window_slots(np.asarray(envs), np.asarray(starts))
        s = self.frames[slots[:, :h]]
        s2 = self.frames[slots[:, 1:]]
        zero = earlier_episode(self.terminals[slots[:, : h - 1]])
        if h > 1:
            s[:, : h - 1][zero] = 0
            s2[:, : h - 2][zero[:, 1:]] = 0
        last = slots[:, h - 1]
        return (s, self.actions[last], self.rewards[last], s2,
                self.terminals[slots[:, h]].astype(np.float32))

    def windows_only(self, envs, starts):
        """(windows, a, r, term): each window's H+1 frames gathered once."""
        h = self.history
        slots = self.window_slots(np.asarray(envs), np.asarray(starts))
        w = self.frames[slots]
        w[:, : h - 1][earlier_episode(self.terminals[slots[:, : h - 1]])] = 0
        last = slots[:, h - 1]
        return (w, self.actions[last], self.rewards[last],
                self.terminals[slots[:, h]].astype(np.float32))

    def sample(self, batch_size, windows=False):
        envs, starts = self.draw(batch_size)
        return self.windows_only(envs, starts) if windows else self.windows(envs, starts)

    def draw(self, batch_size):
        counts = np.maximum(self.sizes - self.history, 0)
        total = int(counts.sum())
        ends = np.cumsum(counts)
        envs, starts = [], []
        have = 0
        for _ in range(1000):
            u = self.rng.integers(0, max(total, 1), size=2 * batch_size)
            e = np.searchsorted(ends, u, side="right")
            i = u - (ends[e] - counts[e])
            last = self.window_slots(e, i)[:, self.history - 1]
            ok = ~self.terminals[last]
            envs.append(e[ok])
            starts.append(i[ok])
            have += int(ok.sum())
            if have >= batch_size:
                break
        else:
            raise ValueError("no valid window")
        return np.concatenate(envs)[:batch_size], np.concatenate(starts)[:batch_size]


class NumpySumTree:
    """Sum and min trees over `capacity` leaves in flat numpy arrays (node k's children are
    2k and 2k + 1, leaves from `leaves` on: the layout of the Python sum trees of Dopamine
    and CleanRL-style code), with every operation vectorized over the batch: a descent or
    an update is one numpy pass per tree level for all 32 rows at once."""

    def __init__(self, capacity):
        self.leaves = 1 << max(0, int(capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.sum = np.zeros(2 * self.leaves)
        self.min = np.full(2 * self.leaves, np.inf)

    def build(self, priorities):
        """Sets all leaves at once (0 = never drawn) and rebuilds the inner nodes."""
        n = len(priorities)
        self.sum[self.leaves:self.leaves + n] = priorities
        self.min[self.leaves:self.leaves + n] = np.where(priorities > 0, priorities, np.inf)
        for level in range(self.depth - 1, -1, -1):
            lo, hi = 1 << level, 2 << level
            self.sum[lo:hi] = self.sum[2 * lo:2 * hi:2] + self.sum[2 * lo + 1:2 * hi:2]
            self.min[lo:hi] = np.minimum(self.min[2 * lo:2 * hi:2], self.min[2 * lo + 1:2 * hi:2])

    @property
    def total(self):
        return self.sum[1]

    def update(self, index, priorities):
        nodes = np.asarray(index, np.int64) + self.leaves
        self.sum[nodes] = priorities
        self.min[nodes] = priorities
        for _ in range(self.depth):
            nodes = np.unique(nodes >> 1)
            self.sum[nodes] = self.sum[2 * nodes] + self.sum[2 * nodes + 1]
            self.min[nodes] = np.minimum(self.min[2 * nodes], self.min[2 * nodes + 1])

    def find(self, prefix):
        """Leaf index of each prefix sum in [0, total): the first leaf whose cumulative sum
        exceeds it."""
        prefix = np.array(prefix, np.float64)
        nodes = np.ones(len(prefix), np.int64)
        for _ in range(self.depth):
            left = self.sum[2 * nodes]
            right = (prefix >= left) & (self.sum[2 * nodes + 1] > 0)
            prefix -= np.where(right, left, 0.0)
            nodes = 2 * nodes + right
        return nodes - self.leaves


class NumpyPrioritizedReplay(NumpyReplay):
    """Prioritized (proportional, alpha) n-step sampling over one stream with numpy: what
    ReplayMemory(n_step=n, priority_exponent=alpha).sample_batch and update_priorities do,
    vectorized, for the benchmark's case (one stream filled once, no wrap-around).

    Transition i is the window whose s ends at entry t = i + history - 1: valid while entry
    t is not terminal and entry t + n exists. Its return adds discount^k r_{t+k} until n
    rewards or until entry t+k+1 is terminal; s2 ends at the entry reached; the bootstrap
    discount is discount^n, or 0 after a terminal (the rules of tests/replay_reference.py).
    Stratified draws through the sum tree; weights (N P(i))^-beta over the largest weight,
    which the min tree gives.
    """

    def __init__(self, capacity, frame_shape=(84, 84), history=4, seed=0, *, n_step=3,
                 discount=0.99, priority_exponent=0.6):
        super().__init__(capacity, frame_shape, history, 1, seed)
        self.n_step, self.discount, self.alpha = n_step, discount, priority_exponent
        self.tree = NumpySumTree(capacity)
        self.max_priority = 1.0

    def reset_priorities(self):
        """All valid transitions at the current maximum priority (after filling)."""
        size, h, n = int(self.sizes[0]), self.history, self.n_step
        count = max(0, size - h - n + 1)
        valid = ~self.terminals[h - 1:h - 1 + count]
        self.tree.build(np.where(valid, self.max_priority ** self.alpha, 0.0))
        self.num_valid = int(valid.sum())

    def _states(self, ends):
        """History states [B, h, ...] ending at entries `ends`, earlier episodes zeroed."""
        h = self.history
        slots = ends[:, None] - (h - 1) + np.arange(h)
        s = self.frames[slots]
        if h > 1:
            s[:, :h - 1][earlier_episode(self.terminals[slots[:, :h - 1]])] = 0
        return s

    def transitions(self, index):
        """(s, a, r, s2, term, discount, index) of transitions `index` (all valid)."""
        n, index = self.n_step, np.asarray(index, np.int64)
        last = index + self.history - 1
        ahead = last[:, None] + np.arange(n)
        ends_after = self.terminals[ahead + 1]  # entry t+k+1 terminal: the return stops at k
        alive = np.concatenate([np.ones((len(index), 1), bool),
                                ~np.logical_or.accumulate(ends_after, axis=1)[:, :-1]], axis=1)
        scales = self.discount ** np.arange(n, dtype=np.float64)
        returns = np.sum(np.where(alive, scales * self.rewards[ahead], 0.0), axis=1)
        ended = ends_after.any(axis=1)
        reached = np.where(ended, np.argmax(ends_after, axis=1) + 1, n)
        discounts = np.where(ended, 0.0, self.discount ** n)
        return (self._states(last), self.actions[last], returns.astype(np.float32),
                self._states(last + reached), ended.astype(np.float32),
                discounts.astype(np.float32), index)

    def sample_batch(self, batch_size, importance_exponent):
        total = self.tree.total
        prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        index = self.tree.find(np.minimum(prefix, np.nextafter(total, 0.0)))
        probability = self.tree.sum[index + self.tree.leaves] / total
        smallest = self.tree.min[1] / total
        weights = (self.num_valid * probability / (self.num_valid * smallest)) \
            ** -importance_exponent
        return self.transitions(index) + (weights.astype(np.float32),)

    def update_priorities(self, index, priorities):
        priorities = np.asarray(priorities, np.float64)
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(index, priorities ** self.alpha)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def time_calls(fn, iters, warmup=20):
    """Median and mean microseconds of fn() over iters calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3, statistics.fmean(times) / 1e3


def frame_pool(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def episode_terminals(n, mean_length, seed=1):
    """Terminal flags of episodes of random lengths (mean `mean_length`)."""
    rng = np.random.default_rng(seed)
    return rng.random(n) < 1.0 / mean_length


def fill(mem, capacity, pool, terms):
    """Adds `capacity` entries; returns microseconds per add."""
    n_pool = len(pool)
    actions = np.zeros(1, np.int64)
    rewards = np.zeros(1, np.float32)
    term = np.zeros(1, np.bool_)
    t0 = time.perf_counter()
    for k in range(capacity):
        actions[0] = k % 18
        rewards[0] = (k % 7) - 3
        term[0] = terms[k]
        mem.add(pool[k % n_pool][None], actions, rewards, term)
    return (time.perf_counter() - t0) / capacity * 1e6


def bench_cpp(args, pool, terms, rows):
    from tfdqn_ops import ReplayMemory

    shape = tuple(args.frame_shape)
    gc.collect()
    rss0 = rss_bytes()
    mem = ReplayMemory(args.capacity, frame_shape=shape, history=args.history, seed=0)
    fill_us = fill(mem, args.capacity, pool, terms)
    rss1 = rss_bytes()
    steady = min(args.capacity, 100_000)
    steady_us = fill(mem, steady, pool, terms)
    b, h = args.batch, args.history
    rows.append(("tfdqn_ops.ReplayMemory memory (RSS growth, full)",
                 f"{(rss1 - rss0) / 1e9:.3f} GB",
                 f"{args.capacity:,} x {'x'.join(map(str, shape))}; frames alone "
                 f"{args.capacity * int(np.prod(shape)) / 1e9:.3f} GB"))
    rows.append(("tfdqn_ops.ReplayMemory add", f"{fill_us:.2f} µs",
                 "per frame while filling (includes committing pages)"))
    rows.append(("tfdqn_ops.ReplayMemory add", f"{steady_us:.2f} µs",
                 "per frame once full (ring overwrite, steady state)"))

    batch_bytes = 2 * b * h * int(np.prod(shape))
    med, mean = time_calls(lambda: mem.sample(b), args.iters)
    rows.append((f"tfdqn_ops.ReplayMemory.sample({b})", f"{med:.1f} µs",
                 f"{batch_bytes / med / 1e3:.2f} GB/s of s+s2 (mean {mean:.1f} µs)"))
    out = (np.empty((b, h) + shape, np.uint8), np.empty(b, np.int32),
           np.empty(b, np.float32), np.empty((b, h) + shape, np.uint8),
           np.empty(b, np.float32))
    med_into, mean_into = time_calls(lambda: mem.sample_into(*out), args.iters)
    rows.append((f"tfdqn_ops.ReplayMemory.sample_into({b})", f"{med_into:.1f} µs",
                 f"{batch_bytes / med_into / 1e3:.2f} GB/s of s+s2 (mean {mean_into:.1f} µs)"))
    win = (np.empty((b, h + 1) + shape, np.uint8), np.empty(b, np.int32),
           np.empty(b, np.float32), np.empty(b, np.float32))
    med_win, mean_win = time_calls(lambda: mem.sample_windows_into(*win), args.iters)
    win_bytes = win[0].nbytes
    rows.append((f"tfdqn_ops.ReplayMemory.sample_windows_into({b})", f"{med_win:.1f} µs",
                 f"writes {win_bytes / 1e6:.2f} MB ({win_bytes / med_win / 1e3:.2f} GB/s); "
                 f"s+s2 as views: {batch_bytes / med_win / 1e3:.2f} GB/s equivalent "
                 f"(mean {mean_win:.1f} µs)"))
    if args.save_load:
        path = os.path.join(args.tmpdir, "bench_replay.bin")
        t0 = time.perf_counter()
        mem.save(path)
        t_save = time.perf_counter() - t0
        size = os.path.getsize(path)
        mem = None
        gc.collect()
        t0 = time.perf_counter()
        mem = ReplayMemory.load(path)
        t_load = time.perf_counter() - t0
        os.remove(path)
        rows.append(("tfdqn_ops.ReplayMemory save / load", f"{t_save:.1f} s / {t_load:.1f} s",
                     f"{size / 1e9:.3f} GB file ({size / t_save / 1e9:.2f} / "
                     f"{size / t_load / 1e9:.2f} GB/s, incl. fsync and checksum)"))
    mem = None
    gc.collect()
    return {"sample": med, "sample_into": med_into, "sample_windows_into": med_win}, batch_bytes


def bench_n_step_prioritized(args, pool, terms, rows):
    """n-step (n = 3) uniform and prioritized (alpha 0.6) memories of the same size:
    memory, steady-state add (with priority upkeep), sample_batch and update_priorities."""
    from tfdqn_ops import ReplayMemory

    shape, b = tuple(args.frame_shape), args.batch
    results = {}
    for label, alpha in (("n_step=3", 0.0), ("n_step=3, priority_exponent=0.6", 0.6)):
        gc.collect()
        rss0 = rss_bytes()
        mem = ReplayMemory(args.capacity, frame_shape=shape, history=args.history, seed=0,
                           n_step=3, priority_exponent=alpha)
        fill(mem, args.capacity, pool, terms)
        rss1 = rss_bytes()
        steady_us = fill(mem, min(args.capacity, 100_000), pool, terms)
        if alpha:
            rows.append((f"ReplayMemory({label}) memory (RSS growth, full)",
                         f"{(rss1 - rss0) / 1e9:.3f} GB", "frames, columns, priorities and the "
                         "sum and min trees"))
        rows.append((f"ReplayMemory({label}) add", f"{steady_us:.2f} µs",
                     "per frame once full" + (" (with the priority upkeep)" if alpha else "")))
        med, mean = time_calls(lambda: mem.sample_batch(b, 0.4), args.iters)
        rows.append((f"ReplayMemory({label}).sample_batch({b})", f"{med:.1f} µs",
                     f"s, s2, n-step returns, discounts, ids, weights (mean {mean:.1f} µs)"))
        results[label] = med
        if alpha:
            batch = mem.sample_batch(b, 0.4)
            new = np.random.default_rng(3).uniform(0.01, 2.0, b)
            med, mean = time_calls(lambda: mem.update_priorities(batch.index, new), args.iters)
            rows.append((f"ReplayMemory({label}).update_priorities({b})", f"{med:.1f} µs",
                         f"(mean {mean:.1f} µs)"))
        mem = None
        gc.collect()
    if not args.no_numpy:
        results["numpy"] = bench_numpy_prioritized(args, pool, terms, rows)
    return results


def bench_numpy_prioritized(args, pool, terms, rows):
    """NumpyPrioritizedReplay (n = 3, alpha 0.6) of the same size: sample_batch and
    update_priorities."""
    mem = NumpyPrioritizedReplay(args.capacity, tuple(args.frame_shape), args.history, seed=0)
    for k0 in range(0, args.capacity, len(pool)):  # filled in blocks: add is not measured
        k1 = min(args.capacity, k0 + len(pool))
        mem.frames[k0:k1] = pool[: k1 - k0]
        mem.terminals[k0:k1] = terms[k0:k1]
        mem.actions[k0:k1] = np.arange(k0, k1) % 18
        mem.rewards[k0:k1] = np.arange(k0, k1) % 7 - 3
    mem.sizes[:] = args.capacity
    mem.reset_priorities()
    b = args.batch
    iters = max(50, args.iters // 4)
    med, mean = time_calls(lambda: mem.sample_batch(b, 0.4), iters, warmup=5)
    rows.append((f"NumpyPrioritizedReplay.sample_batch({b}) (vectorized numpy sum tree, "
                 "n_step=3, alpha 0.6)", f"{med:.1f} µs",
                 f"the same outputs as ReplayMemory's (mean {mean:.1f} µs)"))
    index = mem.sample_batch(b, 0.4)[6]
    new = np.random.default_rng(3).uniform(0.01, 2.0, b)
    med_u, mean_u = time_calls(lambda: mem.update_priorities(index, new), iters, warmup=5)
    rows.append((f"NumpyPrioritizedReplay.update_priorities({b})", f"{med_u:.1f} µs",
                 f"(mean {mean_u:.1f} µs)"))
    mem = None
    gc.collect()
    return med


def bench_copy(batch_bytes, iters, rows, cpp):
    src = np.random.default_rng(2).integers(0, 256, batch_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    med, mean = time_calls(lambda: np.copyto(dst, src), iters)
    rows.append((f"plain copy of the same {batch_bytes / 1e6:.2f} MB as s+s2 (np.copyto)",
                 f"{med:.1f} µs",
                 f"{batch_bytes / med / 1e3:.2f} GB/s (mean {mean:.1f} µs)"))
    return med


def bench_read_floor(args, rows):
    """Runs read_floor.cc (beside this script): the least time ANY sampler needs here.

    Returns the median microseconds of reading (not writing) the frames of `batch` random
    windows of history + 1 frames from a memory of `capacity` frames, or None when no C++
    compiler is found.
    """
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is None:
        rows.append(("read floor (read_floor.cc)", "not run", "no C++ compiler found"))
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "read_floor")
        subprocess.run([compiler, "-O2", "-o", exe, os.path.join(here, "read_floor.cc")],
                       check=True)
        window = args.history + 1
        out = subprocess.run(
            [exe, str(args.capacity), str(int(np.prod(args.frame_shape))), str(window),
             str(args.batch), str(args.iters)],
            check=True, capture_output=True, text=True).stdout.split()
    read_us, copy_us = float(out[0]), float(out[1])
    nbytes = args.batch * window * int(np.prod(args.frame_shape))
    rows.append((f"read floor: read the frames of {args.batch} random windows, write nothing",
                 f"{read_us:.1f} µs",
                 f"{nbytes / 1e6:.2f} MB read ({nbytes / read_us / 1e3:.2f} GB/s) from "
                 f"{args.capacity:,} frames in huge pages (read_floor.cc); no sampler can be "
                 f"faster"))
    rows.append((f"memcpy of the same {args.batch} windows (read_floor.cc)", f"{copy_us:.1f} µs",
                 "C++ memcpy into a reused buffer: sample_windows_into's copy alone"))
    return read_us


def bench_numpy(args, pool, terms, rows):
    shape = tuple(args.frame_shape)
    mem = NumpyReplay(args.capacity, frame_shape=shape, history=args.history, seed=0)
    # Filled in blocks: the add path is not what is measured here.
    for k0 in range(0, args.capacity, len(pool)):
        k1 = min(args.capacity, k0 + len(pool))
        mem.frames[k0:k1] = pool[: k1 - k0]
        mem.terminals[k0:k1] = terms[k0:k1]
    mem.sizes[:] = args.capacity
    b = args.batch
    iters = max(50, args.iters // 4)
    med, mean = time_calls(lambda: mem.sample(b), iters, warmup=5)
    rows.append((f"NumpyReplay.sample({b}) (vectorized numpy, same rules)",
                 f"{med:.1f} µs", f"s and s2 gathered separately (mean {mean:.1f} µs)"))
    med_w, mean_w = time_calls(lambda: mem.sample(b, windows=True), iters, warmup=5)
    rows.append((f"NumpyReplay.sample({b}, windows=True)",
                 f"{med_w:.1f} µs", f"each window gathered once, like sample_windows "
                 f"(mean {mean_w:.1f} µs)"))
    mem = None
    gc.collect()
    return med, med_w


def bench_sb3(args, pool, rows):
    try:
        import torch  # noqa: F401
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer
    except ImportError as e:
        rows.append(("stable_baselines3 ReplayBuffer.sample", "not run", f"not installed ({e})"))
        return None
    h = args.history
    shape = (h,) + tuple(args.frame_shape)
    cap = min(args.sb3_capacity, args.capacity)
    obs_space = spaces.Box(0, 255, shape, np.uint8)
    rb = ReplayBuffer(cap, obs_space, spaces.Discrete(18), device="cpu",
                      optimize_memory_usage=True, handle_timeout_termination=False)
    stacked = np.empty((1,) + shape, np.uint8)
    for k in range(cap):
        for j in range(h):
            stacked[0, j] = pool[(k + j) % len(pool)]
        rb.add(stacked, stacked, np.array([k % 18]), np.array([0.0]), np.array([False]), [{}])
    import torch

    iters = max(50, args.iters // 4)
    default_threads = torch.get_num_threads()
    results = {}
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        med, mean = time_calls(lambda: rb.sample(args.batch), iters, warmup=5)
        results[threads] = med
        rows.append((f"stable_baselines3 ReplayBuffer.sample({args.batch}), "
                     f"torch threads = {threads}",
                     f"{med:.1f} µs",
                     f"{cap:,} stacked {'x'.join(map(str, shape))} observations, "
                     f"optimize_memory_usage=True, CPU tensors (mean {mean:.1f} µs)"))
    torch.set_num_threads(default_threads)
    rb = None
    gc.collect()
    return min(results.values())  # SB3 at its best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--capacity", type=int, default=1_000_000)
    p.add_argument("--frame-shape", type=int, nargs="+", default=[84, 84])
    p.add_argument("--history", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=2000, help="timed sample calls")
    p.add_argument("--mean-episode", type=float, default=1000.0,
                   help="mean episode length of the synthetic stream")
    p.add_argument("--sb3-capacity", type=int, default=100_000)
    p.add_argument("--no-numpy", action="store_true")
    p.add_argument("--no-sb3", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip read_floor.cc (needs c++)")
    p.add_argument("--save-load", action="store_true",
                   help="also time save() and load() (writes a file of the memory's size)")
    p.add_argument("--tmpdir", default=".")
    p.add_argument("--n-step-prioritized", action="store_true",
                   help="also time n-step and prioritized memories of the same size")
    args = p.parse_args(argv)

    shape = tuple(args.frame_shape)
    pool = frame_pool(4096, shape)
    terms = episode_terminals(args.capacity + 100_000, args.mean_episode)
    rows = []
    cpp, batch_bytes = bench_cpp(args, pool, terms, rows)
    extended = bench_n_step_prioritized(args, pool, terms, rows) if args.n_step_prioritized \
        else None
    copy_us = bench_copy(batch_bytes, args.iters, rows, cpp)
    floor_us = None if args.no_floor else bench_read_floor(args, rows)
    np_us = None if args.no_numpy else bench_numpy(args, pool, terms, rows)
    sb3_us = None if args.no_sb3 else bench_sb3(args, pool, rows)

    from _machine import cpu_name  # beside this script; imported here so tests can load the module

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"command: python {' '.join([sys.argv[0]] + (argv or sys.argv[1:]))}\n")
    print("| what | time / size | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for name in ("sample", "sample_into", "sample_windows_into"):
        us = cpp[name]
        line = (f"{name}({args.batch}): {us:.1f} µs, s+s2 at {100 * copy_us / us:.0f}% of the "
                f"plain copy's rate")
        if np_us:
            ref = np_us[1] if name == "sample_windows_into" else np_us[0]
            line += f"; {ref / us:.1f}x faster than NumpyReplay"
        if sb3_us:
            line += f"; {sb3_us / us:.1f}x faster than SB3 (its best thread setting)"
        print(line + ".")
    if extended:
        numpy_us = extended.pop("numpy", None)
        for label, us in extended.items():
            print(f"sample_batch({args.batch}) with {label}: {us:.1f} µs, "
                  f"{us / cpp['sample']:.2f}x DQN 3.0's sample({args.batch}).")
        prioritized_us = extended["n_step=3, priority_exponent=0.6"]
        ratio = prioritized_us / extended["n_step=3"]
        print(f"prioritized sample_batch({args.batch}): {ratio:.2f}x the uniform n-step one"
              + (f", {numpy_us / prioritized_us:.1f}x faster than the vectorized numpy sum "
                 "tree." if numpy_us else "."))
    if floor_us and sb3_us:
        print(f"read floor: {floor_us:.1f} µs just to read the {args.batch} windows' frames "
              f"(sample_windows_into: {cpp['sample_windows_into']:.1f} µs), so a single-threaded "
              f"sampler on this machine can be at most about {sb3_us / floor_us:.1f}x faster than "
              f"SB3's {sb3_us:.1f} µs; 5x would need SB3 to take {5 * floor_us:.0f} µs.")


if __name__ == "__main__":
    main()
