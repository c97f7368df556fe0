// The per-row math of the fused DQN target block: the ONE source of the formula.
//
// Included unchanged by the CPU kernel (g++) and the CUDA kernels (nvcc), so it uses
// no TensorFlow, Eigen or CUDA types: every function is templated on the element type T
// (float, double, Eigen::half / __half, Eigen::bfloat16 / __nv_bfloat16) and converts with
// static_cast to an accumulator type Acc (float, or double for double inputs).
//
// DQN 3.0 (NeuralQLearner.lua getQUpdate):
//   q_next_max[i] = max_a q_next[i, a]                     (or double DQN selection)
//   err[i]        = r[i] / r_max + discount[i] * (1 - term[i]) * q_next_max[i] - q[i, a_i]
//   delta[i]      = clamp(err[i], -clip_delta, clip_delta)  (clip_delta == 0: no clip)
//   targets[i, :] = 0 except targets[i, a_i] = delta[i]
//   loss[i]       = Huber_{clip_delta}(err[i])              (0.5 err^2 without clip)
// so that d loss[i] / d q[i, a_i] = -delta[i] exactly. discount[i] is one value for the
// batch or one per row (n-step returns cut short need gamma^k); a row whose discount is not
// in [0, 1] is an error like an out-of-range action.
#ifndef TFDQN_DQN_TARGETS_MATH_H_
#define TFDQN_DQN_TARGETS_MATH_H_

#include <cstdint>
#include <limits>

