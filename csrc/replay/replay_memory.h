// DQN 3.0 replay memory (TransitionTable.lua) in framework-free C++17.
//
// One frame per transition; the `history`-frame states are rebuilt at sample
// time. Layout and rules (docs: tfdqn_ops/replay.py):
//
// * Entry k of a stream holds (frame_k, action taken at k, reward that
//   followed, terminal flag of frame_k).
// * Each environment stream owns a contiguous ring segment of the frame
//   buffer; segment e holds capacity / num_envs entries (the first
//   capacity % num_envs segments one more), so histories never mix streams.
// * A window is history + 1 consecutive entries i .. i+H of one segment in
//   the order they were written (never straddling the write position):
//   s = frames[i .. i+H-1], s2 = frames[i+1 .. i+H], a, r from entry i+H-1,
//   term from entry i+H. Windows whose entry i+H-1 is terminal are rejected.
// * Zeroing: scanning back from the newest slot of a state, once a terminal
//   flag is met in an earlier slot, that slot and all older ones are zero.
//   Since entry i+H-1 of an accepted window is not terminal, s and s2 share
//   one zero mask over the H+1 frames of the window: frame f (0-based in the
//   window) is zero iff any of t[i+f .. i+H-2] is set.
//
// * n-step returns (n_step = n >= 1): the transition at entry t (the newest
//   frame of s) has the return R = sum_{k<m} discount^k r_{t+k}, where m = n,
//   or m = k + 1 when entry t+k+1 is terminal (the return stops there);
//   s2 is the state whose newest frame is entry t+m, term is entry t+m's flag
//   and the bootstrap discount is 0 when term is set, else discount^m. A
//   transition can be drawn once entries t+1 .. t+n are stored, so windows
//   span entries t-H+1 .. t+n and never straddle the write position. n = 1 is
//   DQN 3.0's transition, drawn with the same random numbers as before.
// * Prioritized sampling (priority_exponent alpha > 0, Schaul et al. 2016,
//   proportional): every valid transition has a priority p > 0 (new ones the
//   largest priority seen so far, 1 at first) and is drawn with probability
//   p^alpha / sum_j p_j^alpha from a sum tree over the slots; a transition
//   that is not (or no longer) valid has priority 0 and is never drawn.
//
// Thread safety: every public method takes an internal mutex, so the Python
// binding can release the GIL around them.

#ifndef TFDQN_CSRC_REPLAY_REPLAY_MEMORY_H_
#define TFDQN_CSRC_REPLAY_REPLAY_MEMORY_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "sum_tree.h"
#include "xoshiro256.h"
#include "xxh64.h"

namespace tfdqn {

// An I/O failure while saving or loading (maps to OSError; carries errno).
class IoError : public std::runtime_error {
 public:
  IoError(int err, const std::string& message, const std::string& path)
      : std::runtime_error(message), errno_value_(err), path_(path) {}
  int errno_value() const { return errno_value_; }
  const std::string& path() const { return path_; }

 private:
  int errno_value_;
  std::string path_;
};

// A file that is not a valid replay file: foreign, truncated, corrupted, or
// of an unsupported version (maps to ValueError).
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Options beyond DQN 3.0's memory; the defaults are DQN 3.0's.
struct ReplayOptions {
  int64_t n_step = 1;              // >= 1
  double discount = 0.99;          // in [0, 1]: the n-step return's discount
  double priority_exponent = 0.0;  // alpha >= 0; 0: uniform sampling
};

// What SampleBatchInto writes besides the frames, one value per sample.
struct BatchColumns {
  int32_t* a;
  float* r;         // the (n-step) return
  float* term;      // 1 when the return ended at a terminal entry
  float* discount;  // bootstrap discount: 0 when term, else discount^m
  int64_t* index;   // the transition's id for UpdatePriorities
  float* weight;    // importance weight (1 when sampling is uniform)
};

class ReplayMemory {
 public:
  // Throws std::invalid_argument naming the bad argument.
  ReplayMemory(int64_t capacity, const std::vector<int64_t>& frame_shape, int64_t history,
               int64_t num_envs, uint64_t seed, const ReplayOptions& options = ReplayOptions());
  ~ReplayMemory();
  ReplayMemory(const ReplayMemory&) = delete;
  ReplayMemory& operator=(const ReplayMemory&) = delete;

