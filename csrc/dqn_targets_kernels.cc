// TensorFlow kernels of the fused DQN target op and its gradient: validation, output
// allocation and work splitting. The per-row formula lives in dqn_targets_math.h; the
// CUDA kernels in dqn_targets_gpu.cu (reached through the TF-free launcher).
#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <type_traits>

#include "dqn_targets_attrs.h"
#include "dqn_targets_math.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "dqn_targets_gpu.h"
#include "tensorflow/core/framework/op_requires.h"
#include "xla/stream_executor/stream.h"
#endif

namespace tfdqn {

using ::tensorflow::DataType;
using ::tensorflow::DataTypeString;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

namespace {

Dims DimsOf(const Tensor& t) {
  const auto sizes = t.shape().dim_sizes();
  return Dims(sizes.begin(), sizes.end());
}

absl::Status ValidateForwardInputs(OpKernelContext* ctx, const ForwardAttrs& attrs, int64_t* batch,
                                   int64_t* num_actions) {
  const Dims inputs[6] = {DimsOf(ctx->input(0)), DimsOf(ctx->input(1)), DimsOf(ctx->input(2)),
                          DimsOf(ctx->input(3)), DimsOf(ctx->input(4)), DimsOf(ctx->input(5))};
  TF_RETURN_IF_ERROR(CheckForwardShapes(inputs, batch, num_actions));
  if (!attrs.params_are_inputs) return absl::OkStatus();
  return CheckParamShapes(DimsOf(ctx->input(ForwardAttrs::kDiscountInput)),
                          DimsOf(ctx->input(ForwardAttrs::kRMaxInput)),
                          DimsOf(ctx->input(ForwardAttrs::kClipDeltaInput)), *batch);
}

// The batch's hyperparameters in the accumulator type and where each row's discount comes
// from: the attributes (DqnTargets), or the inputs (DqnTargetsV2; r_max and clip_delta in
// host memory on every device, the discount where the data is).
template <typename Acc>
absl::Status ReadParams(OpKernelContext* ctx, const ForwardAttrs& attrs, TargetParams<Acc>* params,
                        Discounts<Acc>* discounts) {
  if (!attrs.params_are_inputs) {
    *params = TargetParams<Acc>{static_cast<Acc>(attrs.discount), static_cast<Acc>(attrs.r_max),
                                static_cast<Acc>(attrs.clip_delta)};
    *discounts = Discounts<Acc>{};
    return absl::OkStatus();
  }
  const Acc r_max = ctx->input(ForwardAttrs::kRMaxInput).scalar<Acc>()();
  const Acc clip_delta = ctx->input(ForwardAttrs::kClipDeltaInput).scalar<Acc>()();
  TF_RETURN_IF_ERROR(CheckScaleAndClip(r_max, clip_delta));
  *params = TargetParams<Acc>{Acc(0), r_max, clip_delta};
  const Tensor& discount = ctx->input(ForwardAttrs::kDiscountInput);
  *discounts = Discounts<Acc>{discount.flat<Acc>().data(), discount.dims() == 0 ? 0 : 1};
  return absl::OkStatus();
}

struct ForwardOutputs {
  Tensor* loss = nullptr;
  Tensor* targets = nullptr;
  Tensor* delta = nullptr;
  Tensor* q_next_max = nullptr;
};

// targets may take over q's buffer when nothing else holds q: every row reads all of its
// q values before writing its targets (see DqnTargetsRow), so in place is safe.
absl::Status AllocateTargets(OpKernelContext* ctx, int64_t batch, int64_t num_actions,
                             ForwardOutputs* out) {
  return ctx->forward_input_or_allocate_output({0}, 1, TensorShape({batch, num_actions}),
                                               &out->targets);
}

absl::Status AllocateForwardOutputs(OpKernelContext* ctx, int64_t batch, int64_t num_actions,
                                    ForwardOutputs* out) {
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({batch}), &out->loss));
  TF_RETURN_IF_ERROR(AllocateTargets(ctx, batch, num_actions, out));
  TF_RETURN_IF_ERROR(ctx->allocate_output(2, TensorShape({batch}), &out->delta));
  TF_RETURN_IF_ERROR(ctx->allocate_output(3, TensorShape({batch}), &out->q_next_max));
  return absl::OkStatus();
}

