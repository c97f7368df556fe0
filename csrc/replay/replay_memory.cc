#include "replay_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>

namespace tfdqn {

namespace {

constexpr int64_t kMaxHistory = 64;  // the zero mask is a 64-bit word
constexpr int64_t kMaxNStep = 1000;

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// ---------------------------------------------------------------- memory

ReplayMemory::ReplayMemory(int64_t capacity, const std::vector<int64_t>& frame_shape,
                           int64_t history, int64_t num_envs, uint64_t seed,
                           const ReplayOptions& options)
    : capacity_(capacity),
      frame_shape_(frame_shape),
      frame_bytes_(1),
      history_(history),
      num_envs_(num_envs),
      options_(options),
      rng_(seed) {
  if (options.n_step < 1 || options.n_step > kMaxNStep) {
    throw std::invalid_argument("n_step: expected an integer in [1, " + std::to_string(kMaxNStep) +
                                "], got " + std::to_string(options.n_step));
  }
  if (!(options.discount >= 0.0 && options.discount <= 1.0)) {
    std::ostringstream os;
    os << "discount: expected a value in [0, 1], got " << options.discount;
    throw std::invalid_argument(os.str());
  }
  if (!(options.priority_exponent >= 0.0) || !std::isfinite(options.priority_exponent)) {
    std::ostringstream os;
    os << "priority_exponent: expected a finite value >= 0 (0: uniform sampling), got "
       << options.priority_exponent;
    throw std::invalid_argument(os.str());
  }
  if (history < 1 || history > kMaxHistory) {
    throw std::invalid_argument("history: expected an integer in [1, " +
                                std::to_string(kMaxHistory) + "], got " + std::to_string(history));
  }
  if (num_envs < 1) {
    throw std::invalid_argument("num_envs: expected an integer >= 1, got " +
                                std::to_string(num_envs));
  }
  if (frame_shape.empty()) {
    throw std::invalid_argument("frame_shape: expected at least one dimension, got []");
  }
  for (int64_t d : frame_shape) {
    if (d <= 0) {
      throw std::invalid_argument("frame_shape: expected positive dimensions, got " +
                                  ShapeString(frame_shape));
    }
    if (frame_bytes_ > std::numeric_limits<int32_t>::max() / d) {
      throw std::invalid_argument("frame_shape: " + ShapeString(frame_shape) +
                                  " is too large (over 2^31 bytes a frame)");
    }
    frame_bytes_ *= d;
  }
  const int64_t n = options.n_step;
  if (capacity < 0 || capacity / num_envs < history + n) {
    throw std::invalid_argument(
        "capacity: expected at least (history + n_step) * num_envs = " +
        std::to_string((history + n) * num_envs) + " (history = " + std::to_string(history) +
        ", n_step = " + std::to_string(n) + ", num_envs = " + std::to_string(num_envs) + "), got " +
        std::to_string(capacity));
  }
  if (capacity > std::numeric_limits<int64_t>::max() / frame_bytes_) {
    throw std::invalid_argument("capacity: " + std::to_string(capacity) + " frames of " +
                                std::to_string(frame_bytes_) + " bytes overflow a 64-bit size");
  }
  frames_mapped_bytes_ = static_cast<size_t>(capacity * frame_bytes_);
  // An anonymous mapping commits pages only when first written, so an unused
  // part of the memory costs no RSS; huge pages cut TLB misses when sampling
  // random frames of a multi-GB buffer.
  void* p = mmap(nullptr, frames_mapped_bytes_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    throw std::bad_alloc();
  }
#ifdef MADV_HUGEPAGE
  madvise(p, frames_mapped_bytes_, MADV_HUGEPAGE);
#endif
  frames_ = static_cast<uint8_t*>(p);

  actions_.assign(capacity, 0);
  rewards_.assign(capacity, 0.0f);
  terminals_.assign(capacity, 0);
  if (prioritized()) {
    priorities_.assign(capacity, 0.0);
    sum_tree_ = std::make_unique<SumTree>(capacity);
    min_tree_ = std::make_unique<MinTree>(capacity);
  }
  const int64_t base = capacity / num_envs;
  const int64_t extra = capacity % num_envs;
  int64_t begin = 0;
  segments_.resize(num_envs);
  for (int64_t e = 0; e < num_envs; ++e) {
    segments_[e].begin = begin;
    segments_[e].capacity = base + (e < extra ? 1 : 0);
    begin += segments_[e].capacity;
  }
}

ReplayMemory::~ReplayMemory() {
  if (frames_ != nullptr) munmap(frames_, frames_mapped_bytes_);
}

void ReplayMemory::CheckEnvIndex(int64_t env_index) const {
  if (env_index < 0 || env_index >= num_envs_) {
    throw std::out_of_range("env_index: " + std::to_string(env_index) + " is not in [0, " +
                            std::to_string(num_envs_) + ")");
  }
}

namespace {

// Every value of entries [0, count) checked before anything is written, so a failed add
// changes nothing; messages name the position as the caller's arrays index it.
void CheckEntries(int64_t count, const int64_t* actions, const double* rewards,
                  const double* terminals) {
  for (int64_t k = 0; k < count; ++k) {
    if (actions[k] < 0 || actions[k] > std::numeric_limits<int32_t>::max()) {
      throw std::invalid_argument("actions[" + std::to_string(k) +
                                  "] = " + std::to_string(actions[k]) + " is not in [0, 2^31)");
    }
    if (!std::isfinite(rewards[k]) || std::fabs(rewards[k]) > FLT_MAX) {
      std::ostringstream os;
      os << "rewards[" << k << "] = " << rewards[k] << " is not a finite float32";
      throw std::invalid_argument(os.str());
    }
    if (terminals[k] != 0.0 && terminals[k] != 1.0) {
      std::ostringstream os;
      os << "terminals[" << k << "] = " << terminals[k] << " is not 0 or 1";
      throw std::invalid_argument(os.str());
    }
  }
}

}  // namespace

void ReplayMemory::Add(const uint8_t* frames, const int64_t* actions, const double* rewards,
                       const double* terminals) {
  CheckEntries(num_envs_, actions, rewards, terminals);
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t e = 0; e < num_envs_; ++e) {
    AppendLocked(e, frames + e * frame_bytes_, actions[e], rewards[e], terminals[e]);
  }
}

void ReplayMemory::AddStream(int64_t env_index, int64_t count, const uint8_t* frames,
                             const int64_t* actions, const double* rewards,
                             const double* terminals) {
  CheckEnvIndex(env_index);
  if (count < 0) {
    throw std::invalid_argument("count: expected >= 0, got " + std::to_string(count));
  }
  CheckEntries(count, actions, rewards, terminals);
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t k = 0; k < count; ++k) {
    AppendLocked(env_index, frames + k * frame_bytes_, actions[k], rewards[k], terminals[k]);
  }
}

