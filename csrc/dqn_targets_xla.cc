// XLA lowerings of the fused DQN target op and its gradient, so that the op works inside
// `tf.function(jit_compile=True)` and Keras `fit(jit_compile=True)`.
//
// Each op is built as plain HLO (reductions, compares, selects, element-wise arithmetic):
// no custom call, so XLA fuses it with the surrounding network on any backend. The formula
// is the one of dqn_targets_math.h, in the same order of operations and in the same
// accumulator type (float32 for float16/bfloat16/float32, float64 for float64), so the
// compiled results equal the native kernels' (see tests/test_xla.py for what is checked).
//
// Differences from the native kernels, all forced by XLA:
//  * An action outside [0, num_actions) (or a per-row discount outside [0, 1]) cannot raise
//    an error at run time. That row's loss, delta, q_next_max and WHOLE targets row become
//    NaN (so its gradient is NaN too). Nothing is read or written out of bounds: q[i, a_i] is taken
//    with a one-hot select-and-reduce, never a gather. This is what the native GPU kernel does; the
//    native CPU kernel raises InvalidArgumentError instead.
//  * Signs of zeros: the maximum of a row whose largest value is a zero may come out as
//    -0.0 or +0.0 (XLA's max reduction does not fix an order), and with number-typed
//    terminals a -0.0 bootstrap becomes +0.0 (see below); equal as numbers.
//
// The kernels are registered with REGISTER_KERNEL_BUILDER on the XLA JIT devices
// directly, NOT with REGISTER_XLA_OP: the XLA op registry is frozen once the process has
// compiled its first graph function, so REGISTER_XLA_OP is silently ignored when this
// library is loaded late; a kernel registration works in every load order.
//
// This translation unit is the only one that includes the tf2xla / XLA builder headers.
#include <cstdint>
#include <limits>
#include <vector>

#include "dqn_targets_attrs.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/kernel_def_builder.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/types.h"
#include "xla/hlo/builder/lib/arithmetic.h"
#include "xla/hlo/builder/lib/constants.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/shape.h"
#include "xla/xla_data.pb.h"

namespace tfdqn {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::XlaOpKernel;
using ::tensorflow::XlaOpKernelContext;

// Float32 accumulation for the 16-bit types, as in dqn_targets_math.h's Accumulator.
xla::PrimitiveType AccumulatorType(xla::PrimitiveType t) {
  return t == xla::F64 ? xla::F64 : xla::F32;
}

// A scalar constant of the accumulator type holding a float32 attribute's value exactly
// (float -> double is exact), as static_cast<Acc>(attr) does in the native kernels.
xla::XlaOp AccScalar(xla::XlaBuilder* b, xla::PrimitiveType acc, double value) {
  if (acc == xla::F64) return xla::ConstantR0<double>(b, value);
  return xla::ConstantR0<float>(b, static_cast<float>(value));
}

xla::XlaOp AccNaN(xla::XlaBuilder* b, xla::PrimitiveType acc) {
  if (acc == xla::F64) return xla::ConstantR0<double>(b, std::numeric_limits<double>::quiet_NaN());
  return xla::ConstantR0<float>(b, std::numeric_limits<float>::quiet_NaN());
}

absl::StatusOr<Dims> InputDims(XlaOpKernelContext* ctx, int index) {
  TF_ASSIGN_OR_RETURN(xla::Shape shape, ctx->InputXlaShape(index));
  return Dims(shape.dimensions().begin(), shape.dimensions().end());
}

// The native kernels' run-time shape checks (dqn_targets_attrs.h). Returns B and A.
absl::Status ValidateForwardShapes(XlaOpKernelContext* ctx, const ForwardAttrs& attrs,
                                   int64_t* batch, int64_t* num_actions) {
  Dims inputs[6];
  for (int i = 0; i < 6; ++i) {
    TF_ASSIGN_OR_RETURN(inputs[i], InputDims(ctx, i));
  }
  TF_RETURN_IF_ERROR(CheckForwardShapes(inputs, batch, num_actions));
  if (!attrs.params_are_inputs) return absl::OkStatus();
  Dims params[3];
  for (int i = 0; i < 3; ++i) {
    TF_ASSIGN_OR_RETURN(params[i], InputDims(ctx, ForwardAttrs::kDiscountInput + i));
  }
  return CheckParamShapes(params[0], params[1], params[2], *batch);
}

// r_max and clip_delta: the attributes (DqnTargets), or DqnTargetsV2's inputs, which must
// be known when compiling (they decide the HLO: clip_delta == 0 has no clip). dqn_targets
// creates them as constants inside the traced function, so XLA resolves them; a value
// only known at run time fails compilation with XLA's message naming the input.
absl::Status ScaleAndClip(XlaOpKernelContext* ctx, const ForwardAttrs& attrs, double* r_max,
                          double* clip_delta) {
  if (!attrs.params_are_inputs) {
    *r_max = attrs.r_max;
    *clip_delta = attrs.clip_delta;
    return absl::OkStatus();
  }
  TF_RETURN_IF_ERROR(ctx->ConstantInputAsFloatScalar(ForwardAttrs::kRMaxInput, r_max));
  TF_RETURN_IF_ERROR(ctx->ConstantInputAsFloatScalar(ForwardAttrs::kClipDeltaInput, clip_delta));
  return CheckScaleAndClip(*r_max, *clip_delta);
}

class DqnTargetsXlaOp : public XlaOpKernel {
 public:
  explicit DqnTargetsXlaOp(OpKernelConstruction* ctx) : XlaOpKernel(ctx), attrs_(ctx) {}