// The CPU kernel's outputs for small batches. At a training batch (B = 32) the three
// allocations of the per-row outputs (loss, delta, q_next_max) cost more than the whole row
// math, so the kernel keeps the last ones it returned and hands them out again when nothing
// else holds them any more: the same reference-count test TensorFlow uses to run an op in
// place (Tensor::RefCountIsOne), so a tensor that a caller or a pending op still holds is
// never written. Larger batches allocate as usual (there the allocation is noise, and the
// cache would keep their memory alive).
class SmallOutputCache {
 public:
  static constexpr int64_t kMaxBatch = 4096;

  absl::Status Allocate(OpKernelContext* ctx, DataType dtype, int64_t batch, int64_t num_actions,
                        ForwardOutputs* out) {
    if (batch == 0 || batch > kMaxBatch)
      return AllocateForwardOutputs(ctx, batch, num_actions, out);
    TF_RETURN_IF_ERROR(AllocateTargets(ctx, batch, num_actions, out));
    constexpr int kOutputs[] = {0, 2, 3};  // loss, delta, q_next_max
    Tensor** slots[] = {&out->loss, &out->delta, &out->q_next_max};
    // Concurrent runs of this kernel take turns here; whoever comes second finds the tensors
    // held by the first (reference count 2) and allocates.
    std::lock_guard<std::mutex> lock(mu_);
    for (int k = 0; k < 3; ++k) {
      Tensor& kept = kept_[k];
      if (!kept.IsInitialized() || kept.dtype() != dtype || kept.NumElements() != batch ||
          !kept.RefCountIsOne()) {
        TF_RETURN_IF_ERROR(ctx->allocate_temp(dtype, TensorShape({batch}), &kept));
      }
      ctx->set_output(kOutputs[k], kept);
      *slots[k] = ctx->mutable_output(kOutputs[k]);
    }
    return absl::OkStatus();
  }

 private:
  std::mutex mu_;
  Tensor kept_[3];
};

absl::Status ValidateGradInputs(OpKernelContext* ctx) {
  return CheckGradShapes(DimsOf(ctx->input(0)), DimsOf(ctx->input(1)));
}

// Runs rows [0, batch) on the intra-op pool, or inline when the whole batch costs less than
// handing it to other threads: a training minibatch (B = 32) is a few hundred cycles of
// work. The hand-off is slow and erratic on small VMs: on this project's 2-core VM it cost
// up to ~50 us per call, so B = 4096 ran at 1.1-1.2x composed TF inline against 0.5-1.2x
// split over both cores, the split gained nothing reliable at 16384 (1.0-2.2x against
// 1.2-2.2x inline), and only B >= 65536 gained from it (benchmarks/bench_op.py,
// docs/BENCHMARKS.md section 1). About 170 us of work (A = 6: B < 23,000) stays on the
// calling thread.
template <typename Fn>
void RunRows(OpKernelContext* ctx, int64_t batch, int64_t cycles_per_row, const Fn& rows) {
  constexpr int64_t kInlineCycles = 500000;
  if (batch * cycles_per_row <= kInlineCycles) {
    rows(0, batch);
    return;
  }
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  // One contiguous block per thread: the adaptive split (cost model) cut B = 16384 rows
  // into many small tasks whose hand-offs cost more than their rows on a 2-core CPU.
  const int64_t threads = std::max<int64_t>(1, workers->NumThreads());
  const int64_t block = (batch + threads - 1) / threads;
  workers->ParallelFor(batch, ::tsl::thread::ThreadPool::SchedulingParams::Fixed(block), rows);
}

