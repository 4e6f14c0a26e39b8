// Reductions, GEMM, softmax, layer norm, randomness, bicubic resize and AdamW on the CPU.
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/bicubic_weights.h"
#include "engine/cpu/blas.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/philox_simd.h"
#include "engine/cpu/strided_loop.h"
#include "engine/philox.h"

namespace fg {

Backend& cpu_backend() {
  static cpu::CpuBackend* backend = new cpu::CpuBackend();
  return *backend;
}

namespace cpu {

// ---------------------------------------------------------------- reductions

namespace {

template <class T>
struct Accum {
  using type = double;  // float sums accumulate in double for accuracy
};

// Sum of n contiguous values, or of their squares, in the accumulator type A:
// eight running sums (two vector registers of doubles).
template <class A, bool Squares, class T>
A sum_span(const T* x, int64_t n) {
  auto term = [](T v) {
    const A a = static_cast<A>(v);
    return Squares ? a * a : a;
  };
  A acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += term(x[i + k]);
  for (; i < n; ++i) acc[0] += term(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Sums (or sums of squares) of `rows` rows of n contiguous values, for long rows
// and fewer rows than threads (a whole-tensor sum, the gradient norm): fixed-size
// chunks summed in parallel, then each row's partial sums in order, so the
// result does not depend on the number of threads.
constexpr int64_t kSumChunk = int64_t{1} << 16;

template <class A, bool Squares, class T>
void chunked_row_sums(const T* x, int64_t rows, int64_t n, T* out) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<A> partial(static_cast<size_t>(rows * chunks));
  parallel_for(rows * chunks, rows * n, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / chunks, from = (t % chunks) * kSumChunk;
      partial[static_cast<size_t>(t)] =
          sum_span<A, Squares>(x + o * n + from, std::min(kSumChunk, n - from));
    }
  });
  for (int64_t o = 0; o < rows; ++o) {
    A total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += partial[static_cast<size_t>(o * chunks + c)];
    out[o] = static_cast<T>(total);
  }
}

template <class T>
void reduce_typed(ReduceOp op, const T* x, T* out, int64_t outer, int64_t r, int64_t inner) {
  using A = typename Accum<T>::type;
  if (inner == 1 && op == ReduceOp::Sum && r >= 4 * kSumChunk) {
    chunked_row_sums<A, false>(x, outer, r, out);
    return;
  }
  if (inner == 1) {
    parallel_for(outer, outer * r, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* row = x + o * r;
        if (op == ReduceOp::Sum) {
          out[o] = static_cast<T>(sum_span<A, false>(row, r));
        } else {
          T best = row[0];
          if (op == ReduceOp::Max) {
            for (int64_t i = 1; i < r; ++i) best = row[i] > best || std::isnan(row[i]) ? row[i] : best;
          } else {
            for (int64_t i = 1; i < r; ++i) best = row[i] < best || std::isnan(row[i]) ? row[i] : best;
          }
          out[o] = best;
        }
      }
    });
    return;
  }
  // Reduce over the middle dimension: accumulate whole rows of `inner` values,
  // splitting across outer slices or, when there is one, across inner columns.
  auto run = [&](int64_t o, int64_t j0, int64_t j1) {
    const T* base = x + o * r * inner;
    T* dst = out + o * inner;
    if (op == ReduceOp::Sum) {
      std::vector<A> acc(static_cast<size_t>(j1 - j0), A(0));
      for (int64_t i = 0; i < r; ++i) {
        const T* row = base + i * inner;
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<A>(row[j]);
      }
      for (int64_t j = j0; j < j1; ++j) dst[j] = static_cast<T>(acc[j - j0]);
    } else {
      for (int64_t j = j0; j < j1; ++j) dst[j] = base[j];
      for (int64_t i = 1; i < r; ++i) {
        const T* row = base + i * inner;
        if (op == ReduceOp::Max) {
          for (int64_t j = j0; j < j1; ++j) dst[j] = row[j] > dst[j] || std::isnan(row[j]) ? row[j] : dst[j];
        } else {
          for (int64_t j = j0; j < j1; ++j) dst[j] = row[j] < dst[j] || std::isnan(row[j]) ? row[j] : dst[j];
        }
      }
    }
  };
  if (outer >= omp_get_max_threads() || outer * r * inner < kParallelGrain) {
    parallel_for(outer, outer * r * inner, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) run(o, 0, inner);
    });
  } else {
    for (int64_t o = 0; o < outer; ++o) {
      parallel_for(inner, r * inner, [&](int64_t j0, int64_t j1) { run(o, j0, j1); });
    }
  }
}

}  // namespace

