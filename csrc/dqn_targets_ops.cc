// Op definitions and shape functions for the fused DQN target block and its gradient.
// Shape functions reject bad ranks and mismatched sizes when the graph is built; the
// kernels check again at run time, where shapes were unknown.
#include <string>

#include "dqn_targets_attrs.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfdqn {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

absl::Status CheckHyperparameterAttrs(InferenceContext* c) {
  float discount, r_max, clip_delta;
  TF_RETURN_IF_ERROR(c->GetAttr("discount", &discount));
  TF_RETURN_IF_ERROR(c->GetAttr("r_max", &r_max));
  TF_RETURN_IF_ERROR(c->GetAttr("clip_delta", &clip_delta));
  return CheckHyperparameters(discount, r_max, clip_delta);
}

// Rank check with the argument's name in the message.
absl::Status WithRankNamed(InferenceContext* c, int input, int rank, const char* name,
                           ShapeHandle* out) {
  absl::Status s = c->WithRank(c->input(input), rank, out);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected rank ", rank, ", got shape ",
                                                   c->DebugString(c->input(input))));
  }
  return absl::OkStatus();
}

absl::Status MergeNamed(InferenceContext* c, DimensionHandle a, DimensionHandle b,
                        const std::string& what, DimensionHandle* out) {
  absl::Status s = c->Merge(a, b, out);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": sizes differ, ", c->DebugString(a), " vs ", c->DebugString(b)));
  }
  return absl::OkStatus();
}

// The shapes both versions share: the six data inputs and the four outputs. Sets batch.
absl::Status DataShapes(InferenceContext* c, DimensionHandle* batch_out) {
  ShapeHandle q, q_next, q_next_online, actions, rewards, terminals;
  TF_RETURN_IF_ERROR(WithRankNamed(c, 0, 2, "q", &q));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 1, 2, "q_next", &q_next));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 2, 2, "q_next_online", &q_next_online));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 3, 1, "actions", &actions));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 4, 1, "rewards", &rewards));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 5, 1, "terminals", &terminals));

  DimensionHandle batch = c->Dim(q, 0);
  TF_RETURN_IF_ERROR(MergeNamed(c, batch, c->Dim(q_next, 0), "batch size of q and q_next", &batch));
  TF_RETURN_IF_ERROR(
      MergeNamed(c, batch, c->Dim(q_next_online, 0), "batch size of q and q_next_online", &batch));
  TF_RETURN_IF_ERROR(
      MergeNamed(c, batch, c->Dim(actions, 0), "batch size of q and actions", &batch));
  TF_RETURN_IF_ERROR(
      MergeNamed(c, batch, c->Dim(rewards, 0), "batch size of q and rewards", &batch));
  TF_RETURN_IF_ERROR(
      MergeNamed(c, batch, c->Dim(terminals, 0), "batch size of q and terminals", &batch));
  DimensionHandle num_actions = c->Dim(q, 1);
  TF_RETURN_IF_ERROR(MergeNamed(c, num_actions, c->Dim(q_next, 1),
                                "number of actions of q and q_next", &num_actions));
  TF_RETURN_IF_ERROR(MergeNamed(c, num_actions, c->Dim(q_next_online, 1),
                                "number of actions of q and q_next_online", &num_actions));
  if (c->ValueKnown(num_actions) && c->Value(num_actions) == 0) {
    return absl::InvalidArgumentError(
        "q: expected at least one action (shape [batch, num_actions >= 1]), got num_actions = 0");
  }

  tensorflow::DataType t, t_terminal;
  TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
  TF_RETURN_IF_ERROR(c->GetAttr("Tterminal", &t_terminal));
  if (t_terminal != tensorflow::DT_BOOL && t_terminal != t) {
    return absl::InvalidArgumentError(
        absl::StrCat("terminals: expected dtype bool or ", tensorflow::DataTypeString(t),
                     " (the dtype of q), got ", tensorflow::DataTypeString(t_terminal)));
  }

  ShapeHandle vec = c->Vector(batch);
  c->set_output(0, vec);                            // loss
  c->set_output(1, c->Matrix(batch, num_actions));  // targets
  c->set_output(2, vec);                            // delta
  c->set_output(3, vec);                            // q_next_max
  *batch_out = batch;
  return absl::OkStatus();
}

absl::Status DqnTargetsShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(CheckHyperparameterAttrs(c));
  DimensionHandle batch;
  return DataShapes(c, &batch);
}