// The forward op's inputs, outputs and hyperparameters for the row loop.
template <typename T, typename TT, typename IndexT>
struct ForwardRowArgs {
  const T* q;
  const T* q_next;
  const T* q_next_online;  // null unless double DQN
  const IndexT* actions;
  const T* rewards;
  const TT* terminals;
  T* loss;
  T* targets;
  T* delta;
  T* q_next_max;
  int64_t num_actions;
  TargetParams<typename Accumulator<T>::type> params;
  Discounts<typename Accumulator<T>::type> discounts;
};

// Calls fn(std::integral_constant<int64_t, kA>()) with kA = num_actions for the Atari
// action sets (ALE's minimal sets have 4, 6, 9 or 18 actions), whose row loops the compiler
// then unrolls (the row scans, the targets fill, the gradient's row), and with kA = 0 (the
// generic loops) for any other count. docs/BENCHMARKS.md section 1 has the op's speed.
template <typename Fn>
void WithActionCount(int64_t num_actions, const Fn& fn) {
  switch (num_actions) {
    case 4: fn(std::integral_constant<int64_t, 4>()); break;
    case 6: fn(std::integral_constant<int64_t, 6>()); break;
    case 9: fn(std::integral_constant<int64_t, 9>()); break;
    case 18: fn(std::integral_constant<int64_t, 18>()); break;
    default: fn(std::integral_constant<int64_t, 0>()); break;
  }
}

// Rows [begin, end) of the forward op; returns the first row with an out-of-range action or
// discount (or the int64 maximum). A plain function over a local copy of the pointers: written as a
// lambda reading them through by-reference captures, perf showed g++ reloading them from
// the closure inside the row loop.
template <int64_t kA, bool kKnownFinite, typename T, typename TT, typename IndexT>
int64_t ForwardRowLoop(const ForwardRowArgs<T, TT, IndexT>& args, int64_t begin, int64_t end) {
  const ForwardRowArgs<T, TT, IndexT> a = args;
  const int64_t A = kA > 0 ? kA : a.num_actions;
  int64_t bad = std::numeric_limits<int64_t>::max();
  for (int64_t i = begin; i < end; ++i) {
    const int64_t off = i * A;
    const RowStatus s = DqnTargetsRow<T, TT, IndexT, kKnownFinite>(
        a.q + off, a.q_next + off, a.q_next_online ? a.q_next_online + off : nullptr, a.actions[i],
        a.rewards[i], a.terminals[i], A, RowParams(a.params, a.discounts, i), a.targets + off,
        a.loss + i, a.delta + i, a.q_next_max + i);
    const bool bad_row = s == RowStatus::kBadAction || s == RowStatus::kBadDiscount;
    if (bad_row && i < bad) bad = i;
  }
  return bad;
}

// Rows [begin, end) in blocks: a block whose inputs are all finite (training's case) runs
// the row loop without the per-element finiteness checks, any other block the fully
// checked loop; the outputs are the same either way. The 256 rows of q and q_next that the
// check reads (A = 6: 12 KB) are still in L1 when the row loop reads them.
template <int64_t kA, typename T, typename TT, typename IndexT>
int64_t ForwardRows(const ForwardRowArgs<T, TT, IndexT>& args, int64_t begin, int64_t end) {
  constexpr int64_t kBlockRows = 256;
  const int64_t A = kA > 0 ? kA : args.num_actions;
  int64_t bad = std::numeric_limits<int64_t>::max();
  for (int64_t first = begin; first < end; first += kBlockRows) {
    const int64_t last = std::min(end, first + kBlockRows), n = last - first;
    const bool finite =
        AllFinite(args.q + first * A, n * A) && AllFinite(args.q_next + first * A, n * A) &&
        (args.q_next_online == nullptr || AllFinite(args.q_next_online + first * A, n * A)) &&
        AllFinite(args.rewards + first, n) && AllFinite(args.terminals + first, n);
    bad = std::min(bad, finite ? ForwardRowLoop<kA, true>(args, first, last)
                               : ForwardRowLoop<kA, false>(args, first, last));
  }
  return bad;
}

}  // namespace