void CpuBackend::sum_squares(const Tensor& x, const Tensor& out) {
  FG_ASSERT(x.is_contiguous() && out.numel() == 1);
  // One pass over x in double, the same result for any thread count.
  FG_DISPATCH_FLOAT(x.dtype(), "sum_squares", [&] {
    chunked_row_sums<double, true>(x.data<scalar_t>(), 1, x.numel(), out.data<scalar_t>());
  });
}

namespace {

// The chunks of kSumChunk elements of many float32 tensors, in order: chunk c
// is elements [begin, end) of tensor `tensor`.
struct TensorChunk {
  size_t tensor;
  int64_t begin, end;
};

std::vector<TensorChunk> chunks_of(const std::vector<Tensor>& xs, const char* name) {
  std::vector<TensorChunk> chunks;
  for (size_t t = 0; t < xs.size(); ++t) {
    FG_CHECK(xs[t].is_contiguous() && xs[t].dtype() == DType::Float32 && xs[t].device().is_cpu(),
             name, ": tensor ", t, " of shape ", shape_str(xs[t].shape()),
             " must be a contiguous float32 CPU tensor");
    for (int64_t from = 0; from < xs[t].numel(); from += kSumChunk)
      chunks.push_back({t, from, std::min(xs[t].numel(), from + kSumChunk)});
  }
  return chunks;
}

}  // namespace

// One parallel pass over every tensor (a model's gradients: a few hundred
// tensors, most of them small), each chunk summed in double and the chunks
// added in order: the same result for any thread count.
void CpuBackend::sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out) {
  FG_CHECK(out.numel() == 1 && out.dtype() == DType::Float32 && out.device().is_cpu(),
           "sum_squares_many: the result must be one float32 value on the CPU");
  const std::vector<TensorChunk> chunks = chunks_of(xs, "sum_squares_many");
  std::vector<double> partial(chunks.size());
  const int64_t n = static_cast<int64_t>(chunks.size());
  parallel_for(n, n * kSumChunk, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const TensorChunk& k = chunks[static_cast<size_t>(c)];
      partial[static_cast<size_t>(c)] =
          sum_span<double, true>(xs[k.tensor].data<float>() + k.begin, k.end - k.begin);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  *out.data<float>() = static_cast<float>(total);
}

void CpuBackend::scale_many(const std::vector<Tensor>& xs, const Tensor& factor) {
  FG_CHECK(factor.numel() == 1 && factor.dtype() == DType::Float32 && factor.device().is_cpu(),
           "scale_many: the factor must be one float32 value on the CPU");
  const std::vector<TensorChunk> chunks = chunks_of(xs, "scale_many");
  const float f = *factor.data<float>();
  const int64_t n = static_cast<int64_t>(chunks.size());
  parallel_for(n, n * kSumChunk, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const TensorChunk& k = chunks[static_cast<size_t>(c)];
      float* __restrict x = xs[k.tensor].data<float>();
      for (int64_t i = k.begin; i < k.end; ++i) x[i] *= f;
    }
  });
}

void CpuBackend::reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner,
                        const Tensor& out) {
  FG_ASSERT(x.is_contiguous() && out.is_contiguous());
  if (x.dtype() == DType::Int64 && op == ReduceOp::Sum) {
    const int64_t* src = x.data<int64_t>();
    int64_t* dst = out.data<int64_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < inner; ++j) {
        int64_t acc = 0;
        for (int64_t i = 0; i < r; ++i) acc += src[(o * r + i) * inner + j];
        dst[o * inner + j] = acc;
      }
    return;
  }
  FG_DISPATCH_FLOAT(x.dtype(), "reduce", [&] {
    reduce_typed<scalar_t>(op, x.data<scalar_t>(), out.data<scalar_t>(), outer, r, inner);
  });
}