  void Compile(XlaOpKernelContext* ctx) override {
    int64_t B = 0, A = 0;
    OP_REQUIRES_OK(ctx, ValidateForwardShapes(ctx, attrs_, &B, &A));
    double r_max_value = 0, clip_delta_value = 0;
    OP_REQUIRES_OK(ctx, ScaleAndClip(ctx, attrs_, &r_max_value, &clip_delta_value));
    xla::XlaBuilder* b = ctx->builder();
    const xla::PrimitiveType out_type = ctx->input_xla_type(0);
    const xla::PrimitiveType acc = AccumulatorType(out_type);
    const DataType acc_dtype = acc == xla::F64 ? tensorflow::DT_DOUBLE : tensorflow::DT_FLOAT;
    // Column indices in the actions' integer type (int64 also when A does not fit int32).
    const xla::PrimitiveType action_type = ctx->input_xla_type(3);
    const xla::PrimitiveType index_type =
        (action_type == xla::S64 || A > std::numeric_limits<int32_t>::max()) ? xla::S64 : xla::S32;
    const std::vector<int64_t> mat = {B, A};

    auto to_acc = [&](xla::XlaOp x) { return xla::ConvertElementType(x, acc); };
    auto fill = [&](xla::XlaOp scalar) { return xla::Broadcast(scalar, mat); };
    const xla::XlaComputation and_fn = xla::CreateScalarAndComputation(xla::PRED, b);
    const xla::XlaComputation* max_fn = ctx->GetOrCreateMax(acc_dtype);
    const xla::XlaComputation* add_fn = ctx->GetOrCreateAdd(acc_dtype);
    auto row_all_finite = [&](xla::XlaOp m) {
      return xla::Reduce(xla::IsFinite(m), xla::ConstantR0<bool>(b, true), and_fn, {1});
    };
    // -0.0 is the exact identity of addition (x + -0.0 == x for every x, -0.0 included), so
    // summing a row that is -0.0 everywhere except one position returns that position's
    // value bit for bit: an in-bounds "gather" that cannot read outside the row.
    const xla::XlaOp neg_zero = AccScalar(b, acc, -0.0);
    auto pick = [&](xla::XlaOp one_hot, xla::XlaOp m) {
      return xla::Reduce(xla::Select(one_hot, m, fill(neg_zero)), neg_zero, *add_fn, {1});
    };

    const xla::XlaOp q = to_acc(ctx->Input(0));
    const xla::XlaOp q_next = to_acc(ctx->Input(1));
    const xla::XlaOp reward = to_acc(ctx->Input(4));
    const xla::XlaOp terminal = to_acc(ctx->Input(5));  // bool -> 0 / 1, or T -> Acc

    // The row maximum (or the double-DQN selection) and the finiteness of the rows read.
    xla::XlaOp finite = xla::And(row_all_finite(q), row_all_finite(q_next));
    xla::XlaOp next_value;
    const xla::XlaOp column = xla::Iota(b, xla::ShapeUtil::MakeShape(index_type, mat), 1);
    if (!attrs_.double_dqn) {
      next_value = xla::Reduce(q_next, xla::MinValue(b, acc), *max_fn, {1});
    } else {
      const xla::XlaOp online = to_acc(ctx->Input(2));
      finite = xla::And(finite, row_all_finite(online));
      // FIRST index among ties: the smallest column whose value equals the row maximum
      // (A, out of range, only when no value equals it, i.e. a NaN row that is poisoned
      // below anyway).
      const xla::XlaOp best = xla::Reduce(online, xla::MinValue(b, acc), *max_fn, {1});
      const xla::XlaOp a_const = xla::ConstantR0WithType(b, index_type, A);
      const xla::XlaOp first =
          xla::Reduce(xla::Select(xla::Eq(online, best, {0}), column, fill(a_const)), a_const,
                      xla::CreateScalarMinComputation(index_type, b), {1});
      next_value = pick(xla::Eq(column, first, {0}), q_next);
    }

    // The taken action's value, and whether the action is in range.
    const xla::XlaOp action = xla::ConvertElementType(ctx->Input(3), index_type);
    const xla::XlaOp action_ok =
        xla::And(xla::Ge(action, xla::ConstantR0WithType(b, index_type, 0)),
                 xla::Lt(action, xla::ConstantR0WithType(b, index_type, A)));
    const xla::XlaOp taken = xla::Eq(column, action, {0});  // all false for a bad action
    const xla::XlaOp q_taken = pick(taken, q);

    // The discount: the attribute, or DqnTargetsV2's input (a scalar or one per row, in
    // the accumulator type already); a row whose discount is outside [0, 1] is not valid.
    xla::XlaOp discount = AccScalar(b, acc, attrs_.discount);
    xla::XlaOp discount_ok = xla::ConstantR0<bool>(b, true);
    if (attrs_.params_are_inputs) {
      discount = ctx->Input(ForwardAttrs::kDiscountInput);
      discount_ok = xla::And(xla::Ge(discount, AccScalar(b, acc, 0.0)),
                             xla::Le(discount, AccScalar(b, acc, 1.0)));
      if (ctx->InputShape(ForwardAttrs::kDiscountInput).dims() == 0) {
        discount = xla::Broadcast(discount, {B});
        discount_ok = xla::Broadcast(discount_ok, {B});
      }
    }

    // FinishRow of dqn_targets_math.h.
    const xla::XlaOp valid = xla::And(xla::And(xla::And(finite, action_ok), discount_ok),
                                      xla::And(xla::IsFinite(reward), xla::IsFinite(terminal)));
    // reward / r_max as a true division. XLA's algebraic simplifier rewrites a division by
    // a constant (or a broadcast constant) into a multiplication by its rounded reciprocal,
    // which differs from the native kernels in the last bit for most r_max. A divisor that
    // depends on the data (r_max in valid rows; 1 in rows that are NaN anyway) is not a
    // constant, so the division stays a division.
    const xla::XlaOp r_max = xla::Select(valid, xla::Broadcast(AccScalar(b, acc, r_max_value), {B}),
                                         xla::Broadcast(AccScalar(b, acc, 1.0), {B}));
    // Same order of operations as the native kernels (DQN 3.0's):
    // bootstrap = q_next_max * discount * (1 - terminal); err = r / r_max + bootstrap - q.
    xla::XlaOp bootstrap =
        xla::Mul(xla::Mul(next_value, discount), xla::Sub(AccScalar(b, acc, 1.0), terminal));
    if (ctx->input_type(5) != tensorflow::DT_BOOL) {
      // XLA's backends let LLVM contract a multiply that feeds an add into one fused
      // multiply-add (a single rounding; the native kernels round twice). With
      // (1 - terminal) in {0, 1} (bool terminals, 0/1 numbers) both give the same bits, but
      // a fractional terminal would not. Adding a zero that XLA cannot fold (it depends on
      // the row; rows that are not valid become NaN anyway) gives LLVM that add to contract
      // instead: fma(x, y, +0) is round(x * y) (a -0 product becomes +0), so
      // `r / r_max + bootstrap` then rounds as the native code does. (An optimization
      // barrier does not help: XLA removes it before LLVM sees the code.)
      bootstrap =
          xla::Add(bootstrap, xla::Select(valid, xla::Broadcast(AccScalar(b, acc, 0.0), {B}),
                                          xla::Broadcast(AccScalar(b, acc, 1.0), {B})));
    }
    const xla::XlaOp err = xla::Sub(xla::Add(xla::Div(reward, r_max), bootstrap), q_taken);
    const xla::XlaOp half = AccScalar(b, acc, 0.5);
    xla::XlaOp delta = err;
    xla::XlaOp loss = xla::Mul(xla::Mul(half, err), err);
    if (clip_delta_value > 0.0) {
      const xla::XlaOp c = AccScalar(b, acc, clip_delta_value);
      delta = xla::Clamp(xla::Neg(c), err, c);
      const xla::XlaOp abs_err = xla::Abs(err);
      loss =
          xla::Select(xla::Le(abs_err, c), loss, xla::Mul(c, xla::Sub(abs_err, xla::Mul(half, c))));
    }

    // Invalid rows (non-finite input or bad action): NaN everywhere, targets row included.
    const xla::XlaOp nan = AccNaN(b, acc);
    const xla::XlaOp nan_vec = xla::Broadcast(nan, {B});
    loss = xla::Select(valid, loss, nan_vec);
    delta = xla::Select(valid, delta, nan_vec);
    const xla::XlaOp q_next_max = xla::Select(valid, next_value, nan_vec);
    const xla::XlaOp targets = xla::Select(
        xla::BroadcastInDim(valid, mat, {0}),
        xla::Select(taken, xla::BroadcastInDim(delta, mat, {0}), fill(AccScalar(b, acc, 0.0))),
        fill(nan));

    ctx->SetOutput(0, xla::ConvertElementType(loss, out_type));
    ctx->SetOutput(1, xla::ConvertElementType(targets, out_type));
    ctx->SetOutput(2, xla::ConvertElementType(delta, out_type));
    ctx->SetOutput(3, xla::ConvertElementType(q_next_max, out_type));
  }