template <typename T, typename TT, typename IndexT>
class DqnTargetsCpuOp : public OpKernel {
 public:
  explicit DqnTargetsCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using Acc = typename Accumulator<T>::type;
    int64_t batch = 0, num_actions = 0;
    OP_REQUIRES_OK(ctx, ValidateForwardInputs(ctx, attrs_, &batch, &num_actions));
    ForwardOutputs out;
    OP_REQUIRES_OK(ctx, outputs_.Allocate(ctx, ::tensorflow::DataTypeToEnum<T>::value, batch,
                                          num_actions, &out));
    if (batch == 0) return;

    ForwardRowArgs<T, TT, IndexT> args;
    args.q = ctx->input(0).flat<T>().data();
    args.q_next = ctx->input(1).flat<T>().data();
    args.q_next_online = attrs_.double_dqn ? ctx->input(2).flat<T>().data() : nullptr;
    args.actions = ctx->input(3).flat<IndexT>().data();
    args.rewards = ctx->input(4).flat<T>().data();
    args.terminals = ctx->input(5).flat<TT>().data();
    args.loss = out.loss->flat<T>().data();
    args.targets = out.targets->flat<T>().data();
    args.delta = out.delta->flat<T>().data();
    args.q_next_max = out.q_next_max->flat<T>().data();
    args.num_actions = num_actions;
    OP_REQUIRES_OK(ctx, ReadParams<Acc>(ctx, attrs_, &args.params, &args.discounts));

    // First offending row, so the message is the same whatever the sharding.
    std::atomic<int64_t> first_bad_row{std::numeric_limits<int64_t>::max()};
    // Cycles per row measured on x86 (about 2 per action plus the scalar tail). An
    // overestimate makes ParallelFor wake threads for batches that finish sooner inline.
    const int64_t cost_per_row = 2 * num_actions + 10;
    // fixed: std::integral_constant<int64_t, kA>, the action count when it is known at compile
    // time (kA > 0), or 0 for the generic loop.
    auto run_rows = [&](auto fixed) {
      constexpr int64_t kA = decltype(fixed)::value;
      RunRows(ctx, batch, cost_per_row, [&args, &first_bad_row](int64_t begin, int64_t end) {
        const int64_t bad = ForwardRows<kA>(args, begin, end);
        int64_t seen = first_bad_row.load();
        while (bad < seen && !first_bad_row.compare_exchange_weak(seen, bad)) {
        }
      });
    };
    WithActionCount(num_actions, run_rows);

    const int64_t bad = first_bad_row.load();
    if (bad == std::numeric_limits<int64_t>::max()) return;
    const int64_t action = static_cast<int64_t>(args.actions[bad]);
    if (action < 0 || action >= num_actions) {
      ctx->CtxFailure(absl::InvalidArgumentError(
          absl::StrCat("actions[", bad, "] = ", action, " is not in [0, ", num_actions, ")")));
    } else {
      ctx->CtxFailure(absl::InvalidArgumentError(
          BadDiscountMessage(bad, RowParams(args.params, args.discounts, bad).discount)));
    }
  }

 private:
  ForwardAttrs attrs_;
  SmallOutputCache outputs_;
};

template <typename T>
class DqnTargetsGradCpuOp : public OpKernel {
 public:
  explicit DqnTargetsGradCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES_OK(ctx, ValidateGradInputs(ctx));
    const Tensor& targets_t = ctx->input(1);
    Tensor* grad_q_t = nullptr;
    // Element-wise, so grad_q can reuse the targets buffer when nothing else holds it.
    OP_REQUIRES_OK(ctx,
                   ctx->forward_input_or_allocate_output({1}, 0, targets_t.shape(), &grad_q_t));
    const int64_t batch = targets_t.dim_size(0), num_actions = targets_t.dim_size(1);
    if (batch == 0 || num_actions == 0) return;
    const T* grad_loss = ctx->input(0).flat<T>().data();
    const T* targets = targets_t.flat<T>().data();
    T* grad_q = grad_q_t->flat<T>().data();
    WithActionCount(num_actions, [&](auto fixed) {
      constexpr int64_t kA = decltype(fixed)::value;
      const int64_t any_count = num_actions;
      auto rows = [grad_loss, targets, grad_q, any_count](int64_t begin, int64_t end) {
        const int64_t A = kA > 0 ? kA : any_count;  // a compile-time constant when kA > 0
        for (int64_t i = begin; i < end; ++i) {
          const T g = grad_loss[i];
          const int64_t off = i * A;
          for (int64_t a = 0; a < A; ++a) {
            grad_q[off + a] = DqnTargetsGradElement<T>(g, targets[off + a]);
          }
        }
      };
      RunRows(ctx, batch, num_actions / 2 + 2, rows);  // cycles per row, measured
    });
  }
};

