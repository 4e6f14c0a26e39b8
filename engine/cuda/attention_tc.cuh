// Tensor-core attention in the FlashAttention-2 manner, for bfloat16 (WMMA
// 16x16x16) and for float32 as TF32 (WMMA 16x16x8, when TF32 is allowed):
//   P = softmax(scale q k^T),  O = (P * M) v
// with M the dropout mask (0 or 1 / (1 - p)) drawn from the shared Philox
// exactly as dropout_mask draws a contiguous (B, H, Lq, Lk) mask, so this path,
// the CUDA-core kernels of attention.cu and the composite path drop the same
// entries, and it writes the same log-sum-exp (of the scaled scores).
//
// Each block has 4 warps and takes 64 rows (queries in the forward and the dQ
// kernel, keys in the dK/dV kernel); each warp owns 16 of them. Tiles of 64
// rows are staged in shared memory in the input type with rows padded by 16
// bytes. The products run on tensor cores through WMMA with float
// accumulation; the softmax is done by the lanes on scores stored back to
// shared memory (a lane pair per row, 32 columns each), so no code depends on
// the accumulator fragments' register layout: only element-uniform operations
// touch fragment elements.
//
// Forward (per query tile): for each key tile, S = Q K^T, the online softmax
// updates the row max m and sum l, P (after dropout) goes to shared memory in
// the input type, and O = O * exp(m_old - m_new) + P V. At the end O / l and
// lse = m + log l are written.
// Backward, deterministic, in two kernels (as the CUDA-core path):
//  dQ kernel (per query tile): Delta_i = dO_i . O_i (written for the second
//    kernel); for each key tile p = exp(scale s - lse), dp = M (dO v^T),
//    ds = p (dp - Delta); dQ += ds K (ds in the input type, float accumulators held in
//    fragments across tiles); dQ *= scale.
//  dK/dV kernel (per key tile): for each query tile the transposed products
//    S^T = K Q^T and (dO V^T)^T = V dO^T; dV += (P M)^T dO, dK += dS^T Q; dK *= scale.
//
// The kernels are written against a small subset of CUDA (WMMA, shuffles,
// barriers, dynamic shared memory through FG_DYNAMIC_SHARED) so that the tests
// can compile this same header for the host with an emulation of that subset.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if !defined(FGMOE_CUDA_EMULATION)
#include <cuda_bf16.h>
#include <mma.h>
#endif

#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::tc {
FG_KERNELS_BEGIN

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // rows of a block's own tile (queries or keys)
constexpr int kCols = 64;           // rows of the tiles it loops over
constexpr unsigned kFullMask = 0xffffffffu;

// The kernels take the parameters of both fused paths; their pointers hold T.
using Params = AttentionParams;

// Per element type: the WMMA input type and k of a 16x16xk product, and the
// padding of staged rows (16 bytes, which keeps a warp's fragment loads off
// each other's banks). float runs as tf32 (m16n16k8), rounded after each load.
template <class T>
struct Mma;
template <>
struct Mma<bf16> {
  using Input = bf16;
  static constexpr int kK = 16;
  static constexpr int kPad = 8;
};
template <>
struct Mma<float> {
  using Input = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
  static constexpr int kPad = 4;
};

template <class T>
using Accumulator = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, Mma<T>::kK, float>;

__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }
template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return __float2bfloat16_rn(v);
  else
    return v;
}

// Loads an A or B fragment; tf32 elements are rounded to nearest as the
// tensor cores would otherwise truncate them.
template <class T, class Fragment>
__device__ __forceinline__ void load_operand(Fragment& f, const T* ptr, int ld) {
  nvcuda::wmma::load_matrix_sync(f, ptr, static_cast<unsigned>(ld));
  if constexpr (std::is_same_v<T, float>) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = nvcuda::wmma::__float_to_tf32(f.x[i]);
  }
}