  // Appends one entry to every stream. frames: num_envs * frame_bytes() bytes
  // (C order, [num_envs, *frame_shape]); actions, rewards, terminals: num_envs
  // values each. Values are checked (actions in [0, 2^31), rewards finite in
  // float32 range, terminals 0 or 1) before anything is written, so a failed
  // call changes nothing.
  void Add(const uint8_t* frames, const int64_t* actions, const double* rewards,
           const double* terminals);

  // Appends `count` consecutive entries to stream env_index alone (frames:
  // count * frame_bytes() bytes; the other arrays count values), checked as
  // Add checks them. For streams fed at their own pace, e.g. by distributed
  // actors. The entry added k-th to a stream (from 0) has the sequence number
  // k, and its transition the id k * num_envs + env_index (UpdatePriorities).
  void AddStream(int64_t env_index, int64_t count, const uint8_t* frames, const int64_t* actions,
                 const double* rewards, const double* terminals);

  // Samples batch_size windows uniformly among the valid ones (with
  // replacement) into caller buffers: s, s2: [batch, history, *frame_shape]
  // uint8; a: int32 [batch]; r, term: float32 [batch].
  void SampleInto(int64_t batch_size, uint8_t* s, int32_t* a, float* r, uint8_t* s2, float* term);

  // Any configuration: batch_size transitions (by priority when
  // priority_exponent > 0, else uniformly) into s, s2 ([batch, history,
  // *frame_shape]) and the columns. importance_exponent (beta >= 0) sets the
  // weights (N * P(i))^-beta / max_j (N * P(j))^-beta over all N valid
  // transitions; they are 1 when sampling is uniform.
  void SampleBatchInto(int64_t batch_size, double importance_exponent, uint8_t* s, uint8_t* s2,
                       const BatchColumns& out);

  // Sets the priorities (finite, > 0) of transitions by the ids SampleBatchInto
  // returned. Ids of transitions overwritten (or no longer valid) since they
  // were sampled are ignored; an id never issued, or a bad priority, throws
  // std::invalid_argument before anything changes. Returns how many were set.
  int64_t UpdatePriorities(const int64_t* ids, const double* priorities, int64_t count);

  // The current priorities of transitions by id (0 for ids no longer valid).
  void PrioritiesOf(const int64_t* ids, int64_t count, double* out) const;

  // Throws what SampleInto would throw for batch_size before any draw:
  // std::invalid_argument if batch_size <= 0 or no window is valid yet.
  void CheckSampleable(int64_t batch_size) const;

  // The same draws as SampleInto, but each window's history + 1 frames are
  // written once: windows [batch, history + 1, *frame_shape], with
  // s = windows[:, :history] and s2 = windows[:, 1:] (they share the zero
  // mask), so 3/8 fewer bytes are written for history 4.
  void SampleWindowsInto(int64_t batch_size, uint8_t* windows, int32_t* a, float* r, float* term);

  // The state an agent acts on in stream env_index, written to out
  // ([history, *frame_shape]). With next_frame == nullptr: the last `history`
  // stored entries; otherwise next_frame (the newest observation, not yet
  // stored) is the newest slot and the last history - 1 stored entries fill
  // the older ones. Same zeroing rule; slots before the first entry are zero.
  void ActingState(int64_t env_index, const uint8_t* next_frame, uint8_t* out) const;

  // Atomic: writes a temporary file in the same directory, fsyncs it,
  // renames it over `path` and fsyncs the directory; on any error the temporary
  // file is removed and `path` is left as it was.
  void Save(const std::string& path) const;
  static std::unique_ptr<ReplayMemory> Load(const std::string& path);

  int64_t capacity() const { return capacity_; }
  int64_t history() const { return history_; }
  int64_t num_envs() const { return num_envs_; }
  const std::vector<int64_t>& frame_shape() const { return frame_shape_; }
  int64_t frame_bytes() const { return frame_bytes_; }
  int64_t size() const;  // entries stored, all streams together
  int64_t stream_size(int64_t env_index) const;
  int64_t stream_added(int64_t env_index) const;  // entries ever added to the stream
  int64_t num_valid_windows() const;              // windows that sample() can return
  std::array<uint64_t, 4> rng_state() const;
  const ReplayOptions& options() const { return options_; }
  bool prioritized() const { return options_.priority_exponent > 0.0; }
  double max_priority() const;
  // priority^priority_exponent summed over the valid transitions: P(i) is
  // priority_i^alpha / priority_total(). A sharded replay chooses each draw's
  // shard by these totals, which keeps sampling exactly proportional over all
  // shards. 0 when uniform or when nothing is valid.
  double priority_total() const;
  // The smallest priority^priority_exponent of a valid transition (the one
  // with the largest importance weight); +infinity when none is valid, 0 when
  // uniform.
  double priority_min() const;

