// CUDA reductions and GEMMs against the CPU: sum/max/min over every layout the
// kernels distinguish (rows, columns, split long reductions), and matrix
// products through cuBLASLt with transposes, batches, broadcast batches, bias
// and ReLU epilogues, k = 0, in float32 (with and without TF32), bfloat16 and
// float64, forward and backward.
#include <doctest/doctest.h>

#include "cuda_test_util.h"

using namespace fg;
using namespace fg::cuda_testing;

TEST_CASE("cuda: sum, max and min match the CPU on rows, columns and long reductions") {
  FG_SKIP_WITHOUT_GPU();
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {
      {{1}, {0}},
      {{7}, {0}},
      {{5, 3}, {1}},
      {{5, 3}, {0}},
      {{3, 100003}, {1}},      // few long rows: split into chunks
      {{100003, 3}, {0}},      // long columns: split
      {{2, 5001, 70}, {1}},    // middle dimension, few outer slices
      {{64, 196, 32}, {1}},    // the Soft MoE dispatch layout
      {{25088, 384}, {0}},     // a bias gradient
      {{6, 7, 8, 9}, {0, 2}},  // non-adjacent: permuted then reduced
      {{4, 5, 6}, {0, 1, 2}},  // everything
      {{1 << 20}, {0}},        // one long row
  };
  for (const Case& c : cases) {
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16}) {
      const Tensor x = random_cpu(c.shape, 61, -2.0, 2.0,
                                  dtype == DType::Float64 ? DType::Float64 : DType::Float32);
      const Tensor xr = dtype == DType::BFloat16 ? rounded(x, dtype) : x;
      const Tensor gx = on_gpu(xr.to(dtype));
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(c.shape);
      // Sums of many terms: compare against the CPU's double-accumulated sum with a
      // tolerance on the scale of the sum of magnitudes.
      const Tensor expected_sum = sum(xr, c.dims);
      const double scale =
          sum(abs(xr)).item() / std::max<double>(1.0, static_cast<double>(expected_sum.numel()));
      check_close(sum(gx, c.dims), expected_sum, rtol_for(dtype), 1e-5 * scale, "sum " + what);
      check_equal(max(gx, c.dims).to(DType::Float64), max(xr, c.dims).to(dtype).to(DType::Float64),
                  "max " + what);
      check_equal(neg(max(neg(gx), c.dims)).to(DType::Float64),
                  neg(max(neg(xr), c.dims)).to(dtype).to(DType::Float64), "min via max " + what);
    }
  }
  // Min directly through the backend, and NaN propagation as the CPU.
  Tensor x = random_cpu({4, 1000}, 62);
  {
    std::vector<float> v = x.to_vector<float>();
    v[1500] = NAN;
    x = Tensor::from_vector(v, {4, 1000});
  }
  for (ReduceOp op : {ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum}) {
    Tensor expected = Tensor::empty({4}), got = Tensor::empty({4}, DType::Float32, kCUDA);
    backend_for(kCPU).reduce(op, x, 4, 1000, 1, expected);
    backend_for(kCUDA).reduce(op, on_gpu(x), 4, 1000, 1, got);
    check_close(got, expected, 1e-5, 1e-4,
                "reduce with a NaN, op " + std::to_string(static_cast<int>(op)));
  }
  // int64 sums.
  const Tensor ints = random_cpu({300, 17}, 63, -1000, 1000).to(DType::Int64);
  check_equal(sum(on_gpu(ints), {0}), sum(ints, {0}), "int64 sum over rows");
  check_equal(sum(on_gpu(ints), {1}), sum(ints, {1}), "int64 sum over columns");
}

namespace {

double gemm_rtol(DType dtype, bool tf32) {
  if (dtype == DType::Float64) return 1e-12;
  if (dtype == DType::BFloat16) return 2e-2;
  return tf32 ? 5e-3 : 2e-5;
}

}  // namespace

