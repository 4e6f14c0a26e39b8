#include "engine/autocast.h"

namespace fg {

namespace {
thread_local bool t_enabled = false;
thread_local DType t_dtype = DType::BFloat16;
}  // namespace

bool autocast_enabled() { return t_enabled; }
DType autocast_dtype() { return t_dtype; }

AutocastGuard::AutocastGuard(bool enabled, DType dtype)
    : previous_enabled_(t_enabled), previous_dtype_(t_dtype) {
  FG_CHECK(dtype == DType::BFloat16, "AutocastGuard: dtype must be bfloat16 (the CUDA kernels' ",
           "16-bit type), got ", dtype_name(dtype));
  t_enabled = enabled;
  t_dtype = dtype;
}

AutocastGuard::~AutocastGuard() {
  t_enabled = previous_enabled_;
  t_dtype = previous_dtype_;
}

namespace detail {

bool autocast_lowers(const Tensor& t) {
  return t_enabled && t.defined() && t.device().is_cuda() && t.dtype() == DType::Float32;
}

bool autocast_raises(const Tensor& t) {
  return t_enabled && t.defined() && t.device().is_cuda() &&
         (t.dtype() == DType::BFloat16 || t.dtype() == DType::Float16);
}

Tensor autocast_lower(const Tensor& t) { return autocast_lowers(t) ? t.to(t_dtype) : t; }
Tensor autocast_raise(const Tensor& t) { return autocast_raises(t) ? t.to(DType::Float32) : t; }

}  // namespace detail

}  // namespace fg