// ---------------------------------------------------------------- GEMM

namespace {

// A batch of GEMMs runs one GEMM per thread (OpenBLAS single-threaded inside
// the parallel region) when the batch divides well among the threads: one
// parallel region instead of one per matrix. Attention's per-head products and
// the Soft MoE experts are many small GEMMs, where BLAS's own threading pays a
// fork and join per matrix (and, on a loaded machine, a descheduled thread
// stalls every one of them). Only with the OpenMP build of OpenBLAS, which runs
// single-threaded when called inside a parallel region; and only when the
// outputs do not overlap.
bool split_gemm_batch(const GemmArgs& g) {
  const int64_t batch = g.batch;
  if (batch < 2 || g.stride_c < g.m * g.ldc || !blas_splits_over_threads()) return false;
  const int64_t threads = omp_get_max_threads();
  return batch >= 2 * threads || batch % threads == 0;
}

template <class F>
void for_each_gemm(int64_t batch, bool split, F one) {
  if (split) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i) one(i);
  } else {
    for (int64_t i = 0; i < batch; ++i) one(i);
  }
}

}  // namespace

void CpuBackend::gemm(const GemmArgs& g) {
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  FG_CHECK(!g.bias || g.beta == 0.0, "gemm: a bias with beta != 0 is not supported");
  FG_DISPATCH_FLOAT(g.dtype, "matmul", [&] {
    const scalar_t* a = static_cast<const scalar_t*>(g.a);
    const scalar_t* b = static_cast<const scalar_t*>(g.b);
    scalar_t* c = static_cast<scalar_t*>(g.c);
    const scalar_t* bias = static_cast<const scalar_t*>(g.bias);
    auto one = [&](int64_t i) {
      scalar_t* ci = c + i * g.stride_c;
      double beta = g.beta;
      if (bias) {
        // Start from the bias rows so the GEMM accumulates onto them.
        for (int64_t row = 0; row < g.m; ++row)
          std::memcpy(ci + row * g.ldc, bias, static_cast<size_t>(g.n) * sizeof(scalar_t));
        beta = 1.0;
      }
      if (g.m == 0 || g.n == 0) return;
      if (g.k == 0) {
        // Nothing to multiply: C = beta C (the bias rows above when there is a bias).
        for (int64_t row = 0; row < g.m; ++row) {
          scalar_t* r = ci + row * g.ldc;
          if (beta == 0.0)
            std::memset(r, 0, static_cast<size_t>(g.n) * sizeof(scalar_t));
          else if (beta != 1.0)
            for (int64_t col = 0; col < g.n; ++col)
              r[col] = static_cast<scalar_t>(beta * static_cast<double>(r[col]));
        }
      } else {
        blas_gemm(ta, tb, g.m, g.n, g.k, g.alpha, a + i * g.stride_a, g.lda, b + i * g.stride_b,
                  g.ldb, beta, ci, g.ldc);
      }
      if (g.relu) {
        for (int64_t row = 0; row < g.m; ++row)
          for (int64_t col = 0; col < g.n; ++col) {
            scalar_t& v = ci[row * g.ldc + col];
            v = v > scalar_t(0) ? v : scalar_t(0);
          }
      }
    };
    for_each_gemm(g.batch, split_gemm_batch(g), one);
  });
}

// ---------------------------------------------------------------- softmax

namespace {

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  parallel_for(rows, rows * n * 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      T mx = xr[0];
      for (int64_t i = 1; i < n; ++i) mx = xr[i] > mx ? xr[i] : mx;
      T sum = 0;
      if (log) {
        for (int64_t i = 0; i < n; ++i) sum += std::exp(xr[i] - mx);
        // (x - max) - log(sum) keeps precision for large logits.
        const T log_sum = std::log(sum);
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mx) - log_sum;
      } else {
        for (int64_t i = 0; i < n; ++i) {
          yr[i] = std::exp(xr[i] - mx);
          sum += yr[i];
        }
        const T inv = T(1) / sum;
        for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
      }
    }
  });
}