// Shared-memory layout for element type T and head dim D. Every region's
// size is a multiple of 32 bytes, so every WMMA tile pointer is 32-byte
// aligned (the API's rule).
template <class T, int D>
struct Layout {
  static_assert(D % 16 == 0 && D >= 32 && D <= 128, "head dim must be 32, 48, ..., 128");
  static constexpr int kPitch = D + Mma<T>::kPad;            // staged rows (Q, K, V, dO)
  static constexpr int kTile = kRows * kPitch;               // elements of one staged tile
  static constexpr int kWide = (D > kCols ? D : kCols) + 4;  // float per-warp rows
  static constexpr int kPPitch = kCols + Mma<T>::kPad;       // per-warp rows of P and dS
  static constexpr int kOPitch = D + 4;                      // float running output rows
  static constexpr size_t kTileBytes = size_t{kTile} * sizeof(T);
  static constexpr size_t kWideBytes = size_t{16} * kWide * 4;
  static constexpr size_t kPBytes = size_t{16} * kPPitch * sizeof(T);
  static constexpr size_t kOBytes = size_t{16} * kOPitch * 4;
  // forward: Q, K, V tiles; per warp scores (reused for P V), P, O
  static constexpr size_t kForwardWarp = kWideBytes + kPBytes + kOBytes;
  static constexpr size_t kForwardBytes = 3 * kTileBytes + kWarps * kForwardWarp;
  // dQ: Q, dO, K, V tiles; per warp scores, dO V^T, dS
  static constexpr size_t kQueryWarp = 2 * kWideBytes + kPBytes;
  static constexpr size_t kQueryBytes = 4 * kTileBytes + kWarps * kQueryWarp;
  // dK/dV: K, V, Q, dO tiles, lse and Delta of the query tile; per warp S^T,
  // (dO V^T)^T, (P M)^T, dS^T
  static constexpr size_t kKeyWarp = 2 * kWideBytes + 2 * kPBytes;
  static constexpr size_t kKeyBytes = 4 * kTileBytes + 2 * kCols * 4 + kWarps * kKeyWarp;
  static constexpr size_t kMostBytes = kForwardBytes > kQueryBytes
                                           ? (kForwardBytes > kKeyBytes ? kForwardBytes : kKeyBytes)
                                           : (kQueryBytes > kKeyBytes ? kQueryBytes : kKeyBytes);
  static_assert(kTileBytes % 32 == 0 && kWideBytes % 32 == 0 && kPBytes % 32 == 0 &&
                    kOBytes % 32 == 0,
                "shared regions must keep 32-byte alignment");
};

struct alignas(16) Chunk {
  uint32_t w[4];  // 8 bfloat16 or 4 float
};

// Where a thread stands: its warp, the row of the warp's 16 that its lane pair
// owns (row = lane / 2; half = lane % 2 takes columns [32 half, 32 half + 32)
// of a 64-wide tile, or [half D/2, (half + 1) D/2) of a D-wide row), the
// block's batch and head, the first of the block's own rows (queries or
// keys) and the lane pair's one.
struct Place {
  int warp, row, half;
  int64_t bh, b, h;
  int first, index;
};

__device__ __forceinline__ Place place_of(const Params& p) {
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int64_t bh = blockIdx.y;
  const int first = static_cast<int>(blockIdx.x) * kRows;
  return Place{warp,         lane >> 1,    lane & 1, bh,
               bh / p.heads, bh % p.heads, first,    first + warp * 16 + (lane >> 1)};
}

// Rows of a tile of at most `cap` rows starting at `start` in a sequence of `n`.
__device__ __forceinline__ int rows_in_tile(int n, int start, int cap) {
  return n - start < cap ? n - start : cap;
}

