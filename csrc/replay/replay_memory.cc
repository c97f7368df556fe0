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

inline uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// The file format is defined little-endian; this build writes host order.
bool HostIsLittleEndian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

constexpr char kMagic[8] = {'T', 'F', 'D', 'Q', 'N', 'R', 'P', 'L'};
constexpr char kEndMagic[8] = {'T', 'F', 'D', 'Q', 'N', 'E', 'N', 'D'};
// Version 1: DQN 3.0's memory (n_step 1, uniform sampling), still written for it so that
// older builds read those files. Version 2 adds the options, the streams' add counts and,
// for prioritized memories, each stored entry's priority.
constexpr uint32_t kVersion = 1;
constexpr uint32_t kVersionWithOptions = 2;
constexpr int64_t kMaxHistory = 64;  // the zero mask is a 64-bit word
constexpr int64_t kMaxNStep = 1000;
constexpr uint64_t kMaxHeaderBytes = 1 << 24;
constexpr size_t kIoChunk = size_t{1} << 24;  // 16 MiB per read/write call

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// ---------------------------------------------------------------- RNG

Xoshiro256::Xoshiro256(uint64_t seed) {
  uint64_t x = seed;
  for (auto& word : s_) {  // splitmix64
    x += 0x9E3779B97F4A7C15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    word = z ^ (z >> 31);
  }
}

uint64_t Xoshiro256::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

