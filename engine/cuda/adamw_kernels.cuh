// The fused multi-tensor AdamW kernel (PyTorch's formulation, as the CPU
// backend's adamw in engine/cpu/kernels.cpp):
//   g' = g * scale  (the clipping coefficient, when the update applies it)
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
//   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Launches follow plan_multi_tensor_launches (multi_tensor_plan.h): block b
// updates chunk block_chunk[b] (of `chunk` elements; kChunk on the device) of
// the tensor in slot block_tensor[b].
//
// The scalars that change every step (lr, the step count t) and the gradient
// scale are read from device memory, so a captured CUDA graph can replay the
// update with new values and clipping needs no host read.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host; adamw.cu holds the checks and the launches.
#pragma once

#include <cstdint>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/cuda/multi_tensor_chunk.cuh"
#include "engine/cuda/multi_tensor_plan.h"

namespace fg::cuda::adamw_detail {
FG_KERNELS_BEGIN

constexpr int kMaxTensors = 36;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

// The layout of AdamWParams::device_scalars (six float64 values).
struct AdamWScalars {
  double lr, beta1, beta2, eps, weight_decay, step;
};
static_assert(sizeof(AdamWScalars) == 6 * sizeof(double), "six float64 values");

// One launch's tensors and its block -> (slot, chunk) map, passed by value.
template <class T>
struct AdamWBatch {
  T* param[kMaxTensors];
  const T* grad[kMaxTensors];
  T* exp_avg[kMaxTensors];
  T* exp_avg_sq[kMaxTensors];
  int64_t numel[kMaxTensors];
  uint16_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(AdamWBatch<double>) <= 4000, "kernel arguments are limited to 4 KB");

// One tensor's pointers and size, for make_batch.
template <class T>
struct AdamWTensors {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  int64_t numel;
};

// One planned launch's argument (host code): slot s holds tensor
// plan.tensors[s], whose pointers tensors_of(i) gives.
template <class T, class F>
AdamWBatch<T> make_batch(const MultiTensorLaunch& plan, F tensors_of) {
  AdamWBatch<T> batch{};
  for (size_t slot = 0; slot < plan.tensors.size(); ++slot) {
    const AdamWTensors<T> x = tensors_of(plan.tensors[slot]);
    batch.param[slot] = x.param;
    batch.grad[slot] = x.grad;
    batch.exp_avg[slot] = x.exp_avg;
    batch.exp_avg_sq[slot] = x.exp_avg_sq;
    batch.numel[slot] = x.numel;
  }
  set_block_map(batch, plan);
  return batch;
}

// The gradients' scale: one float32 or one float64 value in device memory
// (at most one of the two set), rounded to the parameters' dtype; 1 when unset.
struct GradScale {
  const float* f32 = nullptr;
  const double* f64 = nullptr;
};

__global__ void set_adamw_scalars(AdamWScalars* dst, AdamWScalars values) { *dst = values; }

template <class T>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(AdamWBatch<T> batch, int64_t chunk, const AdamWScalars* scalars,
                 GradScale grad_scale) {
  // beta1, beta2, step size, sqrt(bias correction 2), eps, decay, gradient scale
  __shared__ T coefficients[7];
  if (threadIdx.x == 0) {
    const AdamWScalars s = *scalars;
    const double bias1 = 1.0 - math::pow(s.beta1, s.step);
    const double bias2 = 1.0 - math::pow(s.beta2, s.step);
    coefficients[0] = static_cast<T>(s.beta1);
    coefficients[1] = static_cast<T>(s.beta2);
    coefficients[2] = static_cast<T>(s.lr / bias1);
    coefficients[3] = static_cast<T>(math::sqrt(bias2));
    coefficients[4] = static_cast<T>(s.eps);
    coefficients[5] = static_cast<T>(1.0 - s.lr * s.weight_decay);
    coefficients[6] = grad_scale.f64   ? static_cast<T>(*grad_scale.f64)
                      : grad_scale.f32 ? static_cast<T>(*grad_scale.f32)
                                       : T(1);
  }
  __syncthreads();
  const T b1 = coefficients[0], b2 = coefficients[1], step_size = coefficients[2];
  const T bias2_sqrt = coefficients[3], eps = coefficients[4], decay = coefficients[5];
  const T scale = coefficients[6];
  int t;
  int64_t begin, end;
  chunk_of(batch, chunk, t, begin, end);
  T* p = batch.param[t];
  const T* g = batch.grad[t];
  T* m = batch.exp_avg[t];
  T* v = batch.exp_avg_sq[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const T gi = g[i] * scale;
    T pi = p[i] * decay;
    const T mi = b1 * m[i] + (T(1) - b1) * gi;
    const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    const T denom = math::sqrt(vi) / bias2_sqrt + eps;
    pi -= step_size * mi / denom;
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

FG_KERNELS_END
}  // namespace fg::cuda::adamw_detail