 private:
  ForwardAttrs attrs_;
};

class DqnTargetsGradXlaOp : public XlaOpKernel {
 public:
  explicit DqnTargetsGradXlaOp(OpKernelConstruction* ctx) : XlaOpKernel(ctx) {}

  void Compile(XlaOpKernelContext* ctx) override {
    absl::StatusOr<Dims> grad_loss = InputDims(ctx, 0);
    OP_REQUIRES_OK(ctx, grad_loss.status());
    absl::StatusOr<Dims> targets = InputDims(ctx, 1);
    OP_REQUIRES_OK(ctx, targets.status());
    OP_REQUIRES_OK(ctx, CheckGradShapes(*grad_loss, *targets));
    const xla::PrimitiveType out_type = ctx->input_xla_type(1);
    const xla::PrimitiveType acc = AccumulatorType(out_type);
    // DqnTargetsGradElement: -Acc(upstream) * Acc(target), rounded to T.
    const xla::XlaOp minus_g = xla::Neg(xla::ConvertElementType(ctx->Input(0), acc));
    const xla::XlaOp t = xla::ConvertElementType(ctx->Input(1), acc);
    ctx->SetOutput(0, xla::ConvertElementType(xla::Mul(minus_g, t, {0}), out_type));
  }
};

// Type lists for the registrations (a braced list cannot go through the macro).
std::vector<DataType> TerminalTypes(DataType t) { return {tensorflow::DT_BOOL, t}; }
DataType ParamsType(DataType t) {
  return t == tensorflow::DT_DOUBLE ? tensorflow::DT_DOUBLE : tensorflow::DT_FLOAT;
}
std::vector<DataType> ActionTypes() { return {tensorflow::DT_INT32, tensorflow::DT_INT64}; }
std::vector<DataType> FloatTypes() {
  return {tensorflow::DT_HALF, tensorflow::DT_BFLOAT16, tensorflow::DT_FLOAT,
          tensorflow::DT_DOUBLE};
}

}  // namespace

