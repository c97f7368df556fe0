// gpu_check: parity test and benchmark of the CUDA kernels, with no TensorFlow.
//
// 1. Parity: for many shapes, dtypes and edge cases, run the forward and gradient
//    launchers on the GPU and compare every output with the same per-row math
//    (dqn_targets_math.h) executed on the host. NaN must land exactly where the host puts it.
// 2. Launch count: captures the B = 32 forward and gradient into CUDA graphs and counts the
//    kernel nodes (must be one each).
// 3. Bandwidth: times both kernels with CUDA events for B = 32 .. 2^24 (A = 6 and 18) and
//    compares the bytes they must move with a device-to-device copy of the same traffic.
//
// Usage: gpu_check [--quick] [--max-log2-batch N]. Exit status 0 only if every check passed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dqn_targets_gpu.h"
#include "dqn_targets_math.h"

namespace {

using tfdqn::DType;

#define CHECK_CUDA(expr)                                                                     \
  do {                                                                                       \
    cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__, #expr);                                                         \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)

#define CHECK_LAUNCH(expr)                                                            \
  do {                                                                                \
    const char* err_ = (expr);                                                        \
    if (err_) {                                                                       \
      std::fprintf(stderr, "launch failed at %s:%d: %s\n", __FILE__, __LINE__, err_); \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

template <typename T>
DType DTypeOf();
template <>
DType DTypeOf<__half>() {
  return DType::kHalf;
}
template <>
DType DTypeOf<__nv_bfloat16>() {
  return DType::kBFloat16;
}
template <>
DType DTypeOf<float>() {
  return DType::kFloat;
}
template <>
DType DTypeOf<double>() {
  return DType::kDouble;
}
template <>
DType DTypeOf<bool>() {
  return DType::kBool;
}
template <typename T>
const char* NameOf();
template <>
const char* NameOf<__half>() {
  return "float16";
}
template <>
const char* NameOf<__nv_bfloat16>() {
  return "bfloat16";
}
template <>
const char* NameOf<float>() {
  return "float32";
}
template <>
const char* NameOf<double>() {
  return "float64";
}

double ToDouble(float x) { return x; }
double ToDouble(double x) { return x; }
double ToDouble(__half x) { return __half2float(x); }
double ToDouble(__nv_bfloat16 x) { return __bfloat162float(x); }

// std::vector<bool> has no data(); host arrays use this instead.
template <typename T>
struct HostArray {
  std::unique_ptr<T[]> p;
  size_t n;
  explicit HostArray(size_t count) : p(new T[count > 0 ? count : 1]()), n(count) {}
  T* data() { return p.get(); }
  const T* data() const { return p.get(); }
  size_t size() const { return n; }
  T& operator[](size_t k) { return p[k]; }
  const T& operator[](size_t k) const { return p[k]; }
};

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    if (n) CHECK_CUDA(cudaMalloc(&ptr, n * sizeof(T)));
  }
  DeviceBuffer(const HostArray<T>& host) : DeviceBuffer(host.size()) {
    if (n) CHECK_CUDA(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  HostArray<T> ToHost() const {
    HostArray<T> h(n);
    if (n) CHECK_CUDA(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct Case {
  int64_t batch, num_actions;
  bool double_dqn, bool_terminals, int64_actions;
  float discount, r_max, clip_delta;
  double nan_row_fraction;     // rows that get a NaN or Inf somewhere in their inputs
  double bad_action_fraction;  // rows whose action is out of range (must become NaN)
  bool ties;                   // small integer values so that argmax ties are common
  bool clip_boundary;          // err exactly +-clip_delta in some rows
  bool per_row_discount;       // discounts[i] per row (gamma^k, 0, 1; bad ones with bad actions)
};

struct Tally {
  int cases = 0, failures = 0;
};

// Compares one output: equal NaN-ness, and |gpu - cpu| <= tol * (1 + |cpu|).
template <typename T>
bool Same(const HostArray<T>& gpu, const HostArray<T>& cpu, double tol, const char* what,
          const std::string& label) {
  for (size_t k = 0; k < cpu.size(); ++k) {
    const double gd = ToDouble(gpu[k]), cd = ToDouble(cpu[k]);
    const bool gn = std::isnan(gd), cn = std::isnan(cd);
    if (gn != cn || (!cn && std::fabs(gd - cd) > tol * (1.0 + std::fabs(cd)))) {
      std::printf("MISMATCH %s %s[%zu]: gpu %.9g cpu %.9g\n", label.c_str(), what, k, gd, cd);
      return false;
    }
  }
  return true;
}

template <typename T, typename IndexT, typename TT>
bool RunCase(const Case& c, std::mt19937_64& rng) {
  using Acc = typename tfdqn::Accumulator<T>::type;
  const int64_t B = c.batch, A = c.num_actions;
  std::uniform_real_distribution<double> uni(-3.0, 3.0);
  std::uniform_int_distribution<int> small(-2, 2);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  HostArray<T> q(B * A), q_next(B * A), q_online(B * A), rewards(B);
  HostArray<IndexT> actions(B);
  HostArray<TT> terminals(B);
  auto value = [&]() { return c.ties ? static_cast<double>(small(rng)) : uni(rng); };
  for (int64_t k = 0; k < B * A; ++k) {
    q[k] = static_cast<T>(value());
    q_next[k] = static_cast<T>(value());
    q_online[k] = static_cast<T>(value());
  }
  for (int64_t i = 0; i < B; ++i) {
    actions[i] = static_cast<IndexT>(rng() % A);
    rewards[i] = static_cast<T>(c.ties ? small(rng) : uni(rng));
    terminals[i] = static_cast<TT>(coin(rng) < 0.2 ? 1 : 0);
    if (c.clip_boundary && i % 3 == 0) {
      // r / r_max - q[a] == +-clip exactly: terminal row, q[a] = 0, r = +-clip * r_max.
      terminals[i] = static_cast<TT>(1);
      q[i * A + actions[i]] = static_cast<T>(0.0);
      rewards[i] = static_cast<T>((i % 2 ? -1.0 : 1.0) * c.clip_delta * c.r_max);
    }
    if (coin(rng) < c.nan_row_fraction) {
      const double poison = (rng() % 2) ? NAN : INFINITY;
      switch (rng() % 4) {
        case 0: q[i * A + rng() % A] = static_cast<T>(poison); break;
        case 1: q_next[i * A + rng() % A] = static_cast<T>(poison); break;
        case 2: q_online[i * A + rng() % A] = static_cast<T>(poison); break;
        default: rewards[i] = static_cast<T>(poison); break;
      }
    }
    if (coin(rng) < c.bad_action_fraction) {
      actions[i] = static_cast<IndexT>((rng() % 2) ? A + static_cast<int64_t>(rng() % 3) : -1);
    }
  }
  // Per-row discounts: gamma^k for k = 1..5, 0 and 1; out of [0, 1] (1.5, -0.5, NaN) in
  // some rows of the cases that also test bad actions.
  HostArray<Acc> discounts(c.per_row_discount ? B : 0);
  for (int64_t i = 0; i < static_cast<int64_t>(discounts.size()); ++i) {
    const int k = static_cast<int>(rng() % 7);
    discounts[i] = k == 5 ? Acc(0) : k == 6 ? Acc(1) : static_cast<Acc>(std::pow(0.99, k + 1));
    if (coin(rng) < c.bad_action_fraction) {
      const int bad = static_cast<int>(rng() % 3);
      discounts[i] = bad == 0 ? Acc(1.5) : bad == 1 ? Acc(-0.5) : static_cast<Acc>(NAN);
    }
  }
  // Host reference: the same per-row math, executed on the CPU.
  const tfdqn::TargetParams<Acc> p{static_cast<Acc>(c.discount), static_cast<Acc>(c.r_max),
                                   static_cast<Acc>(c.clip_delta)};
  const tfdqn::Discounts<Acc> row_discounts{c.per_row_discount ? discounts.data() : nullptr, 1};
  HostArray<T> loss(B), targets(B * A), delta(B), qmax(B), grad_loss(B), grad_q(B * A);
  for (int64_t i = 0; i < B; ++i) {
    tfdqn::DqnTargetsRow<T, TT, IndexT>(
        &q[i * A], &q_next[i * A], c.double_dqn ? &q_online[i * A] : nullptr, actions[i],
        rewards[i], terminals[i], A, tfdqn::RowParams(p, row_discounts, i), &targets[i * A],
        &loss[i], &delta[i], &qmax[i]);
    grad_loss[i] = static_cast<T>(uni(rng));
    for (int64_t a = 0; a < A; ++a) {
      grad_q[i * A + a] = tfdqn::DqnTargetsGradElement<T>(grad_loss[i], targets[i * A + a]);
    }
  }
  DeviceBuffer<T> d_q(q), d_qn(q_next), d_qo(q_online), d_r(rewards), d_gl(grad_loss);
  DeviceBuffer<IndexT> d_a(actions);
  DeviceBuffer<TT> d_t(terminals);
  DeviceBuffer<Acc> d_disc(discounts);
  DeviceBuffer<T> d_loss(B), d_targets(B * A), d_delta(B), d_qmax(B), d_grad(B * A);
  tfdqn::ForwardArgs f{DTypeOf<T>(),
                       DTypeOf<TT>(),
                       sizeof(IndexT) == 8,
                       B,
                       A,
                       c.discount,
                       c.r_max,
                       c.clip_delta,
                       c.per_row_discount ? d_disc.ptr : nullptr,
                       1,
                       d_q.ptr,
                       d_qn.ptr,
                       c.double_dqn ? d_qo.ptr : nullptr,
                       d_a.ptr,
                       d_r.ptr,
                       d_t.ptr,
                       d_loss.ptr,
                       d_targets.ptr,
                       d_delta.ptr,
                       d_qmax.ptr};
  CHECK_LAUNCH(tfdqn::LaunchDqnTargetsForward(f, nullptr));
  // The gradient consumes the GPU's own targets, as in TF.
  tfdqn::GradArgs g{DTypeOf<T>(), B, A, d_gl.ptr, d_targets.ptr, d_grad.ptr};
  CHECK_LAUNCH(tfdqn::LaunchDqnTargetsGrad(g, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  // Host and device run the same operations in the same order (nvcc with --fmad=false), so
  // float32/float64 agree to the last bit; the tolerance only absorbs 16-bit rounding.
  const double tol = sizeof(T) == 2 ? 1e-3 : (sizeof(T) == 4 ? 1e-6 : 1e-12);
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "%s B=%lld A=%lld double=%d term=%s act=%s clip=%g nan=%g bad=%g ties=%d "
                "row_discount=%d",
                NameOf<T>(), static_cast<long long>(B), static_cast<long long>(A), c.double_dqn,
                sizeof(TT) == 1 ? "bool" : NameOf<T>(), sizeof(IndexT) == 8 ? "int64" : "int32",
                c.clip_delta, c.nan_row_fraction, c.bad_action_fraction, c.ties,
                c.per_row_discount);
  const std::string label(buf);
  bool ok = Same(d_loss.ToHost(), loss, tol, "loss", label) &&
            Same(d_delta.ToHost(), delta, tol, "delta", label) &&
            Same(d_qmax.ToHost(), qmax, tol, "q_next_max", label) &&
            Same(d_targets.ToHost(), targets, tol, "targets", label) &&
            Same(d_grad.ToHost(), grad_q, tol, "grad_q", label);
  return ok;
}

template <typename T>
void RunCasesForType(const std::vector<Case>& cases, Tally* tally, std::mt19937_64& rng) {
  for (const Case& c : cases) {
    bool ok;
    if (c.bool_terminals) {
      ok = c.int64_actions ? RunCase<T, int64_t, bool>(c, rng) : RunCase<T, int32_t, bool>(c, rng);
    } else {
      ok = c.int64_actions ? RunCase<T, int64_t, T>(c, rng) : RunCase<T, int32_t, T>(c, rng);
    }
    ++tally->cases;
    if (!ok) ++tally->failures;
  }
}

std::vector<Case> ParityCases(bool quick) {
  std::vector<Case> cases;
  const int64_t batches[] = {0, 1, 7, 32, 129, 1000, 5000};
  const int64_t actions[] = {1, 2, 6, 18, 33, 100, 257, 1024, 4096};
  int k = 0;
  for (int64_t B : batches) {
    for (int64_t A : actions) {
      if (B * A > (quick ? 200000 : 3000000)) continue;
      for (int variant = 0; variant < 4; ++variant, ++k) {
        Case c;
        c.batch = B;
        c.num_actions = A;
        c.double_dqn = variant & 1;
        c.bool_terminals = (k % 3) != 0;
        c.int64_actions = (k % 2) == 0;
        c.discount = 0.99f;
        c.r_max = (variant == 2) ? 2.0f : 1.0f;
        c.clip_delta = (variant == 3) ? 0.0f : 1.0f;
        c.nan_row_fraction = (variant >= 2) ? 0.1 : 0.0;
        c.bad_action_fraction = (variant == 3) ? 0.05 : 0.0;
        c.ties = (variant == 1) || (A == 2);
        c.clip_boundary = (variant == 2) || (variant == 0 && B >= 7);
        c.per_row_discount = (k % 4) >= 2;
        cases.push_back(c);
      }
    }
  }
  return cases;
}

// Kernel nodes in a CUDA graph captured around one launch: proves "one launch".
int KernelNodesOf(const std::function<void(cudaStream_t)>& launch) {
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreate(&s));
  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  launch(s);
  CHECK_CUDA(cudaStreamEndCapture(s, &graph));
  size_t n = 0;
  CHECK_CUDA(cudaGraphGetNodes(graph, nullptr, &n));
  std::vector<cudaGraphNode_t> nodes(n);
  CHECK_CUDA(cudaGraphGetNodes(graph, nodes.data(), &n));
  int kernels = 0;
  for (auto node : nodes) {
    cudaGraphNodeType type;
    CHECK_CUDA(cudaGraphNodeGetType(node, &type));
    if (type == cudaGraphNodeTypeKernel) ++kernels;
  }
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(s));
  return kernels;
}

// Median time in microseconds of `launch`, each sample averaging `inner` back-to-back runs.
template <typename F>
double MedianMicros(F launch, int inner, int samples) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  launch();  // warm-up
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int s = 0; s < samples; ++s) {
    CHECK_CUDA(cudaEventRecord(start));
    for (int k = 0; k < inner; ++k) launch();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    t.push_back(1000.0 * ms / inner);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Benchmark(int max_log2_batch, bool* bandwidth_target_met) {
  std::printf(
      "\n| A | B | fwd us | fwd GB/s | copy GB/s | fwd/copy | grad us | grad GB/s | copy GB/s | "
      "grad/copy |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  *bandwidth_target_met = true;
  const int64_t A_values[] = {6, 18};
  for (int64_t A : A_values) {
    for (int lg = 5; lg <= max_log2_batch; lg += (lg < 10 ? 5 : 2)) {
      const int64_t B = int64_t{1} << lg;
      DeviceBuffer<float> q(B * A), qn(B * A), r(B), loss(B), targets(B * A), delta(B), qmax(B),
          gl(B), grad(B * A);
      DeviceBuffer<int32_t> act(B);
      DeviceBuffer<bool> term(B);
      CHECK_CUDA(cudaMemset(q.ptr, 0, B * A * sizeof(float)));
      CHECK_CUDA(cudaMemset(qn.ptr, 0, B * A * sizeof(float)));
      CHECK_CUDA(cudaMemset(r.ptr, 0, B * sizeof(float)));
      CHECK_CUDA(cudaMemset(gl.ptr, 0, B * sizeof(float)));
      CHECK_CUDA(cudaMemset(act.ptr, 0, B * sizeof(int32_t)));
      CHECK_CUDA(cudaMemset(term.ptr, 0, B * sizeof(bool)));
      tfdqn::ForwardArgs f{DType::kFloat, DType::kBool, false,       B,         A,
                           0.99,          1.0,          1.0,         nullptr,   0,
                           q.ptr,         qn.ptr,       nullptr,     act.ptr,   r.ptr,
                           term.ptr,      loss.ptr,     targets.ptr, delta.ptr, qmax.ptr};
      tfdqn::GradArgs g{DType::kFloat, B, A, gl.ptr, targets.ptr, grad.ptr};
      // Bytes each kernel must move at least (reads + writes).
      const double fwd_bytes = B * (3.0 * A * 4 + 4 + 4 + 1 + 3 * 4);
      const double grad_bytes = B * (2.0 * A * 4 + 4);
      // A device-to-device copy of N bytes moves 2N bytes (read + write).
      const size_t copy_fwd = static_cast<size_t>(fwd_bytes / 2),
                   copy_grad = static_cast<size_t>(grad_bytes / 2);
      DeviceBuffer<unsigned char> src(copy_fwd), dst(copy_fwd);
      const int inner = B <= (1 << 14) ? 200 : (B <= (1 << 20) ? 20 : 5);
      const int samples = 9;
      const double t_fwd = MedianMicros(
          [&] { CHECK_LAUNCH(tfdqn::LaunchDqnTargetsForward(f, nullptr)); }, inner, samples);
      const double t_grad = MedianMicros(
          [&] { CHECK_LAUNCH(tfdqn::LaunchDqnTargetsGrad(g, nullptr)); }, inner, samples);
      const double t_cf = MedianMicros(
          [&] {
            CHECK_CUDA(cudaMemcpyAsync(dst.ptr, src.ptr, copy_fwd, cudaMemcpyDeviceToDevice));
          },
          inner, samples);
      const double t_cg = MedianMicros(
          [&] {
            CHECK_CUDA(cudaMemcpyAsync(dst.ptr, src.ptr, copy_grad, cudaMemcpyDeviceToDevice));
          },
          inner, samples);
      const double bw_f = fwd_bytes / t_fwd / 1e3, bw_cf = fwd_bytes / t_cf / 1e3;
      const double bw_g = grad_bytes / t_grad / 1e3, bw_cg = grad_bytes / t_cg / 1e3;
      std::printf("| %lld | 2^%d | %.2f | %.0f | %.0f | %.0f%% | %.2f | %.0f | %.0f | %.0f%% |\n",
                  static_cast<long long>(A), lg, t_fwd, bw_f, bw_cf, 100 * bw_f / bw_cf, t_grad,
                  bw_g, bw_cg, 100 * bw_g / bw_cg);
      if (A == 18 && lg >= 22 && (bw_f < 0.8 * bw_cf || bw_g < 0.8 * bw_cg)) {
        *bandwidth_target_met = false;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int max_log2_batch = 24;
  for (int k = 1; k < argc; ++k) {
    if (!std::strcmp(argv[k], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[k], "--max-log2-batch") && k + 1 < argc)
      max_log2_batch = std::atoi(argv[++k]);
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--max-log2-batch N]\n", argv[0]);
      return 2;
    }
  }
  int dev = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB), driver %d, runtime %d\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0,
              driver, runtime);

  std::mt19937_64 rng(20261126);
  const std::vector<Case> cases = ParityCases(quick);
  Tally tally;
  RunCasesForType<float>(cases, &tally, rng);
  RunCasesForType<double>(cases, &tally, rng);
  RunCasesForType<__half>(cases, &tally, rng);
  RunCasesForType<__nv_bfloat16>(cases, &tally, rng);
  std::printf(
      "parity: %d cases, %d failed (float32, float64, float16, bfloat16; B 0..5000, A 1..4096)\n",
      tally.cases, tally.failures);

  // One launch per direction at B = 32, A = 18.
  DeviceBuffer<float> q(32 * 18), out(32 * 18), v(32);
  DeviceBuffer<int32_t> a(32);
  DeviceBuffer<bool> t(32);
  CHECK_CUDA(cudaMemset(a.ptr, 0, 32 * sizeof(int32_t)));
  tfdqn::ForwardArgs f{DType::kFloat, DType::kBool, false, 32,      18,    0.99,    1.0,
                       1.0,           nullptr,      0,     q.ptr,   q.ptr, nullptr, a.ptr,
                       v.ptr,         t.ptr,        v.ptr, out.ptr, v.ptr, v.ptr};
  tfdqn::GradArgs g{DType::kFloat, 32, 18, v.ptr, q.ptr, out.ptr};
  const int fwd_kernels =
      KernelNodesOf([&](cudaStream_t s) { CHECK_LAUNCH(tfdqn::LaunchDqnTargetsForward(f, s)); });
  const int grad_kernels =
      KernelNodesOf([&](cudaStream_t s) { CHECK_LAUNCH(tfdqn::LaunchDqnTargetsGrad(g, s)); });
  std::printf("kernel launches at B=32, A=18: forward %d, gradient %d\n", fwd_kernels,
              grad_kernels);

  bool bandwidth_ok = true;
  if (max_log2_batch >= 5) Benchmark(max_log2_batch, &bandwidth_ok);
  std::printf("\nbandwidth target (A=18, B>=2^22, >= 80%% of copy): %s\n",
              max_log2_batch >= 22 ? (bandwidth_ok ? "met" : "NOT met") : "not measured");
  const bool ok = tally.failures == 0 && fwd_kernels == 1 && grad_kernels == 1;
  std::printf("gpu_check: %s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
