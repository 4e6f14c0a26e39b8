// Layer normalization over the last `cols` values of each of `rows` rows, with
// statistics in float (double for double inputs) as the ops allocate them.
// Forward (one warp per row): mean, then the variance as the mean of squared
// deviations (two passes, like the CPU), rstd = 1 / sqrt(var + eps),
// y = (x - mean) * rstd * w + b.
// Backward: per row, gx = rstd * (w g - mean(w g) - xhat * mean(w g xhat));
// the parameter gradients sum g * xhat and g over rows in a fixed order
// (per-chunk partial sums, then one pass over the chunks), so they are
// deterministic.
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

constexpr int kWarpColsLimit = 4096;

template <class W, class A>
__device__ __forceinline__ A param_or(const W* p, int64_t j, A fallback) {
  return p ? convert<A>(p[j]) : fallback;
}

// One warp per row (short rows) or one block per row (long rows); `Block` picks.
template <class T, class W, bool Block>
__global__ void layer_norm_forward(const T* x, const W* weight, const W* bias, T* y,
                                   accum_t<T>* mean_out, accum_t<T>* rstd_out, int64_t rows,
                                   int64_t cols, double eps) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  const int64_t lane = Block ? threadIdx.x : threadIdx.x % 32;
  const int64_t width = Block ? blockDim.x : 32;
  const int64_t first = Block ? blockIdx.x : global_thread() / 32;
  const int64_t step = Block ? gridDim.x : grid_threads() / 32;
  for (int64_t row = first; row < rows; row += step) {
    const T* xr = x + row * cols;
    A sum = 0;
    for (int64_t j = lane; j < cols; j += width) sum += convert<A>(xr[j]);
    sum = Block ? block_sum(sum, scratch) : warp_sum(sum);
    const A mu = sum / static_cast<A>(cols);
    A sq = 0;
    for (int64_t j = lane; j < cols; j += width) {
      const A d = convert<A>(xr[j]) - mu;
      sq += d * d;
    }
    sq = Block ? block_sum(sq, scratch) : warp_sum(sq);
    const A inv = A(1) / math::sqrt(sq / static_cast<A>(cols) + static_cast<A>(eps));
    if (lane == 0) {
      mean_out[row] = mu;
      rstd_out[row] = inv;
    }
    T* yr = y + row * cols;
    for (int64_t j = lane; j < cols; j += width) {
      const A v =
          (convert<A>(xr[j]) - mu) * inv * param_or(weight, j, A(1)) + param_or(bias, j, A(0));
      yr[j] = convert<T>(v);
    }
  }
}

template <class T, class W, bool Block>
__global__ void layer_norm_backward_input(const T* g, const T* x, const accum_t<T>* mean,
                                          const accum_t<T>* rstd, const W* weight, T* gx,
                                          int64_t rows, int64_t cols) {
  using A = accum_t<T>;
  __shared__ A scratch[32];
  const int64_t lane = Block ? threadIdx.x : threadIdx.x % 32;
  const int64_t width = Block ? blockDim.x : 32;
  const int64_t first = Block ? blockIdx.x : global_thread() / 32;
  const int64_t step = Block ? gridDim.x : grid_threads() / 32;
  for (int64_t row = first; row < rows; row += step) {
    const T* gr = g + row * cols;
    const T* xr = x + row * cols;
    const A mu = mean[row], inv = rstd[row];
    A sum_wg = 0, sum_wg_xhat = 0;
    for (int64_t j = lane; j < cols; j += width) {
      const A wg = convert<A>(gr[j]) * param_or(weight, j, A(1));
      const A xhat = (convert<A>(xr[j]) - mu) * inv;
      sum_wg += wg;
      sum_wg_xhat += wg * xhat;
    }
    if constexpr (Block) {
      sum_wg = block_sum(sum_wg, scratch);
      sum_wg_xhat = block_sum(sum_wg_xhat, scratch);
    } else {
      sum_wg = warp_sum(sum_wg);
      sum_wg_xhat = warp_sum(sum_wg_xhat);
    }
    const A a = sum_wg / static_cast<A>(cols), b = sum_wg_xhat / static_cast<A>(cols);
    T* gxr = gx + row * cols;
    for (int64_t j = lane; j < cols; j += width) {
      const A wg = convert<A>(gr[j]) * param_or(weight, j, A(1));
      const A xhat = (convert<A>(xr[j]) - mu) * inv;
      gxr[j] = convert<T>(inv * (wg - a - xhat * b));
    }
  }
}

constexpr int kParamWidth = 32, kParamDepth = 8;

