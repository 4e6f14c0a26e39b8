// Attention operands and whole attention problems for the kernel tests of
// this folder, stored as the kernels read them, with the CPU's answers.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "compare.h"
#include "cuda_emu.h"
#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace fg_emu_test {

using fg::cuda::convert;

// A (B, H, L, D) operand of element type T stored as the heads of a
// (B, L, H, D + pad) buffer (row stride H * (D + pad), as MultiheadAttention's
// head views are strided), its values also kept as doubles in (B, H, L, D)
// order. The padding holds NaN, which the kernels must neither read into a
// result nor overwrite.
template <class T>
struct Operand {
  int64_t b = 0, h = 0, l = 0, d = 0, pad = 0;
  std::vector<T> storage;
  std::vector<double> values;
  fg::cuda::HeadLayout layout;

  Operand(int64_t b_, int64_t h_, int64_t l_, int64_t d_, int64_t pad_)
      : b(b_), h(h_), l(l_), d(d_), pad(pad_) {
    const int64_t row = h * (d + pad);
    layout = fg::cuda::HeadLayout{l * row, d + pad, row};
    storage.assign(static_cast<size_t>(b * l * row), convert<T>(NAN));
    values.assign(static_cast<size_t>(b * h * l * d), 0.0);
  }
  size_t at(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return static_cast<size_t>(bi * layout.batch + hi * layout.head + li * layout.row + di);
  }
  size_t flat(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return static_cast<size_t>(((bi * h + hi) * l + li) * d + di);
  }
  template <class F>
  void each(F f) const {
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t li = 0; li < l; ++li)
          for (int64_t di = 0; di < d; ++di) f(at(bi, hi, li, di), flat(bi, hi, li, di));
  }
  void fill(std::mt19937_64& rng) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    each([&](size_t s, size_t f) {
      storage[s] = convert<T>(dist(rng));
      values[f] = convert<double>(storage[s]);
    });
  }
  void clear() {
    each([&](size_t s, size_t) { storage[s] = convert<T>(NAN); });
  }
  std::vector<double> read() const {
    std::vector<double> out(values.size());
    each([&](size_t s, size_t f) { out[f] = convert<double>(storage[s]); });
    return out;
  }
  bool padding_untouched() const {
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t li = 0; li < l; ++li)
        for (int64_t hi = 0; hi < h; ++hi)
          for (int64_t di = d; di < d + pad; ++di)
            if (!std::isnan(convert<float>(storage[at(bi, hi, li, di)]))) return false;
    return true;
  }
  fg::Tensor tensor() const { return fg::Tensor::from_vector(values, {b, h, l, d}); }
};

// One attention problem of head dim d: random q, k, v and grad_out stored as
// the kernels read them; the CPU's composite attention in float64 on the same
// values and the dropout draw of a generator seeded with generator_seed (out,
// and the gradients of sum(out * grad_out)); the log-sum-exp of the scaled
// scores in float64; outputs, lse and delta for the kernels to write, all NaN.
template <class T>
struct AttentionProblem {
  int64_t batch, heads, q_len, kv_len, d;
  Operand<T> q, k, v, grad_out, out, grad_q, grad_k, grad_v;
  std::vector<double> out_expected, lse_expected, grad_q_expected, grad_k_expected, grad_v_expected;
  std::vector<float> lse, delta;
  fg::cuda::AttentionParams params;  // every pointer of the three kernels but the results

