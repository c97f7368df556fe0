// The op's hyperparameter attributes and the run-time shape checks: one source for each
// rule and its message, used by the shape function, the native kernels (CPU, CUDA) and the
// XLA lowerings.
#ifndef TFDQN_DQN_TARGETS_ATTRS_H_
#define TFDQN_DQN_TARGETS_ATTRS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfdqn {

inline absl::Status CheckHyperparameters(float discount, float r_max, float clip_delta) {
  if (!(discount >= 0.0f && discount <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("discount: expected a value in [0, 1], got ", discount));
  }
  if (!(r_max > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("r_max: expected a value > 0, got ", r_max));
  }
  if (!(clip_delta >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip_delta: expected a value >= 0 (0 disables clipping), got ", clip_delta));
  }
  return absl::OkStatus();
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
// built without shape inference).
struct ForwardAttrs {
  float discount = 0, r_max = 0, clip_delta = 0;
  bool double_dqn = false;

  explicit ForwardAttrs(::tensorflow::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("discount", &discount));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("r_max", &r_max));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("clip_delta", &clip_delta));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("double_dqn", &double_dqn));
    OP_REQUIRES_OK(ctx, CheckHyperparameters(discount, r_max, clip_delta));
  }
};

}  // namespace tfdqn

#endif  // TFDQN_DQN_TARGETS_ATTRS_H_