// Softmax over the middle dimension of (outer, n, inner), vectorized across inner.
template <class T>
void softmax_strided(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  const int64_t blocks = (inner + 255) / 256;
  parallel_for(outer * blocks, outer * n * inner * 4, [&](int64_t begin, int64_t end) {
    std::vector<T> mx(256), sum(256);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks, j0 = (task % blocks) * 256;
      const int64_t w = std::min<int64_t>(256, inner - j0);
      const T* xo = x + o * n * inner + j0;
      T* yo = y + o * n * inner + j0;
      for (int64_t j = 0; j < w; ++j) {
        mx[j] = xo[j];
        sum[j] = 0;
      }
      for (int64_t i = 1; i < n; ++i)
        for (int64_t j = 0; j < w; ++j) mx[j] = xo[i * inner + j] > mx[j] ? xo[i * inner + j] : mx[j];
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const T e = std::exp(xo[i * inner + j] - mx[j]);
          if (!log) yo[i * inner + j] = e;
          sum[j] += e;
        }
      if (log) {
        for (int64_t j = 0; j < w; ++j) sum[j] = std::log(sum[j]);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < w; ++j) yo[i * inner + j] = (xo[i * inner + j] - mx[j]) - sum[j];
      } else {
        for (int64_t j = 0; j < w; ++j) sum[j] = T(1) / sum[j];
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < w; ++j) yo[i * inner + j] *= sum[j];
      }
    }
  });
}

template <class T>
void softmax_backward_typed(const T* y, const T* g, T* gx, int64_t outer, int64_t n,
                            int64_t inner, bool log) {
  const int64_t blocks = (inner + 255) / 256;
  parallel_for(outer * blocks, outer * n * inner * 3, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(256);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks, j0 = (task % blocks) * 256;
      const int64_t w = std::min<int64_t>(256, inner - j0);
      const int64_t base = o * n * inner + j0;
      for (int64_t j = 0; j < w; ++j) acc[j] = 0;
      // softmax: gx = y (g - sum(g y)); log_softmax: gx = g - exp(y) sum(g)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t k = base + i * inner + j;
          acc[j] += log ? g[k] : g[k] * y[k];
        }
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t k = base + i * inner + j;
          gx[k] = log ? g[k] - std::exp(y[k]) * acc[j] : y[k] * (g[k] - acc[j]);
        }
    }
  });
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n,
                         int64_t inner, bool log) {
  FG_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    if (inner == 1) softmax_rows(x.data<scalar_t>(), out.data<scalar_t>(), outer, n, log);
    else softmax_strided(x.data<scalar_t>(), out.data<scalar_t>(), outer, n, inner, log);
  });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input,
                                  int64_t outer, int64_t n, int64_t inner, bool log) {
  FG_DISPATCH_FLOAT(y.dtype(), "softmax backward", [&] {
    softmax_backward_typed(y.data<scalar_t>(), grad.data<scalar_t>(),
                           grad_input.data<scalar_t>(), outer, n, inner, log);
  });
}

// ---------------------------------------------------------------- layer norm

void CpuBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                            int64_t rows, int64_t cols, const Tensor& out, const Tensor& mean,
                            const Tensor& rstd) {
  FG_DISPATCH_FLOAT(x.dtype(), "layer_norm", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    const T* w = weight.defined() ? weight.data<T>() : nullptr;
    const T* b = bias.defined() ? bias.data<T>() : nullptr;
    T* yp = out.data<T>();
    T* mp = mean.data<T>();
    T* rp = rstd.data<T>();
    parallel_for(rows, rows * cols * 3, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xp + r * cols;
        double s = 0;
        for (int64_t j = 0; j < cols; ++j) s += xr[j];
        const double m = s / static_cast<double>(cols);
        double v = 0;
        for (int64_t j = 0; j < cols; ++j) {
          const double d = xr[j] - m;
          v += d * d;
        }
        const T mu = static_cast<T>(m);
        const T inv = static_cast<T>(1.0 / std::sqrt(v / static_cast<double>(cols) + eps));
        mp[r] = mu;
        rp[r] = inv;
        T* yr = yp + r * cols;
        if (w && b) {
          for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - mu) * inv * w[j] + b[j];
        } else {
          for (int64_t j = 0; j < cols; ++j) {
            T v2 = (xr[j] - mu) * inv;
            if (w) v2 *= w[j];
            if (b) v2 += b[j];
            yr[j] = v2;
          }
        }
      }
    });
  });
}

