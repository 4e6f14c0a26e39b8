// Fused scaled dot-product attention on the CPU, one (batch, head) pair at a
// time: the pair's score matrix lives in a per-thread buffer that stays in
// cache, the heads are read and written in place through their strides (no
// transposed copies), the dropout mask is drawn where it is used (the same
// Philox words as dropout_mask over a contiguous (B, H, Lq, Lk) tensor), and
// the backward recomputes the probabilities from the saved log-sum-exp instead
// of keeping them. Pairs run one per OpenMP thread with single-threaded BLAS
// when the OpenMP build of OpenBLAS allows it.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/cpu/blas.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/philox_simd.h"
#include "engine/philox.h"

#if defined(__AVX2__) && defined(FGMOE_HAVE_LIBMVEC)
#define FGMOE_VECTOR_EXPF 1
#include <immintrin.h>
// glibc's vector math library: expf on eight floats (AVX2 variant).
extern "C" __m256 _ZGVdN8v_expf(__m256);
#endif

namespace fg {

namespace {
std::atomic<bool> g_cpu_fused_attention{true};
}  // namespace

void cpu_set_fused_attention(bool on) { g_cpu_fused_attention = on; }
bool cpu_fused_attention() { return g_cpu_fused_attention.load(); }

namespace cpu {

namespace {

// row[j] = exp(row[j] - shift) for j < n; returns the sum. float rows go eight at
// a time through glibc's vector expf (libmvec, within an ulp or so of expf) when
// the build targets AVX2 and libmvec is there.
double exp_shifted(double* row, int64_t n, double shift) {
  double total = 0;
  for (int64_t j = 0; j < n; ++j) total += (row[j] = std::exp(row[j] - shift));
  return total;
}

float exp_shifted(float* row, int64_t n, float shift) {
  int64_t j = 0;
  float total = 0;
#if defined(FGMOE_VECTOR_EXPF)
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(_mm256_loadu_ps(row + j), s));
    _mm256_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (float v : lanes) total += v;
#endif
  for (; j < n; ++j) total += (row[j] = std::exp(row[j] - shift));
  return total;
}

// A head's rows: element (i, d) of pair (b, h) is base[b * s0 + h * s1 + i * s2 + d].
template <class T>
struct HeadView {
  T* base;
  int64_t s0, s1, s2;
  T* row0(int64_t b, int64_t h) const { return base + b * s0 + h * s1; }
};

template <class T>
HeadView<T> head_view(const Tensor& t, const AttentionShape& s, int64_t len, const char* what) {
  FG_CHECK(t.defined() && t.dim() == 4 && t.size(0) == s.batch && t.size(1) == s.heads &&
               t.size(2) == len && t.size(3) == s.head_dim &&
               (t.stride(3) == 1 || s.head_dim == 1) && t.dtype() == s.dtype && t.device().is_cpu(),
           "attention: ", what, " must be a (", s.batch, ", ", s.heads, ", ", len, ", ",
           s.head_dim, ") ", dtype_name(s.dtype), " CPU view with unit stride in the last dim");
  return HeadView<T>{t.data<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

// keep[j] = 1 when element first + j of the mask survives dropout with
// probability p, from the same Philox words as dropout_mask.
void draw_keep(uint8_t* keep, int64_t n, uint64_t first, float p, uint64_t seed,
               uint64_t offset) {
  // Eight Philox blocks (32 words) at a time; element e takes word e % 4 of block e / 4.
  uint32_t words[32];
  int64_t j = 0;
  while (j < n) {
    const uint64_t e = first + static_cast<uint64_t>(j);
    philox4x32_8(e >> 2, offset, seed, words);
    const int64_t skip = static_cast<int64_t>(e & 3);
    const int64_t take = std::min<int64_t>(32 - skip, n - j);
    for (int64_t t = 0; t < take; ++t)
      keep[j + t] = philox_keeps(words[skip + t], p);
    j += take;
  }
}

// Runs f(pair, thread) for every (batch, head) pair, one pair per thread when
// BLAS can run single-threaded inside a parallel region.
template <class F>
void for_each_pair(int64_t pairs, F f) {
  if (pairs > 1 && blas_splits_over_threads()) {
    const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), pairs));
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t pair = 0; pair < pairs; ++pair) f(pair, omp_get_thread_num());
  } else {
    for (int64_t pair = 0; pair < pairs; ++pair) f(pair, 0);
  }
}

// Per-thread scratch, sized for the largest call so far: two Lq x Lk score
// matrices and the dropout decisions for one.
template <class T>
struct Scratch {
  std::vector<T> probs, dropped;
  std::vector<uint8_t> keep;
};

