"""n-step returns and prioritized sampling in the C++ replay memory.

Against tests/replay_reference.py (n-step transitions written out entry by entry, the same
random draws for uniform sampling) and, for prioritized sampling, against the
proportional rule and the importance weights computed in numpy from the memory's own
priorities.
"""

import os

import numpy as np
import pytest

from tfdqn_ops import ReplayMemory
from tfdqn_ops.replay import ReplayBatch

from replay_reference import ReferenceReplay

SHAPE = (3, 2)
FIELDS = ("s", "a", "r", "s2", "term", "discount", "index")


def random_step(rng, num_envs, p_terminal):
    return (rng.integers(0, 256, (num_envs,) + SHAPE, dtype=np.uint8),
            rng.integers(0, 6, num_envs), rng.choice([-1.0, 0.0, 0.5, 1.0, 3.0], num_envs),
            rng.random(num_envs) < p_terminal)


def pair(capacity=40, history=3, num_envs=2, seed=0, **options):
    mem = ReplayMemory(capacity, SHAPE, history, num_envs, seed, **options)
    ref = ReferenceReplay(capacity, SHAPE, history, num_envs, seed,
                          **{k: v for k, v in options.items() if k != "priority_exponent"})
    return mem, ref


def add_both(mem, ref, step):
    mem.add(*step)
    ref.add(*step)


def assert_batches_equal(got, want):
    for name, g, w in zip(FIELDS, got, want):
        np.testing.assert_array_equal(g, w, err_msg=name)
        assert g.dtype == w.dtype, name


@pytest.mark.parametrize("n_step", [1, 2, 3, 5])
@pytest.mark.parametrize("num_envs", [1, 3])
def test_n_step_batches_match_the_reference(n_step, num_envs):
    """Exact equality, step after step, through ring wrap-around (capacity 40 over 3
    streams, 70 adds), with terminals inside returns and histories."""
    rng = np.random.default_rng(n_step * 10 + num_envs)
    mem, ref = pair(capacity=40, num_envs=num_envs, seed=n_step, n_step=n_step, discount=0.9)
    for step in range(70):
        add_both(mem, ref, random_step(rng, num_envs, 0.15))
        assert mem.num_valid_windows == len(ref.valid_transitions()), step
        if mem.num_valid_windows and step % 3 == 0:
            batch = mem.sample_batch(16)
            assert isinstance(batch, ReplayBatch)
            assert_batches_equal(batch[:7], ref.sample_batch(16))
            np.testing.assert_array_equal(batch.weight, np.ones(16, np.float32))


def test_n_step_1_sample_batch_is_dqn3s_sample():
    rng = np.random.default_rng(1)
    a = ReplayMemory(30, SHAPE, 4, 2, seed=5)
    b = ReplayMemory(30, SHAPE, 4, 2, seed=5)
    for _ in range(40):
        step = random_step(rng, 2, 0.2)
        a.add(*step)
        b.add(*step)
    for _ in range(5):
        s, act, r, s2, term = a.sample(12)
        batch = b.sample_batch(12)
        for name, want in zip(("s", "a", "r", "s2", "term"), (s, act, r, s2, term)):
            np.testing.assert_array_equal(getattr(batch, name), want, err_msg=name)
        np.testing.assert_array_equal(batch.discount,
                                      np.where(term == 1, 0, np.float32(0.99)).astype(np.float32))


def test_returns_stop_at_a_terminal_and_never_reach_unstored_entries():
    """A hand-made stream: rewards 1, 2, 4, 8, ... with a terminal at entry 6."""
    mem = ReplayMemory(20, (1,), history=1, n_step=3, discount=0.5, seed=0)
    for k in range(9):
        mem.add(np.full((1, 1), k, np.uint8), [0], [2.0 ** k], [k == 6])
    # Transitions t = 0 .. 5 (t + 3 <= 8, entry t not terminal); t = 6 is terminal.
    assert mem.num_valid_windows == 6
    seen = {}
    for _ in range(20):
        batch = mem.sample_batch(8)
        for s, r, s2, term, disc in zip(batch.s[:, 0, 0], batch.r, batch.s2[:, 0, 0], batch.term,
                                        batch.discount):
            seen[int(s)] = (float(r), int(s2), float(term), float(disc))
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]
    # t = 2: 4 + .5 * 8 + .25 * 16 = 12, s2 at entry 5, discount .5^3
    assert seen[2] == (12.0, 5, 0.0, 0.125)
    # t = 4: 16 + .5 * 32 = 32, stopped by the terminal entry 6 (s2 = entry 6, discount 0)
    assert seen[4] == (32.0, 6, 1.0, 0.0)
    # t = 5: 32, entry 6 is terminal
    assert seen[5] == (32.0, 6, 1.0, 0.0)


