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
#include <vector>

#include "engine/cuda/attention_tc.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"

using namespace fg;
namespace tc = fg::cuda::tc;

namespace {

// A (B, H, L, D) bfloat16 operand stored as the heads of a (B, L, H, D + pad)
// buffer (row stride H * (D + pad), as MultiheadAttention's head views are
// strided), with its values also kept as doubles in (B, H, L, D) order.
struct Operand {
  int64_t b = 0, h = 0, l = 0, d = 0, pad = 0;
  std::vector<tc::bf16> storage;
  std::vector<double> values;
  fg::cuda::HeadLayout layout;

  Operand(int64_t b_, int64_t h_, int64_t l_, int64_t d_, int64_t pad_)
      : b(b_), h(h_), l(l_), d(d_), pad(pad_) {
    const int64_t row = h * (d + pad);
    layout = fg::cuda::HeadLayout{l * row, d + pad, row};
    storage.assign(static_cast<size_t>(b * l * row), __float2bfloat16_rn(NAN));
    values.assign(static_cast<size_t>(b * h * l * d), 0.0);
  }
  int64_t at(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return bi * layout.batch + hi * layout.head + li * layout.row + di;
  }
  int64_t flat(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return ((bi * h + hi) * l + li) * d + di;
  }
  void fill(std::mt19937_64& rng, double lo, double hi_value) {
    std::uniform_real_distribution<float> dist(static_cast<float>(lo),
                                               static_cast<float>(hi_value));
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t li = 0; li < l; ++li)
          for (int64_t di = 0; di < d; ++di) {
            const tc::bf16 x = __float2bfloat16_rn(dist(rng));
            storage[static_cast<size_t>(at(bi, hi, li, di))] = x;
            values[static_cast<size_t>(flat(bi, hi, li, di))] = __bfloat162float(x);
          }
  }
  // The values the kernels wrote, in (B, H, L, D) order.
  std::vector<double> read() const {
    std::vector<double> out(values.size());
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t li = 0; li < l; ++li)
          for (int64_t di = 0; di < d; ++di)
            out[static_cast<size_t>(flat(bi, hi, li, di))] =
                __bfloat162float(storage[static_cast<size_t>(at(bi, hi, li, di))]);
    return out;
  }
  Tensor tensor() const { return Tensor::from_vector(values, {b, h, l, d}); }
};

std::vector<double> to_vector(const Tensor& t) {
  const Tensor c = t.contiguous().to(DType::Float64);
  const double* p = static_cast<const double*>(c.data_ptr());
  return std::vector<double>(p, p + c.numel());
}

// ||got - expected|| / ||expected||, and the largest absolute difference.
struct Error {
  double relative = 0.0, largest = 0.0;
};
Error error_of(const std::vector<double>& got, const std::vector<double>& expected) {
  double diff = 0.0, norm = 0.0, largest = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = got[i] - expected[i];
    diff += e * e;
    norm += expected[i] * expected[i];
    largest = std::max(largest, std::abs(e));
    if (!std::isfinite(got[i])) largest = INFINITY;
  }
  // A floor under the norm: some gradients vanish (one key: the softmax is constant).
  const double floor = 1e-6 * static_cast<double>(got.size());
  return {std::sqrt(diff / std::max(norm, floor)), largest};
}

void check_error(const std::vector<double>& got, const std::vector<double>& expected,
                 double relative, const std::string& what) {
  REQUIRE(got.size() == expected.size());
  const Error e = error_of(got, expected);
  INFO(what << ": relative error " << e.relative << ", largest difference " << e.largest);
  CHECK(std::isfinite(e.largest));
  CHECK(e.relative <= relative);
}

struct Case {
  int64_t batch, heads, q_len, kv_len, head_dim, pad;
  double dropout;
};

std::string describe(const Case& c, const fg_emu::LaunchOptions& o) {
  return "B " + std::to_string(c.batch) + " H " + std::to_string(c.heads) + " Lq " +
         std::to_string(c.q_len) + " Lk " + std::to_string(c.kv_len) + " D " +
         std::to_string(c.head_dim) + " pad " + std::to_string(c.pad) + " p " +
         std::to_string(c.dropout) + (o.order == fg_emu::Order::forward ? " forward" : " reverse") +
         " order" + (o.warps_run_ahead ? ", warps run ahead" : ", in rounds");
}