#define TFDQN_REGISTER_CPU_FORWARD(T, TT, IndexT)                                        \
  REGISTER_KERNEL_BUILDER(Name("TfdqnOps>DqnTargets")                                    \
                              .Device(::tensorflow::DEVICE_CPU)                          \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<TT>("Tterminal")                           \
                              .TypeConstraint<IndexT>("Tactions"),                       \
                          DqnTargetsCpuOp<T, TT, IndexT>);                               \
  REGISTER_KERNEL_BUILDER(Name("TfdqnOps>DqnTargetsV2")                                  \
                              .Device(::tensorflow::DEVICE_CPU)                          \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<TT>("Tterminal")                           \
                              .TypeConstraint<IndexT>("Tactions")                        \
                              .TypeConstraint<typename Accumulator<T>::type>("Tparams"), \
                          DqnTargetsCpuOp<T, TT, IndexT>);
#define TFDQN_REGISTER_CPU(T)                                                                  \
  TFDQN_REGISTER_CPU_FORWARD(T, bool, int32_t)                                                 \
  TFDQN_REGISTER_CPU_FORWARD(T, bool, int64_t)                                                 \
  TFDQN_REGISTER_CPU_FORWARD(T, T, int32_t)                                                    \
  TFDQN_REGISTER_CPU_FORWARD(T, T, int64_t)                                                    \
  REGISTER_KERNEL_BUILDER(                                                                     \
      Name("TfdqnOps>DqnTargetsGrad").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      DqnTargetsGradCpuOp<T>);

TFDQN_REGISTER_CPU(Eigen::half)
TFDQN_REGISTER_CPU(Eigen::bfloat16)
TFDQN_REGISTER_CPU(float)
TFDQN_REGISTER_CPU(double)
#undef TFDQN_REGISTER_CPU
#undef TFDQN_REGISTER_CPU_FORWARD

#if GOOGLE_CUDA

namespace {

template <typename T>
DType DTypeOf();
template <>
DType DTypeOf<Eigen::half>() {
  return DType::kHalf;
}
template <>
DType DTypeOf<Eigen::bfloat16>() {
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

// TF's stream for this op, as the cudaStream_t the launcher expects. Needs no CUDA headers.
void* CudaStreamOf(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}

}  // namespace

template <typename T, typename TT, typename IndexT>
class DqnTargetsGpuOp : public OpKernel {
 public:
  explicit DqnTargetsGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    int64_t batch = 0, num_actions = 0;
    OP_REQUIRES_OK(ctx, ValidateForwardInputs(ctx, attrs_, &batch, &num_actions));
    using Acc = typename Accumulator<T>::type;
    TargetParams<Acc> params;
    Discounts<Acc> discounts;
    OP_REQUIRES_OK(ctx, ReadParams<Acc>(ctx, attrs_, &params, &discounts));
    ForwardOutputs out;
    OP_REQUIRES_OK(ctx, AllocateForwardOutputs(ctx, batch, num_actions, &out));
    if (batch == 0) return;
    ForwardArgs a;
    a.dtype = DTypeOf<T>();
    a.terminal_dtype = DTypeOf<TT>();
    a.actions_int64 = sizeof(IndexT) == 8;
    a.batch = batch;
    a.num_actions = num_actions;
    a.discount = params.discount;
    a.r_max = params.r_max;
    a.clip_delta = params.clip_delta;
    a.discounts = discounts.values;  // device memory (or null: a.discount for every row)
    a.discount_stride = discounts.stride;
    a.q = ctx->input(0).data();
    a.q_next = ctx->input(1).data();
    a.q_next_online = attrs_.double_dqn ? ctx->input(2).data() : nullptr;
    a.actions = ctx->input(3).data();
    a.rewards = ctx->input(4).data();
    a.terminals = ctx->input(5).data();
    a.loss = out.loss->data();
    a.targets = out.targets->data();
    a.delta = out.delta->data();
    a.q_next_max = out.q_next_max->data();
    const char* err = LaunchDqnTargetsForward(a, CudaStreamOf(ctx));
    OP_REQUIRES(ctx, err == nullptr,
                absl::InternalError(absl::StrCat("DqnTargets CUDA launch failed: ", err)));
  }