namespace {

template <class T>
void layer_norm_backward_typed(const Tensor& grad, const Tensor& x, const Tensor& mean,
                               const Tensor& rstd, const Tensor& weight, int64_t rows,
                               int64_t cols, const Tensor& grad_input, const Tensor& grad_weight,
                               const Tensor& grad_bias) {
  const T* g = grad.data<T>();
  const T* xp = x.data<T>();
  const T* mp = mean.data<T>();
  const T* rp = rstd.data<T>();
  const T* w = weight.defined() ? weight.data<T>() : nullptr;
  T* gx = grad_input.defined() ? grad_input.data<T>() : nullptr;
  const bool want_params = grad_weight.defined() || grad_bias.defined();
  const int threads = omp_get_max_threads();
  const int64_t chunks =
      rows * cols < kParallelGrain ? 1 : std::max<int64_t>(1, std::min<int64_t>(threads, rows));
  // Per-chunk partial sums for the parameter gradients, combined afterwards.
  std::vector<double> partial_w(want_params ? static_cast<size_t>(chunks * cols) : 0, 0.0);
  std::vector<double> partial_b(want_params ? static_cast<size_t>(chunks * cols) : 0, 0.0);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks)) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = rows * c / chunks, end = rows * (c + 1) / chunks;
    double* pw = want_params ? partial_w.data() + c * cols : nullptr;
    double* pb = want_params ? partial_b.data() + c * cols : nullptr;
    for (int64_t r = begin; r < end; ++r) {
      const T* gr = g + r * cols;
      const T* xr = xp + r * cols;
      const T mu = mp[r], inv = rp[r];
      if (gx) {
        T a = 0, b = 0;
        for (int64_t j = 0; j < cols; ++j) {
          const T wg = w ? gr[j] * w[j] : gr[j];
          const T xhat = (xr[j] - mu) * inv;
          a += wg;
          b += wg * xhat;
        }
        a /= static_cast<T>(cols);
        b /= static_cast<T>(cols);
        T* gxr = gx + r * cols;
        for (int64_t j = 0; j < cols; ++j) {
          const T wg = w ? gr[j] * w[j] : gr[j];
          const T xhat = (xr[j] - mu) * inv;
          gxr[j] = inv * (wg - a - xhat * b);
        }
      }
      if (want_params) {
        for (int64_t j = 0; j < cols; ++j) {
          pw[j] += static_cast<double>(gr[j] * (xr[j] - mu) * inv);
          pb[j] += static_cast<double>(gr[j]);
        }
      }
    }
  }
  if (want_params) {
    for (int64_t j = 0; j < cols; ++j) {
      double sw = 0, sb = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        sw += partial_w[c * cols + j];
        sb += partial_b[c * cols + j];
      }
      if (grad_weight.defined()) grad_weight.data<T>()[j] = static_cast<T>(sw);
      if (grad_bias.defined()) grad_bias.data<T>()[j] = static_cast<T>(sb);
    }
  }
}

}  // namespace

void CpuBackend::layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                     const Tensor& rstd, const Tensor& weight, int64_t rows,
                                     int64_t cols, const Tensor& grad_input,
                                     const Tensor& grad_weight, const Tensor& grad_bias) {
  FG_DISPATCH_FLOAT(x.dtype(), "layer_norm backward", [&] {
    layer_norm_backward_typed<scalar_t>(grad, x, mean, rstd, weight, rows, cols, grad_input,
                                        grad_weight, grad_bias);
  });
}