absl::Status DqnTargetsV2Shape(InferenceContext* c) {
  DimensionHandle batch;
  TF_RETURN_IF_ERROR(DataShapes(c, &batch));
  tensorflow::DataType t, t_params;
  TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
  TF_RETURN_IF_ERROR(c->GetAttr("Tparams", &t_params));
  const tensorflow::DataType acc =
      t == tensorflow::DT_DOUBLE ? tensorflow::DT_DOUBLE : tensorflow::DT_FLOAT;
  if (t_params != acc) {
    return absl::InvalidArgumentError(absl::StrCat(
        "discount, r_max, clip_delta: expected dtype ", tensorflow::DataTypeString(acc),
        " (the op computes in it for q of dtype ", tensorflow::DataTypeString(t), "), got ",
        tensorflow::DataTypeString(t_params)));
  }
  ShapeHandle discount = c->input(6), unused;
  if (c->RankKnown(discount)) {
    if (c->Rank(discount) > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "discount: expected a scalar or shape [batch], got shape ", c->DebugString(discount)));
    }
    if (c->Rank(discount) == 1) {
      TF_RETURN_IF_ERROR(
          MergeNamed(c, batch, c->Dim(discount, 0), "batch size of q and discount", &batch));
    }
  }
  TF_RETURN_IF_ERROR(WithRankNamed(c, 7, 0, "r_max", &unused));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 8, 0, "clip_delta", &unused));
  return absl::OkStatus();
}

absl::Status DqnTargetsGradShape(InferenceContext* c) {
  ShapeHandle grad_loss, targets;
  TF_RETURN_IF_ERROR(WithRankNamed(c, 0, 1, "grad_loss", &grad_loss));
  TF_RETURN_IF_ERROR(WithRankNamed(c, 1, 2, "targets", &targets));
  DimensionHandle batch;
  TF_RETURN_IF_ERROR(MergeNamed(c, c->Dim(grad_loss, 0), c->Dim(targets, 0),
                                "batch size of grad_loss and targets", &batch));
  c->set_output(0, c->Matrix(batch, c->Dim(targets, 1)));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfdqnOps>DqnTargets")
    .Input("q: T")
    .Input("q_next: T")
    .Input("q_next_online: T")
    .Input("actions: Tactions")
    .Input("rewards: T")
    .Input("terminals: Tterminal")
    .Output("loss: T")
    .Output("targets: T")
    .Output("delta: T")
    .Output("q_next_max: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tactions: {int32, int64}")
    .Attr("Tterminal: {bool, half, bfloat16, float, double}")
    .Attr("discount: float = 0.99")
    .Attr("r_max: float = 1.0")
    .Attr("clip_delta: float = 1.0")
    .Attr("double_dqn: bool = false")
    .SetShapeFn(DqnTargetsShape)
    .Doc(R"doc(
The fused DQN 3.0 target block (NeuralQLearner.lua getQUpdate) in one pass.

q_next_online is read only when double_dqn is true (then q_next_max[i] =
q_next[i, argmax_a q_next_online[i, a]], first index on ties); callers pass q_next
again when it is false.
)doc");

// Version 2: the hyperparameters are inputs in the accumulator type (float32, or float64
// for float64 q), so that float64 inputs get them at float64 precision and each row can
// have its own discount (n-step returns). DqnTargets stays registered unchanged for graphs
// and SavedModels that use it.
REGISTER_OP("TfdqnOps>DqnTargetsV2")
    .Input("q: T")
    .Input("q_next: T")
    .Input("q_next_online: T")
    .Input("actions: Tactions")
    .Input("rewards: T")
    .Input("terminals: Tterminal")
    .Input("discount: Tparams")
    .Input("r_max: Tparams")
    .Input("clip_delta: Tparams")
    .Output("loss: T")
    .Output("targets: T")
    .Output("delta: T")
    .Output("q_next_max: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tactions: {int32, int64}")
    .Attr("Tterminal: {bool, half, bfloat16, float, double}")
    .Attr("Tparams: {float, double}")
    .Attr("double_dqn: bool = false")
    .SetShapeFn(DqnTargetsV2Shape)
    .Doc(R"doc(
DqnTargets with discount (a scalar or one per row, in [0, 1]), r_max (> 0) and clip_delta
(>= 0) as inputs of dtype float64 when T is float64, else float32.
)doc");

REGISTER_OP("TfdqnOps>DqnTargetsGrad")
    .Input("grad_loss: T")
    .Input("targets: T")
    .Output("grad_q: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(DqnTargetsGradShape)
    .Doc(R"doc(
Gradient of sum_i grad_loss[i] * loss[i] with respect to q: -grad_loss[i] * targets[i, :].
)doc");

}  // namespace tfdqn