// Keep bits of mask elements e0 .. e0 + 31 (bit c for element e0 + c).
__device__ __forceinline__ uint32_t keep_bits32(uint64_t e0, const Params& p) {
  uint32_t bits = 0;
  const uint64_t last = (e0 + 31) >> 2;
  for (uint64_t block = e0 >> 2; block <= last; ++block) {
    const Philox4 r = philox4x32(block, p.philox_offset(), p.seed);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t e = block * 4 + static_cast<uint64_t>(w);
      if (e >= e0 && e < e0 + 32 && philox_keeps(r.v[w], p.dropout_p)) bits |= 1u << (e - e0);
    }
  }
  return bits;
}

// Stages rows [0, rows) of a row-strided matrix (unit column stride) into a
// kRows-row tile of the layout's pitch; rows from `rows` on are zero.
template <class T, int D>
__device__ void load_tile(T* dst, const T* src, int64_t row_stride, int rows, bool vector) {
  constexpr int kPitch = Layout<T, D>::kPitch;
  if (vector) {
    constexpr int kPer = 16 / sizeof(T), kChunks = D / kPer;
    for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = (idx % kChunks) * kPer;
      Chunk value = {{0u, 0u, 0u, 0u}};
      if (r < rows) value = *reinterpret_cast<const Chunk*>(src + r * row_stride + c);
      *reinterpret_cast<Chunk*>(dst + r * kPitch + c) = value;
    }
  } else {
    const T zero = from_float<T>(0.0f);
    for (int idx = threadIdx.x; idx < kRows * D; idx += kThreads) {
      const int r = idx / D, c = idx % D;
      dst[r * kPitch + c] = r < rows ? src[r * row_stride + c] : zero;
    }
  }
}

// Writes half of a row (columns [half * D/2, (half + 1) * D/2)) as T, times `factor`.
template <class T, int D>
__device__ __forceinline__ void store_half_row(T* dst, const float* src, float factor, int half,
                                               bool vector) {
  constexpr int kHalf = D / 2, kPer = 16 / sizeof(T);
  const int c0 = half * kHalf;
  if (vector) {
    for (int c = c0; c < c0 + kHalf; c += kPer) {
      Chunk chunk;
      T* e = reinterpret_cast<T*>(&chunk);
#pragma unroll
      for (int t = 0; t < kPer; ++t) e[t] = from_float<T>(src[c + t] * factor);
      *reinterpret_cast<Chunk*>(dst + c) = chunk;
    }
  } else {
    for (int c = c0; c < c0 + kHalf; ++c) dst[c] = from_float<T>(src[c] * factor);
  }
}

// C (16 x 16 * N_TILES, float, pitch ldc) = A (16 x K, row-major) times B, where
// B (K x 16 * N_TILES) is read row-major (B_COL_MAJOR false: element (k, n) at
// b[k * ldb + n]) or as the transpose of a row-major matrix (true: at b[n * ldb + k]).
template <class T, int K, int N_TILES, bool B_COL_MAJOR>
__device__ __forceinline__ void warp_gemm_to_shared(float* c, int ldc, const T* a, int lda,
                                                    const T* b, int ldb) {
  namespace wmma = nvcuda::wmma;
  using BLayout = typename std::conditional<B_COL_MAJOR, wmma::col_major, wmma::row_major>::type;
  using Input = typename Mma<T>::Input;
  constexpr int kK = Mma<T>::kK;
  for (int nt = 0; nt < N_TILES; ++nt) {
    Accumulator<T> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kt = 0; kt < K / kK; ++kt) {
      wmma::fragment<wmma::matrix_a, 16, 16, kK, Input, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, kK, Input, BLayout> fb;
      load_operand(fa, a + kt * kK, lda);
      if (B_COL_MAJOR)
        load_operand(fb, b + nt * 16 * ldb + kt * kK, ldb);
      else
        load_operand(fb, b + kt * kK * ldb + nt * 16, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + nt * 16, acc, ldc, wmma::mem_row_major);
  }
}

