// The replay memory's random numbers: xoshiro256** seeded with splitmix64.
#ifndef TFDQN_REPLAY_XOSHIRO256_H_
#define TFDQN_REPLAY_XOSHIRO256_H_

#include <array>
#include <cstdint>

namespace tfdqn {

// xoshiro256** (Blackman & Vigna), seeded by expanding a 64-bit seed with
// splitmix64. Its whole state is four words, saved exactly in the file.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed = 0);
  uint64_t Next();
  // Uniform integer in [0, n), n > 0: Lemire's multiply-shift with rejection
  // (tests/replay_reference.py implements the same draw sequence).
  uint64_t Below(uint64_t n);
  const std::array<uint64_t, 4>& state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_;
};

}  // namespace tfdqn

#endif  // TFDQN_REPLAY_XOSHIRO256_H_
