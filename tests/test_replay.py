"""tfdqn_ops.ReplayMemory against the pure-Python reference (tests/replay_reference.py).

Small frames (7x5) and capacities keep the whole file fast; the rules do not
depend on the frame size.
"""

import importlib.util
import os
import pathlib
import struct
import sys
import threading

import numpy as np
import pytest

from tfdqn_ops import ReplayMemory

HERE = pathlib.Path(__file__).resolve().parent
from replay_reference import ReferenceReplay, Xoshiro256, build_state, xxh64  # noqa: E402

SHAPE = (7, 5)


def random_step(rng, num_envs, p_terminal, shape=SHAPE):
    frames = rng.integers(0, 256, (num_envs,) + shape, dtype=np.uint8)
    actions = rng.integers(0, 18, num_envs)
    rewards = rng.choice(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), num_envs)
    terminals = rng.random(num_envs) < p_terminal
    return frames, actions, rewards, terminals


def add_both(mem, ref, step):
    mem.add(*step)
    ref.add(*step)


def assert_same_batch(got, want):
    names = ("s", "a", "r", "s2", "term")
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)
    assert got[0].dtype == np.uint8 and got[3].dtype == np.uint8
    assert got[1].dtype == np.int32
    assert got[2].dtype == np.float32 and got[4].dtype == np.float32


def assert_same_state(mem, ref):
    assert len(mem) == len(ref)
    assert mem.num_valid_windows == len(ref.valid_windows())
    for e in range(ref.num_envs):
        assert mem.stream_size(e) == len(ref.retained(e))


# ------------------------------------------------------------ the reference

def test_reference_state_rule_by_hand():
    # Checks the oracle itself on DQN 3.0's rule, with values worked out by hand.
    def entry(v, t):
        return type("E", (), {"frame": np.full((1,), v, np.uint8), "terminal": t})

    e = [entry(1, False), entry(2, True), entry(3, False), entry(4, True)]
    # newest slot (4) is terminal itself: ignored; slot 1 (value 2) terminal -> it and older zero
    assert build_state(e, 4, (1,))[:, 0].tolist() == [0, 0, 3, 4]
    assert build_state([None, entry(5, False), entry(6, False), entry(7, False)],
                       4, (1,))[:, 0].tolist() == [0, 5, 6, 7]
    assert build_state([entry(1, False), entry(2, False), entry(3, True), entry(4, False)],
                       4, (1,))[:, 0].tolist() == [0, 0, 0, 4]


def test_hand_worked_windows():
    # Entry k holds a constant frame of value k + 1; entry 5 is terminal.
    # Windows (history 4) start at i = 0..5 of 10 entries; i = 2 has entry
    # i+3 = 5 terminal and is never sampled.
    mem = ReplayMemory(10, frame_shape=(1,), history=4, seed=3)
    for k in range(10):
        mem.add(np.full((1, 1), k + 1, np.uint8), [k], [10.0 * k], [k == 5])
    assert mem.num_valid_windows == 5
    s, a, r, s2, term = mem.sample(400)
    seen = {}
    for b in range(400):
        start = int(s2[b, -1, 0]) - 5  # the newest frame of s2 is never zeroed
        seen[start] = (s[b, :, 0].tolist(), int(a[b]), float(r[b]),
                       s2[b, :, 0].tolist(), float(term[b]))
    assert sorted(seen) == [0, 1, 3, 4, 5]
    assert seen[0] == ([1, 2, 3, 4], 3, 30.0, [2, 3, 4, 5], 0.0)
    assert seen[1] == ([2, 3, 4, 5], 4, 40.0, [3, 4, 5, 6], 1.0)  # s2 ends on the terminal
    assert seen[3] == ([0, 0, 0, 7], 6, 60.0, [0, 0, 7, 8], 0.0)  # entry 5 terminal at slot 2 of s
    assert seen[4] == ([0, 0, 7, 8], 7, 70.0, [0, 7, 8, 9], 0.0)
    assert seen[5] == ([0, 7, 8, 9], 8, 80.0, [7, 8, 9, 10], 0.0)


def test_rng_matches_reference_draws():
    # The same bounded draws as the reference: compared through sample().
    ref_rng = Xoshiro256(12345)
    draws = [ref_rng.below(n) for n in (1, 2, 3, 7, 1000, 2**33 + 1, 2**63 + 5)]
    assert all(0 <= d < n for d, n in zip(draws, (1, 2, 3, 7, 1000, 2**33 + 1, 2**63 + 5)))
    mem = ReplayMemory(8, frame_shape=(1,), history=1, seed=12345)
    ref = ReferenceReplay(8, frame_shape=(1,), history=1, seed=12345)
    for k in range(8):
        step = (np.full((1, 1), k, np.uint8), [k], [0.0], [False])
        add_both(mem, ref, step)
    assert mem.rng_state == tuple(Xoshiro256(12345).s)
    assert_same_batch(mem.sample(50), ref.sample(50))
    assert mem.rng_state == tuple(ref.rng.s)