int64_t ReplayMemory::stream_added(int64_t env_index) const {
  CheckEnvIndex(env_index);
  std::lock_guard<std::mutex> lock(mu_);
  return segments_[env_index].added;
}

void ReplayMemory::AppendLocked(int64_t e, const uint8_t* frame, int64_t action, double reward,
                                double terminal) {
  Segment& seg = segments_[e];
  const int64_t slot = seg.begin + seg.write;
  const bool overwrote = seg.size == seg.capacity;
  if (overwrote) {
    seg.terminals -= terminals_[slot];
  } else {
    ++seg.size;
  }
  std::memcpy(frames_ + slot * frame_bytes_, frame, frame_bytes_);
  actions_[slot] = static_cast<int32_t>(action);
  rewards_[slot] = static_cast<float>(reward);
  terminals_[slot] = terminal != 0.0 ? 1 : 0;
  seg.terminals += terminals_[slot];
  if (++seg.write == seg.capacity) seg.write = 0;
  ++seg.added;
  if (prioritized()) {
    // What this add changed (ValidTransitionLocked): the overwritten slot's old transition
    // and, once the oldest entry is gone, the transition whose history began with it are
    // no longer valid; the transition n entries back now has its n entries.
    SetPriorityLocked(slot, 0.0);
    if (overwrote && history_ >= 2) SetPriorityLocked(Slot(seg, history_ - 2), 0.0);
    const int64_t t = seg.size - 1 - options_.n_step;
    if (t >= 0 && ValidTransitionLocked(seg, t)) SetPriorityLocked(Slot(seg, t), max_priority_);
  }
}

