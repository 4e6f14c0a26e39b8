// The fused CUDA attention kernels against the CPU's composite
// (matmul-softmax-dropout-matmul) on the same inputs and generator state:
// forward and backward, with and without dropout (the masks must be the same
// ones), float32 (CUDA cores; tensor cores as TF32 when allowed) and bfloat16
// (tensor-core and CUDA-core kernels), 3-D and 4-D inputs, strided head views as
// MultiheadAttention makes them, and the composite path on CUDA as well.
#include <doctest/doctest.h>

#include "cuda_test_util.h"
#include "engine/nn/layers.h"

using namespace fg;
using namespace fg::cuda_testing;

namespace {

struct AttentionCase {
  Shape q, kv;  // (..., L, D)
};

struct Result {
  Tensor out, grad_q, grad_k, grad_v;
};

Result run_attention(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& weights,
                     double p, Generator& gen) {
  Tensor q = q0.detach().clone().detach(), k = k0.detach().clone().detach(),
         v = v0.detach().clone().detach();
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  Tensor out = scaled_dot_product_attention(q, k, v, p, p > 0, &gen);
  sum(mul(out, weights.to(out.dtype()))).backward();
  return {out, q.grad(), k.grad(), v.grad()};
}

struct Tolerance {
  double rtol, atol_out, atol_grad;
};

// float32 and bfloat16 inputs; the gradients get four times the output's atol.
Tolerance tolerance_for(DType dtype) {
  const bool low = dtype == DType::BFloat16;
  const double rtol = low ? 3e-2 : 1e-4, atol = low ? 2e-2 : 2e-5;
  return {rtol, atol, atol * 4};
}

void compare(const Result& got, const Result& expected, const Tolerance& t,
             const std::string& what) {
  check_close(got.out, expected.out, t.rtol, t.atol_out, what + " out");
  check_close(got.grad_q, expected.grad_q, t.rtol, t.atol_grad, what + " grad q");
  check_close(got.grad_k, expected.grad_k, t.rtol, t.atol_grad, what + " grad k");
  check_close(got.grad_v, expected.grad_v, t.rtol, t.atol_grad, what + " grad v");
}

}  // namespace