template <class T>
std::vector<Scratch<T>>& scratch(int64_t matrix) {
  thread_local std::vector<Scratch<T>> per_thread;
  per_thread.resize(std::max<size_t>(per_thread.size(), static_cast<size_t>(omp_get_max_threads())));
  for (auto& s : per_thread) {
    if (static_cast<int64_t>(s.probs.size()) < matrix) {
      s.probs.resize(matrix);
      s.dropped.resize(matrix);
      s.keep.resize(matrix);
    }
  }
  return per_thread;
}

// What the forward and the backward read alike: sizes, the q, k, v and output
// heads, the saved log-sum-exp (in T: float32 for float32, float64 for float64),
// and the dropout stream.
template <class T>
struct Problem {
  const AttentionShape& s;
  int64_t lq, lk, d, heads, pairs;
  HeadView<T> q, k, v, out;
  T* lse;
  bool drop;
  float p;
  T keep_scale;
  uint64_t seed, offset;

  template <class Args>
  explicit Problem(const Args& a)
      : s(a.shape), lq(s.q_len), lk(s.kv_len), d(s.head_dim), heads(s.heads),
        pairs(s.batch * s.heads), q(head_view<T>(a.q, s, lq, "q")), k(head_view<T>(a.k, s, lk, "k")),
        v(head_view<T>(a.v, s, lk, "v")), out(head_view<T>(a.out, s, lq, "out")),
        lse(nullptr), drop(s.dropout && a.dropout_p > 0.0), p(static_cast<float>(a.dropout_p)),
        keep_scale(drop ? static_cast<T>(1.0 / (1.0 - a.dropout_p)) : T(1)), seed(a.seed),
        offset(a.offset) {
    FG_CHECK(a.logsumexp.defined() && a.logsumexp.is_contiguous() &&
                 a.logsumexp.numel() == pairs * lq && a.logsumexp.dtype() == DTypeOf<T>::value,
             "attention: the log-sum-exp must be a contiguous ", dtype_name(DTypeOf<T>::value),
             " tensor of B * H * Lq values");
    lse = a.logsumexp.template data<T>();
  }

  // The dropout decisions of row i of pair `pair` (mask element ((pair * Lq) + i) * Lk + j).
  void draw_row(uint8_t* keep, int64_t pair, int64_t i) const {
    draw_keep(keep, lk, static_cast<uint64_t>((pair * lq + i) * lk), p, seed, offset);
  }
};

template <class T>
void forward_typed(const AttentionForwardArgs& a) {
  const Problem<T> pb(a);
  const int64_t lq = pb.lq, lk = pb.lk;
  auto& buffers = scratch<T>(lq * lk);
  for_each_pair(pb.pairs, [&](int64_t pair, int thread) {
    const int64_t b = pair / pb.heads, h = pair % pb.heads;
    Scratch<T>& buf = buffers[static_cast<size_t>(thread)];
    T* scores = buf.probs.data();
    // scores = scale * q k^T
    blas_gemm(CblasNoTrans, CblasTrans, lq, lk, pb.d, a.scale, pb.q.row0(b, h), pb.q.s2,
              pb.k.row0(b, h), pb.k.s2, 0.0, scores, lk);
    for (int64_t i = 0; i < lq; ++i) {
      T* row = scores + i * lk;
      T peak = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < lk; ++j) peak = std::max(peak, row[j]);
      const T total = exp_shifted(row, lk, peak);
      pb.lse[pair * lq + i] = peak + std::log(total);
      const T inv = T(1) / total;
      if (pb.drop) {
        uint8_t* keep = buf.keep.data();
        pb.draw_row(keep, pair, i);
        const T kept = inv * pb.keep_scale;
        for (int64_t j = 0; j < lk; ++j) row[j] = keep[j] ? row[j] * kept : T(0);
      } else {
        for (int64_t j = 0; j < lk; ++j) row[j] *= inv;
      }
    }
    // out = probs v
    blas_gemm(CblasNoTrans, CblasNoTrans, lq, pb.d, lk, 1.0, scores, lk, pb.v.row0(b, h), pb.v.s2,
              0.0, pb.out.row0(b, h), pb.out.s2);
  });
}