// ---------------------------------------------------------------- randomness

namespace {

// Calls run(first, count, words) over [0, n) in parallel runs of up to 32
// elements, words[k] being element first + k's Philox word (word i % 4 of
// philox4x32(i / 4, offset, seed)): the blocks are drawn eight at a time.
template <class F>
void for_philox_runs(int64_t n, uint64_t seed, uint64_t offset, F run) {
  const int64_t blocks = (n + 3) / 4;
  parallel_for(blocks, n * 8, [&](int64_t begin, int64_t end) {
    alignas(64) uint32_t words[32];
    for (int64_t b0 = begin; b0 < end; b0 += 8) {
      philox4x32_8(static_cast<uint64_t>(b0), offset, seed, words);  // eight blocks at once
      const int64_t first = b0 * 4;
      run(first, std::min(n, std::min(end, b0 + 8) * 4) - first, static_cast<const uint32_t*>(words));
    }
  });
}

// Fills out[i] = value(word) for each element, where word is element i's
// Philox output, handed to value a block of four at a time.
template <class T, class F>
void fill_by_blocks(T* out, int64_t n, uint64_t seed, uint64_t offset, F value) {
  for_philox_runs(n, seed, offset, [&](int64_t first, int64_t count, const uint32_t* words) {
    for (int64_t k = 0; k < count; k += 4) {
      const uint32_t* w = words + k;
      const Philox4 r{{w[0], w[1], w[2], w[3]}};
      value(r, out + first + k, static_cast<int>(std::min<int64_t>(4, count - k)));
    }
  });
}

template <class T>
void fill_uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double low, double high) {
  fill_by_blocks(out, n, seed, offset, [=](const Philox4& r, T* dst, int count) {
    for (int k = 0; k < count; ++k)
      dst[k] = static_cast<T>(low + (high - low) * static_cast<double>(philox_word_uniform(r.v[k])));
  });
}

template <class T>
void fill_normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double std) {
  // Box-Muller on word pairs (0, 1) and (2, 3), as philox_normal.
  fill_by_blocks(out, n, seed, offset, [=](const Philox4& r, T* dst, int count) {
    for (int pair = 0; pair < 2 && pair * 2 < count; ++pair) {
      const float u1 = philox_word_uniform_nonzero(r.v[pair * 2]);
      const float u2 = philox_word_uniform(r.v[pair * 2 + 1]);
      const float radius = std::sqrt(-2.0f * std::log(u1));
      const float angle = 6.283185307179586f * u2;
      dst[pair * 2] = static_cast<T>(mean + std * static_cast<double>(radius * std::cos(angle)));
      if (pair * 2 + 1 < count)
        dst[pair * 2 + 1] = static_cast<T>(mean + std * static_cast<double>(radius * std::sin(angle)));
    }
  });
}

}  // namespace

void CpuBackend::uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low,
                         double high) {
  FG_ASSERT(out.is_contiguous());
  if (out.dtype() == DType::Float32) {
    fill_uniform(out.data<float>(), out.numel(), seed, offset, low, high);
  } else if (out.dtype() == DType::Float64) {
    fill_uniform(out.data<double>(), out.numel(), seed, offset, low, high);
  } else {
    Tensor tmp = Tensor::empty(out.shape(), DType::Float32);
    uniform(tmp, seed, offset, low, high);
    copy(tmp, out);
  }
}

void CpuBackend::normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean,
                        double std) {
  FG_ASSERT(out.is_contiguous());
  if (out.dtype() == DType::Float32) {
    fill_normal(out.data<float>(), out.numel(), seed, offset, mean, std);
  } else if (out.dtype() == DType::Float64) {
    fill_normal(out.data<double>(), out.numel(), seed, offset, mean, std);
  } else {
    Tensor tmp = Tensor::empty(out.shape(), DType::Float32);
    normal(tmp, seed, offset, mean, std);
    copy(tmp, out);
  }
}

