// The per-row math of the fused DQN target block: the ONE source of the formula.
//
// Included unchanged by the CPU kernel (g++) and the CUDA kernels (nvcc), so it uses
// no TensorFlow, Eigen or CUDA types: every function is templated on the element type T
// (float, double, Eigen::half / __half, Eigen::bfloat16 / __nv_bfloat16) and converts with
// static_cast to an accumulator type Acc (float, or double for double inputs).
//
// DQN 3.0 (NeuralQLearner.lua getQUpdate):
//   q_next_max[i] = max_a q_next[i, a]                     (or double DQN selection)
//   err[i]        = r[i] / r_max + discount * (1 - term[i]) * q_next_max[i] - q[i, a_i]
//   delta[i]      = clamp(err[i], -clip_delta, clip_delta)  (clip_delta == 0: no clip)
//   targets[i, :] = 0 except targets[i, a_i] = delta[i]
//   loss[i]       = Huber_{clip_delta}(err[i])              (0.5 err^2 without clip)
// so that d loss[i] / d q[i, a_i] = -delta[i] exactly.
#ifndef TFDQN_DQN_TARGETS_MATH_H_
#define TFDQN_DQN_TARGETS_MATH_H_

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TFDQN_HOSTDEVICE __host__ __device__ __forceinline__
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

// Hyperparameters of the update, already in the accumulator type.
template <typename Acc>
struct TargetParams {
  Acc discount;    // gamma in [0, 1]
  Acc r_max;       // rewards are divided by r_max (> 0)
  Acc clip_delta;  // >= 0; 0 disables clipping
};

// What a row's computation found; the caller decides how to report it.
enum class RowStatus : int { kOk = 0, kNonFinite = 1, kBadAction = 2 };

// False for NaN and +-Inf without <cmath> (isfinite is not host+device everywhere) and
// without relying on the compiler keeping NaN semantics beyond IEEE subtraction.
template <typename Acc>
TFDQN_HOSTDEVICE bool IsFinite(Acc x) {
  return x - x == Acc(0);
}

template <typename Acc>
TFDQN_HOSTDEVICE Acc QuietNaN() {
  return Acc(0) / Acc(0);  // no <limits> on every device compiler; 0/0 is a quiet NaN
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

// The scalar part of the update, shared by every kernel once q_next_max and q[i, a_i] are
// known. Returns the status; outputs are NaN when any input is not finite.
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
TFDQN_HOSTDEVICE RowResult<Acc> FinishRow(Acc q_taken, Acc q_next_max, Acc reward,
                                          Acc terminal, bool inputs_finite,
                                          const TargetParams<Acc>& p) {
  RowResult<Acc> out;
  out.valid = inputs_finite && IsFinite(reward) && IsFinite(terminal);
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
    if (delta > p.clip_delta) delta = p.clip_delta;
    if (delta < -p.clip_delta) delta = -p.clip_delta;
    const Acc abs_err = err < Acc(0) ? -err : err;
    loss = abs_err <= p.clip_delta ? Acc(0.5) * err * err
                                   : p.clip_delta * (abs_err - Acc(0.5) * p.clip_delta);
  } else {
    loss = Acc(0.5) * err * err;
  }
  out.loss = loss;
  out.delta = delta;
  out.q_next_max = q_next_max;
  return out;
}

// The whole forward for one row of A actions. `q_next_online` is null for plain DQN.
// Reads every input of the row (so a NaN anywhere in it is seen), writes the targets row
// and the three per-row scalars. Never reads or writes outside the row, even for an
// out-of-range action: that row's outputs become NaN and kBadAction is returned.
// Terminal type TT may differ from T (bool or any float type).
template <typename T, typename TT, typename IndexT>
TFDQN_HOSTDEVICE RowStatus DqnTargetsRow(const T* q, const T* q_next, const T* q_next_online,
                                         IndexT action, T reward, TT terminal, int64_t A,
                                         const TargetParams<typename Accumulator<T>::type>& p,
                                         T* targets, T* loss, T* delta, T* q_next_max) {
  using Acc = typename Accumulator<T>::type;
  const bool action_ok = action >= 0 && static_cast<int64_t>(action) < A;
  bool finite = true;
  Acc q_taken = Acc(0);
  for (int64_t a = 0; a < A; ++a) {
    const Acc v = static_cast<Acc>(q[a]);
    finite = finite && IsFinite(v);
    if (a == static_cast<int64_t>(action)) q_taken = v;
  }
  Acc next_value;
  if (q_next_online == nullptr) {
    RowMax<Acc> m;
    for (int64_t a = 0; a < A; ++a) m.Add(static_cast<Acc>(q_next[a]));
    finite = finite && m.finite;
    next_value = m.value;
  } else {
    RowArgMax<Acc> m;
    RowMax<Acc> next_finite;  // the evaluated row must be finite too
    for (int64_t a = 0; a < A; ++a) {
      m.Add(static_cast<Acc>(q_next_online[a]), a);
      next_finite.Add(static_cast<Acc>(q_next[a]));
    }
    finite = finite && m.finite && next_finite.finite;
    next_value = m.index >= 0 ? static_cast<Acc>(q_next[m.index]) : Acc(0);
  }
  RowResult<Acc> r = FinishRow<Acc>(q_taken, next_value, static_cast<Acc>(reward),
                                    static_cast<Acc>(terminal), finite && action_ok, p);
  const T fill = static_cast<T>(TargetsFill(r));
  for (int64_t a = 0; a < A; ++a) targets[a] = fill;
  if (action_ok) targets[action] = static_cast<T>(r.delta);
  *loss = static_cast<T>(r.loss);
  *delta = static_cast<T>(r.delta);
  *q_next_max = static_cast<T>(r.q_next_max);
  if (!action_ok) return RowStatus::kBadAction;
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
