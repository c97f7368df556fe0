#!/usr/bin/env bash
# Builds and runs the TF-free GPU check (parity with the CPU math, launch count, bandwidth).
# Needs nvcc, CMake and a CUDA GPU; TensorFlow is NOT needed.
#   scripts/gpu_check.sh                # full parity + benchmark up to B = 2^24
#   scripts/gpu_check.sh --quick        # smaller parity set, same benchmark
#   SANITIZE=1 scripts/gpu_check.sh     # also run the quick parity set under compute-sanitizer
#   BUILD_ONLY=1 scripts/gpu_check.sh   # only build (what CI checks on a machine without a GPU)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build/gpu_check}"
mkdir -p "$build"
cmake -S "$root" -B "$build" -DTFDQN_CUDA=ON -DTFDQN_BUILD_TF_OPS=OFF -DTFDQN_BUILD_REPLAY=OFF \
      -DTFDQN_BUILD_GPU_CHECK=ON -DCMAKE_BUILD_TYPE=Release >"$build/configure.log"
cmake --build "$build" --target gpu_check --parallel "$(nproc)"
if [[ "${BUILD_ONLY:-0}" == 1 ]]; then
  echo "built $build/gpu_check"
  exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
"$build/gpu_check" "$@" || status=$?
if [[ "${SANITIZE:-0}" == 1 ]]; then
  # Out-of-range actions, NaN rows, B = 0, A = 4096: no access outside any buffer.
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  echo "compute-sanitizer memcheck on the quick parity set:"
  "$sanitizer" --tool memcheck --error-exitcode 3 "$build/gpu_check" --quick --max-log2-batch 0 \
    | tail -n 3 || status=$?
fi
exit "$status"
