// CUDA kernels of the fused DQN target op and its gradient. No TensorFlow headers: the TF
// kernel and the TF-free GPU check both reach these through dqn_targets_gpu.h.
//
// Forward, A small (the Atari case, A <= ~100): one block per tile of consecutive rows.
// The tile of q / q_next (/ q_next_online) is contiguous in memory, so it is copied to
// shared memory with coalesced 16-byte loads; each thread then runs the shared per-row
// math (DqnTargetsRow) on one row in shared memory, and the targets tile is written back
// with coalesced stores. One thread per row reading global memory directly would stride
// by A elements between neighbouring threads and waste most of each memory transaction.
// Forward, A large: one warp per row, lanes stride over the actions and merge their
// partial max/argmax with shuffles; the tail of the formula is the same FinishRow.
// Gradient: element-wise over [B, A].
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>

#include "dqn_targets_gpu.h"
#include "dqn_targets_math.h"

namespace tfdqn {
namespace {

constexpr int kWarp = 32;
constexpr int kTileThreads = 128;                // one row per thread in the tile kernel
constexpr int kWarpRowThreads = 256;             // 8 rows per block in the warp-per-row kernel
constexpr size_t kTileSharedBytes = 48 * 1024;   // the limit without an opt-in attribute
constexpr int kMinTileRows = kWarp;              // below this, the warp-per-row kernel wins

// Resident threads the device can hold, to size grid-stride launches: enough blocks to
// fill every SM, no more (extra blocks would only loop through the same tiles).
struct DeviceShape {
  int sm_count = 0;
  int threads_per_sm = 0;
};

const char* GetDeviceShape(DeviceShape* out) {
  static std::mutex mu;
  static DeviceShape cache[64];
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  if (dev < 0 || dev >= 64) return "device ordinal out of the launcher's cache range";
  std::lock_guard<std::mutex> lock(mu);
  if (cache[dev].sm_count == 0) {
    e = cudaDeviceGetAttribute(&cache[dev].sm_count, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess) {
      e = cudaDeviceGetAttribute(&cache[dev].threads_per_sm,
                                 cudaDevAttrMaxThreadsPerMultiProcessor, dev);
    }
    if (e != cudaSuccess) {
      cache[dev] = DeviceShape{};
      return cudaGetErrorString(e);
    }
  }
  *out = cache[dev];
  return nullptr;
}

int64_t GridFor(int64_t work_blocks, int block_threads, const DeviceShape& d) {
  const int64_t resident = static_cast<int64_t>(d.sm_count) *
                           std::max(1, d.threads_per_sm / block_threads);
  return std::max<int64_t>(1, std::min(work_blocks, resident));
}

// Copies `bytes` from global to shared memory (or back) with the whole block: 16-byte
// vectors for the bulk, bytes for the tail. Both pointers are 16-byte aligned by
// construction (tile offsets are multiples of 32 rows * A * sizeof(T)).
__device__ __forceinline__ void BlockCopy(void* dst, const void* src, int64_t bytes) {
  const int64_t vecs = bytes / 16;
  uint4* d4 = static_cast<uint4*>(dst);
  const uint4* s4 = static_cast<const uint4*>(src);
  for (int64_t k = threadIdx.x; k < vecs; k += blockDim.x) d4[k] = s4[k];
  unsigned char* d1 = static_cast<unsigned char*>(dst);
  const unsigned char* s1 = static_cast<const unsigned char*>(src);
  for (int64_t k = vecs * 16 + threadIdx.x; k < bytes; k += blockDim.x) d1[k] = s1[k];
}

template <typename T, typename TT, typename IndexT>
__global__ void ForwardTileKernel(const T* __restrict__ q, const T* __restrict__ q_next,
                                  const T* __restrict__ q_next_online,
                                  const IndexT* __restrict__ actions,
                                  const T* __restrict__ rewards, const TT* __restrict__ terminals,
                                  int64_t batch, int64_t num_actions, int64_t tile_rows,
                                  TargetParams<typename Accumulator<T>::type> params,
                                  T* __restrict__ loss, T* __restrict__ targets,
                                  T* __restrict__ delta, T* __restrict__ q_next_max) {
  extern __shared__ uint4 shared_raw[];
  const int64_t tile_elems = tile_rows * num_actions;
  T* q_s = reinterpret_cast<T*>(shared_raw);
  T* q_next_s = q_s + tile_elems;
  T* targets_s = q_next_s + tile_elems;
  T* q_next_online_s = q_next_online ? targets_s + tile_elems : nullptr;
  const int64_t num_tiles = (batch + tile_rows - 1) / tile_rows;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int64_t row0 = tile * tile_rows;
    const int64_t rows = min(tile_rows, batch - row0);
    const int64_t base = row0 * num_actions;
    const int64_t bytes = rows * num_actions * static_cast<int64_t>(sizeof(T));
    BlockCopy(q_s, q + base, bytes);
    BlockCopy(q_next_s, q_next + base, bytes);
    if (q_next_online) BlockCopy(q_next_online_s, q_next_online + base, bytes);
    __syncthreads();
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
      const int64_t i = row0 + r, off = r * num_actions;
      DqnTargetsRow<T, TT, IndexT>(q_s + off, q_next_s + off,
                                   q_next_online ? q_next_online_s + off : nullptr, actions[i],
                                   rewards[i], terminals[i], num_actions, params,
                                   targets_s + off, loss + i, delta + i, q_next_max + i);
    }
    __syncthreads();
    BlockCopy(targets + base, targets_s, bytes);
    __syncthreads();  // the next tile overwrites the shared buffers
  }
}

