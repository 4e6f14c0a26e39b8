// The tensor-core attention kernels (engine/cuda/attention_tc.cuh) compiled
// for the host and run through the CUDA emulation, against the CPU backend's
// composite attention in float64 on the same bfloat16 inputs and the same
// dropout draws (the generator's seed and offset are handed to the kernels).
// The emulation checks the kernels' logic: index arithmetic, ragged tiles,
// the online softmax, the dropout mask's layout, barriers (each case runs in
// two schedule orders), WMMA alignment rules. Timing and the hardware's own
// behaviour are left to the GPU tests.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "compare.h"
#include "engine/cuda/attention_tc.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "head_operand.h"

using namespace fg;
using fg_emu_test::Operand;
using fg_emu_test::to_vector;
namespace tc = fg::cuda::tc;

namespace {

// Some gradients vanish (one key: the softmax is constant) and leave only the
// rounding of the products, larger for tf32 (10 mantissa bits) than the exact
// zeros of bfloat16's: the floor under the norm allows for it.
void check(const std::vector<double>& got, const std::vector<double>& expected, double relative,
           const std::string& what) {
  fg_emu_test::check_close(got, expected, relative, what, 1e-4);
}

struct Case {
  int64_t batch, heads, q_len, kv_len, head_dim, pad;
  double dropout;
};

template <class T>
std::string describe(const Case& c, const fg_emu::LaunchOptions& o) {
  return std::string(std::is_same_v<T, float> ? "float32 (tf32)" : "bfloat16") + " B " +
         std::to_string(c.batch) + " H " + std::to_string(c.heads) + " Lq " +
         std::to_string(c.q_len) + " Lk " + std::to_string(c.kv_len) + " D " +
         std::to_string(c.head_dim) + " pad " + std::to_string(c.pad) + " p " +
         std::to_string(c.dropout) + ", " + fg_emu_test::describe(o);
}

template <class T, int D>
void run_case(const Case& c, const fg_emu::LaunchOptions& options) {
  const std::string what = describe<T>(c, options);
  std::mt19937_64 rng(static_cast<uint64_t>(c.q_len * 1000 + c.kv_len * 10 + c.head_dim));
  Operand<T> q(c.batch, c.heads, c.q_len, D, c.pad), k(c.batch, c.heads, c.kv_len, D, c.pad),
      v(c.batch, c.heads, c.kv_len, D, c.pad), grad_out(c.batch, c.heads, c.q_len, D, c.pad);
  q.fill(rng);
  k.fill(rng);
  v.fill(rng);
  grad_out.fill(rng);
  Operand<T> out(c.batch, c.heads, c.q_len, D, c.pad), grad_q(c.batch, c.heads, c.q_len, D, c.pad),
      grad_k(c.batch, c.heads, c.kv_len, D, c.pad), grad_v(c.batch, c.heads, c.kv_len, D, c.pad);

  // Expected: the CPU's composite path in float64, with its own dropout draw.
  Generator gen(1234);
  const uint64_t seed = gen.seed(), offset = gen.offset();
  Tensor tq = q.tensor(), tk = k.tensor(), tv = v.tensor();
  tq.set_requires_grad(true);
  tk.set_requires_grad(true);
  tv.set_requires_grad(true);
  cpu_set_fused_attention(false);
  const Tensor expected = scaled_dot_product_attention(tq, tk, tv, c.dropout, c.dropout > 0, &gen);
  cpu_set_fused_attention(true);
  sum(mul(expected, grad_out.tensor())).backward();

  // lse of the scaled scores, in float64 from the same inputs.
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
            dot += q.values[static_cast<size_t>(q.flat(bi, hi, i, d))] *
                   k.values[static_cast<size_t>(k.flat(bi, hi, j, d))];
          s[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        double total = 0.0;
        for (double x : s) total += std::exp(x - mx);
        lse_expected[static_cast<size_t>((bi * c.heads + hi) * c.q_len + i)] = mx + std::log(total);
      }

  tc::Params p;
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
  // As the launch decides: 16-byte pieces when every row starts on a 16-byte boundary.
  constexpr int64_t kPer = 16 / sizeof(T);
  p.vector_io = (c.pad % kPer == 0) && (c.heads * (D + c.pad)) % kPer == 0;
  std::vector<float> lse(lse_expected.size(), NAN), delta(lse_expected.size(), NAN);
  p.logsumexp = lse.data();
  p.delta = delta.data();

  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  const auto tiles = [](int64_t n) {
    return static_cast<unsigned>((n + tc::kRows - 1) / tc::kRows);
  };

  tc::Params fwd = p;
  fwd.result = out.storage.data();
  fwd.result_layout = out.layout;
  fg_emu::launch(options, dim3(tiles(c.q_len), bh), dim3(tc::kThreads),
                 tc::Layout<T, D>::kForwardBytes, tc::forward_kernel<T, D>, fwd);
  check(out.read(), to_vector(expected), 1e-2, what + ": out");
  // The scores' own rounding: bfloat16 products are exact in float, tf32 rounds the inputs.
  const double lse_tolerance = std::is_same_v<T, float> ? 2e-3 : 1e-5;
  check(std::vector<double>(lse.begin(), lse.end()), lse_expected, lse_tolerance, what + ": lse");

  tc::Params bwd = p;
  bwd.out = out.storage.data();
  bwd.out_layout = out.layout;
  bwd.grad_out = grad_out.storage.data();
  bwd.grad_out_layout = grad_out.layout;
  bwd.result = grad_q.storage.data();
  bwd.result_layout = grad_q.layout;
  bwd.result2 = grad_k.storage.data();
  bwd.result2_layout = grad_k.layout;
  bwd.result3 = grad_v.storage.data();
  bwd.result3_layout = grad_v.layout;
  fg_emu::launch(options, dim3(tiles(c.q_len), bh), dim3(tc::kThreads),
                 tc::Layout<T, D>::kQueryBytes, tc::backward_query_kernel<T, D>, bwd);
  fg_emu::launch(options, dim3(tiles(c.kv_len), bh), dim3(tc::kThreads),
                 tc::Layout<T, D>::kKeyBytes, tc::backward_key_kernel<T, D>, bwd);
  check(grad_q.read(), to_vector(tq.grad()), 2e-2, what + ": grad q");
  check(grad_k.read(), to_vector(tk.grad()), 2e-2, what + ": grad k");
  check(grad_v.read(), to_vector(tv.grad()), 2e-2, what + ": grad v");
  // The kernels must leave the storage between rows (the padding) alone.
  for (const Operand<T>* o : {&out, &grad_q, &grad_k, &grad_v})
    CHECK_MESSAGE(o->padding_untouched(), (what + ": the padding between heads was written"));
}

template <class T>
void run(const Case& c) {
  for (const fg_emu::LaunchOptions& o : fg_emu_test::schedules()) {
    switch (c.head_dim) {
      case 32:
        run_case<T, 32>(c, o);
        break;
      case 64:
        run_case<T, 64>(c, o);
        break;
      case 128:
        run_case<T, 128>(c, o);
        break;
      default:
        FAIL("unsupported head dim");
    }
  }
}

}  // namespace

TEST_CASE("tensor-core attention (emulated): the ViT's shape, 197 tokens, head dim 64") {
  // Four query and key tiles, the last holding 5 rows; rows 16-byte aligned.
  for (double p : {0.0, 0.1}) {
    run<tc::bf16>({1, 2, 197, 197, 64, 0, p});
    run<float>({1, 2, 197, 197, 64, 0, p});
  }
}

TEST_CASE("tensor-core attention (emulated): Lq != Lk, unaligned rows, head dims 32 and 128") {
  run<tc::bf16>({2, 1, 70, 130, 32, 2, 0.1});  // row stride 34: element-wise loads and stores
  run<tc::bf16>({1, 1, 130, 70, 32, 2, 0.0});
  run<tc::bf16>({1, 2, 65, 80, 128, 8, 0.25});  // padded but aligned rows
  run<tc::bf16>({1, 1, 1, 1, 64, 0, 0.0});      // one query, one key
  run<float>({2, 1, 70, 130, 32, 1, 0.1});      // row stride 33 floats
  run<float>({1, 1, 1, 1, 64, 0, 0.0});
}