 private:
  struct Segment {
    int64_t begin;  // first entry of the segment in the flat arrays
    int64_t capacity;
    int64_t size = 0;       // entries stored
    int64_t write = 0;      // next slot to write, relative to begin
    int64_t terminals = 0;  // terminal flags among the stored entries
    int64_t added = 0;      // entries ever added (the newest has sequence added - 1)
  };

  void CheckEnvIndex(int64_t env_index) const;
  void AppendLocked(int64_t env_index, const uint8_t* frame, int64_t action, double reward,
                    double terminal);
  // Flat entry index of the entry at logical position i of segment seg
  // (0 = oldest stored entry); requires 0 <= i < seg.capacity.
  static int64_t Slot(const Segment& seg, int64_t i) {
    int64_t oldest = seg.size == seg.capacity ? seg.write : 0;
    int64_t j = oldest + i;
    if (j >= seg.capacity) j -= seg.capacity;
    return seg.begin + j;
  }
  // Logical position of a flat slot in its segment (0 = oldest stored entry).
  static int64_t Logical(const Segment& seg, int64_t slot) {
    const int64_t oldest = seg.size == seg.capacity ? seg.write : 0;
    int64_t j = slot - seg.begin - oldest;
    if (j < 0) j += seg.capacity;
    return j;
  }
  int64_t SegmentOfSlot(int64_t slot) const;
  // Whether the transition at logical position t of seg can be drawn.
  bool ValidTransitionLocked(const Segment& seg, int64_t t) const;
  void SetPriorityLocked(int64_t slot, double priority);
  // Load's parts (replay_file.cc): the streams' positions from a file header (returns the
  // payload bytes they imply), and the loaded entries checked, the priority trees rebuilt.
  uint64_t AdoptStreams(const std::vector<std::array<uint64_t, 2>>& positions,
                        const std::vector<uint64_t>& added, const std::string& where);
  void CheckLoadedEntries(const std::string& where);
  int64_t CandidatesLocked(const Segment& seg) const;
  int64_t ValidLocked(const Segment& seg) const;
  int64_t NumValidLocked() const;
  void CheckSampleableLocked(int64_t batch_size) const;
  // Draws batch_size valid windows uniformly (their flat slots into
  // scratch_, their lengths into steps_) and writes a, r, term (and discount,
  // index when not null). Throws when batch_size <= 0 or no window is valid.
  void DrawLocked(int64_t batch_size, int32_t* a, float* r, float* term, float* discount,
                  int64_t* index);
  // The same by priority, with importance weights.
  void DrawPrioritizedLocked(int64_t batch_size, double importance_exponent,
                             const BatchColumns& out);
  // Window b of the batch: the transition at logical t of seg; fills the
  // window's slots and its columns.
  void TakeWindowLocked(int64_t b, const Segment& seg, int64_t t, int32_t* a, float* r, float* term,
                        float* discount, int64_t* index);
  // Copies the drawn windows' frames: into s and s2, or into windows.
  void CopyLocked(int64_t batch_size, uint8_t* s, uint8_t* s2, uint8_t* windows) const;
  // sample / sample_into / sample_windows serve DQN 3.0's configuration only.
  void CheckPlainLocked(const char* method) const;

  int64_t capacity_;
  std::vector<int64_t> frame_shape_;
  int64_t frame_bytes_;
  int64_t history_;
  int64_t num_envs_;
  ReplayOptions options_;

  uint8_t* frames_ = nullptr;  // capacity_ * frame_bytes_, lazily committed
  size_t frames_mapped_bytes_ = 0;
  std::vector<int32_t> actions_;
  std::vector<float> rewards_;
  std::vector<uint8_t> terminals_;
  std::vector<Segment> segments_;
  Xoshiro256 rng_;

  // Prioritized sampling only: the raw priority of the transition at each slot
  // (0 when it is not valid), and trees over priority^alpha.
  std::vector<double> priorities_;
  std::unique_ptr<SumTree> sum_tree_;
  std::unique_ptr<MinTree> min_tree_;
  double max_priority_ = 1.0;

  mutable std::mutex mu_;
  std::vector<int64_t> scratch_;  // per-batch window slots (history + n_step each), reused
  std::vector<int64_t> steps_;    // per-batch steps m of each return
};

// "[84, 84]": shapes in error messages, shared with the Python binding.
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace tfdqn

#endif  // TFDQN_CSRC_REPLAY_REPLAY_MEMORY_H_
