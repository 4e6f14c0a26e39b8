// Fused multi-tensor AdamW (PyTorch's formulation, as engine/cpu/kernels.cpp):
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// One launch covers up to kMaxTensors tensors in chunks of kChunk elements (the
// tensor pointers and the block -> (tensor, chunk) map travel as the kernel's
// argument), so a model's ~100 parameters take one or a few launches.
//
// The scalars that change every step (lr, the step count t) are read by the
// kernel from a small device buffer that a one-thread kernel fills just before.
// Inside a captured CUDA graph (engine/cuda_graph.h) the caller passes its own
// buffer instead (AdamWParams::device_scalars), written before each replay:
// the graph keeps the pointers and the chunk map (fixed for a fixed set of
// parameters), not the values.
#include "engine/cuda/multi_tensor_plan.h"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

constexpr int kMaxTensors = 36;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

// The layout of AdamWParams::device_scalars (six float64 values).
struct AdamWScalars {
  double lr, beta1, beta2, eps, weight_decay, step;
};
static_assert(sizeof(AdamWScalars) == 6 * sizeof(double), "six float64 values");

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

__global__ void set_adamw_scalars(AdamWScalars* dst, AdamWScalars values) { *dst = values; }

template <class T>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(AdamWBatch<T> batch, const AdamWScalars* scalars) {
  __shared__ T coefficients[5];  // beta1, beta2, step size, sqrt(bias correction 2), eps
  __shared__ T decay_shared;
  if (threadIdx.x == 0) {
    const AdamWScalars s = *scalars;
    const double bias1 = 1.0 - pow(s.beta1, s.step);
    const double bias2 = 1.0 - pow(s.beta2, s.step);
    coefficients[0] = static_cast<T>(s.beta1);
    coefficients[1] = static_cast<T>(s.beta2);
    coefficients[2] = static_cast<T>(s.lr / bias1);
    coefficients[3] = static_cast<T>(sqrt(bias2));
    coefficients[4] = static_cast<T>(s.eps);
    decay_shared = static_cast<T>(1.0 - s.lr * s.weight_decay);
  }
  __syncthreads();
  const T b1 = coefficients[0], b2 = coefficients[1], step_size = coefficients[2];
  const T bias2_sqrt = coefficients[3], eps = coefficients[4], decay = decay_shared;
  const int t = batch.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(batch.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(batch.numel[t], begin + kChunk);
  T* p = batch.param[t];
  const T* g = batch.grad[t];
  T* m = batch.exp_avg[t];
  T* v = batch.exp_avg_sq[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const T gi = g[i];
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

template <class T>
void adamw_typed(const std::vector<size_t>& indices, const std::vector<Tensor>& params,
                 const std::vector<Tensor>& grads, const std::vector<Tensor>& exp_avgs,
                 const std::vector<Tensor>& exp_avg_sqs, const AdamWScalars* scalars) {
  std::vector<int64_t> numels;
  numels.reserve(indices.size());
  for (size_t index : indices) numels.push_back(params[index].numel());
  for (const MultiTensorLaunch& plan :
       plan_multi_tensor_launches(numels, kMaxTensors, kMaxBlocks, kChunk)) {
    AdamWBatch<T> batch{};
    for (size_t slot = 0; slot < plan.tensors.size(); ++slot) {
      const size_t index = indices[plan.tensors[slot]];
      batch.param[slot] = static_cast<T*>(params[index].data_ptr());
      batch.grad[slot] = static_cast<const T*>(grads[index].data_ptr());
      batch.exp_avg[slot] = static_cast<T*>(exp_avgs[index].data_ptr());
      batch.exp_avg_sq[slot] = static_cast<T*>(exp_avg_sqs[index].data_ptr());
      batch.numel[slot] = params[index].numel();
    }
    set_block_map(batch, plan);
    const int blocks = static_cast<int>(plan.block_tensor.size());
    adamw_kernel<T><<<blocks, kThreads, 0, stream()>>>(batch, scalars);
    FG_CUDA_LAUNCH_CHECK("adamw");
  }
}

}  // namespace

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
           const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
           const AdamWParams& hyper) {
  FG_CHECK(params.size() == grads.size() && params.size() == exp_avgs.size() &&
               params.size() == exp_avg_sqs.size(),
           "adamw: ", params.size(), " parameters with ", grads.size(), " gradients, ",
           exp_avgs.size(), " and ", exp_avg_sqs.size(), " moments");
  std::vector<size_t> float_indices, double_indices;
  for (size_t i = 0; i < params.size(); ++i) {
    const DType type = params[i].dtype();
    for (const Tensor* t : {&params[i], &grads[i], &exp_avgs[i], &exp_avg_sqs[i]}) {
      FG_CHECK(t->is_contiguous() && t->dtype() == type && t->numel() == params[i].numel(),
               "adamw: parameter ", i, " of shape ", shape_str(params[i].shape()),
               ": gradient and moments must be contiguous, of its dtype and size");
      FG_CHECK(t->device().is_cuda(), "adamw: tensor on ", t->device().str());
    }
    if (type == DType::Float32)
      float_indices.push_back(i);
    else if (type == DType::Float64)
      double_indices.push_back(i);
    else
      FG_CHECK(false, "adamw: parameters must be float32 or float64 (master weights), got ",
               dtype_name(type));
  }
  // One small device buffer for the per-step scalars, kept for the process.
  static AdamWScalars* scalars = [] {
    void* ptr = cached_malloc(sizeof(AdamWScalars));
    return static_cast<AdamWScalars*>(ptr);
  }();
  const AdamWScalars* source = scalars;
  if (hyper.device_scalars.defined()) {
    const Tensor& t = hyper.device_scalars;
    FG_CHECK(t.device().is_cuda() && t.dtype() == DType::Float64 && t.numel() == 6 &&
                 t.is_contiguous(),
             "adamw: device_scalars must be 6 contiguous float64 values on the GPU, got ",
             shape_str(t.shape()), " ", dtype_name(t.dtype()), " on ", t.device().str());
    source = static_cast<const AdamWScalars*>(t.data_ptr());
  } else {
    const AdamWScalars values{hyper.lr,  hyper.beta1,        hyper.beta2,
                              hyper.eps, hyper.weight_decay, static_cast<double>(hyper.step)};
    set_adamw_scalars<<<1, 1, 0, stream()>>>(scalars, values);
    FG_CUDA_LAUNCH_CHECK("adamw");
  }
  if (!float_indices.empty())
    adamw_typed<float>(float_indices, params, grads, exp_avgs, exp_avg_sqs, source);
  if (!double_indices.empty())
    adamw_typed<double>(double_indices, params, grads, exp_avgs, exp_avg_sqs, source);
}

}  // namespace fg::cuda
