"""DQN 3.0 replay memory: one frame per transition, histories rebuilt when sampled.

The memory is C++ (`csrc/replay/`, module `tfdqn_ops._replay`); this module only
re-exports it and documents it. It imports no TensorFlow.

Layout and rules (DQN 3.0 `TransitionTable.lua`; docs/BENCHMARKS.md has the
measured memory and speed):

* Entry k of a stream holds frame_k (uint8 `frame_shape`), the action taken at
  k, the reward that followed, and the terminal flag of frame_k. 1M entries of
  84x84 take about 7.07 GB (7.065e9 bytes): frames plus 9 bytes of action, reward and flag.
* With `num_envs` streams, stream e owns its own ring segment of
  `capacity // num_envs` entries (the first `capacity % num_envs` streams one
  more), so a history never mixes environments. `capacity` counts all
  transitions of all streams; each stream needs room for `history + 1`.
* A window is `history + 1` consecutive entries i .. i+H of one stream, in the
  order they were added (never straddling the ring's write position):
  `s = frames[i .. i+H-1]`, `s2 = frames[i+1 .. i+H]`, `a, r` of entry i+H-1,
  `term` of entry i+H. A window whose entry i+H-1 (the newest frame of s) is
  terminal is never sampled. `sample` draws windows uniformly, with
  replacement, among the valid ones of all streams.
* Frames of an earlier episode are zero: scanning back from the newest slot
  of a state, once a terminal flag is met in an earlier slot, that slot and
  all older ones are zero frames.

n-step returns (`n_step=n`, `discount=gamma`): the transition whose s ends at entry
t has the return `R = sum_{k<m} gamma^k r_{t+k}` (summed in float64), where m = n, or
m = k + 1 when entry t+k+1 is terminal (the return stops at the end of its episode); s2
ends at entry t+m, `term` is entry t+m's flag and the bootstrap discount is 0 when it is
set, else `gamma^m`. A transition is drawn only once entries t+1 .. t+n are stored, so no
return crosses an episode, a stream or the ring's write position. `n_step=1` is exactly
DQN 3.0's transition (the same draws for the same seed).

Prioritized sampling (`priority_exponent=alpha > 0`; Schaul et al. 2016, "Prioritized
Experience Replay", proportional variant): every valid transition has a priority p > 0
(a new one gets `max_priority`: max(1, every priority ever set, including one replaced
later)) and is drawn with probability
`P(i) = p_i^alpha / sum_j p_j^alpha`, from a sum tree over the slots, stratified (draw b
of a batch of B comes from the b-th of B equal parts of the total). A transition that is
not valid, or no longer (its history overwritten), has priority 0 and is never drawn.
`sample_batch(B, importance_exponent=beta)` returns the transitions' ids
(`index`) and importance weights `(N * P(i))^-beta / max_j (N * P(j))^-beta` over all N
valid transitions (at most 1); `update_priorities(index, priorities)` sets new priorities
(finite, > 0; e.g. |TD error| + a small epsilon) and returns how many it set. The id of
the transition whose s ends at the k-th entry of stream e is `k * num_envs + e`. An id whose
entry is stored but is not a valid transition (a terminal entry, one still waiting for its
n entries, or one overwritten since) is ignored and not counted: producers may send
priorities as their transitions complete. An id no entry ever had (negative, or beyond the
entries added), a bad priority, or a uniform memory (`priority_exponent` 0) raises
ValueError before anything changes. An id given twice in one call gets the later priority.
`num_valid_windows` counts the transitions that can be drawn (n-step ones for n > 1).
Priorities and the two trees (sum and min) cost 40 bytes per transition: 1M Atari
transitions take 7.107 GB in all.

Acting: `acting_state(env_index, frame)` is the state an agent acts on when it
observes `frame` (not yet stored: its action and reward are not known yet):
the last `history - 1` stored frames of the stream plus `frame`, zeroed by the
same rule (after a terminal entry only `frame` is left). Without `frame` it is
the last `history` stored frames. Slots before a stream's first entry are
zero. For evaluation episodes, which must not enter the replay, a separate
small `ReplayMemory(capacity=history + 1, ...)` serves as the frame stack.

Sampling uses xoshiro256** seeded with splitmix64(`seed`); its state is part
of a saved file, so a loaded memory samples exactly what the saved one would.

Save file (little-endian), written atomically (temporary file in the same
directory, fsync, rename, fsync of the directory)::

    "TFDQNRPL"  u32 version (1 or 2)  u32 header_bytes
    u64 capacity, history, num_envs, rank; u64 frame_shape[rank]
    u64 rng_state[4]; per stream: u64 size, u64 write_position
    version 2: u64 n_step; f64 discount, priority_exponent, max_priority;
               per stream: u64 entries ever added
    u64 payload_bytes; u64 XXH64(header so far)
    per stream: frames uint8[size, *frame_shape], actions int32[size],
                rewards float32[size], terminals uint8[size],
                (prioritized) priorities float64[size]
    u64 XXH64(all bytes above)  "TFDQNEND"

Version 1 is written for DQN 3.0's configuration (n_step 1, uniform), so that older
builds read those files; version 2 otherwise. Both are read.

Threads: every method takes the memory's lock and releases the GIL while it
copies frames, so a sampler thread runs beside the acting loop; `save` holds
the lock until the file is on disk (adds and samples from other threads wait).

Errors: bad arguments raise ValueError (IndexError for an env index), each
message naming the argument and the value received; a file that is not a
replay file, or is truncated, corrupted or of another version, raises
ValueError; an I/O failure raises OSError (FileNotFoundError, ...). A failed
`add` or `save` changes nothing.

Example::

    mem = ReplayMemory(1_000_000, frame_shape=(84, 84), history=4, num_envs=1)
    mem.add(frames[None], [action], [reward], [terminal])
    s, a, r, s2, term = mem.sample(32)
    mem.save("replay.bin")
    mem = ReplayMemory.load("replay.bin")

API (see also `_replay.pyi`):

* `ReplayMemory(capacity, frame_shape=(84, 84), history=4, num_envs=1, seed=0, *,
  n_step=1, discount=0.99, priority_exponent=0.0)`; each stream needs room for
  `history + n_step` entries.
* `add(frames, actions, rewards, terminals)`: frames uint8
  `[num_envs, *frame_shape]`; actions integers in [0, 2**31), rewards finite
  reals, terminals bools (or 0/1), each of shape `[num_envs]`.
* `add_stream(env_index, frames, actions, rewards, terminals)`: k consecutive entries
  of one stream (frames `[k, *frame_shape]`, the rest `[k]`), for streams fed at their
  own pace (distributed actors); the same contents as adding them with `add`. The
  transition of a stream's k-th entry (from 0) has the id `k * num_envs + env_index`, so
  a producer can set its transitions' priorities itself; `stream_added(env_index)` counts
  a stream's entries ever added.
* `sample(batch_size) -> (s, a, r, s2, term)`: s, s2 uint8
  `[batch_size, history, *frame_shape]`; a int32, r float32, term float32
  (1.0 when s2's newest frame is terminal), each `[batch_size]`.
* `sample_into(s, a, r, s2, term)`: the same into preallocated C-contiguous
  arrays of exactly those dtypes (batch size = `s.shape[0]`); allocates
  nothing. The GIL is released while copying, in both.
* `sample_windows(batch_size) -> (windows, a, r, term)` and
  `sample_windows_into(windows, a, r, term)`: the same draws, each window's
  `history + 1` frames written once: windows uint8
  `[batch_size, history + 1, *frame_shape]`, `s = windows[:, :-1]`,
  `s2 = windows[:, 1:]` (s and s2 share their zeroing). 3/8 fewer bytes than
  s and s2 for history 4: the fastest way to feed a graph that slices them.
* `sample_batch(batch_size, importance_exponent=1.0) -> ReplayBatch(s, a, r, s2, term,
  discount, index, weight)`: any configuration. `discount` is the bootstrap discount
  per sample (pass it to `dqn_targets(..., discount=batch.discount)`), `index` int64 ids
  for `update_priorities`, `weight` float32 importance weights (1 when uniform). The
  four methods above serve `n_step=1` with uniform sampling only (DQN 3.0's memory) and
  raise ValueError otherwise.
* `update_priorities(indices, priorities) -> int`, `priorities(indices)` (0 for ids no
  longer valid), `n_step`, `discount`, `priority_exponent`, `max_priority`.
* `priority_total`: priority^alpha summed over the valid transitions (P(i) =
  priority_i^alpha / priority_total), and `priority_min`, the smallest
  priority^alpha of a valid transition (inf when none is; both 0 when uniform):
  what a sharded replay (Ape-X's --replay-shards) needs to sample exactly by
  priority across shards and weight the draws as one memory would.
* `acting_state(env_index, frame=None)` -> uint8 `[history, *frame_shape]`;
  `acting_states(frames=None, out=None)` -> uint8
  `[num_envs, history, *frame_shape]`.
* `len(mem)` (entries stored, all streams), `stream_size(env_index)`,
  `num_valid_windows`, `capacity`, `frame_shape`, `history`, `num_envs`,
  `rng_state`.
* `save(path)`; `ReplayMemory.load(path)` (a static method returning a new
  memory).
"""

from tfdqn_ops._replay import ReplayBatch, ReplayMemory

__all__ = ["ReplayBatch", "ReplayMemory"]
