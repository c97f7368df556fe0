// The op's hyperparameter checks and the run-time shape checks: one source for each rule
// and its message, used by the shape functions, the native kernels (CPU, CUDA) and the XLA
// lowerings of both op versions: DqnTargets (discount, r_max and clip_delta as float32
// attributes) and DqnTargetsV2 (the same as inputs of the accumulator type: a per-row
// discount, and float64 precision for float64 q).
#ifndef TFDQN_DQN_TARGETS_ATTRS_H_
#define TFDQN_DQN_TARGETS_ATTRS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfdqn {

inline absl::Status CheckDiscount(double discount) {
  if (!(discount >= 0.0 && discount <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("discount: expected a value in [0, 1], got ", discount));
  }
  return absl::OkStatus();
}

inline absl::Status CheckScaleAndClip(double r_max, double clip_delta) {
  if (!(r_max > 0.0) || r_max - r_max != 0.0) {
    return absl::InvalidArgumentError(absl::StrCat("r_max: expected a value > 0, got ", r_max));
  }
  if (!(clip_delta >= 0.0) || clip_delta - clip_delta != 0.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip_delta: expected a value >= 0 (0 disables clipping), got ", clip_delta));
  }
  return absl::OkStatus();
}

inline absl::Status CheckHyperparameters(double discount, double r_max, double clip_delta) {
  TF_RETURN_IF_ERROR(CheckDiscount(discount));
  return CheckScaleAndClip(r_max, clip_delta);
}

// The dimensions of one input as the checks see them, whoever holds the shape (a Tensor's
// TensorShape or XLA's Shape), and their text in messages: "[32,6]".
using Dims = std::vector<int64_t>;

inline std::string DimsString(const Dims& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) absl::StrAppend(&out, i > 0 ? "," : "", dims[i]);
  return out + "]";
}

// Run-time shape checks of the forward op (shapes may be unknown when the graph is built):
// inputs = q, q_next, q_next_online, actions, rewards, terminals. Sets B and A.
inline absl::Status CheckForwardShapes(const Dims (&inputs)[6], int64_t* batch,
                                       int64_t* num_actions) {
  const char* matrices[] = {"q", "q_next", "q_next_online"};
  const char* vectors[] = {"actions", "rewards", "terminals"};
  const Dims& q = inputs[0];
  for (int i = 0; i < 3; ++i) {
    const Dims& m = inputs[i];
    if (m.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          matrices[i], ": expected rank 2 [batch, num_actions], got shape ", DimsString(m)));
    }
    if (m != q) {
      return absl::InvalidArgumentError(absl::StrCat(matrices[i], ": expected the shape of q ",
                                                     DimsString(q), ", got ", DimsString(m)));
    }
  }
  for (int i = 0; i < 3; ++i) {
    const Dims& v = inputs[3 + i];
    if (v.size() != 1 || v[0] != q[0]) {
      return absl::InvalidArgumentError(absl::StrCat(
          vectors[i], ": expected shape [", q[0], "] (the batch size of q), got ", DimsString(v)));
    }
  }
  if (q[1] == 0) {
    return absl::InvalidArgumentError(
        "q: expected at least one action (shape [batch, num_actions >= 1]), got num_actions = 0");
  }
  *batch = q[0];
  *num_actions = q[1];
  return absl::OkStatus();
}

// DqnTargetsV2's hyperparameter inputs: discount [] or [batch]; r_max and clip_delta [].
inline absl::Status CheckParamShapes(const Dims& discount, const Dims& r_max,
                                     const Dims& clip_delta, int64_t batch) {
  if (!(discount.empty() || (discount.size() == 1 && discount[0] == batch))) {
    return absl::InvalidArgumentError(absl::StrCat("discount: expected a scalar or shape [", batch,
                                                   "] (the batch size of q), got ",
                                                   DimsString(discount)));
  }
  if (!r_max.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("r_max: expected a scalar, got shape ", DimsString(r_max)));
  }
  if (!clip_delta.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip_delta: expected a scalar, got shape ", DimsString(clip_delta)));
  }
  return absl::OkStatus();
}

// The message for row i whose discount is outside [0, 1] (the CPU kernel raises it).
inline std::string BadDiscountMessage(int64_t i, double value) {
  return absl::StrCat("discount[", i, "] = ", value, " is not in [0, 1]");
}

// Run-time shape checks of the gradient op: grad_loss [B] and targets [B, A].
inline absl::Status CheckGradShapes(const Dims& grad_loss, const Dims& targets) {
  if (targets.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "targets: expected rank 2 [batch, num_actions], got shape ", DimsString(targets)));
  }
  if (grad_loss.size() != 1 || grad_loss[0] != targets[0]) {
    return absl::InvalidArgumentError(absl::StrCat("grad_loss: expected shape [", targets[0],
                                                   "] (the batch size of targets), got ",
                                                   DimsString(grad_loss)));
  }
  return absl::OkStatus();
}

// Attributes of the forward op, read and checked once when a kernel is constructed (the
// shape function already rejected bad values when the graph was built; this covers graphs
// built without shape inference). DqnTargets has the hyperparameters as float32
// attributes (params_are_inputs false); DqnTargetsV2 has them as inputs 6, 7 and 8.
struct ForwardAttrs {
  static constexpr int kDiscountInput = 6, kRMaxInput = 7, kClipDeltaInput = 8;
  bool params_are_inputs = false;
  float discount = 0, r_max = 0, clip_delta = 0;  // DqnTargets only
  bool double_dqn = false;

  explicit ForwardAttrs(::tensorflow::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("double_dqn", &double_dqn));
    params_are_inputs = ctx->num_inputs() > kDiscountInput;
    if (params_are_inputs) return;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("discount", &discount));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("r_max", &r_max));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("clip_delta", &clip_delta));
    OP_REQUIRES_OK(ctx, CheckHyperparameters(discount, r_max, clip_delta));
  }
};

}  // namespace tfdqn

#endif  // TFDQN_DQN_TARGETS_ATTRS_H_