# ------------------------------------------------------------ rules vs reference

CONFIGS = [
    # capacity, history, num_envs, p_terminal, steps
    (12, 4, 1, 0.15, 40),
    (30, 4, 1, 0.3, 75),
    (17, 4, 1, 0.0, 40),
    (20, 4, 2, 0.2, 33),
    (23, 4, 3, 0.25, 30),   # capacity not divisible by num_envs: segments 8, 8, 7
    (9, 2, 3, 0.4, 20),
    (6, 1, 2, 0.3, 15),
    (14, 5, 2, 0.2, 30),
    (40, 4, 4, 0.5, 40),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "cap{}-h{}-env{}-p{}".format(*c[:4]))
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_streams(config, seed):
    capacity, history, num_envs, p_terminal, steps = config
    rng = np.random.default_rng(1000 * seed + capacity)
    mem = ReplayMemory(capacity, frame_shape=SHAPE, history=history, num_envs=num_envs, seed=seed)
    ref = ReferenceReplay(capacity, frame_shape=SHAPE, history=history, num_envs=num_envs,
                          seed=seed)
    sampled = 0
    for step in range(steps):
        add_both(mem, ref, random_step(rng, num_envs, p_terminal))
        assert_same_state(mem, ref)
        next_frames = rng.integers(0, 256, (num_envs,) + SHAPE, dtype=np.uint8)
        for e in range(num_envs):
            np.testing.assert_array_equal(mem.acting_state(e), ref.acting_state(e))
            np.testing.assert_array_equal(mem.acting_state(e, next_frames[e]),
                                          ref.acting_state(e, next_frames[e]))
        np.testing.assert_array_equal(
            mem.acting_states(next_frames),
            np.stack([ref.acting_state(e, next_frames[e]) for e in range(num_envs)]))
        if ref.valid_windows():
            batch = int(rng.integers(1, 9))
            assert_same_batch(mem.sample(batch), ref.sample(batch))
            sampled += 1
        else:
            with pytest.raises(ValueError, match="no valid window"):
                mem.sample(4)
    assert len(mem) == min(capacity, steps * num_envs)  # wrapped around
    if p_terminal < 0.5:
        assert sampled > 0


@pytest.mark.parametrize("history", [1, 2, 4])
@pytest.mark.parametrize("position", range(9))
def test_terminal_at_every_position(history, position):
    # A ring of 9 entries, wrapped by a varying amount, whose retained entries
    # hold one terminal at logical position `position`, so that over the
    # parameters it sits at every offset of every window (and an older
    # terminal was overwritten). Every valid window is sampled (the draws are
    # deterministic) and compared with the reference.
    capacity = 9
    extra = 3 + (5 * position) % capacity
    rng = np.random.default_rng(position)
    mem = ReplayMemory(capacity, frame_shape=SHAPE, history=history, seed=position)
    ref = ReferenceReplay(capacity, frame_shape=SHAPE, history=history, seed=position)
    for k in range(capacity + extra):
        frames, actions, rewards, _ = random_step(rng, 1, 0.0)
        add_both(mem, ref, (frames, actions, rewards, [k in (extra - 1, extra + position)]))
    assert [e.terminal for e in ref.retained(0)] == [j == position for j in range(capacity)]
    assert_same_state(mem, ref)
    assert_same_batch(mem.sample(300), ref.sample(300))
    assert set(ref.last_sampled) == set(ref.valid_windows())


def test_rejected_windows_and_uniformity():
    # Frames carry their global entry number; with 50 entries in a ring of 30
    # the sampled windows must be exactly the valid ones of the last 30 entries,
    # each about equally often.
    capacity, history = 30, 4
    mem = ReplayMemory(capacity, frame_shape=(2,), history=history, seed=7)
    terms = np.zeros(50, bool)
    terms[[22, 23, 31, 40, 44]] = True
    for k in range(50):
        mem.add(np.array([[k, 1]], np.uint8), [0], [0.0], [terms[k]])
    first = 50 - capacity
    valid = [i for i in range(first, 50 - history) if not terms[i + history - 1]]
    assert mem.num_valid_windows == len(valid)
    n = 40000
    s, a, r, s2, term = mem.sample(n)
    starts = s2[:, -1, 0].astype(int) - history
    counts = np.bincount(starts, minlength=50)
    assert set(np.flatnonzero(counts)) == set(valid)
    expected = n / len(valid)
    # Binomial standard deviation; 6 sigma keeps this deterministic test far from flaky.
    sigma = np.sqrt(expected * (1 - 1 / len(valid)))
    assert np.all(np.abs(counts[valid] - expected) < 6 * sigma)
    # No window straddles the write position: its frames are consecutive
    # entries (zeroed ones aside) and all from the last `capacity` entries.
    ids = np.concatenate([s[:, :, 0], s2[:, -1:, 0]], axis=1).astype(int)
    kept = s[:, :, 1].astype(bool)
    kept = np.concatenate([kept, np.ones((n, 1), bool)], axis=1)
    expect_ids = starts[:, None] + np.arange(history + 1)
    assert np.all((ids == expect_ids) | ~kept)
    assert starts.min() >= first