TEST_CASE("cuda: matmul and linear match the CPU, forward and backward") {
  FG_SKIP_WITHOUT_GPU();
  const Tf32Restore restore;  // later cases run in full float32
  struct Case {
    Shape a, b;
    bool transpose_a, transpose_b;
  };
  const std::vector<Case> cases = {
      {{1, 1}, {1, 1}, false, false},
      {{7, 13}, {13, 5}, false, false},
      {{13, 7}, {13, 5}, true, false},
      {{7, 13}, {5, 13}, false, true},
      {{13, 7}, {5, 13}, true, true},
      {{3, 17, 9}, {3, 9, 11}, false, false},
      {{3, 9, 17}, {3, 11, 9}, true, true},
      {{1, 17, 9}, {4, 9, 11}, false, false},           // broadcast batch: stride 0
      {{2, 3, 5, 8}, {8, 6}, false, false},             // batch folded into m
      {{2, 6, 196, 64}, {2, 6, 196, 64}, false, true},  // attention scores
      {{256, 384}, {384, 1152}, false, false},
  };
  for (bool tf32 : {false, true}) {
    cuda_set_allow_tf32(tf32);
    for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float64}) {
      if (tf32 && dtype != DType::Float32) continue;
      const DType cpu_type = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
      for (const Case& c : cases) {
        const std::string what = std::string(dtype_name(dtype)) + (tf32 ? " tf32 " : " ") +
                                 shape_str(c.a) + (c.transpose_a ? "^T" : "") + " @ " +
                                 shape_str(c.b) + (c.transpose_b ? "^T" : "");
        Tensor a = rounded(random_cpu(c.a, 71), dtype).to(cpu_type);
        Tensor b = rounded(random_cpu(c.b, 72), dtype).to(cpu_type);
        Tensor ga = on_gpu(a.to(dtype)), gb = on_gpu(b.to(dtype));
        a.set_requires_grad(true);
        b.set_requires_grad(true);
        ga.set_requires_grad(true);
        gb.set_requires_grad(true);
        auto op = [&](const Tensor& x, bool t) { return t ? x.transpose(-1, -2) : x; };
        const Tensor expected = matmul(op(a, c.transpose_a), op(b, c.transpose_b));
        const Tensor got = matmul(op(ga, c.transpose_a), op(gb, c.transpose_b));
        const double k = static_cast<double>(c.transpose_a ? c.a[c.a.size() - 2] : c.a.back());
        const double atol = gemm_rtol(dtype, tf32) * std::sqrt(k);
        check_close(got, expected, gemm_rtol(dtype, tf32), atol, "matmul " + what);
        const Tensor w = rounded(random_cpu(expected.shape(), 73, 0.5, 1.5), dtype).to(cpu_type);
        sum(mul(expected, w)).backward();
        sum(mul(got, on_gpu(w.to(dtype)))).backward();
        check_close(ga.grad(), a.grad(), gemm_rtol(dtype, tf32), atol * 4, "matmul grad a " + what);
        check_close(gb.grad(), b.grad(), gemm_rtol(dtype, tf32), atol * 4, "matmul grad b " + what);
      }
      // linear: the bias epilogue, and its gradients.
      for (const Shape& x_shape : {Shape{5, 24}, Shape{3, 196, 384}}) {
        const int64_t in = x_shape.back(), out = in == 24 ? 7 : 1152;
        Tensor x = rounded(random_cpu(x_shape, 74), dtype).to(cpu_type);
        Tensor weight = rounded(random_cpu({out, in}, 75), dtype).to(cpu_type);
        Tensor bias = rounded(random_cpu({out}, 76), dtype).to(cpu_type);
        Tensor gxx = on_gpu(x.to(dtype)), gw = on_gpu(weight.to(dtype)),
               gbias = on_gpu(bias.to(dtype));
        for (Tensor* t : {&x, &weight, &bias, &gxx, &gw, &gbias}) t->set_requires_grad(true);
        const Tensor expected = linear(x, weight, bias);
        const Tensor got = linear(gxx, gw, gbias);
        const std::string what = std::string("linear ") + dtype_name(dtype) +
                                 (tf32 ? " tf32 " : " ") + shape_str(x_shape);
        const double atol = gemm_rtol(dtype, tf32) * std::sqrt(static_cast<double>(in));
        check_close(got, expected, gemm_rtol(dtype, tf32), atol, what);
        const Tensor w = rounded(random_cpu(expected.shape(), 77, 0.5, 1.5), dtype).to(cpu_type);
        sum(mul(expected, w)).backward();
        sum(mul(got, on_gpu(w.to(dtype)))).backward();
        const double rows = static_cast<double>(expected.numel() / out);
        check_close(gxx.grad(), x.grad(), gemm_rtol(dtype, tf32), atol * 4, what + " grad x");
        check_close(gw.grad(), weight.grad(), gemm_rtol(dtype, tf32), atol * std::sqrt(rows),
                    what + " grad weight");
        check_close(gbias.grad(), bias.grad(), gemm_rtol(dtype, tf32), atol * std::sqrt(rows),
                    what + " grad bias");
      }
    }
  }
  cuda_set_allow_tf32(false);
}

