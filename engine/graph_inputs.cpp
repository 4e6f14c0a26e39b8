// GraphInputs (engine/cuda_graph.h): plain tensor work, the same with or
// without CUDA compiled in.
#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/ops.h"

namespace fg {

GraphInputs::GraphInputs(const std::vector<Tensor>& batch) {
  NoGradGuard no_grad;
  tensors_.reserve(batch.size());
  for (const Tensor& t : batch) tensors_.push_back(t.defined() ? t.clone() : Tensor());
}

bool GraphInputs::fits(const std::vector<Tensor>& batch) const {
  if (batch.size() != tensors_.size()) return false;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Tensor &a = tensors_[i], &b = batch[i];
    if (a.defined() != b.defined()) return false;
    if (a.defined() && (a.shape() != b.shape() || a.dtype() != b.dtype() || a.device() != b.device()))
      return false;
  }
  return true;
}

void GraphInputs::copy_from(const std::vector<Tensor>& batch) const {
  FG_CHECK(fits(batch), "GraphInputs: the batch does not fit the captured inputs (",
           tensors_.size(), " tensors; shapes, dtypes and devices must match)");
  NoGradGuard no_grad;
  for (size_t i = 0; i < batch.size(); ++i)
    if (batch[i].defined()) copy_(tensors_[i], batch[i]);
}

}  // namespace fg
