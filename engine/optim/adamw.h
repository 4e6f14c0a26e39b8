// AdamW (decoupled weight decay, PyTorch's formulation) with parameter groups,
// and global-norm gradient clipping.
#pragma once

#include <vector>

#include "engine/backend.h"
#include "engine/tensor.h"

namespace fg::optim {

struct ParamGroup {
  std::vector<Tensor> params;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, double lr, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8);

  // Applies one update to every parameter with a gradient (others are left alone).
  // Inside a CUDA graph capture it records the update; each replay then counts
  // the step and uses the learning rate set at that time (set_lr before
  // replay). The optimizer must outlive the graph, and its state must exist
  // (one step before the capture) and not be replaced while the graph is used.
  // grad_scale, when defined (one value on the parameters' device, such as
  // clip_coefficient's coef), multiplies every gradient as the update reads
  // it: the same update as scaling the gradients first, without that pass over
  // them; the gradients themselves are left as they are.
  void step(const Tensor& grad_scale = Tensor());
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // Per-parameter state, in group order (for checkpoints). Undefined before the first step.
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  std::vector<State>& states() { return states_; }
  const std::vector<State>& states() const { return states_; }

 private:
  std::vector<ParamGroup> groups_;
  std::vector<State> states_;
  double lr_, beta1_, beta2_, eps_;
};

// Scales every gradient so that their global L2 norm is at most max_norm
// (coefficient max_norm / (norm + 1e-6), as PyTorch). Returns the norm before
// clipping as a 0-d tensor on the gradients' device (no host synchronization).
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);
// Clipping without touching the gradients: their global norm and the
// coefficient min(max_norm / (norm + 1e-6), 1), both 0-d on the gradients'
// device, for AdamW::step(coef) to apply as it reads them (clip_grad_norm_
// followed by step() gives the same update, with one more pass over every
// gradient).
struct ClipCoefficient {
  Tensor norm, coef;
};
ClipCoefficient clip_coefficient(const std::vector<Tensor>& params, double max_norm);
// The global L2 norm of the gradients, 0-d.
Tensor grad_norm(const std::vector<Tensor>& params);

}  // namespace fg::optim
