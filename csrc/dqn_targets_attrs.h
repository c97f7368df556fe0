// The op's hyperparameter attributes and their checks: one source for the rule and the
// message, used by the shape function, the native kernels and the XLA kernels.
#ifndef TFDQN_DQN_TARGETS_ATTRS_H_
#define TFDQN_DQN_TARGETS_ATTRS_H_

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
    return absl::InvalidArgumentError(absl::StrCat(
        "clip_delta: expected a value >= 0 (0 disables clipping), got ", clip_delta));
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