def test_streams_never_mix():
    # Frame byte 0 = env index; every sampled state holds one env's frames only.
    num_envs = 3
    mem = ReplayMemory(33, frame_shape=(2,), history=4, num_envs=num_envs, seed=1)
    rng = np.random.default_rng(0)
    for k in range(50):
        frames = np.stack([np.array([e + 1, k], np.uint8) for e in range(num_envs)])
        mem.add(frames, [0] * num_envs, [0.0] * num_envs, rng.random(num_envs) < 0.1)
    s, _, _, s2, _ = mem.sample(3000)
    both = np.concatenate([s[:, :, 0], s2[:, :, 0]], axis=1).astype(int)
    for row in both:
        envs = set(row[row > 0])
        assert len(envs) == 1
    for e in range(num_envs):
        state = mem.acting_state(e)
        assert set(state[:, 0][state[:, 0] > 0]) <= {e + 1}


def test_acting_state_before_and_after_episode_end():
    mem = ReplayMemory(10, frame_shape=(1,), history=4)
    np.testing.assert_array_equal(mem.acting_state(0), np.zeros((4, 1), np.uint8))
    first = mem.acting_state(0, np.array([9], np.uint8))
    assert first[:, 0].tolist() == [0, 0, 0, 9]
    mem.add(np.array([[1]], np.uint8), [0], [0.0], [False])
    mem.add(np.array([[2]], np.uint8), [0], [0.0], [True])
    assert mem.acting_state(0)[:, 0].tolist() == [0, 0, 1, 2]
    # After a terminal entry, a new episode's first frame stands alone.
    assert mem.acting_state(0, np.array([3], np.uint8))[:, 0].tolist() == [0, 0, 0, 3]
    mem.add(np.array([[3]], np.uint8), [0], [0.0], [False])
    assert mem.acting_state(0, np.array([4], np.uint8))[:, 0].tolist() == [0, 0, 3, 4]


def test_sample_into_matches_sample_and_reuses_arrays():
    def build():
        mem = ReplayMemory(25, frame_shape=SHAPE, history=4, num_envs=2, seed=5)
        rng = np.random.default_rng(5)
        for _ in range(20):
            mem.add(*random_step(rng, 2, 0.2))
        return mem

    a_mem, b_mem = build(), build()
    batch = 6
    out = (np.empty((batch, 4) + SHAPE, np.uint8), np.empty(batch, np.int32),
           np.empty(batch, np.float32), np.empty((batch, 4) + SHAPE, np.uint8),
           np.empty(batch, np.float32))
    pointers = [x.__array_interface__["data"][0] for x in out]
    for _ in range(3):
        assert a_mem.sample_into(*out) is None
        want = b_mem.sample(batch)
        assert_same_batch(out, want)
    assert pointers == [x.__array_interface__["data"][0] for x in out]


def test_sample_windows_hold_s_and_s2():
    # Same seed, same adds: the windows are the frames of s and s2, written once.
    def build():
        mem = ReplayMemory(30, frame_shape=SHAPE, history=4, num_envs=3, seed=8)
        rng = np.random.default_rng(8)
        for _ in range(25):
            mem.add(*random_step(rng, 3, 0.3))
        return mem

    w_mem, s_mem = build(), build()
    for batch in (1, 7, 64):
        w, a, r, term = w_mem.sample_windows(batch)
        assert w.shape == (batch, 5) + SHAPE and w.dtype == np.uint8
        assert_same_batch((w[:, :4], a, r, w[:, 1:], term), s_mem.sample(batch))
    out = (np.empty((5, 5) + SHAPE, np.uint8), np.empty(5, np.int32),
           np.empty(5, np.float32), np.empty(5, np.float32))
    assert w_mem.sample_windows_into(*out) is None
    w, a, r, term = out
    assert_same_batch((w[:, :4], a, r, w[:, 1:], term), s_mem.sample(5))
    with pytest.raises(ValueError, match=r"windows: expected dtype uint8 and shape "
                       r"\[5, 5, 7, 5\], got uint8 \[5, 4, 7, 5\]"):
        w_mem.sample_windows_into(np.empty((5, 4) + SHAPE, np.uint8), *out[1:])
    with pytest.raises(ValueError, match=r"windows: .*batch > 0"):
        w_mem.sample_windows_into(np.empty((0, 5) + SHAPE, np.uint8), *out[1:])
    with pytest.raises(ValueError, match=r"a: expected dtype int32"):
        w_mem.sample_windows_into(out[0], np.empty(5, np.int64), out[2], out[3])
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        w_mem.sample_windows(0)


