// The floor under any replay sampler on this machine: the time to READ the frames of
// `batch` random windows of `window` consecutive frames out of a memory of `capacity`
// frames, with nothing written. A sampler has to read at least these bytes, whatever
// layout or language it uses, so no sampler can be faster than this.
//
// Built and run by benchmarks/bench_replay.py (c++ -O2 read_floor.cc); standalone:
//   c++ -O2 -o /tmp/read_floor benchmarks/read_floor.cc
//   /tmp/read_floor CAPACITY FRAME_BYTES WINDOW BATCH ITERS
// Prints one line: "<median us of the read-only pass> <median us of a memcpy of the same
// windows into a reused buffer>".
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

// XOR of every 16-byte word of [p, p + n): reads all bytes, writes nothing.
uint64_t ReadAll(const uint8_t* p, size_t n) {
#if defined(__SSE2__)
  __m128i acc = _mm_setzero_si128();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = _mm_xor_si128(acc, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
  }
  uint64_t lanes[2];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(lanes), acc);
  uint64_t x = lanes[0] ^ lanes[1];
#else
  uint64_t x = 0;
  size_t i = 0;
#endif
  for (; i < n; ++i) x ^= p[i];
  return x;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s CAPACITY FRAME_BYTES WINDOW BATCH ITERS\n", argv[0]);
    return 2;
  }
  const int64_t capacity = std::atoll(argv[1]);
  const int64_t frame_bytes = std::atoll(argv[2]);
  const int64_t window = std::atoll(argv[3]);
  const int64_t batch = std::atoll(argv[4]);
  const int64_t iters = std::atoll(argv[5]);
  if (capacity <= window || frame_bytes <= 0 || window <= 0 || batch <= 0 || iters <= 0) {
    std::fprintf(stderr, "read_floor: need CAPACITY > WINDOW > 0 and positive sizes\n");
    return 2;
  }
  // Allocated like ReplayMemory's frames: anonymous memory, transparent huge pages.
  const size_t bytes = static_cast<size_t>(capacity * frame_bytes);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("read_floor: mmap");
    return 1;
  }
  madvise(mem, bytes, MADV_HUGEPAGE);
  uint8_t* frames = static_cast<uint8_t*>(mem);
  for (size_t i = 0; i < bytes; i += 64) frames[i] = static_cast<uint8_t>(i >> 6);

  const size_t window_bytes = static_cast<size_t>(window * frame_bytes);
  std::vector<uint8_t> out(static_cast<size_t>(batch) * window_bytes);
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> start(0, capacity - window);
  std::vector<int64_t> starts(batch);
  std::vector<double> read_us, copy_us;
  uint64_t sink = 0;
  for (int64_t it = 0; it < iters; ++it) {
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& s : starts) s = start(rng);  // fresh windows: nothing is left in cache
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t b = 0; b < batch; ++b) {
        const uint8_t* src = frames + starts[b] * frame_bytes;
        if (pass == 0) {
          sink ^= ReadAll(src, window_bytes);
        } else {
          std::memcpy(out.data() + b * window_bytes, src, window_bytes);
        }
      }
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      (pass == 0 ? read_us : copy_us).push_back(us);
    }
  }
  std::printf("%.2f %.2f\n", Median(read_us), Median(copy_us));
  std::fprintf(stderr, "(checksum %llu)\n", static_cast<unsigned long long>(sink ^ out[0]));
  munmap(mem, bytes);
  return 0;
}
