// CUDA kernels of the fused DQN target op and its gradient. No TensorFlow headers: the TF
// kernel and the TF-free GPU check both reach these through dqn_targets_gpu.h.
//
// Forward, A small (the Atari case): one block per tile of consecutive rows, while a 32-row
// tile of the staged arrays fits kWarpTileMaxBytes (A <= 32 for float32, 21 with double
// DQN; twice that for 16-bit types, half for double).
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
constexpr int kTileWarpsPerBlock = 4;  // tile kernel: 4 independent warps per block
constexpr int kWarpRowThreads = 256;   // 8 rows per block in the warp-per-row kernel
// Largest shared tile per warp (32 rows of every staged array). Beyond it (A > 32 for
// float32, A > 21 with double DQN) rows are long enough for a warp per row to coalesce.
constexpr int64_t kWarpTileMaxBytes = 8 * 1024;

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
      e = cudaDeviceGetAttribute(&cache[dev].threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor,
                                 dev);
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
  const int64_t resident =
      static_cast<int64_t>(d.sm_count) * std::max(1, d.threads_per_sm / block_threads);
  return std::max<int64_t>(1, std::min(work_blocks, resident));
}

// Copies `bytes` between global and shared memory with one warp: 16-byte vectors for the
// bulk, bytes for the tail. Both pointers are 16-byte aligned by construction (a tile is
// 32 rows, so its offset is a multiple of 32 * A * sizeof(T) >= 64 bytes).
__device__ __forceinline__ void WarpCopy(void* dst, const void* src, int bytes, int lane) {
  const int vecs = bytes / 16;
  uint4* d4 = static_cast<uint4*>(dst);
  const uint4* s4 = static_cast<const uint4*>(src);
  for (int k = lane; k < vecs; k += kWarp) d4[k] = s4[k];
  unsigned char* d1 = static_cast<unsigned char*>(dst);
  const unsigned char* s1 = static_cast<const unsigned char*>(src);
  for (int k = vecs * 16 + lane; k < bytes; k += kWarp) d1[k] = s1[k];
}