bool ReplayMemory::ValidTransitionLocked(const Segment& seg, int64_t t) const {
  return t >= history_ - 1 && t + options_.n_step <= seg.size - 1 && !terminals_[Slot(seg, t)];
}

void ReplayMemory::SetPriorityLocked(int64_t slot, double priority) {
  priorities_[slot] = priority;
  const double scaled = priority > 0.0 ? std::pow(priority, options_.priority_exponent) : 0.0;
  sum_tree_->set(slot, scaled);
  min_tree_->set(slot, priority > 0.0 ? scaled : MinTree::kEmpty);
}

int64_t ReplayMemory::SegmentOfSlot(int64_t slot) const {
  int64_t lo = 0, hi = num_envs_ - 1;  // the last segment whose begin <= slot
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (segments_[mid].begin <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

int64_t ReplayMemory::CandidatesLocked(const Segment& seg) const {
  return std::max<int64_t>(0, seg.size - history_ - options_.n_step + 1);
}

int64_t ReplayMemory::ValidLocked(const Segment& seg) const {
  const int64_t candidates = CandidatesLocked(seg);
  if (candidates == 0) return 0;
  // Window starts i in [0, candidates) are rejected when the entry at logical
  // position t = i + history - 1 is terminal: positions [history-1, size-1-n].
  // Count them as all terminals minus those at positions [0, history-2] and
  // [size-n, size-1] (disjoint, since candidates > 0).
  int64_t invalid = seg.terminals;
  for (int64_t l = 0; l + 1 < history_; ++l) invalid -= terminals_[Slot(seg, l)];
  for (int64_t l = seg.size - options_.n_step; l < seg.size; ++l) {
    invalid -= terminals_[Slot(seg, l)];
  }
  return candidates - invalid;
}

int64_t ReplayMemory::NumValidLocked() const {
  int64_t total = 0;
  for (const Segment& seg : segments_) total += ValidLocked(seg);
  return total;
}

int64_t ReplayMemory::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t total = 0;
  for (const Segment& seg : segments_) total += seg.size;
  return total;
}

int64_t ReplayMemory::stream_size(int64_t env_index) const {
  CheckEnvIndex(env_index);
  std::lock_guard<std::mutex> lock(mu_);
  return segments_[env_index].size;
}

int64_t ReplayMemory::num_valid_windows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return NumValidLocked();
}

std::array<uint64_t, 4> ReplayMemory::rng_state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rng_.state();
}

void ReplayMemory::CheckPlainLocked(const char* method) const {
  if (options_.n_step != 1 || prioritized()) {
    throw std::invalid_argument(
        std::string(method) +
        ": serves n_step = 1 with uniform sampling (DQN 3.0's memory); this memory has n_step = " +
        std::to_string(options_.n_step) + (prioritized() ? " and prioritized sampling" : "") +
        ": use sample_batch, which also returns the bootstrap discounts, ids and weights");
  }
}

void ReplayMemory::SampleInto(int64_t batch_size, uint8_t* s, int32_t* a, float* r, uint8_t* s2,
                              float* term) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckPlainLocked("sample");
  DrawLocked(batch_size, a, r, term, nullptr, nullptr);
  CopyLocked(batch_size, s, s2, nullptr);
}

void ReplayMemory::SampleWindowsInto(int64_t batch_size, uint8_t* windows, int32_t* a, float* r,
                                     float* term) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckPlainLocked("sample_windows");
  DrawLocked(batch_size, a, r, term, nullptr, nullptr);
  CopyLocked(batch_size, nullptr, nullptr, windows);
}