#if defined(__SSE2__) && !defined(__CUDACC__)
#include <emmintrin.h>
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TFDQN_HOSTDEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Forced: in the shared library g++ kept FinishRow out of line (a call through the PLT per
// row, its result packed into registers); inlining took forward + gradient at B = 4096,
// A = 6 from 75 to 57 us per step (benchmarks/bench_op.py's chain, this project's VM).
#define TFDQN_HOSTDEVICE inline __attribute__((always_inline))
#else
#define TFDQN_HOSTDEVICE inline
#endif

namespace tfdqn {

// Half-precision inputs accumulate in float; double stays double.
template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};

// Hyperparameters of one row's update, already in the accumulator type (float64 inputs
// get them at float64 precision).
template <typename Acc>
struct TargetParams {
  Acc discount;    // gamma in [0, 1]: the row's own, or the batch's (see Discounts)
  Acc r_max;       // rewards are divided by r_max (> 0)
  Acc clip_delta;  // >= 0; 0 disables clipping
};

// Where each row's discount comes from: TargetParams::discount for every row (values ==
// null), or values[i * stride] (a [B] tensor with stride 1, a scalar tensor with stride 0).
template <typename Acc>
struct Discounts {
  const Acc* values = nullptr;
  int64_t stride = 0;
};

// The parameters of row i: the batch's, with the row's discount when there is one.
template <typename Acc>
TFDQN_HOSTDEVICE TargetParams<Acc> RowParams(const TargetParams<Acc>& batch,
                                             const Discounts<Acc>& discounts, int64_t i) {
  TargetParams<Acc> p = batch;
  if (discounts.values != nullptr) p.discount = discounts.values[i * discounts.stride];
  return p;
}

// What a row's computation found; the caller decides how to report it.
enum class RowStatus : int { kOk = 0, kNonFinite = 1, kBadAction = 2, kBadDiscount = 3 };

// False for NaN too (every comparison with NaN is false).
template <typename Acc>
TFDQN_HOSTDEVICE bool DiscountInRange(Acc discount) {
  return discount >= Acc(0) && discount <= Acc(1);
}

// False for NaN and +-Inf without <cmath> (isfinite is not host+device everywhere) and
// without relying on the compiler keeping NaN semantics beyond IEEE subtraction.
template <typename Acc>
TFDQN_HOSTDEVICE bool IsFinite(Acc x) {
  return x - x == Acc(0);
}

// A quiet NaN without a run-time division (g++ does not fold 0/0 under -ftrapping-math,
// the default) and without host-only constexpr calls in device code.
template <typename Acc>
TFDQN_HOSTDEVICE Acc QuietNaN();
template <>
TFDQN_HOSTDEVICE float QuietNaN<float>() {
#ifdef __CUDA_ARCH__
  return __int_as_float(0x7fc00000);
#else
  return std::numeric_limits<float>::quiet_NaN();
#endif
}
template <>
TFDQN_HOSTDEVICE double QuietNaN<double>() {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(0x7ff8000000000000LL);
#else
  return std::numeric_limits<double>::quiet_NaN();
#endif
}

// Running max of a row. Any NaN in the row is remembered through `finite` (plain max
// comparisons would silently skip NaN).
template <typename Acc>
struct RowMax {
  Acc value;
  bool finite;
  bool empty;
  TFDQN_HOSTDEVICE RowMax() : value(Acc(0)), finite(true), empty(true) {}
  TFDQN_HOSTDEVICE void Add(Acc x) {
    finite = finite && IsFinite(x);
    if (empty || x > value) value = x;
    empty = false;
  }
  // For parallel reductions: merge another partial result.
  TFDQN_HOSTDEVICE void Merge(const RowMax& other) {
    finite = finite && other.finite;
    if (!other.empty && (empty || other.value > value)) value = other.value;
    empty = empty && other.empty;
  }
};

// Running argmax of a row, FIRST index on ties (double DQN action selection). Merging
// partial results from any split of the row gives the same answer as a left-to-right scan.
template <typename Acc>
struct RowArgMax {
  Acc value;
  int64_t index;  // -1 while empty
  bool finite;
  TFDQN_HOSTDEVICE RowArgMax() : value(Acc(0)), index(-1), finite(true) {}
  TFDQN_HOSTDEVICE void Add(Acc x, int64_t i) {
    finite = finite && IsFinite(x);
    if (index < 0 || x > value || (x == value && i < index)) {
      value = x;
      index = i;
    }
  }
  TFDQN_HOSTDEVICE void Merge(const RowArgMax& other) {
    finite = finite && other.finite;
    if (other.index < 0) return;
    if (index < 0 || other.value > value || (other.value == value && other.index < index)) {
      value = other.value;
      index = other.index;
    }
  }
};

// What FinishRow computes for a row: the scalar part of the update, shared by every kernel
// once q_next_max and q[i, a_i] are known. When any input of the row is not finite, valid
// is false and loss, delta and q_next_max are NaN.
template <typename Acc>
struct RowResult {
  Acc loss;
  Acc delta;
  Acc q_next_max;
  bool valid;  // false: every output of the row, the whole targets row included, is NaN
};

// The value of targets[i, a] for every a other than the taken action.
template <typename Acc>
TFDQN_HOSTDEVICE Acc TargetsFill(const RowResult<Acc>& r) {
  return r.valid ? Acc(0) : QuietNaN<Acc>();
}

template <typename Acc>
TFDQN_HOSTDEVICE Acc Larger(Acc a, Acc b) {
  return b > a ? b : a;  // branch-free (maxss / a select); NaN is tracked separately
}

template <typename Acc>
TFDQN_HOSTDEVICE Acc Smaller(Acc a, Acc b) {
  return b < a ? b : a;  // branch-free (minss / a select)
}

// if_true when a <= limit, else if_false: one of the two values, bit for bit, without a
// branch. Which one applies is a coin flip per row in some uses (|err| against
// clip_delta), where a branch mispredicts about half the time: perf showed g++ branching
// on the plain ternary, so x86 hosts select with a compare mask.
template <typename Acc>
TFDQN_HOSTDEVICE Acc SelectIfAtMost(Acc a, Acc limit, Acc if_true, Acc if_false) {
  return a <= limit ? if_true : if_false;
}

#if defined(__SSE2__) && !defined(__CUDACC__)
template <>
inline float SelectIfAtMost<float>(float a, float limit, float if_true, float if_false) {
  const __m128 mask = _mm_cmple_ss(_mm_set_ss(a), _mm_set_ss(limit));
  return _mm_cvtss_f32(
      _mm_or_ps(_mm_and_ps(mask, _mm_set_ss(if_true)), _mm_andnot_ps(mask, _mm_set_ss(if_false))));
}

template <>
inline double SelectIfAtMost<double>(double a, double limit, double if_true, double if_false) {
  const __m128d mask = _mm_cmple_sd(_mm_set_sd(a), _mm_set_sd(limit));
  return _mm_cvtsd_f64(
      _mm_or_pd(_mm_and_pd(mask, _mm_set_sd(if_true)), _mm_andnot_pd(mask, _mm_set_sd(if_false))));
}
#endif

// kKnownFinite: the caller has already checked that reward and terminal are finite (the
// CPU kernel checks whole blocks of rows at once), so that check is left out.
template <typename Acc, bool kKnownFinite = false>
TFDQN_HOSTDEVICE RowResult<Acc> FinishRow(Acc q_taken, Acc q_next_max, Acc reward, Acc terminal,
                                          bool inputs_finite, const TargetParams<Acc>& p) {
  RowResult<Acc> out;
  out.valid = inputs_finite && (kKnownFinite || (IsFinite(reward) && IsFinite(terminal)));
  if (!out.valid) {
    out.loss = out.delta = out.q_next_max = QuietNaN<Acc>();
    return out;
  }
  // Same order of operations as DQN 3.0: q2 = q2_max * discount * (1 - term);
  // delta = r / r_max; delta += q2; delta -= q.
  const Acc bootstrap = q_next_max * p.discount * (Acc(1) - terminal);
  const Acc err = reward / p.r_max + bootstrap - q_taken;
  Acc delta = err;
  Acc loss;
  if (p.clip_delta > Acc(0)) {
    // Clip to [-clip_delta, clip_delta] and pick the Huber branch without branching: both
    // are coin flips per row. (max then min gives what clipping at either end gives, -0.0
    // and NaN included; Larger(err, -err) is |err| with -0.0 kept as the old select kept it.)
    delta = Smaller(Larger(err, -p.clip_delta), p.clip_delta);
    const Acc abs_err = Larger(err, -err);
    const Acc quadratic = Acc(0.5) * err * err;
    const Acc linear = p.clip_delta * (abs_err - Acc(0.5) * p.clip_delta);
    loss = SelectIfAtMost(abs_err, p.clip_delta, quadratic, linear);
  } else {
    loss = Acc(0.5) * err * err;
  }
  out.loss = loss;
  out.delta = delta;
  out.q_next_max = q_next_max;
  return out;
}

// Max of a row and whether all of it is finite, in one pass, with no branch on the data
// (random rows would mispredict). The NaN/Inf check is a separate flag because the max
// comparison alone would skip a NaN.
template <typename Acc, typename T>
struct RowScan {
  Acc max;
  bool finite;
};

template <typename Acc, typename T>
TFDQN_HOSTDEVICE RowScan<Acc, T> ScanRow(const T* x, int64_t A) {
  Acc m = static_cast<Acc>(x[0]);
  bool finite = IsFinite(m);
  for (int64_t a = 1; a < A; ++a) {
    const Acc v = static_cast<Acc>(x[a]);
    m = Larger(m, v);
    finite = finite & IsFinite(v);
  }
  return RowScan<Acc, T>{m, finite};
}

// Whether a whole row is finite (q's row: only q[i, a_i] enters the formula, but a NaN
// anywhere in the network's output must not go unnoticed).
template <typename Acc, typename T>
TFDQN_HOSTDEVICE bool RowFinite(const T* x, int64_t A) {
  bool finite = true;
  for (int64_t a = 0; a < A; ++a) finite = finite & IsFinite(static_cast<Acc>(x[a]));
  return finite;
}

#if defined(__SSE2__) && !defined(__CUDACC__)
// x86 CPU build of ScanRow for float rows: the same result (max over a finite row, and
// the finiteness flag) with 4-wide SSE2, since g++ will not vectorize a float max
// reduction without -ffast-math. _mm_max_ps(v, m) is exactly Larger(m, v), NaN included.
template <>
inline RowScan<float, float> ScanRow<float, float>(const float* x, int64_t A) {
  if (A < 8) {
    float m = x[0], poison = x[0] - x[0];
    for (int64_t a = 1; a < A; ++a) {
      m = Larger(m, x[a]);
      poison += x[a] - x[a];
    }
    return RowScan<float, float>{m, poison == 0.0f};
  }
  __m128 m = _mm_loadu_ps(x);
  __m128 poison = _mm_sub_ps(m, m);
  int64_t a = 4;
  for (; a + 4 <= A; a += 4) {
    const __m128 v = _mm_loadu_ps(x + a);
    m = _mm_max_ps(v, m);
    poison = _mm_add_ps(poison, _mm_sub_ps(v, v));
  }
  if (a < A) {  // the last 4 elements again (overlap is harmless for max and finiteness)
    const __m128 v = _mm_loadu_ps(x + A - 4);
    m = _mm_max_ps(v, m);
    poison = _mm_add_ps(poison, _mm_sub_ps(v, v));
  }
  m = _mm_max_ps(_mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)), m);
  m = _mm_max_ps(_mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)), m);
  poison = _mm_add_ps(poison, _mm_shuffle_ps(poison, poison, _MM_SHUFFLE(1, 0, 3, 2)));
  poison = _mm_add_ps(poison, _mm_shuffle_ps(poison, poison, _MM_SHUFFLE(2, 3, 0, 1)));
  return RowScan<float, float>{_mm_cvtss_f32(m), _mm_cvtss_f32(poison) == 0.0f};
}