  AttentionProblem(int64_t batch_, int64_t heads_, int64_t q_len_, int64_t kv_len_, int64_t d_,
                   int64_t pad, double dropout, uint64_t generator_seed)
      : batch(batch_),
        heads(heads_),
        q_len(q_len_),
        kv_len(kv_len_),
        d(d_),
        q(batch, heads, q_len, d, pad),
        k(batch, heads, kv_len, d, pad),
        v(batch, heads, kv_len, d, pad),
        grad_out(batch, heads, q_len, d, pad),
        out(batch, heads, q_len, d, pad),
        grad_q(batch, heads, q_len, d, pad),
        grad_k(batch, heads, kv_len, d, pad),
        grad_v(batch, heads, kv_len, d, pad) {
    std::mt19937_64 rng(static_cast<uint64_t>(q_len * 1000 + kv_len * 10 + d));
    for (Operand<T>* o : {&q, &k, &v, &grad_out}) o->fill(rng);

    fg::Generator gen(generator_seed);
    const uint64_t seed = gen.seed(), offset = gen.offset();
    fg::Tensor tq = q.tensor(), tk = k.tensor(), tv = v.tensor();
    for (fg::Tensor* t : {&tq, &tk, &tv}) t->set_requires_grad(true);
    fg::cpu_set_fused_attention(false);
    const fg::Tensor expected =
        fg::scaled_dot_product_attention(tq, tk, tv, dropout, dropout > 0, &gen);
    fg::cpu_set_fused_attention(true);
    fg::sum(fg::mul(expected, grad_out.tensor())).backward();
    out_expected = to_vector(expected);
    grad_q_expected = to_vector(tq.grad());
    grad_k_expected = to_vector(tk.grad());
    grad_v_expected = to_vector(tv.grad());

    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    lse_expected.assign(static_cast<size_t>(batch * heads * q_len), 0.0);
    std::vector<double> s(static_cast<size_t>(kv_len));
    for (int64_t bi = 0; bi < batch; ++bi)
      for (int64_t hi = 0; hi < heads; ++hi)
        for (int64_t i = 0; i < q_len; ++i) {
          for (int64_t j = 0; j < kv_len; ++j) {
            double dot = 0.0;
            for (int64_t e = 0; e < d; ++e)
              dot += q.values[q.flat(bi, hi, i, e)] * k.values[k.flat(bi, hi, j, e)];
            s[static_cast<size_t>(j)] = dot * scale;
          }
          const double mx = *std::max_element(s.begin(), s.end());
          double total = 0.0;
          for (double x : s) total += std::exp(x - mx);
          lse_expected[static_cast<size_t>((bi * heads + hi) * q_len + i)] = mx + std::log(total);
        }

    params.q = q.storage.data();
    params.k = k.storage.data();
    params.v = v.storage.data();
    params.out = out.storage.data();
    params.grad_out = grad_out.storage.data();
    params.q_layout = q.layout;
    params.k_layout = k.layout;
    params.v_layout = v.layout;
    params.out_layout = out.layout;
    params.grad_out_layout = grad_out.layout;
    params.heads = static_cast<int>(heads);
    params.q_len = static_cast<int>(q_len);
    params.kv_len = static_cast<int>(kv_len);
    params.scale = static_cast<float>(scale);
    params.dropout = dropout > 0;
    params.dropout_p = static_cast<float>(dropout);
    params.dropout_scale = static_cast<float>(1.0 / (1.0 - dropout));
    params.seed = seed;
    params.offset = offset;
    // As the launch decides: 16-byte pieces when every row starts on a 16-byte boundary.
    params.vector_io = pad % static_cast<int64_t>(16 / sizeof(T)) == 0;
    clear();
  }

  // Hands the kernels the dropout offset as a replay of a captured CUDA graph
  // does: `shift` below the real one, plus the shift read from memory.
  void as_graph_replay(uint64_t shift) {
    replay_shift = shift;
    params.offset -= shift;
    params.offset_base = &replay_shift;
  }
  uint64_t replay_shift = 0;

  // Outputs, lse and delta back to NaN (before each schedule).
  void clear() {
    for (Operand<T>* o : {&out, &grad_q, &grad_k, &grad_v}) o->clear();
    lse.assign(lse_expected.size(), NAN);
    delta.assign(lse_expected.size(), NAN);
    params.logsumexp = lse.data();
    params.delta = delta.data();
  }

  // The forward's parameters: result is out.
  fg::cuda::AttentionParams forward() {
    fg::cuda::AttentionParams p = params;
    p.result = out.storage.data();
    p.result_layout = out.layout;
    return p;
  }

  // The backward kernels' parameters: result is grad q (dQ kernel), result2
  // and result3 grad k and grad v (dK/dV kernel).
  fg::cuda::AttentionParams backward() {
    fg::cuda::AttentionParams p = params;
    p.result = grad_q.storage.data();
    p.result_layout = grad_q.layout;
    p.result2 = grad_k.storage.data();
    p.result2_layout = grad_k.layout;
    p.result3 = grad_v.storage.data();
    p.result3_layout = grad_v.layout;
    return p;
  }

  // What the kernels write.
  std::array<const Operand<T>*, 4> outputs() const { return {&out, &grad_q, &grad_k, &grad_v}; }
};

}  // namespace fg_emu_test