@pytest.mark.parametrize("options", [dict(n_step=2), dict(priority_exponent=0.5)])
def test_dqn3_sampling_methods_refuse_the_new_options(options):
    rng = np.random.default_rng(2)
    mem = ReplayMemory(30, SHAPE, 2, 1, **options)
    for _ in range(10):
        mem.add(*random_step(rng, 1, 0.0))
    out = dict(s=np.empty((4, 2) + SHAPE, np.uint8), a=np.empty(4, np.int32),
               r=np.empty(4, np.float32), s2=np.empty((4, 2) + SHAPE, np.uint8),
               term=np.empty(4, np.float32))
    for call in (lambda: mem.sample(4), lambda: mem.sample_into(**out),
                 lambda: mem.sample_windows(4)):
        with pytest.raises(ValueError, match="use sample_batch"):
            call()


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_step=0), r"n_step: expected an integer in \[1, 1000\], got 0"),
    (dict(n_step=5, capacity=12), r"capacity: expected at least \(history \+ n_step\) \* "
                                  r"num_envs = 14 .*n_step = 5.*got 12"),
    (dict(discount=1.5), r"discount: expected a value in \[0, 1\], got 1.5"),
    (dict(discount=float("nan")), r"discount: expected a value in \[0, 1\], got nan"),
    (dict(priority_exponent=-1.0), r"priority_exponent: expected a finite value >= 0"),
    (dict(priority_exponent=float("inf")), r"priority_exponent: expected a finite value >= 0"),
])
def test_bad_options(kwargs, message):
    args = dict(capacity=30, frame_shape=SHAPE, history=2, num_envs=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReplayMemory(**args)


# ---------------------------------------------------------------- prioritized


def prioritized(alpha=0.6, capacity=60, history=2, num_envs=2, n_step=1, steps=50, seed=0,
                p_terminal=0.1):
    rng = np.random.default_rng(seed)
    mem, ref = pair(capacity=capacity, history=history, num_envs=num_envs, seed=seed,
                    n_step=n_step, priority_exponent=alpha)
    for _ in range(steps):
        add_both(mem, ref, random_step(rng, num_envs, p_terminal))
    return mem, ref, rng


def valid_ids(ref):
    return np.array([ref.transition(e, t)[6] for e, t in ref.valid_transitions()], np.int64)


def test_new_transitions_get_the_largest_priority_seen():
    mem, ref, rng = prioritized()
    ids = valid_ids(ref)
    np.testing.assert_array_equal(mem.priorities(ids), np.ones(len(ids)))  # 1 at first
    assert mem.update_priorities(ids[:3], [0.5, 7.0, 2.0]) == 3
    assert mem.max_priority == 7.0
    add_both(mem, ref, random_step(rng, 2, 0.0))
    new = sorted(set(valid_ids(ref)) - set(ids))
    assert new and all(p == 7.0 for p in mem.priorities(np.array(new)))
    np.testing.assert_array_equal(mem.priorities(ids[:3]), [0.5, 7.0, 2.0])


def test_prioritized_draws_follow_priority_to_the_alpha():
    """Draw frequencies against p^alpha / sum p^alpha (a chi-square bound that a uniform
    or unexponentiated draw fails), every draw a valid transition."""
    alpha = 0.7
    mem, ref, rng = prioritized(alpha=alpha, steps=40)
    ids = valid_ids(ref)
    priorities = rng.uniform(0.05, 5.0, len(ids))
    mem.update_priorities(ids, priorities)
    expected = priorities**alpha / np.sum(priorities**alpha)
    counts = dict.fromkeys(ids.tolist(), 0)
    rows = {int(i): ref.transition(e, t) for (e, t), i in zip(ref.valid_transitions(), ids)}
    draws = 0
    for _ in range(400):
        batch = mem.sample_batch(32, importance_exponent=0.4)
        for k, i in enumerate(batch.index):
            counts[int(i)] += 1  # KeyError: a transition that is not valid
            if k < 2:  # contents of the drawn transition
                want = rows[int(i)]
                np.testing.assert_array_equal(batch.s[k], want[0])
                np.testing.assert_array_equal(batch.s2[k], want[3])
                assert (batch.a[k], batch.r[k], batch.term[k]) == want[1:3] + (want[4],)
        draws += 32
    observed = np.array([counts[int(i)] for i in ids])
    dof = len(ids) - 1
    bound = dof + 6 * np.sqrt(2 * dof)  # chi-square: mean dof, standard deviation sqrt(2 dof)

    def chi2(probabilities):
        return np.sum((observed - draws * probabilities) ** 2 / (draws * probabilities))
    assert chi2(expected) < bound
    assert chi2(np.full(len(ids), 1 / len(ids))) > bound  # the test can tell
    assert chi2(priorities / priorities.sum()) > bound


def test_importance_weights():
    mem, ref, rng = prioritized(alpha=0.6)
    ids = valid_ids(ref)
    priorities = rng.uniform(0.1, 3.0, len(ids))
    mem.update_priorities(ids, priorities)
    scaled = dict(zip(ids.tolist(), priorities**0.6))
    total, n = sum(scaled.values()), len(ids)
    for beta in (0.0, 0.4, 1.0):
        batch = mem.sample_batch(16, importance_exponent=beta)
        probability = np.array([scaled[int(i)] for i in batch.index]) / total
        want = (n * probability) ** -beta / (n * min(scaled.values()) / total) ** -beta
        np.testing.assert_allclose(batch.weight, want.astype(np.float32), rtol=1e-6)
        assert np.all(batch.weight <= 1.0)


def test_priority_total_and_min_are_over_the_valid_transitions():
    """priority_total = sum of p^alpha and priority_min = min p^alpha over the transitions
    that can be drawn (what a sharded replay splits draws and rescales weights by), kept
    right as entries wrap around and transitions stop being valid."""
    alpha = 0.6
    mem, ref, rng = prioritized(alpha=alpha, capacity=30, steps=8, p_terminal=0.0)
    empty = ReplayMemory(30, (2,), 2, 2, priority_exponent=alpha)
    assert (empty.priority_total, empty.priority_min) == (0.0, np.inf)
    uniform = ReplayMemory(30, (2,), 2, 2)
    assert (uniform.priority_total, uniform.priority_min) == (0.0, 0.0)
    for _ in range(30):  # through several wrap-arounds of both streams
        ids = valid_ids(ref)
        mem.update_priorities(ids, rng.uniform(0.05, 4.0, len(ids)))
        scaled = mem.priorities(ids) ** alpha
        assert mem.priority_total == pytest.approx(np.sum(scaled), rel=1e-12)
        assert mem.priority_min == pytest.approx(np.min(scaled), rel=1e-12)
        add_both(mem, ref, random_step(rng, 2, 0.2))


def test_overwritten_ids_are_ignored_and_bad_updates_change_nothing():
    mem, ref, rng = prioritized(capacity=30, steps=12, p_terminal=0.0)
    old = valid_ids(ref)
    for _ in range(20):  # every stream wraps around: the old transitions are gone
        add_both(mem, ref, random_step(rng, 2, 0.0))
    assert not set(old) & set(valid_ids(ref))
    assert mem.update_priorities(old, np.full(len(old), 9.0)) == 0
    assert mem.max_priority == 1.0
    np.testing.assert_array_equal(mem.priorities(old), np.zeros(len(old)))
    current = valid_ids(ref)
    snapshot = mem.priorities(current)
    cases = [
        ([current[0], current[1]], [1.0, 0.0], r"priorities\[1\] = 0 is not a finite value > 0"),
        ([current[0]], [np.nan], r"priorities\[0\] = nan"),
        ([current[0]], [-2.0], r"priorities\[0\] = -2"),
        ([current[0], 10**9], [1.0, 1.0], r"indices\[1\] = 1000000000 is not the id of any entry"),
        ([-1], [1.0], r"indices\[0\] = -1 is not the id of any entry"),
        ([current[0]], [1.0, 2.0], r"priorities: expected shape \[1\] \(that of indices\)"),
        ([[current[0]]], [1.0], r"indices: expected a 1-D array"),
    ]
    for indices, values, message in cases:
        with pytest.raises(ValueError, match=message):
            mem.update_priorities(np.array(indices), np.array(values))
    np.testing.assert_array_equal(mem.priorities(current), snapshot)


def test_uniform_memories_have_no_priorities_to_update():
    mem = ReplayMemory(30, SHAPE, 2, 1)
    with pytest.raises(ValueError, match="samples uniformly"):
        mem.update_priorities(np.array([0]), np.array([1.0]))


@pytest.mark.parametrize("options", [dict(n_step=3, discount=0.8),
                                     dict(n_step=2, priority_exponent=0.6)])
def test_save_load_keeps_options_priorities_and_draws(tmp_path, options):
    rng = np.random.default_rng(9)
    mem = ReplayMemory(50, SHAPE, 3, 2, seed=4, **options)
    for _ in range(60):
        mem.add(*random_step(rng, 2, 0.1))
    batch = mem.sample_batch(8)
    if mem.priority_exponent:
        mem.update_priorities(batch.index, rng.uniform(0.1, 4.0, 8))
    path = tmp_path / "replay.bin"
    mem.save(path)
    loaded = ReplayMemory.load(path)
    assert (loaded.n_step, loaded.discount, loaded.priority_exponent, loaded.max_priority) == (
        mem.n_step, mem.discount, mem.priority_exponent, mem.max_priority)
    np.testing.assert_array_equal(loaded.priorities(batch.index), mem.priorities(batch.index))
    for _ in range(3):
        step = random_step(rng, 2, 0.1)
        mem.add(*step)
        loaded.add(*step)
        for got, want in zip(loaded.sample_batch(10, 0.5), mem.sample_batch(10, 0.5)):
            np.testing.assert_array_equal(got, want)
    assert "n_step=" in repr(loaded)


def test_a_prioritized_file_with_a_bad_priority_is_refused(tmp_path):
    import struct

    from replay_reference import xxh64
    mem, _, _ = prioritized(capacity=20, steps=15, num_envs=1)
    path = tmp_path / "replay.bin"
    mem.save(path)
    data = bytearray(path.read_bytes())
    # The last stored priority (8 bytes before the checksum and end marker) set to -1.
    end = len(data) - 16
    struct.pack_into("<d", data, end - 8, -1.0)
    struct.pack_into("<Q", data, end, xxh64(bytes(data[:end])))
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted contents \(priority of entry"):
        ReplayMemory.load(path)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
def test_priorities_cost_about_40_bytes_per_transition():
    """1M transitions of 84x84: frames and the columns are 7.065 GB (mapped lazily);
    priorities and the two trees add about 40 MB, so the whole stays under 7.2 GB."""
    page = os.sysconf("SC_PAGE_SIZE")

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before = resident()
    mem = ReplayMemory(1_000_000, (84, 84), 4, 1, priority_exponent=0.6)
    grown = resident() - before
    # columns 9 MB + priorities 8 MB + two trees of 2^21 doubles 33.5 MB
    assert grown < 60e6, grown
    total = 1_000_000 * (84 * 84 + 9 + 8) + 2 * 2**21 * 8
    assert total < 7.2e9
    del mem


# ---------------------------------------------------------------- one stream at a time


def test_add_stream_equals_adding_all_streams_together(tmp_path):
    """Streams fed one at a time, in any order and in chunks, hold what add() would have
    stored: the same samples, priorities and file bytes."""
    rng = np.random.default_rng(11)
    steps = [random_step(rng, 3, 0.1) for _ in range(25)]
    together = ReplayMemory(60, SHAPE, 2, 3, seed=7, n_step=2, priority_exponent=0.5)
    apart = ReplayMemory(60, SHAPE, 2, 3, seed=7, n_step=2, priority_exponent=0.5)
    for step in steps:
        together.add(*step)
    for e in (2, 0, 1):
        for begin, end in ((0, 10), (10, 11), (11, 25)):
            chunk = steps[begin:end]
            apart.add_stream(e, np.stack([s[0][e] for s in chunk]), [s[1][e] for s in chunk],
                             [s[2][e] for s in chunk], [s[3][e] for s in chunk])
    assert [apart.stream_added(e) for e in range(3)] == [25, 25, 25]
    together.save(tmp_path / "a.bin")
    apart.save(tmp_path / "b.bin")
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    for got, want in zip(apart.sample_batch(16), together.sample_batch(16)):
        np.testing.assert_array_equal(got, want)


def test_add_stream_ids_follow_the_streams_sequence():
    mem = ReplayMemory(40, SHAPE, 1, 2, n_step=1, priority_exponent=1.0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6,) + SHAPE, dtype=np.uint8)
    mem.add_stream(1, frames, np.arange(6), np.zeros(6), np.zeros(6, bool))
    # Stream 1's transitions t = 0 .. 4 (t + 1 stored) have ids t * 2 + 1.
    ids = np.arange(5) * 2 + 1
    np.testing.assert_array_equal(mem.priorities(ids), np.ones(5))
    assert mem.update_priorities(ids, np.arange(1.0, 6.0)) == 5
    batch = mem.sample_batch(64)
    assert set(batch.index.tolist()) <= set(ids.tolist())
    np.testing.assert_array_equal(batch.a, (batch.index - 1) // 2)  # the action stored at t


@pytest.mark.parametrize("args, error, message", [
    ((2, np.zeros((1,) + SHAPE, np.uint8), [0], [0.0], [0]), IndexError,
     r"env_index: 2 is not in \[0, 2\)"),
    ((0, np.zeros((2,) + SHAPE, np.uint8), [0], [0.0, 0.0], [0, 0]), ValueError,
     r"actions: expected shape \[2\] \(the number of frames\), got \[1\]"),
    ((0, np.zeros((2,) + SHAPE, np.float32), [0, 0], [0.0, 0.0], [0, 0]), ValueError,
     r"frames: expected dtype uint8 and shape \[2, 3, 2\], got float32"),
    ((0, np.zeros(SHAPE, np.uint8), [0, 0, 0], [0.0] * 3, [0] * 3), ValueError,
     r"frames: expected dtype uint8 and shape \[3, 3, 2\], got uint8 \[3, 2\]"),
    ((0, np.zeros((2,) + SHAPE, np.uint8), [0, 0], [0.0, np.inf], [0, 0]), ValueError,
     r"rewards\[1\] = inf is not a finite float32"),
])
def test_add_stream_bad_arguments_change_nothing(args, error, message):
    mem = ReplayMemory(40, SHAPE, 1, 2)
    with pytest.raises(error, match=message):
        mem.add_stream(*args)
    assert len(mem) == 0 and mem.stream_added(0) == 0


# ------------------------------------------------------------ the numpy baseline

def load_bench_replay():
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "bench_replay", os.path.join(here, "..", "benchmarks", "bench_replay.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("history, n_step", [(1, 1), (2, 3), (4, 3), (3, 5)])
def test_numpy_prioritized_benchmark_baseline_follows_the_same_rules(history, n_step):
    """benchmarks/bench_replay.py times the C++ prioritized sample_batch against
    NumpyPrioritizedReplay: it must compute the same transitions, draw by priority to the
    alpha and weigh as the memory does to be a fair baseline."""
    bench = load_bench_replay()
    rng = np.random.default_rng(history * 10 + n_step)
    steps, alpha, beta = 60, 0.7, 0.4
    fast = bench.NumpyPrioritizedReplay(steps, SHAPE, history, seed=1, n_step=n_step,
                                        discount=0.9, priority_exponent=alpha)
    ref = ReferenceReplay(steps, SHAPE, history, 1, 1, n_step=n_step, discount=0.9)
    for _ in range(steps):
        step = random_step(rng, 1, 0.15)
        fast.add(*step)
        ref.add(*step)
    fast.reset_priorities()
    valid = [t for _, t in ref.valid_transitions()]
    assert fast.num_valid == len(valid)
    index = np.array(valid) - (history - 1)  # the numpy memory's ids: window starts
    got = fast.transitions(index)
    want = [ref.transition(0, t) for t in valid]
    for k, name in enumerate(("s", "a", "r", "s2", "term", "discount")):
        np.testing.assert_allclose(got[k], np.stack([w[k] for w in want]), rtol=1e-6,
                                   err_msg=name)
    # Draws follow priority^alpha: every draw valid, frequencies within a chi-square bound.
    priorities = rng.uniform(0.05, 5.0, len(index))
    fast.update_priorities(index, priorities)
    expected = priorities**alpha / np.sum(priorities**alpha)
    counts = np.zeros(len(index))
    position = {int(i): k for k, i in enumerate(index)}
    for _ in range(300):
        batch = fast.sample_batch(32, beta)
        for i in batch[6]:
            counts[position[int(i)]] += 1  # KeyError: not a valid transition
        probability = expected[[position[int(i)] for i in batch[6]]]
        want_w = (len(index) * probability) ** -beta / (len(index) * expected.min()) ** -beta
        np.testing.assert_allclose(batch[7], want_w, rtol=1e-5)
    draws = counts.sum()
    dof = len(index) - 1
    chi2 = np.sum((counts - draws * expected) ** 2 / (draws * expected))
    assert chi2 < dof + 6 * np.sqrt(2 * dof)


def test_update_priorities_contract_stored_but_invalid_ids_duplicates_and_max():
    """The rules replay.py states: ids of stored entries that are not valid transitions are
    ignored and not counted, a duplicate id takes the later priority, max_priority is
    max(1, every priority ever set) and a new transition starts there, num_valid_windows
    counts n-step transitions and sample() refuses an n-step memory."""
    mem = ReplayMemory(100, (1,), 1, 1, 0, n_step=3, discount=0.9, priority_exponent=0.6)
    for t in range(10):  # entry 5 is terminal; transitions 7, 8, 9 wait for entries 10-12
        mem.add(np.array([[t]], np.uint8), [0], [1.0], [t == 5])
    # valid: t = 0..4 (t = 2..4 stop at the terminal), 6
    assert mem.num_valid_windows == 6
    np.testing.assert_array_equal(mem.priorities(np.arange(10)) > 0,
                                  [1, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    assert mem.update_priorities(np.array([5, 7, 8, 9]), np.full(4, 2.0)) == 0
    assert mem.max_priority == 1.0  # nothing was set
    assert mem.update_priorities(np.array([0, 0, 1]), np.array([3.0, 0.5, 0.25])) == 3
    np.testing.assert_array_equal(mem.priorities(np.array([0, 1])), [0.5, 0.25])
    assert mem.max_priority == 3.0  # the replaced 3.0 counts
    mem.add(np.array([[10]], np.uint8), [0], [1.0], [False])  # completes transition 7
    assert mem.priorities(np.array([7]))[0] == 3.0
    with pytest.raises(ValueError, match="serves n_step = 1 with uniform sampling"):
        mem.sample(2)
    low = ReplayMemory(100, (1,), 1, 1, 0, priority_exponent=0.6)
    for t in range(3):
        low.add(np.array([[t]], np.uint8), [0], [1.0], [False])
    low.update_priorities(np.array([0, 1]), np.array([0.25, 0.5]))
    low.add(np.array([[3]], np.uint8), [0], [1.0], [False])  # completes transition 2
    assert low.max_priority == 1.0 and low.priorities(np.array([2]))[0] == 1.0
