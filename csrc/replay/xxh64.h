// XXH64, the replay file's checksum.
#ifndef TFDQN_REPLAY_XXH64_H_
#define TFDQN_REPLAY_XXH64_H_

#include <cstddef>
#include <cstdint>

namespace tfdqn {

// XXH64 (the xxHash 64-bit algorithm), streaming. Used as the file checksum.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void Update(const void* data, size_t len);
  uint64_t Digest() const;

 private:
  uint64_t v_[4];
  uint64_t seed_;
  uint64_t total_len_ = 0;
  unsigned char buf_[32];
  size_t buf_len_ = 0;
};
uint64_t HashXxh64(const void* data, size_t len, uint64_t seed = 0);

}  // namespace tfdqn

#endif  // TFDQN_REPLAY_XXH64_H_