// acc[nt] += A (16 x kCols, row-major) times B (kCols x D, row-major).
template <class T, int D>
__device__ __forceinline__ void warp_gemm_accumulate(Accumulator<T> (&acc)[D / 16], const T* a,
                                                     int lda, const T* b, int ldb) {
  namespace wmma = nvcuda::wmma;
  using Input = typename Mma<T>::Input;
  constexpr int kK = Mma<T>::kK;
  for (int kt = 0; kt < kCols / kK; ++kt) {
    wmma::fragment<wmma::matrix_a, 16, 16, kK, Input, wmma::row_major> fa;
    load_operand(fa, a + kt * kK, lda);
    for (int nt = 0; nt < D / 16; ++nt) {
      wmma::fragment<wmma::matrix_b, 16, 16, kK, Input, wmma::row_major> fb;
      load_operand(fb, b + kt * kK * ldb + nt * 16, ldb);
      wmma::mma_sync(acc[nt], fa, fb, acc[nt]);
    }
  }
}

// Column order of a lane's 32 columns, rotated by row so that the 32 lanes of
// a warp read 32 different banks of a 68-float-pitch buffer.
__device__ __forceinline__ int rotated(int c, int row, int half) {
  return (c + row + 16 * half) & 31;
}

// ---------------------------------------------------------------- forward

template <class T, int D>
__global__ void __launch_bounds__(kThreads) forward_kernel(Params p) {
  using L = Layout<T, D>;
  FG_DYNAMIC_SHARED(unsigned char, shared);
  const auto [warp, row, half, bh, b, h, q0, i] = place_of(p);
  const bool row_valid = i < p.q_len;

  T* q_s = reinterpret_cast<T*>(shared);
  T* k_s = q_s + L::kTile;
  T* v_s = k_s + L::kTile;
  unsigned char* mine = shared + 3 * L::kTileBytes + warp * L::kForwardWarp;
  float* s_w = reinterpret_cast<float*>(mine);
  T* p_w = reinterpret_cast<T*>(mine + L::kWideBytes);
  float* o_w = reinterpret_cast<float*>(mine + L::kWideBytes + L::kPBytes);

  const int q_rows = rows_in_tile(p.q_len, q0, kRows);
  load_tile<T, D>(q_s, head_row<T>(p.q, p.q_layout, b, h, q0), p.q_layout.row, q_rows, p.vector_io);
  float* o_row = o_w + row * L::kOPitch;
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) o_row[c] = 0.0f;
  const T* k_base = head_row<T>(p.k, p.k_layout, b, h);
  const T* v_base = head_row<T>(p.v, p.v_layout, b, h);
  const uint64_t mask_row = (static_cast<uint64_t>(bh) * p.q_len + i) * p.kv_len;

  float m = -INFINITY, l = 0.0f;
  for (int n0 = 0; n0 < p.kv_len; n0 += kCols) {
    const int valid = rows_in_tile(p.kv_len, n0, kCols);
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<T, D>(k_s, k_base + n0 * p.k_layout.row, p.k_layout.row, valid, p.vector_io);
    load_tile<T, D>(v_s, v_base + n0 * p.v_layout.row, p.v_layout.row, valid, p.vector_io);
    __syncthreads();

    warp_gemm_to_shared<T, D, kCols / 16, true>(s_w, L::kWide, q_s + warp * 16 * L::kPitch,
                                                L::kPitch, k_s, L::kPitch);
    __syncwarp();

    const float* s_row = s_w + row * L::kWide + half * 32;
    float tile_max = -INFINITY;
    for (int t = 0; t < 32; ++t) {
      const int c = rotated(t, row, half);
      if (half * 32 + c < valid) tile_max = fmaxf(tile_max, s_row[c] * p.scale);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);  // finite: a tile holds at least one key
    const float alpha = expf(m - m_new);     // 0 on the first tile
    uint32_t keep = kFullMask;
    if (p.dropout && row_valid) keep = keep_bits32(mask_row + n0 + half * 32, p);
    T* p_row = p_w + row * L::kPPitch + half * 32;
    float sum = 0.0f;
    for (int t = 0; t < 32; ++t) {
      const int c = rotated(t, row, half);
      float e = 0.0f;
      if (half * 32 + c < valid) e = expf(s_row[c] * p.scale - m_new);
      sum += e;
      const float kept = p.dropout ? (((keep >> c) & 1u) ? e * p.dropout_scale : 0.0f) : e;
      p_row[c] = from_float<T>(kept);
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    __syncwarp();  // P is complete; the scores are no longer read

    warp_gemm_to_shared<T, kCols, D / 16, false>(s_w, L::kWide, p_w, L::kPPitch, v_s, L::kPitch);
    __syncwarp();
    const float* pv_row = s_w + row * L::kWide;
    for (int t = 0; t < D / 2; ++t) {
      const int c = half * (D / 2) + (D / 2 >= 32 ? (t + row + 16 * half) % (D / 2) : t);
      o_row[c] = o_row[c] * alpha + pv_row[c];
    }
    // The next tile's scores overwrite s_w only after the __syncthreads above.
  }

  if (row_valid) {
    T* out = head_row<T>(p.result, p.result_layout, b, h, i);
    store_half_row<T, D>(out, o_row, 1.0f / l, half, p.vector_io);
    if (half == 0) p.logsumexp[bh * p.q_len + i] = m + logf(l);
  }
}

