// Launchers for the CUDA kernels of the fused DQN target op and its gradient.
//
// Deliberately free of TensorFlow and CUDA headers: the TF kernel (g++) and the
// TF-free GPU check program both call these with raw device pointers, sizes and a
// stream handle (a cudaStream_t passed as void*). Element types are named by DType so
// that Eigen::half on the TF side and __half on the CUDA side never have to meet.
#ifndef TFDQN_DQN_TARGETS_GPU_H_
#define TFDQN_DQN_TARGETS_GPU_H_

#include <cstdint>

namespace tfdqn {

enum class DType : int { kHalf = 0, kBFloat16 = 1, kFloat = 2, kDouble = 3, kBool = 4 };

struct ForwardArgs {
  DType dtype;                         // of q, q_next, q_next_online, rewards and every output
  DType terminal_dtype;                // kBool or dtype
  bool actions_int64;                  // actions are int64 (else int32)
  int64_t batch;                       // B >= 0
  int64_t num_actions;                 // A >= 1
  double discount, r_max, clip_delta;  // exact for float64 dtype, else float32 values
  // Per-row discounts in device memory, of the accumulator type (double for kDouble, else
  // float): row i uses discounts[i * discount_stride]. Null: `discount` for every row.
  const void* discounts;
  int64_t discount_stride;
  const void* q;              // [B, A]
  const void* q_next;         // [B, A]
  const void* q_next_online;  // [B, A], or null for plain DQN (max over q_next)
  const void* actions;        // [B]
  const void* rewards;        // [B]
  const void* terminals;      // [B]
  void* loss;                 // [B]
  void* targets;              // [B, A]
  void* delta;                // [B]
  void* q_next_max;           // [B]
};

struct GradArgs {
  DType dtype;
  int64_t batch, num_actions;
  const void* grad_loss;  // [B]
  const void* targets;    // [B, A]
  void* grad_q;           // [B, A]
};

// One kernel launch each (none when B == 0). Return null on success, else a static
// error string (the CUDA error of the launch). An action outside [0, A) or a discount
// outside [0, 1] cannot be reported from the device without a synchronisation, so that
// row's loss, delta, q_next_max and whole targets row become NaN: never an out-of-bounds
// access, never a plausible number.
const char* LaunchDqnTargetsForward(const ForwardArgs& args, void* stream);
const char* LaunchDqnTargetsGrad(const GradArgs& args, void* stream);

}  // namespace tfdqn

#endif  // TFDQN_DQN_TARGETS_GPU_H_