// Each warp owns a private shared-memory tile of 32 rows and loops over tiles on its own:
// coalesced copy in, one row per lane through DqnTargetsRow, coalesced copy out. Warps
// synchronise only with themselves, so a block never waits for its slowest warp and the
// scheduler overlaps one warp's loads with another's arithmetic.
template <typename T, typename TT, typename IndexT>
__global__ void ForwardTileKernel(const T* __restrict__ q, const T* __restrict__ q_next,
                                  const T* __restrict__ q_next_online,
                                  const IndexT* __restrict__ actions, const T* __restrict__ rewards,
                                  const TT* __restrict__ terminals, int64_t batch, int num_actions,
                                  TargetParams<typename Accumulator<T>::type> params,
                                  Discounts<typename Accumulator<T>::type> discounts,
                                  T* __restrict__ loss, T* __restrict__ targets,
                                  T* __restrict__ delta, T* __restrict__ q_next_max) {
  extern __shared__ uint4 shared_raw[];
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int tile_elems = kWarp * num_actions;
  const int arrays = q_next_online ? 3 : 2;
  T* q_s = reinterpret_cast<T*>(shared_raw) + static_cast<int64_t>(warp) * arrays * tile_elems;
  T* q_next_s = q_s + tile_elems;
  T* q_next_online_s = q_next_online ? q_next_s + tile_elems : nullptr;
  // Each row's targets overwrite its own q row in place: DqnTargetsRow reads every input
  // of the row before it writes targets, and no other lane touches that row.
  T* targets_s = q_s;
  const int64_t num_tiles = (batch + kWarp - 1) / kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  for (int64_t tile = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; tile < num_tiles;
       tile += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const int64_t row0 = tile * kWarp;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kWarp), batch - row0));
    const int64_t base = row0 * num_actions;
    const int bytes = rows * num_actions * static_cast<int>(sizeof(T));
    const bool has_row = lane < rows;
    // The row's scalars are fetched before the tile copy so that their latency overlaps it.
    IndexT action = 0;
    T reward = T(0);
    TT terminal = TT(0);
    if (has_row) {
      action = actions[row0 + lane];
      reward = rewards[row0 + lane];
      terminal = terminals[row0 + lane];
    }
    WarpCopy(q_s, q + base, bytes, lane);
    WarpCopy(q_next_s, q_next + base, bytes, lane);
    if (q_next_online) WarpCopy(q_next_online_s, q_next_online + base, bytes, lane);
    __syncwarp();
    if (has_row) {
      const int64_t i = row0 + lane;
      const int off = lane * num_actions;
      DqnTargetsRow<T, TT, IndexT>(q_s + off, q_next_s + off,
                                   q_next_online ? q_next_online_s + off : nullptr, action, reward,
                                   terminal, num_actions, RowParams(params, discounts, i),
                                   targets_s + off, loss + i, delta + i, q_next_max + i);
    }
    __syncwarp();
    WarpCopy(targets + base, targets_s, bytes, lane);
    __syncwarp();  // the next tile overwrites this warp's buffers
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
    TargetParams<typename Accumulator<T>::type> params,
    Discounts<typename Accumulator<T>::type> discounts, T* __restrict__ loss,
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
    Acc d = Acc(0), fill = Acc(0);
    if (lane == 0) {
      const bool finite = q_seen.finite && next_seen.finite && (!q_next_online || select.finite);
      Acc next_value = next_seen.value;
      if (q_next_online) {
        next_value = select.index >= 0 ? static_cast<Acc>(q_next[off + select.index]) : Acc(0);
      }
      const Acc q_taken = action_ok ? static_cast<Acc>(q[off + action]) : Acc(0);
      const TargetParams<Acc> row_params = RowParams(params, discounts, i);
      const bool discount_ok = DiscountInRange(row_params.discount);
      RowResult<Acc> r = FinishRow<Acc>(q_taken, next_value, static_cast<Acc>(rewards[i]),
                                        static_cast<Acc>(terminals[i]),
                                        finite && action_ok && discount_ok, row_params);
      loss[i] = static_cast<T>(r.loss);
      delta[i] = static_cast<T>(r.delta);
      q_next_max[i] = static_cast<T>(r.q_next_max);
      d = r.delta;
      fill = TargetsFill(r);
    }
    d = __shfl_sync(0xffffffffu, d, 0);
    const T fill_t = static_cast<T>(__shfl_sync(0xffffffffu, fill, 0));
    for (int64_t a = lane; a < num_actions; a += kWarp) {
      targets[off + a] =
          (action_ok && a == static_cast<int64_t>(action)) ? static_cast<T>(d) : fill_t;
    }
  }
}

// Element-wise gradient. Each thread handles V consecutive elements through one 16-byte
// vector (when both buffers are 16-byte aligned), so only one index division per vector;
// Index is uint32_t whenever B * A fits, since 64-bit division costs several times more.
template <typename T>
union Vec16 {
  uint4 raw;
  T elems[16 / sizeof(T)];
};