// ---------------------------------------------------------------- backward: dQ and Delta

template <class T, int D>
__global__ void __launch_bounds__(kThreads) backward_query_kernel(Params p) {
  namespace wmma = nvcuda::wmma;
  using L = Layout<T, D>;
  FG_DYNAMIC_SHARED(unsigned char, shared);
  const auto [warp, row, half, bh, b, h, q0, i] = place_of(p);
  const bool row_valid = i < p.q_len;

  T* q_s = reinterpret_cast<T*>(shared);
  T* do_s = q_s + L::kTile;
  T* k_s = do_s + L::kTile;
  T* v_s = k_s + L::kTile;
  unsigned char* mine = shared + 4 * L::kTileBytes + warp * L::kQueryWarp;
  float* s_w = reinterpret_cast<float*>(mine);
  float* dp_w = reinterpret_cast<float*>(mine + L::kWideBytes);
  T* ds_w = reinterpret_cast<T*>(mine + 2 * L::kWideBytes);

  const int q_rows = rows_in_tile(p.q_len, q0, kRows);
  load_tile<T, D>(q_s, head_row<T>(p.q, p.q_layout, b, h, q0), p.q_layout.row, q_rows, p.vector_io);
  load_tile<T, D>(do_s, head_row<T>(p.grad_out, p.grad_out_layout, b, h, q0), p.grad_out_layout.row,
                  q_rows, p.vector_io);

  // Delta_i = dO_i . O_i (each lane of the pair sums half the columns)
  float delta = 0.0f, lse = 0.0f;
  if (row_valid) {
    const T* o = head_row<T>(p.out, p.out_layout, b, h, i);
    const T* g = head_row<T>(p.grad_out, p.grad_out_layout, b, h, i);
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      delta += to_float(g[c]) * to_float(o[c]);
    lse = p.logsumexp[bh * p.q_len + i];
  }
  delta += __shfl_xor_sync(kFullMask, delta, 1);
  if (row_valid && half == 0) p.delta[bh * p.q_len + i] = delta;

  Accumulator<T> dq[D / 16];
  for (int t = 0; t < D / 16; ++t) wmma::fill_fragment(dq[t], 0.0f);
  const T* k_base = head_row<T>(p.k, p.k_layout, b, h);
  const T* v_base = head_row<T>(p.v, p.v_layout, b, h);
  const uint64_t mask_row = (static_cast<uint64_t>(bh) * p.q_len + i) * p.kv_len;

  for (int n0 = 0; n0 < p.kv_len; n0 += kCols) {
    const int valid = rows_in_tile(p.kv_len, n0, kCols);
    __syncthreads();
    load_tile<T, D>(k_s, k_base + n0 * p.k_layout.row, p.k_layout.row, valid, p.vector_io);
    load_tile<T, D>(v_s, v_base + n0 * p.v_layout.row, p.v_layout.row, valid, p.vector_io);
    __syncthreads();

    warp_gemm_to_shared<T, D, kCols / 16, true>(s_w, L::kWide, q_s + warp * 16 * L::kPitch,
                                                L::kPitch, k_s, L::kPitch);
    warp_gemm_to_shared<T, D, kCols / 16, true>(dp_w, L::kWide, do_s + warp * 16 * L::kPitch,
                                                L::kPitch, v_s, L::kPitch);
    __syncwarp();

    uint32_t keep = kFullMask;
    if (p.dropout && row_valid) keep = keep_bits32(mask_row + n0 + half * 32, p);
    const float* s_row = s_w + row * L::kWide + half * 32;
    const float* dp_row = dp_w + row * L::kWide + half * 32;
    T* ds_row = ds_w + row * L::kPPitch + half * 32;
    for (int t = 0; t < 32; ++t) {
      const int c = rotated(t, row, half);
      float ds = 0.0f;
      if (row_valid && half * 32 + c < valid) {
        const float prob = expf(s_row[c] * p.scale - lse);
        float dp = dp_row[c];
        if (p.dropout) dp = ((keep >> c) & 1u) ? dp * p.dropout_scale : 0.0f;
        ds = prob * (dp - delta);
      }
      ds_row[c] = from_float<T>(ds);
    }
    __syncwarp();
    warp_gemm_accumulate<T, D>(dq, ds_w, L::kPPitch, k_s, L::kPitch);
  }

  __syncwarp();
  for (int t = 0; t < D / 16; ++t) {
    for (int e = 0; e < dq[t].num_elements; ++e) dq[t].x[e] *= p.scale;
    wmma::store_matrix_sync(s_w + t * 16, dq[t], L::kWide, wmma::mem_row_major);
  }
  __syncwarp();
  if (row_valid) {
    T* out = head_row<T>(p.result, p.result_layout, b, h, i);
    store_half_row<T, D>(out, s_w + row * L::kWide, 1.0f, half, p.vector_io);
  }
}