template <typename V>
__device__ __forceinline__ V ShuffleDown(V v, int offset) {
  return __shfl_down_sync(0xffffffffu, v, offset);
}
__device__ __forceinline__ bool ShuffleDown(bool v, int offset) {
  return __shfl_down_sync(0xffffffffu, static_cast<int>(v), offset) != 0;
}

template <typename Acc>
__device__ __forceinline__ RowMax<Acc> WarpMerge(RowMax<Acc> m) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    RowMax<Acc> other;
    other.value = ShuffleDown(m.value, offset);
    other.finite = ShuffleDown(m.finite, offset);
    other.empty = ShuffleDown(m.empty, offset);
    m.Merge(other);
  }
  return m;
}

template <typename Acc>
__device__ __forceinline__ RowArgMax<Acc> WarpMerge(RowArgMax<Acc> m) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    RowArgMax<Acc> other;
    other.value = ShuffleDown(m.value, offset);
    other.index = ShuffleDown(m.index, offset);
    other.finite = ShuffleDown(m.finite, offset);
    m.Merge(other);
  }
  return m;
}

template <typename T, typename TT, typename IndexT>
__global__ void ForwardWarpPerRowKernel(
    const T* __restrict__ q, const T* __restrict__ q_next, const T* __restrict__ q_next_online,
    const IndexT* __restrict__ actions, const T* __restrict__ rewards,
    const TT* __restrict__ terminals, int64_t batch, int64_t num_actions,
    TargetParams<typename Accumulator<T>::type> params, T* __restrict__ loss,
    T* __restrict__ targets, T* __restrict__ delta, T* __restrict__ q_next_max) {
  using Acc = typename Accumulator<T>::type;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t i = first; i < batch; i += stride) {
    const int64_t off = i * num_actions;
    const IndexT action = actions[i];
    const bool action_ok = action >= 0 && static_cast<int64_t>(action) < num_actions;
    // Finiteness of q (and q_next when selecting with q_next_online) rides in a RowMax.
    RowMax<Acc> q_seen, next_seen;
    RowArgMax<Acc> select;
    for (int64_t a = lane; a < num_actions; a += kWarp) {
      q_seen.Add(static_cast<Acc>(q[off + a]));
      next_seen.Add(static_cast<Acc>(q_next[off + a]));
      if (q_next_online) select.Add(static_cast<Acc>(q_next_online[off + a]), a);
    }
    q_seen = WarpMerge(q_seen);
    next_seen = WarpMerge(next_seen);
    if (q_next_online) select = WarpMerge(select);
    Acc d = Acc(0);
    bool row_ok = false;
    if (lane == 0) {
      bool finite = q_seen.finite && next_seen.finite && (!q_next_online || select.finite);
      Acc next_value = next_seen.value;
      if (q_next_online) next_value = select.index >= 0 ? static_cast<Acc>(q_next[off + select.index]) : Acc(0);
      const Acc q_taken = action_ok ? static_cast<Acc>(q[off + action]) : Acc(0);
      RowResult<Acc> r = FinishRow<Acc>(q_taken, next_value, static_cast<Acc>(rewards[i]),
                                        static_cast<Acc>(terminals[i]), finite && action_ok,
                                        params);
      loss[i] = static_cast<T>(r.loss);
      delta[i] = static_cast<T>(r.delta);
      q_next_max[i] = static_cast<T>(r.q_next_max);
      d = r.delta;
      row_ok = finite && action_ok;
    }
    d = __shfl_sync(0xffffffffu, d, 0);
    row_ok = __shfl_sync(0xffffffffu, static_cast<int>(row_ok), 0) != 0;
    const T fill = static_cast<T>(row_ok ? Acc(0) : QuietNaN<Acc>());
    for (int64_t a = lane; a < num_actions; a += kWarp) {
      targets[off + a] = (action_ok && a == static_cast<int64_t>(action)) ? static_cast<T>(d) : fill;
    }
  }
}

template <typename T>
__global__ void GradKernel(const T* __restrict__ grad_loss, const T* __restrict__ targets,
                           int64_t batch, int64_t num_actions, T* __restrict__ grad_q) {
  const int64_t n = batch * num_actions;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    grad_q[k] = DqnTargetsGradElement<T>(grad_loss[k / num_actions], targets[k]);
  }
}