void CpuBackend::dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset) {
  FG_ASSERT(mask.is_contiguous());
  const float threshold = static_cast<float>(p);
  FG_DISPATCH_FLOAT(mask.dtype(), "dropout", [&] {
    const scalar_t scale = static_cast<scalar_t>(1.0 / (1.0 - p));
    fill_by_blocks(mask.data<scalar_t>(), mask.numel(), seed, offset,
                   [=](const Philox4& r, scalar_t* dst, int count) {
                     for (int k = 0; k < count; ++k)
                       dst[k] = philox_keeps(r.v[k], threshold) ? scale : scalar_t(0);
                   });
  });
}

namespace {

// out[i] = max(x[i], 0) (Relu) or x[i], times s if element i survives and 0
// otherwise: a product in T, as x * dropout_mask(...) gives. Branch-free selects
// over restrict pointers, so that the loops vectorize (the keep decisions are
// random: a branch on them mispredicts).
template <class T, bool Relu>
void dropout_forward(const T* x_in, T* out_in, int64_t n, const DropoutArgs& a) {
  const float threshold = static_cast<float>(a.p);
  const T scale = a.scale<T>();
  for_philox_runs(n, a.seed, a.offset, [=](int64_t first, int64_t count, const uint32_t* words) {
    const T* __restrict xb = x_in + first;
    T* __restrict ob = out_in + first;
    for (int64_t k = 0; k < count; ++k) {
      T v = xb[k];
      if constexpr (Relu) v = v > T(0) ? v : T(0);
      ob[k] = v * (philox_keeps(words[k], threshold) ? scale : T(0));
    }
  });
}

// relu_dropout's backward: the gradient passes (times s) where the output is positive.
template <class T>
void dropout_backward_by_output(const T* g_in, const T* out_in, T* gx_in, int64_t n,
                                const DropoutArgs& a) {
  const T scale = a.scale<T>();
  parallel_for(n, n * 3, [=](int64_t begin, int64_t end) {
    const T* __restrict g = g_in;
    const T* __restrict out = out_in;
    T* __restrict gx = gx_in;
    const T s = scale;  // a local: the closure's copy could alias gx for the vectorizer
    // Select, then scale (0 * s is 0): an unconditional multiply, so the loop vectorizes.
    for (int64_t i = begin; i < end; ++i) gx[i] = (out[i] > T(0) ? g[i] : T(0)) * s;
  });
}

}  // namespace

void CpuBackend::dropout(const Tensor& x, const Tensor& out, const DropoutArgs& args) {
  FG_ASSERT(x.is_contiguous() && out.is_contiguous() && x.dtype() == out.dtype() &&
            x.numel() == out.numel());
  FG_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    if (args.relu)
      dropout_forward<scalar_t, true>(x.data<scalar_t>(), out.data<scalar_t>(), x.numel(), args);
    else
      dropout_forward<scalar_t, false>(x.data<scalar_t>(), out.data<scalar_t>(), x.numel(), args);
  });
}

void CpuBackend::dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                                  const DropoutArgs& args) {
  FG_ASSERT(grad.is_contiguous() && grad_input.is_contiguous() &&
            grad.dtype() == grad_input.dtype() && grad.numel() == grad_input.numel());
  FG_DISPATCH_FLOAT(grad.dtype(), "dropout backward", [&] {
    if (args.relu) {
      FG_ASSERT(out.is_contiguous() && out.dtype() == grad.dtype() && out.numel() == grad.numel());
      dropout_backward_by_output(grad.data<scalar_t>(), out.data<scalar_t>(),
                                 grad_input.data<scalar_t>(), grad.numel(), args);
    } else {
      // The same draw applied to the gradient.
      dropout_forward<scalar_t, false>(grad.data<scalar_t>(), grad_input.data<scalar_t>(),
                                       grad.numel(), args);
    }
  });
}

// ---------------------------------------------------------------- bicubic

