"""Pure-Python reference (the test oracle) for tfdqn_ops.ReplayMemory.

Written for clarity, not speed: every stream keeps its whole history as a
chronological list, the retained part is simply its last `capacity_e` entries,
and each state is rebuilt with DQN 3.0's literal zeroing loop
(TransitionTable.lua `concatFrames`), independently of the C++ ring arithmetic
and of its shared s/s2 zero mask.

Sampling draws the same random numbers as the C++ memory (xoshiro256** seeded
with splitmix64, Lemire's bounded integers, rejection of invalid windows), so
`sample` here returns exactly what the C++ `sample` returns for the same
seed and the same adds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MASK64 = (1 << 64) - 1


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK64


class Xoshiro256:
    """xoshiro256** seeded by expanding the seed with splitmix64."""

    def __init__(self, seed: int):
        self.s = []
        x = seed
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    def next(self) -> int:
        s0, s1, s2, s3 = self.s
        result = (_rotl((s1 * 5) & MASK64, 7) * 9) & MASK64
        t = (s1 << 17) & MASK64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        self.s = [s0, s1, s2, s3]
        return result

    def below(self, n: int) -> int:
        """Uniform in [0, n): Lemire's multiply-shift with rejection."""
        m = self.next() * n
        if (m & MASK64) < n:
            threshold = ((1 << 64) - n) % n
            while (m & MASK64) < threshold:
                m = self.next() * n
        return m >> 64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 from its specification (the save file's checksum)."""
    p1, p2, p3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
    p4, p5 = 9650029242287828579, 2870177450012600261

    def rnd(acc, lane):
        acc = (acc + lane * p2) & MASK64
        return (_rotl(acc, 31) * p1) & MASK64

    def merge(acc, v):
        acc ^= rnd(0, v)
        return (acc * p1 + p4) & MASK64

    n = len(data)
    i = 0
    if n >= 32:
        v = [(seed + p1 + p2) & MASK64, (seed + p2) & MASK64, seed, (seed - p1) & MASK64]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [rnd(v[k], lanes[k]) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & MASK64
        for k in range(4):
            h = merge(h, v[k])
    else:
        h = (seed + p5) & MASK64
    h = (h + n) & MASK64
    while i + 8 <= n:
        h ^= rnd(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * p1 + p4) & MASK64
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * p1) & MASK64
        h = (_rotl(h, 23) * p2 + p3) & MASK64
        i += 4
    while i < n:
        h ^= (data[i] * p5) & MASK64
        h = (_rotl(h, 11) * p1) & MASK64
        i += 1
    h ^= h >> 33
    h = (h * p2) & MASK64
    h ^= h >> 29
    h = (h * p3) & MASK64
    h ^= h >> 32
    return h


@dataclass
class Entry:
    frame: np.ndarray
    action: int
    reward: np.float32
    terminal: bool


def build_state(entries, history, frame_shape):
    """DQN 3.0's concatFrames: `entries` oldest first, None = no entry.

    Scanning back from the newest slot, once an earlier slot is terminal (or
    missing), that slot and all older ones are zero frames. The newest slot's
    own terminal flag does not matter.
    """
    assert len(entries) == history
    state = np.zeros((history,) + tuple(frame_shape), np.uint8)
    zero_out = False
    for j in range(history - 1, -1, -1):
        entry = entries[j]
        if entry is None or (j < history - 1 and entry.terminal):
            zero_out = True
        if not zero_out:
            state[j] = entry.frame
    return state


class ReferenceReplay:
    """Same constructor and rules as tfdqn_ops.ReplayMemory."""

    def __init__(self, capacity, frame_shape=(84, 84), history=4, num_envs=1, seed=0, *,
                 n_step=1, discount=0.99):
        self.frame_shape = tuple(frame_shape)
        self.history = history
        self.n_step = n_step
        self.discount = discount
        self.num_envs = num_envs
        self.capacity = capacity
        base, extra = divmod(capacity, num_envs)
        self.stream_capacity = [base + (1 if e < extra else 0) for e in range(num_envs)]
        self.streams = [[] for _ in range(num_envs)]
        self.rng = Xoshiro256(seed)
        self.last_sampled = []  # (env, start) of the windows of the last sample

    def add(self, frames, actions, rewards, terminals):
        for e in range(self.num_envs):
            self.streams[e].append(
                Entry(np.array(frames[e], np.uint8), int(actions[e]),
                      np.float32(rewards[e]), bool(terminals[e])))

    def retained(self, e):
        return self.streams[e][-self.stream_capacity[e]:]

    def __len__(self):
        return sum(len(self.retained(e)) for e in range(self.num_envs))

    def candidates(self, e):
        return max(0, len(self.retained(e)) - self.history - self.n_step + 1)

    def is_valid(self, e, i):
        return not self.retained(e)[i + self.history - 1].terminal

    def valid_windows(self):
        return [(e, i) for e in range(self.num_envs)
                for i in range(self.candidates(e)) if self.is_valid(e, i)]

    def window(self, e, i):
        """(s, a, r, s2, term) of the window starting at retained entry i."""
        h = self.history
        entries = self.retained(e)[i:i + h + 1]
        s = build_state(entries[:h], h, self.frame_shape)
        s2 = build_state(entries[1:], h, self.frame_shape)
        last = entries[h - 1]
        return s, last.action, last.reward, s2, np.float32(entries[h].terminal)

    def transition(self, e, t):
        """The n-step transition whose s ends at retained entry t, written out: returns
        (s, a, r, s2, term, discount, id). The return adds discount^k r_{t+k} (in float64)
        until n rewards or until entry t+k+1 is terminal; s2 ends at the entry it reached."""
        h, kept = self.history, self.retained(e)
        s = build_state(kept[t - h + 1:t + 1], h, self.frame_shape)
        ret, scale, m, ended = 0.0, 1.0, 0, False
        while m < self.n_step and not ended:
            ret += scale * float(kept[t + m].reward)
            scale *= self.discount
            ended = kept[t + m + 1].terminal
            m += 1
        s2 = build_state(kept[t + m - h + 1:t + m + 1], h, self.frame_shape)
        sequence = len(self.streams[e]) - len(kept) + t
        return (s, kept[t].action, np.float32(ret), s2, np.float32(ended),
                np.float32(0.0 if ended else scale), sequence * self.num_envs + e)

    def valid_transitions(self):
        """(env, t) of every transition that can be drawn."""
        return [(e, i + self.history - 1) for e, i in self.valid_windows()]

    def sample_batch(self, batch_size):
        """Uniform sample_batch: the same draws as sample, as (s, a, r, s2, term, discount,
        index) arrays (weights are 1)."""
        self.sample_windows_starts(batch_size)
        rows = [self.transition(e, i + self.history - 1) for e, i in self.last_sampled]
        dtypes = (None, np.int32, np.float32, None, np.float32, np.float32, np.int64)
        return tuple(np.stack([row[k] for row in rows]) if dtype is None
                     else np.array([row[k] for row in rows], dtype)
                     for k, dtype in enumerate(dtypes))

    def sample_windows_starts(self, batch_size):
        """Draws batch_size valid windows as the C++ memory does; sets last_sampled."""
        if not self.valid_windows():
            raise ValueError("no valid window")
        counts = [self.candidates(e) for e in range(self.num_envs)]
        total = sum(counts)
        picked = []
        for _ in range(batch_size):
            while True:
                u = self.rng.below(total)
                e = 0
                while u >= counts[e]:
                    u -= counts[e]
                    e += 1
                if self.is_valid(e, u):
                    picked.append((e, u))
                    break
        self.last_sampled = picked

    def sample(self, batch_size):
        self.sample_windows_starts(batch_size)
        rows = [self.window(e, i) for e, i in self.last_sampled]
        return (np.stack([row[0] for row in rows]),
                np.array([row[1] for row in rows], np.int32),
                np.array([row[2] for row in rows], np.float32),
                np.stack([row[3] for row in rows]),
                np.array([row[4] for row in rows], np.float32))

    def acting_state(self, e, frame=None):
        h = self.history
        kept = self.retained(e)
        n = h - 1 if frame is not None else h
        stored = kept[-n:] if n > 0 else []
        entries = [None] * (n - len(stored)) + list(stored)
        if frame is not None:
            entries.append(Entry(np.array(frame, np.uint8), 0, np.float32(0), False))
        return build_state(entries, h, self.frame_shape)