def test_properties_and_repr():
    mem = ReplayMemory(23, frame_shape=(4, 3, 2), history=3, num_envs=3, seed=2**64 - 1)
    assert (mem.capacity, mem.history, mem.num_envs, mem.frame_shape) == (23, 3, 3, (4, 3, 2))
    assert len(mem) == 0 and mem.num_valid_windows == 0
    assert "capacity=23" in repr(mem)
    default = ReplayMemory(10)
    assert default.frame_shape == (84, 84) and default.history == 4 and default.num_envs == 1


def test_threads_can_sample_and_add_concurrently():
    """Two threads sample while the main thread keeps overwriting the ring. Every frame is
    one value (its time step, per stream), so a torn frame, a window mixing streams or
    times, or a reward from another transition shows in the samples' contents."""
    shape = (16, 16)
    mem = ReplayMemory(200, frame_shape=shape, history=4, num_envs=2, seed=0)
    clock = [0]

    def step():  # stream e at time t: frame value (2 t + e) % 256, reward t, action t % 18
        t = clock[0]
        clock[0] += 1
        values = np.array([(2 * t) % 256, (2 * t + 1) % 256], np.uint8)
        frames = np.broadcast_to(values[:, None, None], (2,) + shape).copy()
        return frames, np.full(2, t % 18), np.full(2, float(t), np.float32), np.zeros(2, bool)

    for _ in range(50):
        mem.add(*step())
    errors = []

    def check(s, a, r, s2, term):
        values = s[:, :, 0, 0].astype(int)
        assert (s == s[:, :, :1, :1]).all() and (s2 == s2[:, :, :1, :1]).all()  # not torn
        assert (np.diff(values, axis=1) % 256 == 2).all()  # consecutive steps of one stream
        assert np.array_equal(s2[:, :-1], s[:, 1:])
        assert ((s2[:, -1, 0, 0].astype(int) - values[:, -1]) % 256 == 2).all()
        t = r.astype(int)  # the reward is the time step of s's last frame
        assert (((2 * t) % 256 == values[:, -1]) | ((2 * t + 1) % 256 == values[:, -1])).all()
        assert np.array_equal(a, t % 18) and not term.any()

    def sampler():
        try:
            for _ in range(200):
                check(*mem.sample(32))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=sampler) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(300):
        mem.add(*step())
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(mem) == 200


# ------------------------------------------------------------ save / load

def filled(capacity=20, history=4, num_envs=2, steps=15, seed=0, p_terminal=0.2):
    rng = np.random.default_rng(seed)
    mem = ReplayMemory(capacity, frame_shape=SHAPE, history=history, num_envs=num_envs, seed=seed)
    ref = ReferenceReplay(capacity, frame_shape=SHAPE, history=history, num_envs=num_envs,
                          seed=seed)
    for _ in range(steps):
        add_both(mem, ref, random_step(rng, num_envs, p_terminal))
    return mem, ref, rng


@pytest.mark.parametrize("steps", [0, 3, 9, 10, 11, 27])
@pytest.mark.parametrize("num_envs", [1, 2])
def test_save_load_round_trip(tmp_path, steps, num_envs):
    mem, ref, rng = filled(capacity=20, num_envs=num_envs, steps=steps, seed=steps)
    if ref.valid_windows():
        mem.sample(5)  # advance the RNG before saving
        ref.sample(5)
    path = tmp_path / "replay.bin"
    mem.save(path)
    loaded = ReplayMemory.load(str(path))
    assert (loaded.capacity, loaded.history, loaded.num_envs, loaded.frame_shape) == (
        mem.capacity, mem.history, mem.num_envs, mem.frame_shape)
    assert loaded.rng_state == mem.rng_state
    assert_same_state(loaded, ref)
    for e in range(num_envs):
        np.testing.assert_array_equal(loaded.acting_state(e), mem.acting_state(e))
    # Saved again, the file is byte for byte the same.
    loaded.save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == path.read_bytes()
    # The loaded memory goes on exactly like the original (and the reference).
    for _ in range(25):
        step = random_step(rng, num_envs, 0.2)
        mem.add(*step)
        loaded.add(*step)
        ref.add(*step)
        if ref.valid_windows():
            want = mem.sample(4)
            assert_same_batch(loaded.sample(4), want)
            assert_same_batch(ref.sample(4), want)
    assert sorted(os.listdir(tmp_path)) == ["again.bin", "replay.bin"]  # no temporary files


def test_save_file_layout(tmp_path):
    mem, _, _ = filled(capacity=20, num_envs=2, steps=7)
    path = tmp_path / "replay.bin"
    mem.save(path)
    data = path.read_bytes()
    assert data[:8] == b"TFDQNRPL" and data[-8:] == b"TFDQNEND"
    version, header_bytes = struct.unpack_from("<II", data, 8)
    assert version == 1
    capacity, history, num_envs, rank = struct.unpack_from("<4Q", data, 16)
    assert (capacity, history, num_envs, rank) == (20, 4, 2, 2)
    assert struct.unpack_from("<2Q", data, 48) == SHAPE
    assert struct.unpack_from("<4Q", data, 64) == mem.rng_state
    assert struct.unpack_from("<4Q", data, 96) == (7, 7, 7, 7)  # (size, write) of both streams
    payload = 2 * 7 * (35 + 4 + 4 + 1)
    assert struct.unpack_from("<Q", data, 128)[0] == payload
    assert struct.unpack_from("<Q", data, 136)[0] == xxh64(data[:136])
    assert header_bytes == 144 and len(data) == header_bytes + payload + 16
    assert struct.unpack_from("<Q", data, len(data) - 16)[0] == xxh64(data[:-16])


