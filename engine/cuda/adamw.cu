// Fused multi-tensor AdamW on CUDA: the checks, the launch plan and the
// launches of the kernel in adamw_kernels.cuh. One launch covers up to
// kMaxTensors tensors in chunks of kChunk elements (the tensor pointers and the
// block -> (tensor, chunk) map travel as the kernel's argument), so a model's
// ~100 parameters take one or a few launches.
//
// The scalars that change every step (lr, the step count t) are read by the
// kernel from a small device buffer that a one-thread kernel fills just before.
// Inside a captured CUDA graph (engine/cuda_graph.h) the caller passes its own
// buffer instead (AdamWParams::device_scalars), written before each replay:
// the graph keeps the pointers and the chunk map (fixed for a fixed set of
// parameters), not the values. The gradient scale (AdamWParams::grad_scale,
// the clipping coefficient) is read where it lives, likewise.
#include "engine/cuda/adamw_kernels.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/multi_tensor_plan.h"

namespace fg::cuda {

namespace {

using namespace adamw_detail;

template <class T>
void adamw_typed(const std::vector<size_t>& indices, const std::vector<Tensor>& params,
                 const std::vector<Tensor>& grads, const std::vector<Tensor>& exp_avgs,
                 const std::vector<Tensor>& exp_avg_sqs, const AdamWScalars* scalars,
                 GradScale grad_scale) {
  std::vector<int64_t> numels;
  numels.reserve(indices.size());
  for (size_t index : indices) numels.push_back(params[index].numel());
  for (const MultiTensorLaunch& plan :
       plan_multi_tensor_launches(numels, kMaxTensors, kMaxBlocks, kChunk)) {
    const AdamWBatch<T> batch = make_batch<T>(plan, [&](size_t i) {
      const size_t index = indices[i];
      return AdamWTensors<T>{static_cast<T*>(params[index].data_ptr()),
                             static_cast<const T*>(grads[index].data_ptr()),
                             static_cast<T*>(exp_avgs[index].data_ptr()),
                             static_cast<T*>(exp_avg_sqs[index].data_ptr()), params[index].numel()};
    });
    const int blocks = static_cast<int>(plan.block_tensor.size());
    adamw_kernel<T><<<blocks, kThreads, 0, stream()>>>(batch, kChunk, scalars, grad_scale);
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
  GradScale grad_scale;
  if (hyper.grad_scale.defined()) {
    const Tensor& t = hyper.grad_scale;
    FG_CHECK(t.device().is_cuda() && (params.empty() || t.device() == params[0].device()) &&
                 t.numel() == 1 &&
                 (t.dtype() == DType::Float32 || t.dtype() == DType::Float64),
             "adamw: grad_scale must be one float32 or float64 value on the parameters' GPU, got ",
             shape_str(t.shape()), " ", dtype_name(t.dtype()), " on ", t.device().str());
    if (t.dtype() == DType::Float32)
      grad_scale.f32 = static_cast<const float*>(t.data_ptr());
    else
      grad_scale.f64 = static_cast<const double*>(t.data_ptr());
  }
  if (!float_indices.empty())
    adamw_typed<float>(float_indices, params, grads, exp_avgs, exp_avg_sqs, source, grad_scale);
  if (!double_indices.empty())
    adamw_typed<double>(double_indices, params, grads, exp_avgs, exp_avg_sqs, source, grad_scale);
}

}  // namespace fg::cuda