template <class T>
void backward_typed(const AttentionBackwardArgs& a) {
  const Problem<T> pb(a);
  const int64_t lq = pb.lq, lk = pb.lk, d = pb.d;
  const AttentionShape& s = a.shape;
  const HeadView<T> gout = head_view<T>(a.grad_out, s, lq, "grad_out"),
                    gq = head_view<T>(a.grad_q, s, lq, "grad_q"),
                    gk = head_view<T>(a.grad_k, s, lk, "grad_k"),
                    gv = head_view<T>(a.grad_v, s, lk, "grad_v");
  auto& buffers = scratch<T>(lq * lk);
  for_each_pair(pb.pairs, [&](int64_t pair, int thread) {
    const int64_t b = pair / pb.heads, h = pair % pb.heads;
    Scratch<T>& buf = buffers[static_cast<size_t>(thread)];
    T* probs = buf.probs.data();      // P, recomputed
    T* dropped = buf.dropped.data();  // P with dropout, then dP with dropout
    uint8_t* keep = buf.keep.data();
    const T* qh = pb.q.row0(b, h);
    const T* kh = pb.k.row0(b, h);
    const T* goh = gout.row0(b, h);
    blas_gemm(CblasNoTrans, CblasTrans, lq, lk, d, a.scale, qh, pb.q.s2, kh, pb.k.s2, 0.0, probs, lk);
    for (int64_t i = 0; i < lq; ++i) {
      T* row = probs + i * lk;
      T* drow = dropped + i * lk;
      exp_shifted(row, lk, pb.lse[pair * lq + i]);
      if (pb.drop) {
        uint8_t* krow = keep + i * lk;
        pb.draw_row(krow, pair, i);
        for (int64_t j = 0; j < lk; ++j) drow[j] = krow[j] ? row[j] * pb.keep_scale : T(0);
      }
    }
    // dV = P_drop^T dO
    blas_gemm(CblasTrans, CblasNoTrans, lk, d, lq, 1.0, pb.drop ? dropped : probs, lk, goh, gout.s2,
              0.0, gv.row0(b, h), gv.s2);
    // dP_drop = dO V^T
    blas_gemm(CblasNoTrans, CblasTrans, lq, lk, d, 1.0, goh, gout.s2, pb.v.row0(b, h), pb.v.s2, 0.0,
              dropped, lk);
    // dS = P * (dP - rowsum(dO * O)), with dP = dP_drop * mask; rowsum(dP * P) equals
    // dO . O (also with dropout), so the rows need no second pass.
    const T* oh = pb.out.row0(b, h);
    for (int64_t i = 0; i < lq; ++i) {
      const T* orow = oh + i * pb.out.s2;
      const T* grow = goh + i * gout.s2;
      T delta = 0;
      for (int64_t c = 0; c < d; ++c) delta += orow[c] * grow[c];
      T* prow = probs + i * lk;
      const T* drow = dropped + i * lk;
      if (pb.drop) {
        const uint8_t* krow = keep + i * lk;
        for (int64_t j = 0; j < lk; ++j)
          prow[j] *= (krow[j] ? drow[j] * pb.keep_scale : T(0)) - delta;
      } else {
        for (int64_t j = 0; j < lk; ++j) prow[j] *= drow[j] - delta;
      }
    }
    // dQ = scale * dS K, dK = scale * dS^T Q
    blas_gemm(CblasNoTrans, CblasNoTrans, lq, d, lk, a.scale, probs, lk, kh, pb.k.s2, 0.0,
              gq.row0(b, h), gq.s2);
    blas_gemm(CblasTrans, CblasNoTrans, lk, d, lq, a.scale, probs, lk, qh, pb.q.s2, 0.0,
              gk.row0(b, h), gk.s2);
  });
}

}  // namespace

namespace {

bool kernel_takes(const AttentionShape& s) {
  return (s.dtype == DType::Float32 || s.dtype == DType::Float64) && s.batch > 0 && s.heads > 0 &&
         s.q_len > 0 && s.kv_len > 0 && s.head_dim > 0;
}

}  // namespace

bool CpuBackend::supports_attention(const AttentionShape& s) const {
  return g_cpu_fused_attention.load() && kernel_takes(s);
}

void CpuBackend::attention(const AttentionForwardArgs& args) {
  FG_CHECK(supports_attention(args.shape), "attention: shape not supported by the CPU kernel");
  if (args.shape.dtype == DType::Float64)
    forward_typed<double>(args);
  else
    forward_typed<float>(args);
}

void CpuBackend::attention_backward(const AttentionBackwardArgs& args) {
  // The shape alone: a fused forward's backward runs even if the switch was
  // turned off in between.
  FG_CHECK(kernel_takes(args.shape), "attention backward: shape not supported by the CPU kernel");
  if (args.shape.dtype == DType::Float64)
    backward_typed<double>(args);
  else
    backward_typed<float>(args);
}

}  // namespace cpu
}  // namespace fg
