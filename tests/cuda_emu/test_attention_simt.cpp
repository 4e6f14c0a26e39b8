// The CUDA-core attention kernels (engine/cuda/attention_simt.cuh) compiled
// for the host and run through the CUDA emulation, in float32 and bfloat16,
// against the CPU backend's composite attention in float64 on the same inputs
// and the same dropout draws (the generator's seed and offset go to the
// kernels). The three kernels run in the order attention.cu launches them:
// the backward's key kernel reads the log-sum-exp of the forward and the
// Delta of the query kernel.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/cuda/attention_simt.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "head_operand.h"

using namespace fg;
using fg::cuda::convert;
using fg_emu_test::check_close;
using fg_emu_test::Operand;
using fg_emu_test::to_vector;
namespace simt = fg::cuda::simt;

namespace {

struct Case {
  int64_t batch, heads, q_len, kv_len, pad;
  double dropout;
};

template <class T, int D>
void run(const Case& c) {
  const std::string what = std::string(std::is_same_v<T, float> ? "float32" : "bfloat16") + " B " +
                           std::to_string(c.batch) + " H " + std::to_string(c.heads) + " Lq " +
                           std::to_string(c.q_len) + " Lk " + std::to_string(c.kv_len) + " D " +
                           std::to_string(D) + " pad " + std::to_string(c.pad) + " p " +
                           std::to_string(c.dropout);
  std::mt19937_64 rng(static_cast<uint64_t>(c.q_len * 1000 + c.kv_len * 10 + D));
  Operand<T> q(c.batch, c.heads, c.q_len, D, c.pad), k(c.batch, c.heads, c.kv_len, D, c.pad),
      v(c.batch, c.heads, c.kv_len, D, c.pad), grad_out(c.batch, c.heads, c.q_len, D, c.pad);
  q.fill(rng);
  k.fill(rng);
  v.fill(rng);
  grad_out.fill(rng);
  Operand<T> out(c.batch, c.heads, c.q_len, D, c.pad), grad_q(c.batch, c.heads, c.q_len, D, c.pad),
      grad_k(c.batch, c.heads, c.kv_len, D, c.pad), grad_v(c.batch, c.heads, c.kv_len, D, c.pad);

  // Expected: the CPU's composite path in float64, with its own dropout draw.
  Generator gen(4321);
  const uint64_t seed = gen.seed(), offset = gen.offset();
  Tensor tq = q.tensor(), tk = k.tensor(), tv = v.tensor();
  tq.set_requires_grad(true);
  tk.set_requires_grad(true);
  tv.set_requires_grad(true);
  cpu_set_fused_attention(false);
  const Tensor expected = scaled_dot_product_attention(tq, tk, tv, c.dropout, c.dropout > 0, &gen);
  cpu_set_fused_attention(true);
  sum(mul(expected, grad_out.tensor())).backward();
  const std::vector<double> out_expected = to_vector(expected),
                            grad_q_expected = to_vector(tq.grad()),
                            grad_k_expected = to_vector(tk.grad()),
                            grad_v_expected = to_vector(tv.grad());

  // The log-sum-exp of the scaled scores, in float64.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> lse_expected(static_cast<size_t>(c.batch * c.heads * c.q_len));
  for (int64_t bi = 0; bi < c.batch; ++bi)
    for (int64_t hi = 0; hi < c.heads; ++hi)
      for (int64_t i = 0; i < c.q_len; ++i) {
        std::vector<double> s(static_cast<size_t>(c.kv_len));
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.kv_len; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d)
            dot += q.values[q.flat(bi, hi, i, d)] * k.values[k.flat(bi, hi, j, d)];
          s[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        double total = 0.0;
        for (double x : s) total += std::exp(x - mx);
        lse_expected[static_cast<size_t>((bi * c.heads + hi) * c.q_len + i)] = mx + std::log(total);
      }

  fg::cuda::AttentionParams p;
  p.q = q.storage.data();
  p.k = k.storage.data();
  p.v = v.storage.data();
  p.q_layout = q.layout;
  p.k_layout = k.layout;
  p.v_layout = v.layout;
  p.heads = static_cast<int>(c.heads);
  p.q_len = static_cast<int>(c.q_len);
  p.kv_len = static_cast<int>(c.kv_len);
  p.scale = static_cast<float>(scale);
  p.dropout = c.dropout > 0;
  p.dropout_p = static_cast<float>(c.dropout);
  p.dropout_scale = static_cast<float>(1.0 / (1.0 - c.dropout));
  p.seed = seed;
  p.offset = offset;

  // float32 results carry the float sums' rounding (about 4e-7 here, more
  // where a gradient vanishes), bfloat16 ones the storage's (about 2e-3).
  constexpr bool kFloat = std::is_same_v<T, float>;
  const double out_tolerance = kFloat ? 5e-6 : 5e-3, grad_tolerance = kFloat ? 5e-5 : 5e-3;
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  const dim3 block(simt::kThreads);
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string where = what + ", " + fg_emu_test::describe(options);
    for (Operand<T>* o : {&out, &grad_q, &grad_k, &grad_v}) o->clear();
    std::vector<float> lse(lse_expected.size(), NAN), delta(lse_expected.size(), NAN);

    fg::cuda::AttentionParams fwd = p;
    fwd.result = out.storage.data();
    fwd.result_layout = out.layout;
    fwd.logsumexp = lse.data();
    fg_emu::launch(options, dim3(simt::row_blocks(c.q_len), bh), block,
                   simt::forward_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_forward_kernel<T, D>, fwd);
    check_close(out.read(), out_expected, out_tolerance, where + ": out");
    check_close(std::vector<double>(lse.begin(), lse.end()), lse_expected, 1e-6, where + ": lse");

    fg::cuda::AttentionParams bwd = p;
    bwd.out = out.storage.data();
    bwd.out_layout = out.layout;
    bwd.grad_out = grad_out.storage.data();
    bwd.grad_out_layout = grad_out.layout;
    bwd.logsumexp = lse.data();
    bwd.delta = delta.data();
    fg::cuda::AttentionParams query = bwd;
    query.result = grad_q.storage.data();
    query.result_layout = grad_q.layout;
    fg_emu::launch(options, dim3(simt::row_blocks(c.q_len), bh), block,
                   simt::backward_query_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_backward_query_kernel<T, D>, query);
    fg::cuda::AttentionParams key = bwd;
    key.result2 = grad_k.storage.data();
    key.result2_layout = grad_k.layout;
    key.result3 = grad_v.storage.data();
    key.result3_layout = grad_v.layout;
    fg_emu::launch(options, dim3(simt::row_blocks(c.kv_len), bh), block,
                   simt::backward_key_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_backward_key_kernel<T, D>, key);

    // Delta = dO . O per query, of the output the kernel wrote.
    std::vector<double> delta_expected(delta.size(), 0.0);
    const std::vector<double> out_got = out.read();
    for (int64_t bi = 0; bi < c.batch; ++bi)
      for (int64_t hi = 0; hi < c.heads; ++hi)
        for (int64_t i = 0; i < c.q_len; ++i)
          for (int64_t d = 0; d < D; ++d)
            delta_expected[static_cast<size_t>((bi * c.heads + hi) * c.q_len + i)] +=
                grad_out.values[grad_out.flat(bi, hi, i, d)] * out_got[out.flat(bi, hi, i, d)];
    check_close(std::vector<double>(delta.begin(), delta.end()), delta_expected, 1e-6,
                where + ": delta");
    check_close(grad_q.read(), grad_q_expected, grad_tolerance, where + ": grad q");
    check_close(grad_k.read(), grad_k_expected, grad_tolerance, where + ": grad k");
    check_close(grad_v.read(), grad_v_expected, grad_tolerance, where + ": grad v");
    for (const Operand<T>* o : {&out, &grad_q, &grad_k, &grad_v})
      CHECK_MESSAGE(o->padding_untouched(), (where + ": the padding between heads was written"));
  }
}

}  // namespace

TEST_CASE("CUDA-core attention (emulated): the ViT's shape, 197 tokens, head dim 64") {
  // Seven blocks of 32 rows, the last holding 5; every warp's last row partial.
  run<float, 64>({2, 2, 197, 197, 0, 0.0});
  run<float, 64>({1, 2, 197, 197, 0, 0.1});
  run<fg::cuda::bf16, 64>({1, 2, 197, 197, 0, 0.1});
}

TEST_CASE("CUDA-core attention (emulated): Lq != Lk, odd row strides, head dims 32 and 128") {
  run<float, 32>({2, 1, 70, 33, 3, 0.25});  // a key row past the first 32 lanes
  run<fg::cuda::bf16, 32>({1, 2, 33, 70, 1, 0.0});
  run<float, 128>({1, 1, 45, 31, 2, 0.1});
  run<fg::cuda::bf16, 128>({1, 2, 9, 40, 0, 0.25});
  run<float, 128>({1, 1, 1, 1, 0, 0.0});  // one query, one key
}