@pytest.mark.parametrize("length", [0, 1, 5, 31, 32, 33, 64, 100, 1000])
def test_xxh64_matches_the_specification(length):
    from tfdqn_ops import _replay

    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    for seed in (0, 1, 2**64 - 1):
        assert _replay._xxh64(data, seed) == xxh64(data, seed)
    assert _replay._xxh64(b"") == 0xEF46DB3751D8E999  # the published XXH64 of ""


# Run in a child process: loads the memory saved at argv[1] and saves it to argv[2] under each
# file-size limit in argv[3] (RLIMIT_FSIZE with SIGXFSZ ignored: a write past the limit fails
# with EFBIG, as a write to a full disk fails with ENOSPC); prints each error as JSON.
_SAVE_UNDER_LIMITS = """
import json, resource, signal, sys
from tfdqn_ops import ReplayMemory
mem = ReplayMemory.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
errors = []
for limit in json.loads(sys.argv[3]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        mem.save(sys.argv[2])
        errors.append(None)
    except OSError as e:
        errors.append([e.errno, str(e)])
print(json.dumps(errors))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ as on Linux")
def test_save_is_atomic_when_the_disk_fills_midway(tmp_path):
    """A save that fails partway leaves the previous file as it was and no temporary file
    behind. The fault is the operating system's (a file-size limit in a child process), so
    the library needs no test hook."""
    import errno
    import json
    import subprocess

    mem, ref, rng = filled(capacity=20, num_envs=2, steps=12, seed=4)
    path = tmp_path / "replay.bin"
    mem.save(path)
    before = path.read_bytes()
    for _ in range(5):
        mem.add(*random_step(rng, 2, 0.2))  # mem only: ref stays what `path` holds
    newer = tmp_path / "newer.bin"
    mem.save(newer)
    limits = [0, 1, 100, len(before) // 2, len(before) - 1]
    run = subprocess.run([sys.executable, "-c", _SAVE_UNDER_LIMITS, str(newer), str(path),
                          json.dumps(limits)], capture_output=True, text=True, timeout=300,
                         cwd=newer.anchor)  # not the source tree: import the installed package
    assert run.returncode == 0, run.stderr
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    for limit, error in zip(limits, errors):
        assert error is not None, f"a save under a {limit}-byte file limit did not fail"
        assert error[0] == errno.EFBIG and "save: writing" in error[1], (limit, error)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["newer.bin", "replay.bin"]  # no temporary file
    loaded = ReplayMemory.load(path)
    assert_same_state(loaded, ref)
    assert_same_batch(loaded.sample(8), ref.sample(8))
    # A save that runs to the end replaces the file.
    mem.save(path)
    assert path.read_bytes() == newer.read_bytes() != before


def test_save_io_errors(tmp_path):
    mem, _, _ = filled(steps=6)
    with pytest.raises(FileNotFoundError):
        mem.save(tmp_path / "missing" / "replay.bin")
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        mem.save(tmp_path / "adir")
    assert sorted(os.listdir(tmp_path)) == ["adir"]
    with pytest.raises(FileNotFoundError):
        ReplayMemory.load(tmp_path / "nothing.bin")
    with pytest.raises(IsADirectoryError):
        ReplayMemory.load(tmp_path / "adir")
    with pytest.raises(TypeError):
        mem.save(12)


def saved_bytes(tmp_path):
    mem, _, _ = filled(capacity=20, num_envs=2, steps=13, seed=9)
    path = tmp_path / "good.bin"
    mem.save(path)
    return path.read_bytes()


def load_bytes(tmp_path, data):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    return ReplayMemory.load(path)


def test_truncated_files(tmp_path):
    data = saved_bytes(tmp_path)
    header_bytes = struct.unpack_from("<I", data, 12)[0]
    for n in (1, 8, 15, 16, 40, header_bytes - 1, header_bytes, header_bytes + 100,
              len(data) - 16, len(data) - 1):
        with pytest.raises(ValueError, match="truncated"):
            load_bytes(tmp_path, data[:n])
    with pytest.raises(ValueError, match="trailing data"):
        load_bytes(tmp_path, data + b"\0")


def test_corrupted_files(tmp_path):
    data = saved_bytes(tmp_path)
    header_bytes = struct.unpack_from("<I", data, 12)[0]
    positions = list(range(header_bytes)) + list(
        range(header_bytes, len(data), 97)) + list(range(len(data) - 16, len(data)))
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x41
        with pytest.raises(ValueError, match="not a tfdqn|version|corrupted|truncated|trailing"):
            load_bytes(tmp_path, bytes(bad))
    # A flipped payload byte is caught by the checksum.
    bad = bytearray(data)
    bad[header_bytes + 10] ^= 1
    with pytest.raises(ValueError, match="corrupted contents"):
        load_bytes(tmp_path, bytes(bad))


def test_other_versions_and_foreign_files(tmp_path):
    data = saved_bytes(tmp_path)
    header_bytes = struct.unpack_from("<I", data, 12)[0]
    newer = bytearray(data)
    struct.pack_into("<I", newer, 8, 3)
    struct.pack_into("<Q", newer, header_bytes - 8, xxh64(bytes(newer[:header_bytes - 8])))
    with pytest.raises(ValueError, match="unsupported file version 3 .*reads versions 1 and 2"):
        load_bytes(tmp_path, bytes(newer))
    # A version-1 header relabelled as version 2 (which has more fields) does not add up.
    relabelled = bytearray(data)
    struct.pack_into("<I", relabelled, 8, 2)
    struct.pack_into("<Q", relabelled, header_bytes - 8,
                     xxh64(bytes(relabelled[:header_bytes - 8])))
    with pytest.raises(ValueError, match="corrupted header"):
        load_bytes(tmp_path, bytes(relabelled))
    for foreign in (b"", b"hello, world\n" * 10, np.random.default_rng(0).bytes(5000),
                    b"\x93NUMPY" + bytes(200), b"TFDQNRP"):
        with pytest.raises(ValueError, match="not a tfdqn replay memory file|truncated"):
            load_bytes(tmp_path, foreign)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, x=np.arange(10))
    with pytest.raises(ValueError, match="not a tfdqn replay memory file"):
        ReplayMemory.load(npz)


# ------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(capacity=4), r"capacity: expected at least .* = 5 .*got 4"),
    (dict(capacity=-1), r"capacity: .*got -1"),
    (dict(capacity=9, num_envs=2), r"capacity: expected at least .* = 10 .*got 9"),
    (dict(capacity=100, history=0), r"history: .*got 0"),
    (dict(capacity=100, history=65), r"history: .*got 65"),
    (dict(capacity=100, num_envs=0), r"num_envs: .*got 0"),
    (dict(capacity=100, frame_shape=()), r"frame_shape: .*got \[\]"),
    (dict(capacity=100, frame_shape=(84, 0)), r"frame_shape: .*got \[84, 0\]"),
    (dict(capacity=100, frame_shape=(84, -2)), r"frame_shape: .*got \[84, -2\]"),
    (dict(capacity=100, frame_shape="84x84"), r"frame_shape: .*'84x84'"),
    (dict(capacity=100, frame_shape=(84, 1.5)), r"frame_shape: .*1\.5"),
    (dict(capacity=100, frame_shape=(1 << 20, 1 << 20)), r"frame_shape: .*too large"),
    (dict(capacity=100, seed=-1), r"seed: .*got -1"),
    (dict(capacity=100, seed=2**64), r"seed: .*got 18446744073709551616"),
    (dict(capacity=100, seed=1.5), r"seed: .*got 1\.5"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReplayMemory(**kwargs)


def test_bad_add_arguments_change_nothing():
    mem, ref, rng = filled(capacity=20, num_envs=2, steps=8, seed=1)
    good = random_step(rng, 2, 0.0)
    f32 = good[0].astype(np.float32)
    cases = [
        ((f32,) + good[1:],
         r"frames: expected dtype uint8 and shape \[2, 7, 5\], got float32 \[2, 7, 5\]"),
        ((good[0][:1],) + good[1:], r"frames: .*got uint8 \[1, 7, 5\]"),
        ((good[0][0],) + good[1:], r"frames: .*got uint8 \[7, 5\]"),
        ((good[0].reshape(2, 5, 7),) + good[1:], r"frames: .*got uint8 \[2, 5, 7\]"),
        ((good[0].astype(np.int8),) + good[1:], r"frames: .*got int8"),
        ((good[0].tolist(),) + good[1:], r"frames: .*got int64"),
        ((good[0], [1], good[2], good[3]),
         r"actions: expected shape \[2\] \(num_envs\), got \[1\]"),
        ((good[0], [1, 2, 3], good[2], good[3]), r"actions: .*got \[3\]"),
        ((good[0], [1.0, 2.0], good[2], good[3]),
         r"actions: expected integers .*got dtype float64"),
        ((good[0], [1, -1], good[2], good[3]), r"actions\[1\] = -1 is not in \[0, 2\^31\)"),
        ((good[0], [2**31, 0], good[2], good[3]), r"actions\[0\] = 2147483648"),
        ((good[0], good[1], [0.0, np.nan], good[3]), r"rewards\[1\] = nan is not a finite"),
        ((good[0], good[1], [np.inf, 0.0], good[3]), r"rewards\[0\] = inf"),
        ((good[0], good[1], [1e39, 0.0], good[3]), r"rewards\[0\] = 1e\+39"),
        ((good[0], good[1], ["a", "b"], good[3]), r"rewards: expected real numbers"),
        ((good[0], good[1], [[0.0, 1.0]], good[3]), r"rewards: expected shape \[2\]"),
        ((good[0], good[1], good[2], [0, 2]), r"terminals\[1\] = 2 is not 0 or 1"),
        ((good[0], good[1], good[2], [0.5, 0]), r"terminals\[0\] = 0.5 is not 0 or 1"),
        ((good[0], good[1], good[2], [True]), r"terminals: expected shape \[2\]"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            mem.add(*args)
    assert_same_state(mem, ref)
    assert_same_batch(mem.sample(6), ref.sample(6))
    # The same step with valid arguments then goes in normally.
    add_both(mem, ref, good)
    assert_same_state(mem, ref)


def test_non_contiguous_frames_are_accepted():
    mem, ref, rng = filled(capacity=20, num_envs=2, steps=8, seed=2)
    frames = np.ascontiguousarray(rng.integers(0, 256, (2,) + SHAPE[::-1], dtype=np.uint8))
    step = (frames.transpose(0, 2, 1), np.array([1, 2], np.uint8), [1, 0], np.array([0, 1], bool))
    add_both(mem, ref, step)
    assert_same_state(mem, ref)
    assert_same_batch(mem.sample(10), ref.sample(10))


def test_add_takes_numbers_in_any_numeric_layout():
    """actions / rewards / terminals in other widths, byte order or strides (numpy's
    conversion) store the same values as plain int64 / float64 / bool; uint64 values that
    int64 cannot hold are refused, not wrapped."""
    mem, ref, rng = filled(capacity=20, num_envs=2, steps=8, seed=3)
    frames = rng.integers(0, 256, (2,) + SHAPE, dtype=np.uint8)
    layouts = [
        (np.array([1, 0], ">i4"), np.array([0.5, -2.0], np.float16), np.array([0, 1], ">u2")),
        (np.array([3, 9, 2, 9])[::2], np.array([1.0, 9.0, 0.25, 9.0], ">f8")[::2],
         np.array([True, False])),
        (np.array([2, 1], np.uint64), np.array([1, -1], np.int8), np.array([1.0, 0.0], ">f4")),
    ]
    for actions, rewards, terminals in layouts:
        mem.add(frames, actions, rewards, terminals)
        ref.add(frames, np.asarray(actions, np.int64), np.asarray(rewards, np.float64),
                np.asarray(terminals, bool))
        assert_same_state(mem, ref)
    assert_same_batch(mem.sample(10), ref.sample(10))
    with pytest.raises(ValueError, match=r"actions\[1\] = 18446744073709551615 is out of range"):
        mem.add(frames, np.array([0, 2**64 - 1], np.uint64), [0.0, 0.0], [0, 0])
    assert_same_state(mem, ref)


def test_sampling_before_a_valid_window():
    mem = ReplayMemory(20, frame_shape=SHAPE, history=4)
    with pytest.raises(ValueError, match="no valid window yet.*entries stored: 0"):
        mem.sample(1)
    with pytest.raises(ValueError, match="no valid window yet"):  # not a MemoryError
        mem.sample(10**12)
    rng = np.random.default_rng(0)
    for _ in range(4):
        mem.add(*random_step(rng, 1, 0.0))
    with pytest.raises(ValueError, match="entries stored: 4"):
        mem.sample(1)
    # Enough entries, but each candidate window has a terminal newest frame of s.
    mem = ReplayMemory(20, frame_shape=SHAPE, history=4)
    for _ in range(10):
        frames, actions, rewards, _ = random_step(rng, 1, 0.0)
        mem.add(frames, actions, rewards, [True])
    with pytest.raises(ValueError, match="no valid window"):
        mem.sample(1)
    frames, actions, rewards, _ = random_step(rng, 1, 0.0)
    mem.add(frames, actions, rewards, [False])
    mem.add(frames, actions, rewards, [True])
    assert mem.num_valid_windows == 1
    assert mem.sample(3)[4].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("batch_size", [0, -1, -(2**40)])
def test_bad_batch_size(batch_size):
    mem, _, _ = filled(steps=10)
    message = f"batch_size: expected a positive integer, got {batch_size}"
    with pytest.raises(ValueError, match=message):
        mem.sample(batch_size)


def test_bad_sample_into_arrays():
    mem, _, _ = filled(steps=10)
    b = 4

    def arrays(**change):
        out = dict(s=np.empty((b, 4) + SHAPE, np.uint8), a=np.empty(b, np.int32),
                   r=np.empty(b, np.float32), s2=np.empty((b, 4) + SHAPE, np.uint8),
                   term=np.empty(b, np.float32))
        out.update(change)
        return out

    readonly = np.empty((b, 4) + SHAPE, np.uint8)
    readonly.flags.writeable = False
    cases = [
        (dict(s=np.empty((b, 4) + SHAPE, np.float32)),
         r"s: expected dtype uint8 and shape \[4, 4, 7, 5\], got float32"),
        (dict(s2=np.empty((b, 3) + SHAPE, np.uint8)), r"s2: .*got uint8 \[4, 3, 7, 5\]"),
        (dict(s2=np.empty((b + 1, 4) + SHAPE, np.uint8)), r"s2: .*\[5, 4, 7, 5\]"),
        (dict(a=np.empty(b, np.int64)), r"a: expected dtype int32 and shape \[4\], got int64"),
        (dict(r=np.empty(b, np.float64)), r"r: expected dtype float32"),
        (dict(term=np.empty(b + 1, np.float32)), r"term: .*got float32 \[5\]"),
        (dict(s=np.empty((0, 4) + SHAPE, np.uint8)), r"batch_size .* must be positive, got 0"),
        (dict(s=np.empty((b, 4) + SHAPE[::-1], np.uint8).transpose(0, 1, 3, 2)),
         r"s: expected a C-contiguous"),
        (dict(s2=readonly), r"s2: expected a writeable array"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            mem.sample_into(**arrays(**change))


def test_bad_env_index_and_acting_frames():
    mem, _, _ = filled(num_envs=2, steps=5)
    for env_index in (-1, 2, 10**6):
        with pytest.raises(IndexError, match=f"env_index: {env_index} is not in \\[0, 2\\)"):
            mem.acting_state(env_index)
        with pytest.raises(IndexError, match=f"env_index: {env_index}"):
            mem.stream_size(env_index)
    with pytest.raises(ValueError,
                       match=r"frame: expected dtype uint8 and shape \[7, 5\], got uint8 \[5, 7\]"):
        mem.acting_state(0, np.zeros((5, 7), np.uint8))
    with pytest.raises(ValueError, match=r"frames: expected dtype uint8 and shape \[2, 7, 5\]"):
        mem.acting_states(np.zeros((1, 7, 5), np.uint8))
    with pytest.raises(ValueError, match=r"out: expected dtype uint8 and shape \[2, 4, 7, 5\]"):
        mem.acting_states(out=np.zeros((2, 4, 7, 5), np.float32))
    out = np.empty((2, 4, 7, 5), np.uint8)
    assert mem.acting_states(out=out) is out


# ------------------------------------------------------------ the numpy baseline

def test_numpy_benchmark_baseline_follows_the_same_rules():
    # benchmarks/bench_replay.py compares against this vectorized version;
    # it must compute the same windows to be a fair baseline.
    spec = importlib.util.spec_from_file_location(
        "bench_replay", HERE.parent / "benchmarks" / "bench_replay.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shapes = [(20, 4, 1), (23, 4, 3), (9, 2, 2), (6, 1, 1)]
    for seed, (capacity, history, num_envs) in enumerate(shapes):
        rng = np.random.default_rng(seed)
        fast = bench.NumpyReplay(capacity, SHAPE, history, num_envs, seed)
        ref = ReferenceReplay(capacity, SHAPE, history, num_envs, seed)
        for _ in range(2 * capacity):
            step = random_step(rng, num_envs, 0.3)
            fast.add(*step)
            ref.add(*step)
            valid = ref.valid_windows()
            if not valid:
                continue
            envs, starts = (np.array(x) for x in zip(*valid))
            got = fast.windows(envs, starts)
            win = fast.windows_only(envs, starts)
            np.testing.assert_array_equal(win[0][:, :-1], got[0])
            np.testing.assert_array_equal(win[0][:, 1:], got[3])
            want = [ref.window(e, i) for e, i in valid]
            for k, name in enumerate(("s", "a", "r", "s2", "term")):
                np.testing.assert_array_equal(got[k], np.stack([w[k] for w in want]), err_msg=name)
            s, a, r, s2, term = fast.sample(16)
            assert s.shape == (16, history) + SHAPE
            # Its draws are valid windows: each s2 is one the reference can produce.
            allowed = {w[3].tobytes() for w in want}
            assert all(row.tobytes() in allowed for row in s2)


def test_read_floor_benchmark_builds_runs_and_rejects_bad_arguments(tmp_path):
    # benchmarks/bench_replay.py compiles read_floor.cc to measure the least time any
    # sampler needs; a small run must give two positive times, bad sizes exit 2.
    import shutil
    import subprocess

    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "read_floor"
    source = HERE.parent / "benchmarks" / "read_floor.cc"
    subprocess.run([compiler, "-O2", "-o", str(exe), str(source)], check=True)
    out = subprocess.run([str(exe), "1000", "7056", "5", "32", "5"], check=True,
                         capture_output=True, text=True).stdout.split()
    read_us, copy_us = map(float, out)
    assert read_us > 0 and copy_us > 0
    bad = subprocess.run([str(exe), "4", "7056", "5", "32", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "CAPACITY > WINDOW" in bad.stderr