void CpuBackend::bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners) {
  FG_DISPATCH_FLOAT(x.dtype(), "bicubic_resize", [&] {
    using T = scalar_t;
    const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
    const int64_t oh = out.size(2), ow = out.size(3);
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    // Per output column: four clamped source columns and their weights.
    std::vector<int64_t> xi(static_cast<size_t>(ow * 4));
    std::vector<T> xw(static_cast<size_t>(ow * 4));
    for (int64_t ox = 0; ox < ow; ++ox) {
      const T real = source_index<T>(ox, w, ow, align_corners);
      const T fl = std::floor(real);
      cubic_coefficients(real - fl, &xw[ox * 4]);
      for (int k = 0; k < 4; ++k)
        xi[ox * 4 + k] = std::clamp<int64_t>(static_cast<int64_t>(fl) - 1 + k, 0, w - 1);
    }
    parallel_for(planes * oh, planes * oh * ow * 16, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t plane = task / oh, oy = task % oh;
        const T real = source_index<T>(oy, h, oh, align_corners);
        const T fl = std::floor(real);
        T yw[4];
        cubic_coefficients(real - fl, yw);
        const T* rows[4];
        for (int k = 0; k < 4; ++k)
          rows[k] = src + plane * h * w +
                    std::clamp<int64_t>(static_cast<int64_t>(fl) - 1 + k, 0, h - 1) * w;
        T* orow = dst + plane * oh * ow + oy * ow;
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int64_t* ix = &xi[ox * 4];
          const T* wx = &xw[ox * 4];
          T acc = 0;
          for (int k = 0; k < 4; ++k) {
            const T* row = rows[k];
            const T horizontal =
                row[ix[0]] * wx[0] + row[ix[1]] * wx[1] + row[ix[2]] * wx[2] + row[ix[3]] * wx[3];
            acc += horizontal * yw[k];
          }
          orow[ox] = acc;
        }
      }
    });
  });
}

// ---------------------------------------------------------------- AdamW

void CpuBackend::adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                       const AdamWParams& hp) {
  const double bias1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bias2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  const double step_size = hp.lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  const double decay = 1.0 - hp.lr * hp.weight_decay;
  double grad_scale = 1.0;
  if (hp.grad_scale.defined()) {
    const Tensor& s = hp.grad_scale;
    FG_CHECK(s.device().is_cpu() && s.numel() == 1 &&
                 (s.dtype() == DType::Float32 || s.dtype() == DType::Float64),
             "adamw: grad_scale must be one float32 or float64 value on the CPU, got ",
             shape_str(s.shape()), " ", dtype_name(s.dtype()), " on ", s.device().str());
    grad_scale = s.dtype() == DType::Float32 ? static_cast<double>(*s.data<float>()) : *s.data<double>();
  }
  for (size_t t = 0; t < params.size(); ++t) {
    FG_DISPATCH_FLOAT(params[t].dtype(), "adamw", [&] {
      using T = scalar_t;
      T* const param = params[t].data<T>();
      const T* const grad = grads[t].data<T>();
      T* const avg = exp_avgs[t].data<T>();
      T* const sq = exp_avg_sqs[t].data<T>();
      const int64_t n = params[t].numel();
      const T b1 = static_cast<T>(hp.beta1), b2 = static_cast<T>(hp.beta2);
      const T ss = static_cast<T>(step_size), bc2 = static_cast<T>(bias2_sqrt);
      const T eps = static_cast<T>(hp.eps), dec = static_cast<T>(decay);
      const T scale = static_cast<T>(grad_scale);
      parallel_for(n, n * 4, [=](int64_t begin, int64_t end) {
        // Copied in by value and restrict-qualified: with the tensors distinct and the
        // constants local, the loop vectorizes (captured references kept it scalar).
        T* __restrict p = param;
        const T* __restrict g = grad;
        T* __restrict m = avg;
        T* __restrict v = sq;
        for (int64_t i = begin; i < end; ++i) {
          const T gi = g[i] * scale;
          p[i] *= dec;
          m[i] = b1 * m[i] + (T(1) - b1) * gi;
          v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
          const T denom = std::sqrt(v[i]) / bc2 + eps;
          p[i] -= ss * m[i] / denom;
        }
      });
    });
  }
}

}  // namespace cpu
}  // namespace fg