// Partial parameter gradients: block (32, 8) over (columns, rows of chunk s).
// partial_w/partial_b are (chunks, cols).
template <class T>
__global__ void layer_norm_param_partials(const T* g, const T* x, const accum_t<T>* mean,
                                          const accum_t<T>* rstd, int64_t rows, int64_t cols,
                                          int64_t chunk, accum_t<T>* partial_w,
                                          accum_t<T>* partial_b) {
  using A = accum_t<T>;
  __shared__ A sum_w[kParamDepth][kParamWidth + 1];
  __shared__ A sum_b[kParamDepth][kParamWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kParamWidth + threadIdx.x;
  const int64_t s = blockIdx.y;
  const int64_t begin = s * chunk, end = min(rows, begin + chunk);
  A acc_w = 0, acc_b = 0;
  if (j < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kParamDepth) {
      const A gv = convert<A>(g[r * cols + j]);
      acc_w += gv * (convert<A>(x[r * cols + j]) - mean[r]) * rstd[r];
      acc_b += gv;
    }
  }
  sum_w[threadIdx.y][threadIdx.x] = acc_w;
  sum_b[threadIdx.y][threadIdx.x] = acc_b;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    A w = sum_w[0][threadIdx.x], b = sum_b[0][threadIdx.x];
    for (int k = 1; k < kParamDepth; ++k) {
      w += sum_w[k][threadIdx.x];
      b += sum_b[k][threadIdx.x];
    }
    partial_w[s * cols + j] = w;
    partial_b[s * cols + j] = b;
  }
}

template <class A>
__device__ __forceinline__ void store_as(void* base, DType type, int64_t j, A v) {
  switch (type) {
    case DType::Float32:
      static_cast<float*>(base)[j] = static_cast<float>(v);
      break;
    case DType::Float64:
      static_cast<double*>(base)[j] = static_cast<double>(v);
      break;
    case DType::BFloat16:
      static_cast<bf16*>(base)[j] = convert<bf16>(static_cast<float>(v));
      break;
    default:
      break;  // checked on the host
  }
}

template <class A>
__global__ void layer_norm_param_finish(const A* partial_w, const A* partial_b, int64_t chunks,
                                        int64_t cols, void* grad_weight, DType weight_type,
                                        void* grad_bias, DType bias_type) {
  for (int64_t j = global_thread(); j < cols; j += grid_threads()) {
    A w = 0, b = 0;
    for (int64_t s = 0; s < chunks; ++s) {
      w += partial_w[s * cols + j];
      b += partial_b[s * cols + j];
    }
    if (grad_weight) store_as(grad_weight, weight_type, j, w);
    if (grad_bias) store_as(grad_bias, bias_type, j, b);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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
    if (cols <= kWarpColsLimit) {
      const int64_t grid = std::min<int64_t>(ceil_div(rows, 8), 1 << 20);
      layer_norm_forward<T, W, false>
          <<<grid, 256, 0, stream()>>>(xp, wp, bp, yp, mp, rp, rows, cols, eps);
    } else {
      const int64_t grid = std::min<int64_t>(rows, 1 << 20);
      layer_norm_forward<T, W, true>
          <<<grid, 512, 0, stream()>>>(xp, wp, bp, yp, mp, rp, rows, cols, eps);
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
      if (cols <= kWarpColsLimit) {
        const int64_t grid = std::min<int64_t>(ceil_div(rows, 8), 1 << 20);
        layer_norm_backward_input<T, W, false>
            <<<grid, 256, 0, stream()>>>(gp, xp, mp, rp, wp, gxp, rows, cols);
      } else {
        const int64_t grid = std::min<int64_t>(rows, 1 << 20);
        layer_norm_backward_input<T, W, true>
            <<<grid, 512, 0, stream()>>>(gp, xp, mp, rp, wp, gxp, rows, cols);
      }
      FG_CUDA_LAUNCH_CHECK(name);
    }
    if (grad_weight.defined() || grad_bias.defined()) {
      // About 64 rows per chunk, at most 256 chunks (a fixed function of the sizes).
      const int64_t chunks = std::min<int64_t>(256, std::max<int64_t>(1, ceil_div(rows, 64)));
      const int64_t chunk = ceil_div(rows, chunks);
      FG_CHECK(chunks <= 65535, name, ": too many chunks");
      DeviceBuffer partial(static_cast<size_t>(2 * chunks * cols) * sizeof(A));
      A* partial_w = partial.as<A>();
      A* partial_b = partial_w + chunks * cols;
      const dim3 grid(static_cast<unsigned>(ceil_div(cols, kParamWidth)),
                      static_cast<unsigned>(chunks));
      layer_norm_param_partials<T><<<grid, dim3(kParamWidth, kParamDepth), 0, stream()>>>(
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

}  // namespace fg::cuda