template <>
inline bool RowFinite<float, float>(const float* x, int64_t A) {
  return ScanRow<float, float>(x, A).finite;
}
#endif

// Whether all n values are finite. The CPU kernel checks blocks of rows with it before
// the row loop, which then leaves out the per-element checks (about a quarter of a row's
// instructions at A = 6) when the whole block is finite, as it is in training.
template <typename T>
inline bool AllFinite(const T* x, int64_t n) {
  return RowFinite<typename Accumulator<T>::type, T>(x, n);  // one long row
}

template <>
inline bool AllFinite<bool>(const bool*, int64_t) {
  return true;
}

#if defined(__SSE2__) && !defined(__CUDACC__)
template <>
inline bool AllFinite<float>(const float* x, int64_t n) {
  // x - x is 0 for every finite x and NaN for NaN and +-Inf; a NaN survives the sums. Two
  // accumulators, so that consecutive additions do not wait on each other.
  __m128 p0 = _mm_setzero_ps(), p1 = _mm_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m128 a = _mm_loadu_ps(x + k), b = _mm_loadu_ps(x + k + 4);
    p0 = _mm_add_ps(p0, _mm_sub_ps(a, a));
    p1 = _mm_add_ps(p1, _mm_sub_ps(b, b));
  }
  float tail = 0.0f;
  for (; k < n; ++k) tail += x[k] - x[k];
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_add_ps(p0, p1));
  return (lanes[0] + lanes[1] + lanes[2] + lanes[3] + tail) == 0.0f;
}
#endif