uint64_t Xoshiro256::Below(uint64_t n) {
  unsigned __int128 m = static_cast<unsigned __int128>(Next()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    while (low < threshold) {
      m = static_cast<unsigned __int128>(Next()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

// ---------------------------------------------------------------- XXH64

namespace {
constexpr uint64_t kP1 = 11400714785074694791ULL;
constexpr uint64_t kP2 = 14029467366897019727ULL;
constexpr uint64_t kP3 = 1609587929392839161ULL;
constexpr uint64_t kP4 = 9650029242287828579ULL;
constexpr uint64_t kP5 = 2870177450012600261ULL;

inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian host (checked where files are written/read)
}
inline uint32_t Read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t XxRound(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = Rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t XxMerge(uint64_t acc, uint64_t val) {
  acc ^= XxRound(0, val);
  return acc * kP1 + kP4;
}
}  // namespace

Xxh64::Xxh64(uint64_t seed) : seed_(seed) {
  v_[0] = seed + kP1 + kP2;
  v_[1] = seed + kP2;
  v_[2] = seed;
  v_[3] = seed - kP1;
}

void Xxh64::Update(const void* data, size_t len) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  total_len_ += len;
  if (buf_len_ + len < 32) {
    std::memcpy(buf_ + buf_len_, p, len);
    buf_len_ += len;
    return;
  }
  if (buf_len_ > 0) {
    const size_t fill = 32 - buf_len_;
    std::memcpy(buf_ + buf_len_, p, fill);
    for (int i = 0; i < 4; ++i) v_[i] = XxRound(v_[i], Read64(buf_ + 8 * i));
    p += fill;
    len -= fill;
    buf_len_ = 0;
  }
  uint64_t v0 = v_[0], v1 = v_[1], v2 = v_[2], v3 = v_[3];
  while (len >= 32) {
    v0 = XxRound(v0, Read64(p));
    v1 = XxRound(v1, Read64(p + 8));
    v2 = XxRound(v2, Read64(p + 16));
    v3 = XxRound(v3, Read64(p + 24));
    p += 32;
    len -= 32;
  }
  v_[0] = v0, v_[1] = v1, v_[2] = v2, v_[3] = v3;
  std::memcpy(buf_, p, len);
  buf_len_ = len;
}

uint64_t Xxh64::Digest() const {
  uint64_t h;
  if (total_len_ >= 32) {
    h = Rotl(v_[0], 1) + Rotl(v_[1], 7) + Rotl(v_[2], 12) + Rotl(v_[3], 18);
    for (int i = 0; i < 4; ++i) h = XxMerge(h, v_[i]);
  } else {
    h = seed_ + kP5;
  }
  h += total_len_;
  const unsigned char* p = buf_;
  size_t len = buf_len_;
  while (len >= 8) {
    h ^= XxRound(0, Read64(p));
    h = Rotl(h, 27) * kP1 + kP4;
    p += 8;
    len -= 8;
  }
  if (len >= 4) {
    h ^= static_cast<uint64_t>(Read32(p)) * kP1;
    h = Rotl(h, 23) * kP2 + kP3;
    p += 4;
    len -= 4;
  }
  while (len > 0) {
    h ^= (*p) * kP5;
    h = Rotl(h, 11) * kP1;
    ++p;
    --len;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t HashXxh64(const void* data, size_t len, uint64_t seed) {
  Xxh64 h(seed);
  h.Update(data, len);
  return h.Digest();
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

// ---------------------------------------------------------------- files

namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

class FileWriter {
 public:
  FileWriter(int fd, const std::string& tmp_path, const std::string& path)
      : fd_(fd), tmp_path_(tmp_path), path_(path) {}

  void Write(const void* data, size_t len) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    while (len > 0) {
      const ssize_t k = ::write(fd_, p, std::min(len, kIoChunk));
      if (k < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        throw IoError(err, "save: writing " + tmp_path_ + ": " + ErrnoText(err), path_);
      }
      hash_.Update(p, static_cast<size_t>(k));
      p += k;
      len -= static_cast<size_t>(k);
      written_ += k;
    }
  }
  template <typename T>
  void Put(T value) {
    Write(&value, sizeof(T));
  }
  uint64_t Digest() const { return hash_.Digest(); }
  int64_t written() const { return written_; }

 private:
  int fd_;
  std::string tmp_path_;
  std::string path_;
  int64_t written_ = 0;
  Xxh64 hash_;
};

class FileReader {
 public:
  FileReader(int fd, const std::string& path) : fd_(fd), path_(path) {}
  void Read(void* data, size_t len) {
    unsigned char* p = static_cast<unsigned char*>(data);
    while (len > 0) {
      const ssize_t k = ::read(fd_, p, std::min(len, kIoChunk));
      if (k < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        throw IoError(err, "load: reading " + path_ + ": " + ErrnoText(err), path_);
      }
      if (k == 0) {
        throw FormatError("load: " + path_ + ": file is truncated (ended while reading)");
      }
      hash_.Update(p, static_cast<size_t>(k));
      p += k;
      len -= static_cast<size_t>(k);
    }
  }
  template <typename T>
  T Get() {
    T value;
    Read(&value, sizeof(T));
    return value;
  }
  uint64_t Digest() const { return hash_.Digest(); }

 private:
  int fd_;
  std::string path_;
  Xxh64 hash_;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t HeaderBytes(uint64_t rank, uint64_t num_envs, uint32_t version) {
  // magic, version, header_bytes; capacity, history, num_envs, rank; dims;
  // rng state; (size, write) per env; [version 2: n_step, discount,
  // priority_exponent, max_priority; added per env]; payload bytes; header checksum.
  const uint64_t v2 = version >= 2 ? 8 * 4 + 8 * num_envs : 0;
  return 8 + 4 + 4 + 8 * 4 + 8 * rank + 8 * 4 + 16 * num_envs + v2 + 8 + 8;
}

uint64_t DoubleBits(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return bits;
}

double BitsDouble(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

}  // namespace

void ReplayMemory::Save(const std::string& path) const {
  if (!HostIsLittleEndian()) {
    throw std::runtime_error("save: big-endian hosts are not supported");
  }
  if (path.empty()) {
    throw std::invalid_argument("path: expected a file name, got ''");
  }
  const size_t cut = path.find_last_of('/');
  const std::string dir = cut == std::string::npos ? "." : cut == 0 ? "/" : path.substr(0, cut);
  const std::string base = cut == std::string::npos ? path : path.substr(cut + 1);
  if (base.empty()) {
    throw std::invalid_argument("path: '" + path + "' names a directory");
  }
  std::string tmp = dir + "/." + base + ".tmp.XXXXXX";
  std::vector<char> tmpl(tmp.begin(), tmp.end());
  tmpl.push_back('\0');

  std::lock_guard<std::mutex> lock(mu_);
  Fd file;
  file.fd = mkstemp(tmpl.data());
  if (file.fd < 0) {
    const int err = errno;
    throw IoError(err, "save: cannot create a temporary file in " + dir + ": " + ErrnoText(err),
                  path);
  }
  tmp = tmpl.data();
  try {
    fchmod(file.fd, 0644);
    FileWriter out(file.fd, tmp, path);
    const uint64_t rank = frame_shape_.size();
    const uint32_t version =
        options_.n_step == 1 && !prioritized() ? kVersion : kVersionWithOptions;
    const uint64_t header_bytes = HeaderBytes(rank, num_envs_, version);
    uint64_t payload = 0;
    const uint64_t entry_bytes =
        frame_bytes_ + sizeof(int32_t) + sizeof(float) + 1 + (prioritized() ? sizeof(double) : 0);
    for (const Segment& seg : segments_) payload += seg.size * entry_bytes;

    // Header, built in memory so that its own checksum can close it.
    std::string header;
    auto put = [&header](const void* p, size_t n) {
      header.append(static_cast<const char*>(p), n);
    };
    auto put64 = [&put](uint64_t v) { put(&v, 8); };
    put(kMagic, 8);
    const uint32_t hb32 = static_cast<uint32_t>(header_bytes);
    put(&version, 4);
    put(&hb32, 4);
    put64(capacity_);
    put64(history_);
    put64(num_envs_);
    put64(rank);
    for (int64_t d : frame_shape_) put64(d);
    for (uint64_t w : rng_.state()) put64(w);
    for (const Segment& seg : segments_) {
      put64(seg.size);
      put64(seg.write);
    }
    if (version >= kVersionWithOptions) {
      put64(options_.n_step);
      put64(DoubleBits(options_.discount));
      put64(DoubleBits(options_.priority_exponent));
      put64(DoubleBits(max_priority_));
      for (const Segment& seg : segments_) put64(seg.added);
    }
    put64(payload);
    put64(HashXxh64(header.data(), header.size()));
    out.Write(header.data(), header.size());

    // Stored entries of a segment are always its slots [0, size).
    for (const Segment& seg : segments_) {
      out.Write(frames_ + seg.begin * frame_bytes_, seg.size * frame_bytes_);
      out.Write(actions_.data() + seg.begin, seg.size * sizeof(int32_t));
      out.Write(rewards_.data() + seg.begin, seg.size * sizeof(float));
      out.Write(terminals_.data() + seg.begin, seg.size);
      if (prioritized()) out.Write(priorities_.data() + seg.begin, seg.size * sizeof(double));
    }
    const uint64_t digest = out.Digest();
    out.Put(digest);
    out.Write(kEndMagic, 8);

    if (::fsync(file.fd) != 0) {
      const int err = errno;
      throw IoError(err, "save: fsync " + tmp + ": " + ErrnoText(err), path);
    }
    const int fd = file.fd;
    file.fd = -1;
    if (::close(fd) != 0) {
      const int err = errno;
      throw IoError(err, "save: close " + tmp + ": " + ErrnoText(err), path);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      throw IoError(err, "save: rename " + tmp + " -> " + path + ": " + ErrnoText(err), path);
    }
  } catch (...) {
    if (file.fd >= 0) {
      ::close(file.fd);
      file.fd = -1;
    }
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable.
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (d.fd >= 0) ::fsync(d.fd);
}

std::unique_ptr<ReplayMemory> ReplayMemory::Load(const std::string& path) {
  if (!HostIsLittleEndian()) {
    throw std::runtime_error("load: big-endian hosts are not supported");
  }
  Fd file;
  file.fd = ::open(path.c_str(), O_RDONLY);
  if (file.fd < 0) {
    const int err = errno;
    throw IoError(err, "load: cannot open " + path + ": " + ErrnoText(err), path);
  }
  struct stat st;
  if (fstat(file.fd, &st) != 0) {
    const int err = errno;
    throw IoError(err, "load: stat " + path + ": " + ErrnoText(err), path);
  }
  if (S_ISDIR(st.st_mode)) {
    throw IoError(EISDIR, "load: " + path + " is a directory", path);
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  const std::string where = "load: " + path + ": ";
  FileReader in(file.fd, path);

  char magic[8];
  if (file_bytes < 16) {
    // Too short for any header: say whether it even starts like one.
    std::vector<char> head(file_bytes);
    if (file_bytes > 0) in.Read(head.data(), file_bytes);
    const bool prefix =
        file_bytes > 0 && std::memcmp(head.data(), kMagic, std::min<uint64_t>(8, file_bytes)) == 0;
    throw FormatError(where + (prefix
                                   ? "file is truncated (" + std::to_string(file_bytes) + " bytes)"
                                   : "not a tfdqn replay memory file (" +
                                         std::to_string(file_bytes) + " bytes, no magic header)"));
  }
  in.Read(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0) {
    throw FormatError(where + "not a tfdqn replay memory file (bad magic header)");
  }
  const uint32_t version = in.Get<uint32_t>();
  if (version != kVersion && version != kVersionWithOptions) {
    throw FormatError(where + "unsupported file version " + std::to_string(version) +
                      " (this build reads versions " + std::to_string(kVersion) + " and " +
                      std::to_string(kVersionWithOptions) + ")");
  }
  const uint32_t header_bytes = in.Get<uint32_t>();
  if (header_bytes < HeaderBytes(1, 1, version) || header_bytes > kMaxHeaderBytes) {
    throw FormatError(where + "corrupted header (header size " + std::to_string(header_bytes) +
                      ")");
  }
  if (file_bytes < header_bytes) {
    throw FormatError(where + "file is truncated (" + std::to_string(file_bytes) +
                      " bytes, header alone is " + std::to_string(header_bytes) + ")");
  }
  std::vector<unsigned char> header(header_bytes);
  std::memcpy(header.data(), kMagic, 8);
  std::memcpy(header.data() + 8, &version, 4);
  std::memcpy(header.data() + 12, &header_bytes, 4);
  in.Read(header.data() + 16, header_bytes - 16);
  uint64_t stored_header_hash;
  std::memcpy(&stored_header_hash, header.data() + header_bytes - 8, 8);
  if (HashXxh64(header.data(), header_bytes - 8) != stored_header_hash) {
    throw FormatError(where + "corrupted header (checksum mismatch)");
  }
  size_t pos = 16;
  auto get64 = [&]() {
    uint64_t v;
    std::memcpy(&v, header.data() + pos, 8);
    pos += 8;
    return v;
  };
  const uint64_t capacity = get64();
  const uint64_t history = get64();
  const uint64_t num_envs = get64();
  const uint64_t rank = get64();
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (capacity > limit || history > limit || num_envs == 0 || num_envs > limit || rank == 0 ||
      rank > kMaxHeaderBytes || HeaderBytes(rank, num_envs, version) != header_bytes) {
    throw FormatError(where + "corrupted header (inconsistent sizes)");
  }
  std::vector<int64_t> shape(rank);
  for (auto& d : shape) {
    const uint64_t v = get64();
    if (v > limit) throw FormatError(where + "corrupted header (frame shape)");
    d = static_cast<int64_t>(v);
  }
  std::array<uint64_t, 4> rng_state;
  for (auto& w : rng_state) w = get64();

  // The streams' sizes and write positions come before the options in the file.
  std::vector<std::array<uint64_t, 2>> positions(num_envs);
  for (auto& p : positions) p = {get64(), get64()};
  ReplayOptions options;
  double max_priority = 1.0;
  std::vector<uint64_t> added(num_envs);
  if (version >= kVersionWithOptions) {
    const uint64_t n_step = get64();
    options.n_step = n_step > limit ? -1 : static_cast<int64_t>(n_step);
    options.discount = BitsDouble(get64());
    options.priority_exponent = BitsDouble(get64());
    max_priority = BitsDouble(get64());
    for (auto& a : added) a = get64();
    if (!(max_priority > 0.0) || !std::isfinite(max_priority)) {
      throw FormatError(where + "corrupted header (max priority)");
    }
  } else {
    for (uint64_t e = 0; e < num_envs; ++e) added[e] = positions[e][0];
  }

  std::unique_ptr<ReplayMemory> mem;
  try {
    mem.reset(new ReplayMemory(static_cast<int64_t>(capacity), shape, static_cast<int64_t>(history),
                               static_cast<int64_t>(num_envs), 0, options));
  } catch (const std::invalid_argument& e) {
    throw FormatError(where + "corrupted header (" + e.what() + ")");
  }
  mem->rng_.set_state(rng_state);
  mem->max_priority_ = max_priority;
  const uint64_t entry_bytes = mem->frame_bytes_ + sizeof(int32_t) + sizeof(float) + 1 +
                               (mem->prioritized() ? sizeof(double) : 0);
  uint64_t payload = 0;
  for (size_t e = 0; e < mem->segments_.size(); ++e) {
    Segment& seg = mem->segments_[e];
    const uint64_t size = positions[e][0];
    const uint64_t write = positions[e][1];
    const uint64_t cap = static_cast<uint64_t>(seg.capacity);
    const bool consistent = size <= cap && (size < cap ? write == size : write < cap);
    if (!consistent) {
      throw FormatError(where + "corrupted header (stream size " + std::to_string(size) +
                        ", write position " + std::to_string(write) + ", capacity " +
                        std::to_string(cap) + ")");
    }
    if (added[e] < size || added[e] > limit) {
      throw FormatError(where + "corrupted header (stream add count)");
    }
    seg.size = static_cast<int64_t>(size);
    seg.write = static_cast<int64_t>(write);
    seg.added = static_cast<int64_t>(added[e]);
    payload += size * entry_bytes;
  }
  if (get64() != payload) {
    throw FormatError(where + "corrupted header (payload size)");
  }
  const uint64_t expected_bytes = header_bytes + payload + 16;
  if (file_bytes < expected_bytes) {
    throw FormatError(where + "file is truncated (" + std::to_string(file_bytes) +
                      " bytes, expected " + std::to_string(expected_bytes) + ")");
  }
  if (file_bytes > expected_bytes) {
    throw FormatError(where + "unexpected trailing data (" + std::to_string(file_bytes) +
                      " bytes, expected " + std::to_string(expected_bytes) + ")");
  }
  for (Segment& seg : mem->segments_) {
    in.Read(mem->frames_ + seg.begin * mem->frame_bytes_, seg.size * mem->frame_bytes_);
    in.Read(mem->actions_.data() + seg.begin, seg.size * sizeof(int32_t));
    in.Read(mem->rewards_.data() + seg.begin, seg.size * sizeof(float));
    in.Read(mem->terminals_.data() + seg.begin, seg.size);
    if (mem->prioritized()) {
      in.Read(mem->priorities_.data() + seg.begin, seg.size * sizeof(double));
    }
  }
  const uint64_t digest = in.Digest();
  const uint64_t stored_digest = in.Get<uint64_t>();
  char end[8];
  in.Read(end, 8);
  if (digest != stored_digest || std::memcmp(end, kEndMagic, 8) != 0) {
    throw FormatError(where + "corrupted contents (checksum mismatch)");
  }
  for (Segment& seg : mem->segments_) {
    for (int64_t k = 0; k < seg.size; ++k) {
      const int64_t slot = seg.begin + k;
      if (mem->terminals_[slot] > 1 || mem->actions_[slot] < 0 ||
          !std::isfinite(mem->rewards_[slot])) {
        throw FormatError(where + "corrupted contents (entry " + std::to_string(slot) + ")");
      }
      seg.terminals += mem->terminals_[slot];
    }
  }
  if (mem->prioritized()) {
    // The trees from the saved priorities: a priority must be > 0 exactly where a
    // transition is valid, and 0 elsewhere.
    for (Segment& seg : mem->segments_) {
      for (int64_t t = 0; t < seg.size; ++t) {
        const int64_t slot = Slot(seg, t);
        const double p = mem->priorities_[slot];
        const bool valid = mem->ValidTransitionLocked(seg, t);
        if (!std::isfinite(p) || (valid ? !(p > 0.0) : p != 0.0)) {
          throw FormatError(where + "corrupted contents (priority of entry " +
                            std::to_string(slot) + ")");
        }
        if (valid) mem->SetPriorityLocked(slot, p);
      }
    }
  }
  return mem;
}

}  // namespace tfdqn