 private:
  ForwardAttrs attrs_;
};

template <typename T>
class DqnTargetsGradGpuOp : public OpKernel {
 public:
  explicit DqnTargetsGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES_OK(ctx, ValidateGradInputs(ctx));
    const Tensor& targets = ctx->input(1);
    Tensor* grad_q = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({1}, 0, targets.shape(), &grad_q));
    GradArgs a;
    a.dtype = DTypeOf<T>();
    a.batch = targets.dim_size(0);
    a.num_actions = targets.dim_size(1);
    a.grad_loss = ctx->input(0).data();
    a.targets = targets.data();
    a.grad_q = grad_q->data();
    const char* err = LaunchDqnTargetsGrad(a, CudaStreamOf(ctx));
    OP_REQUIRES(ctx, err == nullptr,
                absl::InternalError(absl::StrCat("DqnTargetsGrad CUDA launch failed: ", err)));
  }
};

#define TFDQN_REGISTER_GPU_FORWARD(T, TT, IndexT)                                       \
  REGISTER_KERNEL_BUILDER(Name("TfdqnOps>DqnTargets")                                   \
                              .Device(::tensorflow::DEVICE_GPU)                         \
                              .TypeConstraint<T>("T")                                   \
                              .TypeConstraint<TT>("Tterminal")                          \
                              .TypeConstraint<IndexT>("Tactions"),                      \
                          DqnTargetsGpuOp<T, TT, IndexT>);                              \
  REGISTER_KERNEL_BUILDER(Name("TfdqnOps>DqnTargetsV2")                                 \
                              .Device(::tensorflow::DEVICE_GPU)                         \
                              .TypeConstraint<T>("T")                                   \
                              .TypeConstraint<TT>("Tterminal")                          \
                              .TypeConstraint<IndexT>("Tactions")                       \
                              .TypeConstraint<typename Accumulator<T>::type>("Tparams") \
                              .HostMemory("r_max")                                      \
                              .HostMemory("clip_delta"),                                \
                          DqnTargetsGpuOp<T, TT, IndexT>);
#define TFDQN_REGISTER_GPU(T)                                                                  \
  TFDQN_REGISTER_GPU_FORWARD(T, bool, int32_t)                                                 \
  TFDQN_REGISTER_GPU_FORWARD(T, bool, int64_t)                                                 \
  TFDQN_REGISTER_GPU_FORWARD(T, T, int32_t)                                                    \
  TFDQN_REGISTER_GPU_FORWARD(T, T, int64_t)                                                    \
  REGISTER_KERNEL_BUILDER(                                                                     \
      Name("TfdqnOps>DqnTargetsGrad").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      DqnTargetsGradGpuOp<T>);

TFDQN_REGISTER_GPU(Eigen::half)
TFDQN_REGISTER_GPU(Eigen::bfloat16)
TFDQN_REGISTER_GPU(float)
TFDQN_REGISTER_GPU(double)
#undef TFDQN_REGISTER_GPU
#undef TFDQN_REGISTER_GPU_FORWARD

#endif  // GOOGLE_CUDA

}  // namespace tfdqn
