// Layer normalization on CUDA: checks, dtype dispatch and the launches of the
// kernels in layer_norm_kernels.cuh.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/layer_norm_kernels.cuh"

namespace fg::cuda {

namespace {

using namespace layer_norm_detail;

bool is_compute_float(DType t) {
  return t == DType::Float32 || t == DType::Float64 || t == DType::BFloat16;
}

DType stats_dtype(DType x) { return x == DType::Float64 ? DType::Float64 : DType::Float32; }

// Calls f with (T, W): x's device type and the parameters' (W = T, or float for
// bfloat16 activations with float32 parameters).
template <class F>
void dispatch_layer_norm(DType x_type, DType param_type, const char* name, F f) {
  FG_CUDA_DISPATCH_FLOATING(x_type, name, [&] {
    using T = scalar_t;
    if (param_type == x_type) {
      f(T{}, T{});
    } else if (x_type == DType::BFloat16 && param_type == DType::Float32) {
      f(T{}, float{});
    } else {
      FG_CHECK(false, name, ": parameters of dtype ", dtype_name(param_type),
               " for input of dtype ", dtype_name(x_type));
    }
  });
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, int64_t rows,
                int64_t cols, const Tensor& out, const Tensor& mean, const Tensor& rstd) {
  FG_CHECK(x.is_contiguous() && out.is_contiguous() && x.dtype() == out.dtype(),
           "layer_norm: needs contiguous input and output of one dtype");
  FG_CHECK(mean.dtype() == stats_dtype(x.dtype()) && rstd.dtype() == mean.dtype(),
           "layer_norm: statistics must be ", dtype_name(stats_dtype(x.dtype())));
  FG_CHECK(!weight.defined() || !bias.defined() || weight.dtype() == bias.dtype(),
           "layer_norm: weight and bias dtypes differ");
  if (rows == 0 || cols == 0) return;
  const DType param_type =
      weight.defined() ? weight.dtype() : (bias.defined() ? bias.dtype() : x.dtype());
  dispatch_layer_norm(x.dtype(), param_type, "layer_norm", [&](auto t_tag, auto w_tag) {
    using T = decltype(t_tag);
    using W = decltype(w_tag);
    using A = accum_t<T>;
    const T* xp = static_cast<const T*>(x.data_ptr());
    const W* wp = weight.defined() ? static_cast<const W*>(weight.data_ptr()) : nullptr;
    const W* bp = bias.defined() ? static_cast<const W*>(bias.data_ptr()) : nullptr;
    T* yp = static_cast<T*>(out.data_ptr());
    A* mp = static_cast<A*>(mean.data_ptr());
    A* rp = static_cast<A*>(rstd.data_ptr());
    const RowLaunch launch = row_launch(rows, cols);
    if (!launch.block_per_row) {
      layer_norm_forward<T, W, false>
          <<<launch.grid, launch.threads, 0, stream()>>>(xp, wp, bp, yp, mp, rp, rows, cols, eps);
    } else {
      layer_norm_forward<T, W, true>
          <<<launch.grid, launch.threads, 0, stream()>>>(xp, wp, bp, yp, mp, rp, rows, cols, eps);
    }
    FG_CUDA_LAUNCH_CHECK("layer_norm");
  });
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                         const Tensor& rstd, const Tensor& weight, int64_t rows, int64_t cols,
                         const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias) {
  const char* name = "layer_norm backward";
  FG_CHECK(grad.is_contiguous() && x.is_contiguous() && grad.dtype() == x.dtype(), name,
           ": needs contiguous gradient and input of one dtype");
  FG_CHECK(mean.dtype() == stats_dtype(x.dtype()) && rstd.dtype() == mean.dtype(), name,
           ": statistics must be ", dtype_name(stats_dtype(x.dtype())));
  if (rows == 0 || cols == 0) return;
  for (const Tensor* t : {&grad_weight, &grad_bias})
    if (t->defined())
      FG_CHECK(t->is_contiguous() && is_compute_float(t->dtype()), name,
               ": parameter gradients must be contiguous float32, bfloat16 or float64");
  const DType param_type = weight.defined() ? weight.dtype() : x.dtype();
  dispatch_layer_norm(x.dtype(), param_type, name, [&](auto t_tag, auto w_tag) {
    using T = decltype(t_tag);
    using W = decltype(w_tag);
    using A = accum_t<T>;
    const T* gp = static_cast<const T*>(grad.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    const A* mp = static_cast<const A*>(mean.data_ptr());
    const A* rp = static_cast<const A*>(rstd.data_ptr());
    const W* wp = weight.defined() ? static_cast<const W*>(weight.data_ptr()) : nullptr;
    if (grad_input.defined()) {
      FG_CHECK(grad_input.is_contiguous() && grad_input.dtype() == x.dtype(), name,
               ": input gradient must be contiguous and of the input's dtype");
      T* gxp = static_cast<T*>(grad_input.data_ptr());
      const RowLaunch launch = row_launch(rows, cols);
      if (!launch.block_per_row) {
        layer_norm_backward_input<T, W, false>
            <<<launch.grid, launch.threads, 0, stream()>>>(gp, xp, mp, rp, wp, gxp, rows, cols);
      } else {
        layer_norm_backward_input<T, W, true>
            <<<launch.grid, launch.threads, 0, stream()>>>(gp, xp, mp, rp, wp, gxp, rows, cols);
      }
      FG_CUDA_LAUNCH_CHECK(name);
    }
    if (grad_weight.defined() || grad_bias.defined()) {
      const auto [chunks, chunk] = param_chunks(rows);
      FG_CHECK(chunks <= 65535, name, ": too many chunks");
      DeviceBuffer partial(static_cast<size_t>(2 * chunks * cols) * sizeof(A));
      A* partial_w = partial.as<A>();
      A* partial_b = partial_w + chunks * cols;
      layer_norm_param_partials<T>
          <<<param_partials_grid(cols, chunks), dim3(kParamWidth, kParamDepth), 0, stream()>>>(
              gp, xp, mp, rp, rows, cols, chunk, partial_w, partial_b);
      FG_CUDA_LAUNCH_CHECK(name);
      layer_norm_param_finish<A><<<grid_for(cols, 256), 256, 0, stream()>>>(
          partial_w, partial_b, chunks, cols,
          grad_weight.defined() ? grad_weight.data_ptr() : nullptr,
          grad_weight.defined() ? grad_weight.dtype() : DType::Float32,
          grad_bias.defined() ? grad_bias.data_ptr() : nullptr,
          grad_bias.defined() ? grad_bias.dtype() : DType::Float32);
      FG_CUDA_LAUNCH_CHECK(name);
    }
  });
}

namespace {

// Calls f with (T, X): the residual stream's type and the branch's (T, or
// bfloat16 onto float32).
template <class F>
void dispatch_add_layer_norm(DType stream_type, DType branch_type, const char* name, F f) {
  if (stream_type == DType::Float32 && branch_type == DType::Float32) {
    f(float{}, float{});
  } else if (stream_type == DType::Float32 && branch_type == DType::BFloat16) {
    f(float{}, bf16{});
  } else if (stream_type == DType::Float64 && branch_type == DType::Float64) {
    f(double{}, double{});
  } else {
    FG_CHECK(false, name, ": a ", dtype_name(branch_type), " branch onto a ",
             dtype_name(stream_type), " residual stream is not supported");
  }
}

RowDropout row_dropout(const DropoutArgs& a) {
  return RowDropout{a.p > 0.0, a.seed, a.offset, static_cast<float>(a.p), a.offset_base};
}

}  // namespace

void add_layer_norm(const AddLayerNormArgs& a) {
  const char* name = "add_layer_norm";
  for (const Tensor* t : {&a.residual, &a.x, &a.out, &a.sum})
    FG_CHECK(t->is_contiguous() && t->numel() == a.rows * a.cols, name,
             ": needs contiguous tensors of rows x cols values");
  FG_CHECK(a.out.dtype() == a.residual.dtype() && a.sum.dtype() == a.residual.dtype(), name,
           ": sum and output must have the residual's dtype");
  FG_CHECK(a.mean.dtype() == stats_dtype(a.residual.dtype()) && a.rstd.dtype() == a.mean.dtype(),
           name, ": statistics must be ", dtype_name(stats_dtype(a.residual.dtype())));
  for (const Tensor* t : {&a.weight, &a.bias})
    FG_CHECK(!t->defined() || (t->dtype() == a.residual.dtype() && t->numel() == a.cols), name,
             ": parameters must have the residual's dtype and cols values");
  if (a.rows == 0 || a.cols == 0) return;
  dispatch_add_layer_norm(a.residual.dtype(), a.x.dtype(), name, [&](auto t_tag, auto x_tag) {
    using T = decltype(t_tag);
    using X = decltype(x_tag);
    using A = accum_t<T>;
    const T* rp = static_cast<const T*>(a.residual.data_ptr());
    const X* xp = static_cast<const X*>(a.x.data_ptr());
    const T* wp = a.weight.defined() ? static_cast<const T*>(a.weight.data_ptr()) : nullptr;
    const T* bp = a.bias.defined() ? static_cast<const T*>(a.bias.data_ptr()) : nullptr;
    T* sp = static_cast<T*>(a.sum.data_ptr());
    T* yp = static_cast<T*>(a.out.data_ptr());
    A* mp = static_cast<A*>(a.mean.data_ptr());
    A* sd = static_cast<A*>(a.rstd.data_ptr());
    const RowDropout d = row_dropout(a.dropout);
    const compute_t<X> scale = a.dropout.scale<compute_t<X>>();
    const RowLaunch launch = row_launch(a.rows, a.cols);
    if (!launch.block_per_row) {
      add_layer_norm_forward<T, X, T, false><<<launch.grid, launch.threads, 0, stream()>>>(
          rp, xp, wp, bp, sp, yp, mp, sd, a.rows, a.cols, a.eps, d, scale);
    } else {
      add_layer_norm_forward<T, X, T, true><<<launch.grid, launch.threads, 0, stream()>>>(
          rp, xp, wp, bp, sp, yp, mp, sd, a.rows, a.cols, a.eps, d, scale);
    }
    FG_CUDA_LAUNCH_CHECK(name);
  });
}

void add_layer_norm_backward(const AddLayerNormBackwardArgs& a) {
  const char* name = "add_layer_norm backward";
  FG_CHECK(a.grad.is_contiguous() && a.sum.is_contiguous() && a.grad.dtype() == a.sum.dtype() &&
               a.grad.numel() == a.rows * a.cols && a.sum.numel() == a.grad.numel(),
           name, ": needs contiguous gradient and sum of one dtype");
  FG_CHECK(!a.grad_residual.defined() ||
               (a.grad_residual.is_contiguous() && a.grad_residual.dtype() == a.sum.dtype() &&
                a.grad_residual.numel() == a.grad.numel()),
           name, ": the residual's gradient must be contiguous and of the sum's dtype");
  FG_CHECK(!a.grad_x.defined() || (a.grad_x.is_contiguous() && a.grad_x.numel() == a.grad.numel()),
           name, ": the branch's gradient must be contiguous");
  if (a.rows == 0 || a.cols == 0) return;
  if (a.grad_residual.defined() || a.grad_x.defined()) {
    const DType branch = a.grad_x.defined() ? a.grad_x.dtype() : a.sum.dtype();
    dispatch_add_layer_norm(a.sum.dtype(), branch, name, [&](auto t_tag, auto x_tag) {
      using T = decltype(t_tag);
      using X = decltype(x_tag);
      using A = accum_t<T>;
      const T* gp = static_cast<const T*>(a.grad.data_ptr());
      const T* sp = static_cast<const T*>(a.sum.data_ptr());
      const A* mp = static_cast<const A*>(a.mean.data_ptr());
      const A* rp = static_cast<const A*>(a.rstd.data_ptr());
      const T* wp = a.weight.defined() ? static_cast<const T*>(a.weight.data_ptr()) : nullptr;
      T* grp = a.grad_residual.defined() ? static_cast<T*>(a.grad_residual.data_ptr()) : nullptr;
      X* gxp = a.grad_x.defined() ? static_cast<X*>(a.grad_x.data_ptr()) : nullptr;
      const RowDropout d = row_dropout(a.dropout);
      const compute_t<X> scale = a.dropout.scale<compute_t<X>>();
      const RowLaunch launch = row_launch(a.rows, a.cols);
      if (!launch.block_per_row) {
        add_layer_norm_backward_input<T, X, T, false><<<launch.grid, launch.threads, 0, stream()>>>(
            gp, sp, mp, rp, wp, grp, gxp, a.rows, a.cols, d, scale);
      } else {
        add_layer_norm_backward_input<T, X, T, true><<<launch.grid, launch.threads, 0, stream()>>>(
            gp, sp, mp, rp, wp, grp, gxp, a.rows, a.cols, d, scale);
      }
      FG_CUDA_LAUNCH_CHECK(name);
    });
  }
  // The parameter gradients are layer_norm's, over the kept sum.
  if (a.grad_weight.defined() || a.grad_bias.defined())
    layer_norm_backward(a.grad, a.sum, a.mean, a.rstd, a.weight, a.rows, a.cols, Tensor(),
                        a.grad_weight, a.grad_bias);
}

}  // namespace fg::cuda