template <int D>
void run_case(const Case& c, const fg_emu::LaunchOptions& options) {
  const std::string what = describe(c, options);
  std::mt19937_64 rng(static_cast<uint64_t>(c.q_len * 1000 + c.kv_len * 10 + c.head_dim));
  Operand q(c.batch, c.heads, c.q_len, D, c.pad), k(c.batch, c.heads, c.kv_len, D, c.pad),
      v(c.batch, c.heads, c.kv_len, D, c.pad), grad_out(c.batch, c.heads, c.q_len, D, c.pad);
  q.fill(rng, -1.0, 1.0);
  k.fill(rng, -1.0, 1.0);
  v.fill(rng, -1.0, 1.0);
  grad_out.fill(rng, -1.0, 1.0);
  Operand out(c.batch, c.heads, c.q_len, D, c.pad), grad_q(c.batch, c.heads, c.q_len, D, c.pad),
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
  p.vector_io = (c.pad % 8 == 0) && (c.heads * (D + c.pad)) % 8 == 0;
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
                 tc::Layout<D>::kForwardBytes, tc::forward_kernel<D>, fwd);
  check_error(out.read(), to_vector(expected), 1e-2, what + ": out");
  check_error(std::vector<double>(lse.begin(), lse.end()), lse_expected, 1e-5, what + ": lse");

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
  fg_emu::launch(options, dim3(tiles(c.q_len), bh), dim3(tc::kThreads), tc::Layout<D>::kQueryBytes,
                 tc::backward_query_kernel<D>, bwd);
  fg_emu::launch(options, dim3(tiles(c.kv_len), bh), dim3(tc::kThreads), tc::Layout<D>::kKeyBytes,
                 tc::backward_key_kernel<D>, bwd);
  check_error(grad_q.read(), to_vector(tq.grad()), 2e-2, what + ": grad q");
  check_error(grad_k.read(), to_vector(tk.grad()), 2e-2, what + ": grad k");
  check_error(grad_v.read(), to_vector(tv.grad()), 2e-2, what + ": grad v");
  // The kernels must leave the storage between rows (the padding) alone.
  for (const Operand* o : {&out, &grad_q, &grad_k, &grad_v}) {
    size_t untouched = 0;
    for (int64_t bi = 0; bi < o->b; ++bi)
      for (int64_t li = 0; li < o->l; ++li)
        for (int64_t hi = 0; hi < o->h; ++hi)
          for (int64_t di = D; di < D + o->pad; ++di)
            untouched += std::isnan(
                __bfloat162float(o->storage[static_cast<size_t>(o->at(bi, hi, li, di))]));
    CHECK_MESSAGE(untouched == static_cast<size_t>(o->b * o->l * o->h * o->pad), what);
  }
}

// Threads in rounds (a missing __syncwarp) and warps running ahead (a missing
// __syncthreads), each in forward and reverse order.
void run(const Case& c) {
  for (bool ahead : {false, true})
    for (fg_emu::Order order : {fg_emu::Order::forward, fg_emu::Order::reverse}) {
      const fg_emu::LaunchOptions o{order, 0, ahead};
      switch (c.head_dim) {
        case 32:
          run_case<32>(c, o);
          break;
        case 64:
          run_case<64>(c, o);
          break;
        case 128:
          run_case<128>(c, o);
          break;
        default:
          FAIL("unsupported head dim");
      }
    }
}

}  // namespace

TEST_CASE("tensor-core attention (emulated): the ViT's shape, 197 tokens, head dim 64") {
  // Four query and key tiles, the last holding 5 rows; rows 16-byte aligned.
  run({1, 2, 197, 197, 64, 0, 0.0});
  run({1, 2, 197, 197, 64, 0, 0.1});
}

TEST_CASE("tensor-core attention (emulated): Lq != Lk, unaligned rows, head dims 32 and 128") {
  run({2, 1, 70, 130, 32, 2, 0.1});  // row stride 34: element-wise loads and stores
  run({1, 1, 130, 70, 32, 2, 0.0});
  run({1, 2, 65, 80, 128, 8, 0.25});  // padded but aligned rows
  run({1, 1, 1, 1, 64, 0, 0.0});      // one query, one key
}