// ---------------------------------------------------------------- backward: dK and dV

template <class T, int D>
__global__ void __launch_bounds__(kThreads) backward_key_kernel(Params p) {
  namespace wmma = nvcuda::wmma;
  using L = Layout<T, D>;
  FG_DYNAMIC_SHARED(unsigned char, shared);
  const auto [warp, row, half, bh, b, h, j0, j] = place_of(p);  // j: the lane pair's key
  const bool key_valid = j < p.kv_len;

  T* k_s = reinterpret_cast<T*>(shared);
  T* v_s = k_s + L::kTile;
  T* q_s = v_s + L::kTile;
  T* do_s = q_s + L::kTile;
  float* lse_s = reinterpret_cast<float*>(shared + 4 * L::kTileBytes);
  float* delta_s = lse_s + kCols;
  unsigned char* mine = shared + 4 * L::kTileBytes + 2 * kCols * 4 + warp * L::kKeyWarp;
  float* st_w = reinterpret_cast<float*>(mine);
  float* dpt_w = reinterpret_cast<float*>(mine + L::kWideBytes);
  T* pt_w = reinterpret_cast<T*>(mine + 2 * L::kWideBytes);
  T* dst_w = reinterpret_cast<T*>(mine + 2 * L::kWideBytes + L::kPBytes);

  const int k_rows = rows_in_tile(p.kv_len, j0, kRows);
  load_tile<T, D>(k_s, head_row<T>(p.k, p.k_layout, b, h, j0), p.k_layout.row, k_rows, p.vector_io);
  load_tile<T, D>(v_s, head_row<T>(p.v, p.v_layout, b, h, j0), p.v_layout.row, k_rows, p.vector_io);

  Accumulator<T> dk[D / 16], dv[D / 16];
  for (int t = 0; t < D / 16; ++t) {
    wmma::fill_fragment(dk[t], 0.0f);
    wmma::fill_fragment(dv[t], 0.0f);
  }
  const T* q_base = head_row<T>(p.q, p.q_layout, b, h);
  const T* do_base = head_row<T>(p.grad_out, p.grad_out_layout, b, h);

  for (int m0 = 0; m0 < p.q_len; m0 += kCols) {
    const int valid = rows_in_tile(p.q_len, m0, kCols);
    __syncthreads();
    load_tile<T, D>(q_s, q_base + m0 * p.q_layout.row, p.q_layout.row, valid, p.vector_io);
    load_tile<T, D>(do_s, do_base + m0 * p.grad_out_layout.row, p.grad_out_layout.row, valid,
                    p.vector_io);
    for (int t = threadIdx.x; t < kCols; t += kThreads) {
      const bool ok = t < valid;
      lse_s[t] = ok ? p.logsumexp[bh * p.q_len + m0 + t] : 0.0f;
      delta_s[t] = ok ? p.delta[bh * p.q_len + m0 + t] : 0.0f;
    }
    __syncthreads();

    warp_gemm_to_shared<T, D, kCols / 16, true>(st_w, L::kWide, k_s + warp * 16 * L::kPitch,
                                                L::kPitch, q_s, L::kPitch);
    warp_gemm_to_shared<T, D, kCols / 16, true>(dpt_w, L::kWide, v_s + warp * 16 * L::kPitch,
                                                L::kPitch, do_s, L::kPitch);
    __syncwarp();

    const float* s_row = st_w + row * L::kWide + half * 32;
    const float* dp_row = dpt_w + row * L::kWide + half * 32;
    T* pt_row = pt_w + row * L::kPPitch + half * 32;
    T* ds_row = dst_w + row * L::kPPitch + half * 32;
    for (int t = 0; t < 32; ++t) {
      const int c = rotated(t, row, half);
      const int query = half * 32 + c;  // within the query tile
      float pm = 0.0f, ds = 0.0f;
      if (key_valid && query < valid) {
        const float prob = expf(s_row[c] * p.scale - lse_s[query]);
        const float mask =
            p.dropout
                ? mask_value((static_cast<uint64_t>(bh) * p.q_len + m0 + query) * p.kv_len + j, p)
                : 1.0f;
        pm = prob * mask;
        ds = prob * (dp_row[c] * mask - delta_s[query]);
      }
      pt_row[c] = from_float<T>(pm);
      ds_row[c] = from_float<T>(ds);
    }
    __syncwarp();
    warp_gemm_accumulate<T, D>(dv, pt_w, L::kPPitch, do_s, L::kPitch);
    warp_gemm_accumulate<T, D>(dk, dst_w, L::kPPitch, q_s, L::kPitch);
  }

  __syncwarp();
  for (int t = 0; t < D / 16; ++t) {
    for (int e = 0; e < dk[t].num_elements; ++e) dk[t].x[e] *= p.scale;
    wmma::store_matrix_sync(st_w + t * 16, dk[t], L::kWide, wmma::mem_row_major);
    wmma::store_matrix_sync(dpt_w + t * 16, dv[t], L::kWide, wmma::mem_row_major);
  }
  __syncwarp();
  if (key_valid) {
    T* dk_out = head_row<T>(p.result2, p.result2_layout, b, h, j);
    T* dv_out = head_row<T>(p.result3, p.result3_layout, b, h, j);
    store_half_row<T, D>(dk_out, st_w + row * L::kWide, 1.0f, half, p.vector_io);
    store_half_row<T, D>(dv_out, dpt_w + row * L::kWide, 1.0f, half, p.vector_io);
  }
}

FG_KERNELS_END
}  // namespace fg::cuda::tc
