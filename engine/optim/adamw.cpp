#include "engine/optim/adamw.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/ops.h"

namespace fg::optim {

AdamW::AdamW(std::vector<ParamGroup> groups, double lr, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
  FG_CHECK(lr >= 0, "AdamW: invalid learning rate ", lr);
  FG_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW: betas must be in [0, 1)");
  size_t count = 0;
  for (const auto& g : groups_) count += g.params.size();
  states_.resize(count);
}

void AdamW::step(const Tensor& grad_scale) {
  NoGradGuard no_grad;
  // Inside a CUDA graph capture the update is recorded, not run: the step
  // counts advance, and the learning rate and step count reach the kernels,
  // before each replay (cuda_graph_on_replay), not now.
  const bool capturing = cuda_graph_capturing();
  size_t index = 0;
  for (const auto& group : groups_) {
    // Parameters that share a step count are updated in one backend call.
    std::vector<Tensor> params, grads, avgs, sqs;
    std::vector<size_t> batch_states;
    int64_t step = -1;
    auto flush = [&] {
      if (params.empty()) return;
      AdamWParams hp;
      hp.lr = lr_;
      hp.beta1 = beta1_;
      hp.beta2 = beta2_;
      hp.eps = eps_;
      hp.weight_decay = group.weight_decay;
      hp.step = step;
      hp.grad_scale = grad_scale;
      if (capturing) {
        FG_CHECK(params[0].device().is_cuda(), "AdamW: a CUDA graph capture of parameters on ",
                 params[0].device().str());
        hp.device_scalars = Tensor::empty({6}, DType::Float64, params[0].device());
        cuda_graph_on_replay([this, scalars = hp.device_scalars, states = batch_states,
                              weight_decay = group.weight_decay] {
          for (size_t i : states) ++states_[i].step;
          const double t = static_cast<double>(states_[states.front()].step);
          cuda_write_float64(scalars, {lr_, beta1_, beta2_, eps_, weight_decay, t});
        });
      }
      backend_of(params[0]).adamw(params, grads, avgs, sqs, hp);
      params.clear();
      grads.clear();
      avgs.clear();
      sqs.clear();
      batch_states.clear();
    };
    for (const Tensor& p : group.params) {
      const size_t state_index = index++;
      State& s = states_[state_index];
      const Tensor g = p.grad();
      if (!g.defined()) continue;
      FG_CHECK(p.is_contiguous() && g.shape() == p.shape(), "AdamW: parameter and gradient of shapes ",
               shape_str(p.shape()), " and ", shape_str(g.shape()));
      if (!s.exp_avg.defined()) {
        FG_CHECK(!capturing, "AdamW: parameter ", state_index, " (", shape_str(p.shape()),
                 ") has no optimizer state yet; run one step before capturing it in a CUDA graph "
                 "(its moments would be created inside the graph and zeroed at every replay)");
        s.exp_avg = Tensor::zeros(p.shape(), p.dtype(), p.device());
        s.exp_avg_sq = Tensor::zeros(p.shape(), p.dtype(), p.device());
      }
      const int64_t next = s.step + 1;  // the replays count it when capturing
      if (!capturing) s.step = next;
      if (next != step) flush();
      step = next;
      batch_states.push_back(state_index);
      params.push_back(p);
      grads.push_back(g.dtype() == p.dtype() && g.is_contiguous() ? g : g.to(p.dtype()).contiguous());
      avgs.push_back(s.exp_avg);
      sqs.push_back(s.exp_avg_sq);
    }
    flush();
  }
}

void AdamW::zero_grad() {
  for (const auto& group : groups_)
    for (const Tensor& p : group.params) p.zero_grad();
}

namespace {

// The defined gradients of params, and whether they are all contiguous float32
// on one device: then one multi-tensor pass each covers them
// (sum_squares_many, scale_many) instead of a few kernels per tensor.
struct Gradients {
  std::vector<Tensor> grads;
  bool uniform = true;
};

Gradients gradients_of(const std::vector<Tensor>& params) {
  Gradients out;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.dtype() != DType::Float32 || !g.is_contiguous() ||
        (!out.grads.empty() && g.device() != out.grads.front().device()))
      out.uniform = false;
    out.grads.push_back(g);
  }
  return out;
}

// The norm of all the gradients; params names the device when there are none.
Tensor norm_of(const Gradients& all, const std::vector<Tensor>& params) {
  if (all.uniform && !all.grads.empty()) {
    const Tensor total = Tensor::empty({}, DType::Float32, all.grads.front().device());
    backend_of(total).sum_squares_many(all.grads, total);
    return sqrt(total);
  }
  Tensor total;
  for (const Tensor& g : all.grads) {
    const Tensor gf = g.to(float_math_dtype(g.dtype())).contiguous();
    const Tensor sq = Tensor::empty({}, gf.dtype(), gf.device());
    backend_of(gf).sum_squares(gf, sq);  // one fused pass where the backend has one
    total = total.defined() ? add(total, sq.to(total.dtype())) : sq;
  }
  if (!total.defined()) {
    // No gradients at all: a zero on the parameters' device, where the caller reads it with the rest.
    return Tensor::scalar(0.0, DType::Float32, params.empty() ? kCPU : params.front().device());
  }
  return sqrt(total);
}

}  // namespace

Tensor grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  return norm_of(gradients_of(params), params);
}

namespace {

// The norm of all the gradients and min(max_norm / (norm + 1e-6), 1), as PyTorch.
ClipCoefficient coefficient_of(const Gradients& all, const std::vector<Tensor>& params,
                               double max_norm) {
  ClipCoefficient out;
  out.norm = norm_of(all, params);
  const Tensor& norm = out.norm;
  out.coef = minimum(div(Tensor::scalar(max_norm, norm.dtype(), norm.device()), add(norm, 1e-6)),
                     Tensor::scalar(1.0, norm.dtype(), norm.device()));
  return out;
}

}  // namespace

ClipCoefficient clip_coefficient(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  return coefficient_of(gradients_of(params), params, max_norm);
}

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  const Gradients all = gradients_of(params);
  const ClipCoefficient clip = coefficient_of(all, params, max_norm);
  if (all.uniform && !all.grads.empty()) {  // a float32 norm, so a float32 coef
    backend_of(clip.coef).scale_many(all.grads, clip.coef);
    return clip.norm;
  }
  for (const Tensor& g : all.grads) mul_(g, clip.coef);
  return clip.norm;
}

}  // namespace fg::optim