TEST_CASE("cuda: fused attention matches the CPU composite, forward and backward, with dropout") {
  FG_SKIP_WITHOUT_GPU();
  const std::vector<AttentionCase> cases = {
      {{2, 3, 196, 64}, {2, 3, 196, 64}},  // the ViT's shape (batch reduced)
      {{1, 2, 7, 32}, {1, 2, 5, 32}},      // odd lengths, Lq != Lk
      {{2, 1, 33, 128}, {2, 1, 65, 128}}, {{3, 17, 64}, {3, 17, 64}},  // 3-D: one head
      {{1, 1, 1, 64}, {1, 1, 1, 64}},
  };
  for (const AttentionCase& c : cases) {
    for (DType dtype : {DType::Float32, DType::BFloat16}) {
      AttentionShape shape;
      shape.dtype = dtype;
      shape.batch = c.q[0];
      shape.heads = c.q.size() == 4 ? c.q[1] : 1;
      shape.q_len = c.q[c.q.size() - 2];
      shape.kv_len = c.kv[c.kv.size() - 2];
      shape.head_dim = c.q.back();
      CHECK(backend_for(kCUDA).supports_attention(shape));  // this test is about the fused kernel
      for (double p : {0.0, 0.1}) {
        const std::string what = std::string("attention ") + dtype_name(dtype) + " q " +
                                 shape_str(c.q) + " kv " + shape_str(c.kv) +
                                 " p=" + std::to_string(p);
        const Tensor q = rounded(random_cpu(c.q, 121), dtype);
        const Tensor k = rounded(random_cpu(c.kv, 122), dtype);
        const Tensor v = rounded(random_cpu(c.kv, 123), dtype);
        Shape out_shape = c.q;
        out_shape.back() = c.kv.back();
        const Tensor w = rounded(random_cpu(out_shape, 124, -1.0, 1.0), dtype);
        Generator cpu_gen(9), fused_gen(9), composite_gen(9);
        cpu_set_fused_attention(false);  // the expected values from the CPU's composite path
        const Result expected = run_attention(q, k, v, w, p, cpu_gen);
        cpu_set_fused_attention(true);
        cuda_set_fused_attention(true);
        const Result fused = run_attention(on_gpu(q.to(dtype)), on_gpu(k.to(dtype)),
                                           on_gpu(v.to(dtype)), on_gpu(w), p, fused_gen);
        CHECK(fused.out.dtype() == dtype);
        compare(fused, expected, tolerance_for(dtype), what + " (fused)");
        if (dtype == DType::Float32) {  // float32 with TF32 allowed runs on tensor cores
          const Tf32Restore restore;
          cuda_set_allow_tf32(true);
          Generator tf32_gen(9);
          const Result tf32 =
              run_attention(on_gpu(q), on_gpu(k), on_gpu(v), on_gpu(w), p, tf32_gen);
          // tf32 keeps 10 mantissa bits: between float32's and bfloat16's tolerances.
          compare(tf32, expected, Tolerance{1e-2, 5e-3, 2e-2}, what + " (fused, TF32)");
          CHECK(tf32_gen.offset() == cpu_gen.offset());
        }
        if (dtype == DType::BFloat16) {  // the fused case above ran on tensor cores
          Generator cuda_core_gen(9);
          cuda_set_tensor_core_attention(false);
          const Result cuda_core = run_attention(on_gpu(q.to(dtype)), on_gpu(k.to(dtype)),
                                                 on_gpu(v.to(dtype)), on_gpu(w), p, cuda_core_gen);
          cuda_set_tensor_core_attention(true);
          compare(cuda_core, expected, tolerance_for(dtype), what + " (fused, CUDA cores)");
          CHECK(cuda_core_gen.offset() == cpu_gen.offset());
        }
        cuda_set_fused_attention(false);
        const Result composite = run_attention(on_gpu(q.to(dtype)), on_gpu(k.to(dtype)),
                                               on_gpu(v.to(dtype)), on_gpu(w), p, composite_gen);
        cuda_set_fused_attention(true);
        compare(composite, expected, tolerance_for(dtype), what + " (composite on CUDA)");
        CHECK(fused_gen.offset() == cpu_gen.offset());
        CHECK(composite_gen.offset() == cpu_gen.offset());
      }
    }
  }
}

// MultiheadAttention's self-attention runs packed_attention: on CUDA the fused
// kernel reads the heads from the packed projection and writes their gradients
// into one packed tensor through strided views.
TEST_CASE("cuda: multi-head attention over strided head views matches the CPU") {
  FG_SKIP_WITHOUT_GPU();
  for (double p : {0.0, 0.1}) {
    Generator init_cpu(3), init_gpu(3), drop_cpu(4), drop_gpu(4);
    nn::MultiheadAttention cpu_attn(384, 6, p, init_cpu, &drop_cpu);
    nn::MultiheadAttention gpu_attn(384, 6, p, init_gpu, &drop_gpu);
    gpu_attn.to(kCUDA);
    Tensor x = random_cpu({2, 196, 384}, 131);
    Tensor gx = on_gpu(x);
    x.set_requires_grad(true);
    gx.set_requires_grad(true);
    const Tensor expected = cpu_attn.forward(x);
    const Tensor got = gpu_attn.forward(gx);
    const std::string what = "MultiheadAttention p=" + std::to_string(p);
    check_close(got, expected, 1e-4, 2e-5, what);
    const Tensor w = random_cpu(expected.shape(), 132);
    sum(mul(expected, w)).backward();
    sum(mul(got, on_gpu(w))).backward();
    check_close(gx.grad(), x.grad(), 1e-4, 1e-4, what + " grad x");
    check_close(gpu_attn.in_proj_weight.grad(), cpu_attn.in_proj_weight.grad(), 1e-4, 1e-3,
                what + " grad in_proj_weight");
    check_close(gpu_attn.out_proj->weight.grad(), cpu_attn.out_proj->weight.grad(), 1e-4, 1e-3,
                what + " grad out_proj.weight");
  }
}