template <typename T, typename TT, typename IndexT>
const char* LaunchForwardTyped(const ForwardArgs& a, cudaStream_t stream) {
  using Acc = typename Accumulator<T>::type;
  DeviceShape dev;
  if (const char* err = GetDeviceShape(&dev)) return err;
  const TargetParams<Acc> params{static_cast<Acc>(a.discount), static_cast<Acc>(a.r_max),
                                 static_cast<Acc>(a.clip_delta)};
  const T* q = static_cast<const T*>(a.q);
  const T* q_next = static_cast<const T*>(a.q_next);
  const T* q_next_online = static_cast<const T*>(a.q_next_online);
  const IndexT* actions = static_cast<const IndexT*>(a.actions);
  const T* rewards = static_cast<const T*>(a.rewards);
  const TT* terminals = static_cast<const TT*>(a.terminals);
  T* loss = static_cast<T*>(a.loss);
  T* targets = static_cast<T*>(a.targets);
  T* delta = static_cast<T*>(a.delta);
  T* q_next_max = static_cast<T*>(a.q_next_max);

  // Shared bytes per row: q, q_next, targets (+ q_next_online) tiles.
  const int64_t tiles = q_next_online ? 4 : 3;
  const int64_t row_bytes = tiles * a.num_actions * static_cast<int64_t>(sizeof(T));
  int64_t tile_rows = std::min<int64_t>(kTileThreads, kTileSharedBytes / row_bytes);
  tile_rows -= tile_rows % kWarp;  // keeps every tile 16-byte aligned (see BlockCopy)
  if (tile_rows >= kMinTileRows) {
    const int64_t num_tiles = (a.batch + tile_rows - 1) / tile_rows;
    const size_t shared = static_cast<size_t>(tile_rows * row_bytes);
    const int threads = static_cast<int>(std::min<int64_t>(kTileThreads, tile_rows));
    ForwardTileKernel<T, TT, IndexT>
        <<<static_cast<unsigned>(GridFor(num_tiles, threads, dev)), threads, shared, stream>>>(
            q, q_next, q_next_online, actions, rewards, terminals, a.batch, a.num_actions,
            tile_rows, params, loss, targets, delta, q_next_max);
  } else {
    const int64_t rows_per_block = kWarpRowThreads / kWarp;
    const int64_t blocks = (a.batch + rows_per_block - 1) / rows_per_block;
    ForwardWarpPerRowKernel<T, TT, IndexT>
        <<<static_cast<unsigned>(GridFor(blocks, kWarpRowThreads, dev)), kWarpRowThreads, 0,
           stream>>>(q, q_next, q_next_online, actions, rewards, terminals, a.batch,
                     a.num_actions, params, loss, targets, delta, q_next_max);
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <typename T, typename TT>
const char* DispatchActions(const ForwardArgs& a, cudaStream_t s) {
  return a.actions_int64 ? LaunchForwardTyped<T, TT, int64_t>(a, s)
                         : LaunchForwardTyped<T, TT, int32_t>(a, s);
}

template <typename T>
const char* DispatchTerminals(const ForwardArgs& a, cudaStream_t s) {
  if (a.terminal_dtype == DType::kBool) return DispatchActions<T, bool>(a, s);
  if (a.terminal_dtype == a.dtype) return DispatchActions<T, T>(a, s);
  return "terminals must be bool or the dtype of q";
}

template <typename T>
const char* LaunchGradTyped(const GradArgs& a, cudaStream_t stream) {
  DeviceShape dev;
  if (const char* err = GetDeviceShape(&dev)) return err;
  const int threads = 256;
  const int64_t n = a.batch * a.num_actions;
  GradKernel<T><<<static_cast<unsigned>(GridFor((n + threads - 1) / threads, threads, dev)),
                  threads, 0, stream>>>(static_cast<const T*>(a.grad_loss),
                                        static_cast<const T*>(a.targets), a.batch,
                                        a.num_actions, static_cast<T*>(a.grad_q));
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

const char* LaunchDqnTargetsForward(const ForwardArgs& a, void* stream) {
  if (a.batch < 0 || a.num_actions < 1) return "batch must be >= 0 and num_actions >= 1";
  if (a.batch == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::kHalf: return DispatchTerminals<__half>(a, s);
    case DType::kBFloat16: return DispatchTerminals<__nv_bfloat16>(a, s);
    case DType::kFloat: return DispatchTerminals<float>(a, s);
    case DType::kDouble: return DispatchTerminals<double>(a, s);
    default: return "unsupported dtype for q";
  }
}

const char* LaunchDqnTargetsGrad(const GradArgs& a, void* stream) {
  if (a.batch < 0 || a.num_actions < 0) return "batch and num_actions must be >= 0";
  if (a.batch == 0 || a.num_actions == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::kHalf: return LaunchGradTyped<__half>(a, s);
    case DType::kBFloat16: return LaunchGradTyped<__nv_bfloat16>(a, s);
    case DType::kFloat: return LaunchGradTyped<float>(a, s);
    case DType::kDouble: return LaunchGradTyped<double>(a, s);
    default: return "unsupported dtype for targets";
  }
}

}  // namespace tfdqn