// Same type constraints as the native kernels: T in {half, bfloat16, float, double},
// Tterminal in {bool, T}, Tactions in {int32, int64}.
#define TFDQN_REGISTER_XLA_FORWARD(DEVICE, T)                                                 \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfdqnOps>DqnTargets")                                                             \
          .Device(DEVICE)                                                                     \
          .TypeConstraint<T>("T")                                                             \
          .TypeConstraint("Tterminal", TerminalTypes(::tensorflow::DataTypeToEnum<T>::value)) \
          .TypeConstraint("Tactions", ActionTypes()),                                         \
      DqnTargetsXlaOp);                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfdqnOps>DqnTargetsV2")                                                           \
          .Device(DEVICE)                                                                     \
          .TypeConstraint<T>("T")                                                             \
          .TypeConstraint("Tterminal", TerminalTypes(::tensorflow::DataTypeToEnum<T>::value)) \
          .TypeConstraint("Tactions", ActionTypes())                                          \
          .TypeConstraint("Tparams", ParamsType(::tensorflow::DataTypeToEnum<T>::value)),     \
      DqnTargetsXlaOp);
#define TFDQN_REGISTER_XLA(DEVICE)                                                      \
  TFDQN_REGISTER_XLA_FORWARD(DEVICE, Eigen::half)                                       \
  TFDQN_REGISTER_XLA_FORWARD(DEVICE, Eigen::bfloat16)                                   \
  TFDQN_REGISTER_XLA_FORWARD(DEVICE, float)                                             \
  TFDQN_REGISTER_XLA_FORWARD(DEVICE, double)                                            \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name("TfdqnOps>DqnTargetsGrad").Device(DEVICE).TypeConstraint("T", FloatTypes()), \
      DqnTargetsGradXlaOp);

TFDQN_REGISTER_XLA(::tensorflow::DEVICE_CPU_XLA_JIT)
TFDQN_REGISTER_XLA(::tensorflow::DEVICE_GPU_XLA_JIT)
#undef TFDQN_REGISTER_XLA
#undef TFDQN_REGISTER_XLA_FORWARD

}  // namespace tfdqn
