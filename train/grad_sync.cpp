#include "train/grad_sync.h"

#include "engine/autograd.h"
#include "engine/ops.h"

namespace fg::train {

GradientAverager::GradientAverager(Communicator& comm, std::vector<Tensor> params, size_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  // Reverse order: the last layers' gradients are final first in the backward pass.
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    if (!p.requires_grad()) continue;
    const size_t bytes = static_cast<size_t>(p.numel()) * p.element_size();
    Bucket* b = buckets_.empty() ? nullptr : &buckets_.back();
    const bool fits = b && b->dtype == p.dtype() && b->device == p.device() &&
                      static_cast<size_t>(b->numel) * dtype_size(b->dtype) + bytes <= bucket_bytes;
    if (!fits) {
      buckets_.emplace_back();
      b = &buckets_.back();
      b->dtype = p.dtype();
      b->device = p.device();
    }
    b->params.push_back(k);
    b->offsets.push_back(b->numel);
    b->numel += p.numel();
    bucket_of_[p.impl()] = buckets_.size() - 1;
  }
}

GradientAverager::~GradientAverager() {
  if (armed_) set_grad_ready_hook(nullptr);
  // A backward that threw can leave collectives on their way into bucket
  // buffers about to be freed: the compute stream waits for them first, so the
  // memory is not handed out while they may still write it.
  bool started = false;
  for (const Bucket& b : buckets_) started = started || b.started;
  if (started) {
    try {
      comm_.wait_pending();
    } catch (const std::exception&) {
      // Nothing more to do in a destructor; the communicator reports its own failure.
    }
  }
}

void GradientAverager::before_backward() {
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.started = false;
  }
  next_to_start_ = 0;
  if (comm_.world_size() > 1 && comm_.overlaps_compute()) {
    set_grad_ready_hook([this](TensorImpl* leaf) { on_grad_ready(leaf); });
    armed_ = true;
  }
}

void GradientAverager::on_grad_ready(TensorImpl* leaf) {
  const auto found = bucket_of_.find(leaf);
  if (found == bucket_of_.end()) return;
  Bucket& b = buckets_[found->second];
  if (++b.ready == b.params.size()) start_ready_in_order();
}

// Buckets start strictly in index order, so every rank issues the same
// sequence of collectives even if its gradients become final in another order.
void GradientAverager::start_ready_in_order() {
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].ready == buckets_[next_to_start_].params.size())
    start(buckets_[next_to_start_++]);
}

void GradientAverager::start(Bucket& b) {
  NoGradGuard no_grad;
  if (!b.flat.defined()) b.flat = Tensor::empty({b.numel}, b.dtype, b.device);
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Tensor& p = params_[b.params[i]];
    const Tensor slot = b.flat.narrow(0, b.offsets[i], p.numel());
    const Tensor g = p.grad();
    if (g.defined()) copy_(slot, g.reshape({p.numel()}));
    else zero_(slot);
  }
  comm_.all_reduce_sum_start(b.flat);
  b.started = true;
}

void GradientAverager::finish() {
  if (armed_) {
    set_grad_ready_hook(nullptr);
    armed_ = false;
  }
  if (comm_.world_size() <= 1) return;
  NoGradGuard no_grad;
  // Whatever the hook did not start (host backends, or parameters that got no gradient).
  for (; next_to_start_ < buckets_.size(); ++next_to_start_) start(buckets_[next_to_start_]);
  comm_.wait_pending();
  const double scale = 1.0 / static_cast<double>(comm_.world_size());
  for (Bucket& b : buckets_) {
    mul_(b.flat, scale);
    for (size_t i = 0; i < b.params.size(); ++i) {
      const Tensor& p = params_[b.params[i]];
      const Tensor averaged = b.flat.narrow(0, b.offsets[i], p.numel()).view(p.shape());
      if (!p.grad().defined()) p.set_grad(averaged.clone());
      else copy_(p.grad(), averaged);
    }
  }
}

}  // namespace fg::train