// The whole forward for one row of A >= 1 actions. `q_next_online` is null for plain DQN.
// Reads every input of the row (so a NaN anywhere in it is seen), writes the targets row
// and the three per-row scalars. Never reads or writes outside the row, even for an
// out-of-range action: that row's outputs become NaN and kBadAction is returned (for a
// discount outside [0, 1]: NaN and kBadDiscount).
// Terminal type TT may differ from T (bool or any float type).
// kKnownFinite: the caller guarantees that q, q_next, q_next_online, reward and terminal of
// the row are all finite (see AllFinite); the per-element checks are then left out, and
// the values computed are the same.
template <typename T, typename TT, typename IndexT, bool kKnownFinite = false>
TFDQN_HOSTDEVICE RowStatus DqnTargetsRow(const T* q, const T* q_next, const T* q_next_online,
                                         IndexT action, T reward, TT terminal, int64_t A,
                                         const TargetParams<typename Accumulator<T>::type>& p,
                                         T* targets, T* loss, T* delta, T* q_next_max) {
  using Acc = typename Accumulator<T>::type;
  const bool action_ok = action >= 0 && static_cast<int64_t>(action) < A;
  const int64_t taken = action_ok ? static_cast<int64_t>(action) : 0;
  const Acc q_taken = static_cast<Acc>(q[taken]);
  bool finite = true;
  Acc next_value;
  if (kKnownFinite) {
    next_value = ScanRow<Acc, T>(q_next, A).max;  // the same max; the unused flag is dropped
  } else {
    const RowScan<Acc, T> next_scan = ScanRow<Acc, T>(q_next, A);
    finite = RowFinite<Acc, T>(q, A) && next_scan.finite;
    next_value = next_scan.max;
  }
  if (q_next_online != nullptr) {
    // Double DQN: first index of the online network's max (strict > keeps the first).
    Acc best = static_cast<Acc>(q_next_online[0]);
    bool online_finite = kKnownFinite || IsFinite(best);
    int64_t best_index = 0;
    for (int64_t a = 1; a < A; ++a) {
      const Acc v = static_cast<Acc>(q_next_online[a]);
      const bool better = v > best;
      best = better ? v : best;
      best_index = better ? a : best_index;
      if (!kKnownFinite) online_finite = online_finite & IsFinite(v);
    }
    finite = finite && online_finite;
    next_value = static_cast<Acc>(q_next[best_index]);
  }
  const bool discount_ok = DiscountInRange(p.discount);
  RowResult<Acc> r = FinishRow<Acc, kKnownFinite>(q_taken, next_value, static_cast<Acc>(reward),
                                                  static_cast<Acc>(terminal),
                                                  finite && action_ok && discount_ok, p);
  const T fill = static_cast<T>(TargetsFill(r));
  for (int64_t a = 0; a < A; ++a) targets[a] = fill;
  if (action_ok) targets[action] = static_cast<T>(r.delta);
  *loss = static_cast<T>(r.loss);
  *delta = static_cast<T>(r.delta);
  *q_next_max = static_cast<T>(r.q_next_max);
  if (!action_ok) return RowStatus::kBadAction;
  if (!discount_ok) return RowStatus::kBadDiscount;
  return r.valid ? RowStatus::kOk : RowStatus::kNonFinite;
}

// The gradient op, per element: d/dq of sum_i upstream[i] * loss[i] = -upstream[i] * targets.
template <typename T>
TFDQN_HOSTDEVICE T DqnTargetsGradElement(T upstream, T target) {
  using Acc = typename Accumulator<T>::type;
  return static_cast<T>(-static_cast<Acc>(upstream) * static_cast<Acc>(target));
}

}  // namespace tfdqn

#endif  // TFDQN_DQN_TARGETS_MATH_H_