void ReplayMemory::SampleBatchInto(int64_t batch_size, double importance_exponent, uint8_t* s,
                                   uint8_t* s2, const BatchColumns& out) {
  if (!(importance_exponent >= 0.0) || !std::isfinite(importance_exponent)) {
    std::ostringstream os;
    os << "importance_exponent: expected a finite value >= 0, got " << importance_exponent;
    throw std::invalid_argument(os.str());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (prioritized()) {
    DrawPrioritizedLocked(batch_size, importance_exponent, out);
  } else {
    DrawLocked(batch_size, out.a, out.r, out.term, out.discount, out.index);
    std::fill(out.weight, out.weight + batch_size, 1.0f);
  }
  CopyLocked(batch_size, s, s2, nullptr);
}

void ReplayMemory::CheckSampleable(int64_t batch_size) const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSampleableLocked(batch_size);
}

double ReplayMemory::max_priority() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_priority_;
}

double ReplayMemory::priority_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prioritized() ? sum_tree_->total() : 0.0;
}

double ReplayMemory::priority_min() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prioritized() ? min_tree_->min() : 0.0;
}

void ReplayMemory::CheckSampleableLocked(int64_t batch_size) const {
  if (batch_size <= 0) {
    throw std::invalid_argument("batch_size: expected a positive integer, got " +
                                std::to_string(batch_size));
  }
  if (NumValidLocked() == 0) {
    int64_t stored = 0;
    for (const Segment& seg : segments_) stored += seg.size;
    throw std::invalid_argument(
        "sample: no valid window yet (a window is history + n_step = " +
        std::to_string(history_ + options_.n_step) +
        " consecutive entries of one stream whose entry " + std::to_string(history_ - 1) +
        ", the newest frame of s, is not terminal); entries stored: " + std::to_string(stored));
  }
}

void ReplayMemory::DrawLocked(int64_t batch_size, int32_t* a, float* r, float* term,
                              float* discount, int64_t* index) {
  CheckSampleableLocked(batch_size);
  const int64_t H = history_;
  // Candidate window starts of all streams, numbered stream after stream.
  std::vector<int64_t> ends(num_envs_);
  int64_t total = 0;
  for (int64_t e = 0; e < num_envs_; ++e) {
    total += CandidatesLocked(segments_[e]);
    ends[e] = total;
  }
  scratch_.resize(static_cast<size_t>(batch_size * (H + options_.n_step)));
  steps_.resize(static_cast<size_t>(batch_size));
  for (int64_t b = 0; b < batch_size; ++b) {
    const Segment* seg;
    int64_t i;
    while (true) {  // rejection: terminates since a valid window exists
      const int64_t u = static_cast<int64_t>(rng_.Below(total));
      const int64_t e = std::upper_bound(ends.begin(), ends.end(), u) - ends.begin();
      seg = &segments_[e];
      i = u - (ends[e] - CandidatesLocked(*seg));
      if (!terminals_[Slot(*seg, i + H - 1)]) break;
    }
    TakeWindowLocked(b, *seg, i + H - 1, a, r, term, discount, index);
  }
}

void ReplayMemory::TakeWindowLocked(int64_t b, const Segment& seg, int64_t t, int32_t* a, float* r,
                                    float* term, float* discount, int64_t* index) {
  const int64_t H = history_;
  const int64_t n = options_.n_step;
  int64_t* w = scratch_.data() + b * (H + n);
  for (int64_t f = 0; f < H + n; ++f) w[f] = Slot(seg, t - H + 1 + f);
  const int64_t* after = w + H;  // entries t+1 .. t+n
  a[b] = actions_[w[H - 1]];
  if (n == 1) {  // DQN 3.0's transition, exactly
    r[b] = rewards_[w[H - 1]];
    term[b] = terminals_[after[0]];
    steps_[b] = 1;
    if (discount != nullptr) {
      discount[b] = term[b] != 0.0f ? 0.0f : static_cast<float>(options_.discount);
    }
  } else {
    // R = sum_{k<m} gamma^k r_{t+k}, stopping after the first terminal entry t+k+1.
    double ret = 0.0, scale = 1.0;
    int64_t m = 0;
    bool ended = false;
    while (m < n && !ended) {
      ret += scale * rewards_[(m == 0) ? w[H - 1] : after[m - 1]];
      scale *= options_.discount;
      ended = terminals_[after[m]] != 0;
      ++m;
    }
    r[b] = static_cast<float>(ret);
    term[b] = ended ? 1.0f : 0.0f;
    steps_[b] = m;
    if (discount != nullptr) discount[b] = ended ? 0.0f : static_cast<float>(scale);
  }
  if (index != nullptr) {
    // The id: the entry's sequence number in its stream, interleaved with the stream.
    const int64_t sequence = seg.added - seg.size + t;
    index[b] = sequence * num_envs_ + (&seg - segments_.data());
  }
}