template <typename T, typename Index, bool kVectorized>
__global__ void GradKernel(const T* __restrict__ grad_loss, const T* __restrict__ targets, Index n,
                           Index num_actions, T* __restrict__ grad_q) {
  constexpr Index V = kVectorized ? 16 / sizeof(T) : 1;
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  const Index vectors = n / V;
  for (Index v = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors;
       v += stride) {
    const Index first = v * V;
    Index row = first / num_actions, col = first - row * num_actions;
    if (kVectorized) {
      Vec16<T> in, out;
      in.raw = reinterpret_cast<const uint4*>(targets)[v];
#pragma unroll
      for (Index j = 0; j < V; ++j) {
        out.elems[j] = DqnTargetsGradElement<T>(grad_loss[row], in.elems[j]);
        if (++col == num_actions) {
          col = 0;
          ++row;
        }
      }
      reinterpret_cast<uint4*>(grad_q)[v] = out.raw;
    } else {
      grad_q[first] = DqnTargetsGradElement<T>(grad_loss[row], targets[first]);
    }
  }
  // Tail that does not fill a vector: a handful of elements, done by the first threads.
  for (Index k = vectors * V + static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
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
  const Discounts<Acc> discounts{static_cast<const Acc*>(a.discounts), a.discount_stride};
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

  // Shared bytes per 32-row warp tile: q (then targets), q_next (+ q_next_online).
  const int64_t arrays = q_next_online ? 3 : 2;
  const int64_t warp_tile_bytes = arrays * kWarp * a.num_actions * static_cast<int64_t>(sizeof(T));
  if (warp_tile_bytes <= kWarpTileMaxBytes) {
    const int64_t num_tiles = (a.batch + kWarp - 1) / kWarp;
    const size_t shared = static_cast<size_t>(kTileWarpsPerBlock * warp_tile_bytes);
    const int threads = kTileWarpsPerBlock * kWarp;
    const int64_t blocks = (num_tiles + kTileWarpsPerBlock - 1) / kTileWarpsPerBlock;
    ForwardTileKernel<T, TT, IndexT>
        <<<static_cast<unsigned>(GridFor(blocks, threads, dev)), threads, shared, stream>>>(
            q, q_next, q_next_online, actions, rewards, terminals, a.batch,
            static_cast<int>(a.num_actions), params, discounts, loss, targets, delta, q_next_max);
  } else {
    const int64_t rows_per_block = kWarpRowThreads / kWarp;
    const int64_t blocks = (a.batch + rows_per_block - 1) / rows_per_block;
    ForwardWarpPerRowKernel<T, TT, IndexT>
        <<<static_cast<unsigned>(GridFor(blocks, kWarpRowThreads, dev)), kWarpRowThreads, 0,
           stream>>>(q, q_next, q_next_online, actions, rewards, terminals, a.batch, a.num_actions,
                     params, discounts, loss, targets, delta, q_next_max);
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

template <typename T, typename Index>
void LaunchGradIndexed(const GradArgs& a, const DeviceShape& dev, cudaStream_t stream) {
  const int threads = 256;
  const T* grad_loss = static_cast<const T*>(a.grad_loss);
  const T* targets = static_cast<const T*>(a.targets);
  T* grad_q = static_cast<T*>(a.grad_q);
  const Index n = static_cast<Index>(a.batch * a.num_actions);
  const Index num_actions = static_cast<Index>(a.num_actions);
  const bool aligned =
      ((reinterpret_cast<uintptr_t>(targets) | reinterpret_cast<uintptr_t>(grad_q)) % 16) == 0;
  const int64_t per_thread = aligned ? 16 / sizeof(T) : 1;
  const int64_t work = (static_cast<int64_t>(n) / per_thread + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(GridFor(std::max<int64_t>(work, 1), threads, dev));
  if (aligned) {
    GradKernel<T, Index, true>
        <<<grid, threads, 0, stream>>>(grad_loss, targets, n, num_actions, grad_q);
  } else {
    GradKernel<T, Index, false>
        <<<grid, threads, 0, stream>>>(grad_loss, targets, n, num_actions, grad_q);
  }
}

template <typename T>
const char* LaunchGradTyped(const GradArgs& a, cudaStream_t stream) {
  DeviceShape dev;
  if (const char* err = GetDeviceShape(&dev)) return err;
  if (a.batch * a.num_actions <= static_cast<int64_t>(UINT32_MAX)) {
    LaunchGradIndexed<T, uint32_t>(a, dev, stream);
  } else {
    LaunchGradIndexed<T, uint64_t>(a, dev, stream);
  }
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
