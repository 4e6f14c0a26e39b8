// Automatic mixed precision, as torch.autocast("cuda", dtype=torch.bfloat16):
// while an AutocastGuard is alive on this thread, the matrix ops on CUDA
// tensors (matmul, linear, scaled_dot_product_attention) cast float32 operands
// to bfloat16 and run on the tensor cores with float32 accumulation, returning
// bfloat16; softmax, log_softmax and layer_norm run in float32 (16-bit inputs
// are cast up), and so do the losses built on them. Everything else computes in
// its inputs' promoted type. Casts are recorded by autograd, so gradients reach
// the float32 master weights in float32. CPU tensors are never cast.
#pragma once

#include "engine/tensor.h"

namespace fg {

bool autocast_enabled();
DType autocast_dtype();

class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled = true, DType dtype = DType::BFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

namespace detail {
// True when autocast is on and t is a float32 CUDA tensor (to be lowered).
bool autocast_lowers(const Tensor& t);
// True when autocast is on and t is a 16-bit floating CUDA tensor (to be raised).
bool autocast_raises(const Tensor& t);
// t cast to the autocast dtype when autocast_lowers(t), else t (undefined stays undefined).
Tensor autocast_lower(const Tensor& t);
// t cast to float32 when autocast_raises(t), else t (undefined stays undefined).
Tensor autocast_raise(const Tensor& t);
}  // namespace detail

}  // namespace fg