void ReplayMemory::DrawPrioritizedLocked(int64_t batch_size, double importance_exponent,
                                         const BatchColumns& out) {
  CheckSampleableLocked(batch_size);
  const int64_t H = history_;
  scratch_.resize(static_cast<size_t>(batch_size * (H + options_.n_step)));
  steps_.resize(static_cast<size_t>(batch_size));
  const double total = sum_tree_->total();
  const double count = static_cast<double>(NumValidLocked());
  // The largest weight of any valid transition, (N * P_min)^-beta, normalizes them all.
  const double max_weight = std::pow(count * min_tree_->min() / total, -importance_exponent);
  // Stratified: one draw from each of batch_size equal parts of [0, total) (Schaul et al.),
  // so a batch covers the whole range of priorities. All descents at once (find_many).
  std::vector<double> u(static_cast<size_t>(batch_size));
  std::vector<int64_t> slots(static_cast<size_t>(batch_size));
  for (int64_t b = 0; b < batch_size; ++b) {
    const double unit = static_cast<double>(rng_.Next() >> 11) * 0x1.0p-53;  // [0, 1)
    u[b] = (static_cast<double>(b) + unit) * total / static_cast<double>(batch_size);
  }
  sum_tree_->find_many(u.data(), batch_size, slots.data());
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t slot = slots[b];
    const Segment& seg = segments_[SegmentOfSlot(slot)];
    TakeWindowLocked(b, seg, Logical(seg, slot), out.a, out.r, out.term, out.discount, out.index);
    const double p = sum_tree_->get(slot) / total;
    out.weight[b] = static_cast<float>(std::pow(count * p, -importance_exponent) / max_weight);
  }
}

int64_t ReplayMemory::UpdatePriorities(const int64_t* ids, const double* priorities,
                                       int64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!prioritized()) {
    throw std::invalid_argument(
        "update_priorities: this memory samples uniformly (priority_exponent = 0)");
  }
  for (int64_t k = 0; k < count; ++k) {  // every check before any change
    if (!(priorities[k] > 0.0) || !std::isfinite(priorities[k])) {
      std::ostringstream os;
      os << "priorities[" << k << "] = " << priorities[k] << " is not a finite value > 0";
      throw std::invalid_argument(os.str());
    }
    const int64_t e = ids[k] >= 0 ? ids[k] % num_envs_ : 0;
    if (ids[k] < 0 || ids[k] / num_envs_ >= segments_[e].added) {
      throw std::invalid_argument("indices[" + std::to_string(k) + "] = " + std::to_string(ids[k]) +
                                  " is not the id of any entry added to this memory (the k-th "
                                  "entry of stream e has id k * num_envs + e)");
    }
  }
  int64_t set = 0;
  for (int64_t k = 0; k < count; ++k) {
    const Segment& seg = segments_[ids[k] % num_envs_];
    const int64_t t = ids[k] / num_envs_ - (seg.added - seg.size);  // logical position
    if (t < 0 || !ValidTransitionLocked(seg, t)) continue;          // overwritten since
    max_priority_ = std::max(max_priority_, priorities[k]);
    SetPriorityLocked(Slot(seg, t), priorities[k]);
    ++set;
  }
  return set;
}