TEST_CASE("cuda: GEMM epilogues (bias, ReLU), alpha/beta and k = 0 through the backend") {
  FG_SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float64}) {
    const DType cpu_type = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
    for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{37}}) {
      for (bool relu : {false, true}) {
        for (bool with_bias : {false, true}) {
          for (double beta : {0.0, 0.5}) {
            if (with_bias && beta != 0.0) continue;  // not supported (as on the CPU)
            const int64_t batch = 3, m = 19, n = 23;
            const Tensor a = rounded(random_cpu({batch, m, std::max<int64_t>(k, 1)}, 81), dtype)
                                 .to(cpu_type)
                                 .slice(2, 0, k);
            const Tensor b = rounded(random_cpu({batch, std::max<int64_t>(k, 1), n}, 82), dtype)
                                 .to(cpu_type)
                                 .slice(1, 0, k);
            const Tensor bias = rounded(random_cpu({n}, 83), dtype).to(cpu_type);
            const Tensor c0 = rounded(random_cpu({batch, m, n}, 84), dtype).to(cpu_type);
            auto run = [&](Device device) {
              const DType t = device.is_cpu() ? cpu_type : dtype;
              const Tensor ac = a.to(t).to(device).contiguous(),
                           bc = b.to(t).to(device).contiguous();
              const Tensor bias_d = bias.to(t).to(device);
              Tensor c = c0.to(t).to(device).clone();
              GemmArgs g;
              g.dtype = t;
              g.m = m;
              g.n = n;
              g.k = k;
              g.a = ac.data_ptr();
              g.lda = std::max<int64_t>(k, 1);
              g.stride_a = m * k;
              g.b = bc.data_ptr();
              g.ldb = n;
              g.stride_b = k * n;
              g.c = c.data_ptr();
              g.ldc = n;
              g.stride_c = m * n;
              g.batch = batch;
              g.alpha = 1.5;
              g.beta = beta;
              g.bias = with_bias ? bias_d.data_ptr() : nullptr;
              g.relu = relu;
              backend_for(device).gemm(g);
              return c;
            };
            const std::string what = std::string(dtype_name(dtype)) + " k=" + std::to_string(k) +
                                     (relu ? " relu" : "") + (with_bias ? " bias" : "") +
                                     " beta=" + std::to_string(beta);
            const double atol = gemm_rtol(dtype, false) * std::sqrt(static_cast<double>(k + 1));
            check_close(run(kCUDA), run(kCPU), gemm_rtol(dtype, false), atol, "gemm " + what);
          }
        }
      }
    }
  }
}