void ReplayMemory::PrioritiesOf(const int64_t* ids, int64_t count, double* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t k = 0; k < count; ++k) {
    out[k] = 0.0;
    if (ids[k] < 0) continue;
    const Segment& seg = segments_[ids[k] % num_envs_];
    const int64_t t = ids[k] / num_envs_ - (seg.added - seg.size);
    if (t < 0 || t >= seg.size || !ValidTransitionLocked(seg, t)) continue;
    out[k] = prioritized() ? priorities_[Slot(seg, t)] : 1.0;
  }
}

void ReplayMemory::CopyLocked(int64_t batch_size, uint8_t* s, uint8_t* s2, uint8_t* windows) const {
  const int64_t H = history_;
  const int64_t W = H + options_.n_step;  // slots per window; s2 starts steps_[b] after s
  const int64_t* slots = scratch_.data();
  const size_t fb = static_cast<size_t>(frame_bytes_);
  auto put = [fb](uint8_t* dst, const uint8_t* src, bool zero) {
    if (zero) {
      std::memset(dst, 0, fb);
    } else {
      std::memcpy(dst, src, fb);
    }
  };
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t* w = slots + b * W;
    const int64_t m = steps_[b];
    if (b + 1 < batch_size) {
      // Touch the next window's frames early: each page and the last line.
      const int64_t* next = w + W;
      for (int64_t f = 0; f < H + steps_[b + 1]; ++f) {
        const uint8_t* p = frames_ + next[f] * frame_bytes_;
        for (size_t off = 0; off < fb; off += 4096) __builtin_prefetch(p + off);
        __builtin_prefetch(p + fb - 1);
      }
    }
    // Bit f set: frame f of the window is zero (an earlier episode): some
    // t[f .. H-2] is set. Frames H-1 .. H-1+m are never zero (entry H-1 is
    // not terminal, and a return stops at its first terminal entry).
    uint64_t zero = 0;
    bool z = false;
    for (int64_t f = H - 2; f >= 0; --f) {
      z = z || terminals_[w[f]];
      if (z) zero |= uint64_t{1} << f;
    }
    if (windows != nullptr) {  // n_step 1 only: W == H + 1 == H + m
      uint8_t* row = windows + static_cast<size_t>(b * W) * fb;
      for (int64_t f = 0; f < W; ++f) {
        put(row + f * fb, frames_ + w[f] * frame_bytes_, (zero >> f) & 1);
      }
      continue;
    }
    uint8_t* s_row = s + static_cast<size_t>(b * H) * fb;
    uint8_t* s2_row = s2 + static_cast<size_t>(b * H) * fb;
    for (int64_t f = 0; f < H + m; ++f) {
      const uint8_t* src = frames_ + w[f] * frame_bytes_;
      const bool is_zero = (zero >> f) & 1;
      if (f < H) put(s_row + f * fb, src, is_zero);
      if (f >= m) put(s2_row + (f - m) * fb, src, is_zero);  // src still in L1
    }
  }
}

void ReplayMemory::ActingState(int64_t env_index, const uint8_t* next_frame, uint8_t* out) const {
  CheckEnvIndex(env_index);
  std::lock_guard<std::mutex> lock(mu_);
  const Segment& seg = segments_[env_index];
  const int64_t H = history_;
  const size_t fb = static_cast<size_t>(frame_bytes_);
  const int64_t from_memory = next_frame != nullptr ? H - 1 : H;
  if (next_frame != nullptr) std::memcpy(out + (H - 1) * fb, next_frame, fb);
  bool zero = false;
  for (int64_t j = from_memory - 1; j >= 0; --j) {
    const int64_t l = seg.size - from_memory + j;  // logical position
    uint8_t* dst = out + j * fb;
    if (l < 0) {
      zero = true;  // before the stream's first entry
    } else if (j < H - 1 && terminals_[Slot(seg, l)]) {
      zero = true;  // an earlier slot is terminal: it and older are zero
    }
    if (zero) {
      std::memset(dst, 0, fb);
    } else {
      std::memcpy(dst, frames_ + Slot(seg, l) * frame_bytes_, fb);
    }
  }
}

}  // namespace tfdqn
