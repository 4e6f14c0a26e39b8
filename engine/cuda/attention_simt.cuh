// Fused scaled dot-product attention for short sequences (the ViT's 196 tokens):
//   P = softmax(scale q k^T),  O = (P * M) v
// with M the dropout mask (0 or 1 / (1 - p), drawn from the shared Philox
// exactly as dropout_mask draws a contiguous (B, H, Lq, Lk) mask, so this path
// and the composite one drop the same entries).
//
// These kernels serve float32 (and bfloat16 when the tensor-core kernels of
// attention_tc.cuh are switched off or do not fit). Deliberately simple, to be
// right before it is fast: CUDA cores in float, no tensor cores. Each block
// stages the whole K and V (or Q and dO) of one (batch, head) in shared memory
// as float, rows padded to D + 4 floats so that a warp's 16-byte row reads hit
// distinct banks; each warp then owns one row at a time: scores for that row in
// a per-warp buffer, softmax by warp shuffles, the weighted sum with each lane
// owning D / 32 output columns.
// Sequences whose K and V do not fit in shared memory, and head dims other than
// 32, 64 and 128, are left to the composite path (supports() says so).
//
// Backward, without atomics (deterministic), in two kernels:
//  A (per query row i): recompute p_ij = exp(s_ij - lse_i), dp_ij = m_ij (dO_i . v_j),
//    Delta_i = dO_i . O_i, ds_ij = p_ij (dp_ij - Delta_i); dQ_i = scale sum_j ds_ij k_j.
//    Writes Delta for kernel B.
//  B (per key row j): dV_j = sum_i p_ij m_ij dO_i, dK_j = scale sum_i ds_ij q_i.
//
// Written against the CUDA subset that the tests' host emulation provides
// (dynamic shared memory through FG_DYNAMIC_SHARED), so that they compile this
// same header for the host; attention.cu holds the launches.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"
#include "engine/philox.h"

namespace fg::cuda::simt {
FG_KERNELS_BEGIN

constexpr int kWarps = 4;          // warps per block
constexpr int kRowsPerBlock = 32;  // query (or key) rows per block
constexpr int kThreads = kWarps * 32;

template <int D>
__host__ __device__ constexpr int padded() {
  return D + 4;
}

// Per-warp buffers start on 16-byte boundaries (they are read as float4).
__host__ __device__ __forceinline__ int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }

// Multiplies buf[j] (j < n) by mask element row_base + j (per-warp buffer; the
// caller separates this pass from the others with __syncwarp).
__device__ inline void apply_row_dropout(float* buf, int n, uint64_t row_base,
                                         const AttentionParams& p, int lane) {
  const uint64_t first = row_base >> 2, last = (row_base + static_cast<uint64_t>(n) - 1) >> 2;
  for (uint64_t block = first + lane; block <= last; block += 32) {
    const Philox4 r = philox4x32(block, p.philox_offset(), p.seed);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t e = block * 4 + w;
      if (e >= row_base && e < row_base + static_cast<uint64_t>(n))
        buf[e - row_base] *= philox_keeps(r.v[w], p.dropout_p) ? p.dropout_scale : 0.0f;
    }
  }
}

// Stages rows [0, rows) of head (b, h) of an operand in shared memory as
// float, times `factor`, with padded rows.
template <class T, int D>
__device__ void stage_head(float* dst, const void* base, const HeadLayout& layout, int64_t b,
                           int64_t h, int rows, float factor) {
  const T* src = head_row<T>(base, layout, b, h);
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    dst[r * padded<D>() + d] = convert<float>(src[r * layout.row + d]) * factor;
  }
}

// Where a thread stands: its lane and warp, and the block's (batch, head) pair.
struct Place {
  int lane, warp;
  int64_t bh, b, h;
};
__device__ __forceinline__ Place place_of(const AttentionParams& p) {
  const int64_t bh = blockIdx.y;
  return Place{static_cast<int>(threadIdx.x % 32), static_cast<int>(threadIdx.x / 32), bh,
               bh / p.heads, bh % p.heads};
}

// K and V of head (b, h) staged at the start of shared memory, as the forward
// and the dQ kernel lay it out; returns where V starts (K at `shared`).
template <class T, int D>
__device__ float* stage_keys_values(float* shared, const AttentionParams& p, int64_t b, int64_t h) {
  float* v_s = shared + p.kv_len * padded<D>();
  stage_head<T, D>(shared, p.k, p.k_layout, b, h, p.kv_len, 1.0f);
  stage_head<T, D>(v_s, p.v, p.v_layout, b, h, p.kv_len, 1.0f);
  __syncthreads();
  return v_s;
}

template <int D>
__device__ __forceinline__ float dot_registers(const float (&a)[D], const float* row) {
  float acc = 0.0f;
#pragma unroll
  for (int d = 0; d < D; d += 4) {
    const float4 b = *reinterpret_cast<const float4*>(row + d);
    acc += a[d] * b.x + a[d + 1] * b.y + a[d + 2] * b.z + a[d + 3] * b.w;
  }
  return acc;
}

template <int D>
__device__ __forceinline__ float dot_shared(const float* a, const float* row) {
  float acc = 0.0f;
#pragma unroll
  for (int d = 0; d < D; d += 4) {
    const float4 x = *reinterpret_cast<const float4*>(a + d);
    const float4 y = *reinterpret_cast<const float4*>(row + d);
    acc += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
  }
  return acc;
}

// acc[c] += sum_j weights[j] * rows[j][lane * D/32 + c]
template <int D>
__device__ __forceinline__ void weighted_row_sum(const float* weights, const float* rows, int n,
                                                 int lane, float (&acc)[D / 32]) {
  constexpr int kPer = D / 32;
  for (int j = 0; j < n; ++j) {
    const float w = weights[j];
    const Vec<float, kPer> v =
        *reinterpret_cast<const Vec<float, kPer>*>(rows + j * padded<D>() + lane * kPer);
#pragma unroll
    for (int c = 0; c < kPer; ++c) acc[c] += w * v.v[c];
  }
}

// ---------------------------------------------------------------- forward

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(AttentionParams p) {
  FG_DYNAMIC_SHARED(float, shared);
  constexpr int kPer = D / 32;
  const auto [lane, warp, bh, b, h] = place_of(p);
  const int lk = p.kv_len;
  const float* k_s = shared;
  const float* v_s = stage_keys_values<T, D>(shared, p, b, h);
  float* probs = shared + 2 * lk * padded<D>() + warp * (round4(lk) + D);
  float* q_row = probs + round4(lk);

  const T* q_base = head_row<T>(p.q, p.q_layout, b, h);
  T* o_base = head_row<T>(p.result, p.result_layout, b, h);
  for (int t = 0; t < kRowsPerBlock / kWarps; ++t) {
    const int i = blockIdx.x * kRowsPerBlock + t * kWarps + warp;
    if (i >= p.q_len) break;  // warp-uniform
    for (int d = lane; d < D; d += 32)
      q_row[d] = convert<float>(q_base[i * p.q_layout.row + d]) * p.scale;
    __syncwarp();
    float q[D];
#pragma unroll
    for (int d = 0; d < D; ++d) q[d] = q_row[d];
    float mx = -INFINITY;
    for (int j = lane; j < lk; j += 32) {
      const float s = dot_registers<D>(q, k_s + j * padded<D>());
      probs[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < lk; j += 32) {
      const float e = expf(probs[j] - mx);
      probs[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) p.logsumexp[bh * p.q_len + i] = mx + logf(sum);
    __syncwarp();
    if (p.dropout) {
      apply_row_dropout(probs, lk, (static_cast<uint64_t>(bh) * p.q_len + i) * lk, p, lane);
      __syncwarp();
    }
    float acc[kPer] = {};
    weighted_row_sum<D>(probs, v_s, lk, lane, acc);
    const float inv = 1.0f / sum;
    T* o_row = o_base + i * p.result_layout.row + lane * kPer;
#pragma unroll
    for (int c = 0; c < kPer; ++c) o_row[c] = convert<T>(acc[c] * inv);
    __syncwarp();  // probs and q_row are rewritten for the next row
  }
}

// ---------------------------------------------------------------- backward A: dQ, Delta

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_backward_query_kernel(AttentionParams p) {
  FG_DYNAMIC_SHARED(float, shared);
  constexpr int kPer = D / 32;
  const auto [lane, warp, bh, b, h] = place_of(p);
  const int lk = p.kv_len;
  const float* k_s = shared;
  const float* v_s = stage_keys_values<T, D>(shared, p, b, h);
  float* p_buf = shared + 2 * lk * padded<D>() + warp * (2 * round4(lk) + 2 * D);
  float* dp_buf = p_buf + round4(lk);
  float* q_row = dp_buf + round4(lk);
  float* do_row = q_row + D;

  const T* q_base = head_row<T>(p.q, p.q_layout, b, h);
  const T* o_base = head_row<T>(p.out, p.out_layout, b, h);
  const T* do_base = head_row<T>(p.grad_out, p.grad_out_layout, b, h);
  T* dq_base = head_row<T>(p.result, p.result_layout, b, h);
  for (int t = 0; t < kRowsPerBlock / kWarps; ++t) {
    const int i = blockIdx.x * kRowsPerBlock + t * kWarps + warp;
    if (i >= p.q_len) break;  // warp-uniform
    float delta = 0.0f;
    for (int d = lane; d < D; d += 32) {
      const float dout = convert<float>(do_base[i * p.grad_out_layout.row + d]);
      q_row[d] = convert<float>(q_base[i * p.q_layout.row + d]) * p.scale;
      do_row[d] = dout;
      delta += dout * convert<float>(o_base[i * p.out_layout.row + d]);
    }
    delta = warp_sum(delta);
    if (lane == 0) p.delta[bh * p.q_len + i] = delta;
    __syncwarp();
    float q[D];
#pragma unroll
    for (int d = 0; d < D; ++d) q[d] = q_row[d];
    const float lse = p.logsumexp[bh * p.q_len + i];
    for (int j = lane; j < lk; j += 32) {
      p_buf[j] = expf(dot_registers<D>(q, k_s + j * padded<D>()) - lse);
      dp_buf[j] = dot_shared<D>(do_row, v_s + j * padded<D>());
    }
    __syncwarp();
    if (p.dropout) {
      apply_row_dropout(dp_buf, lk, (static_cast<uint64_t>(bh) * p.q_len + i) * lk, p, lane);
      __syncwarp();
    }
    for (int j = lane; j < lk; j += 32) p_buf[j] = p_buf[j] * (dp_buf[j] - delta);  // ds
    __syncwarp();
    float acc[kPer] = {};
    weighted_row_sum<D>(p_buf, k_s, lk, lane, acc);
    T* dq_row = dq_base + i * p.result_layout.row + lane * kPer;
#pragma unroll
    for (int c = 0; c < kPer; ++c) dq_row[c] = convert<T>(acc[c] * p.scale);
    __syncwarp();
  }
}

// ---------------------------------------------------------------- backward B: dK, dV

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_backward_key_kernel(AttentionParams p) {
  FG_DYNAMIC_SHARED(float, shared);
  constexpr int kPer = D / 32;
  const auto [lane, warp, bh, b, h] = place_of(p);
  const int lq = p.q_len, lk = p.kv_len;
  float* q_s = shared;  // scaled q
  float* do_s = q_s + lq * padded<D>();
  float* lse_s = do_s + lq * padded<D>();
  float* delta_s = lse_s + round4(lq);
  float* pm_buf = delta_s + round4(lq) + warp * (2 * round4(lq) + 2 * D);
  float* ds_buf = pm_buf + round4(lq);
  float* k_row = ds_buf + round4(lq);
  float* v_row = k_row + D;

  stage_head<T, D>(q_s, p.q, p.q_layout, b, h, lq, p.scale);
  stage_head<T, D>(do_s, p.grad_out, p.grad_out_layout, b, h, lq, 1.0f);
  for (int i = threadIdx.x; i < lq; i += blockDim.x) {
    lse_s[i] = p.logsumexp[bh * lq + i];
    delta_s[i] = p.delta[bh * lq + i];
  }
  __syncthreads();

  const T* k_base = head_row<T>(p.k, p.k_layout, b, h);
  const T* v_base = head_row<T>(p.v, p.v_layout, b, h);
  T* dk_base = head_row<T>(p.result2, p.result2_layout, b, h);
  T* dv_base = head_row<T>(p.result3, p.result3_layout, b, h);
  for (int t = 0; t < kRowsPerBlock / kWarps; ++t) {
    const int j = blockIdx.x * kRowsPerBlock + t * kWarps + warp;
    if (j >= lk) break;  // warp-uniform
    for (int d = lane; d < D; d += 32) {
      k_row[d] = convert<float>(k_base[j * p.k_layout.row + d]);
      v_row[d] = convert<float>(v_base[j * p.v_layout.row + d]);
    }
    __syncwarp();
    float k[D];
#pragma unroll
    for (int d = 0; d < D; ++d) k[d] = k_row[d];
    for (int i = lane; i < lq; i += 32) {
      const float prob = expf(dot_registers<D>(k, q_s + i * padded<D>()) - lse_s[i]);
      float dp = dot_shared<D>(v_row, do_s + i * padded<D>());
      float mask = 1.0f;
      if (p.dropout) mask = mask_value((static_cast<uint64_t>(bh) * lq + i) * lk + j, p);
      dp *= mask;
      pm_buf[i] = prob * mask;
      ds_buf[i] = prob * (dp - delta_s[i]);
    }
    __syncwarp();
    float dv[kPer] = {}, dk[kPer] = {};
    weighted_row_sum<D>(pm_buf, do_s, lq, lane, dv);
    weighted_row_sum<D>(ds_buf, q_s, lq, lane, dk);  // q_s is already scaled
    T* dk_row = dk_base + j * p.result2_layout.row + lane * kPer;
    T* dv_row = dv_base + j * p.result3_layout.row + lane * kPer;
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      dk_row[c] = convert<T>(dk[c]);
      dv_row[c] = convert<T>(dv[c]);
    }
    __syncwarp();
  }
}

// ---------------------------------------------------------------- launch shapes

// Blocks along a sequence of `rows` queries (or keys); the grid's y is B * H.
inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}

// Shared memory of each kernel, in the order the kernels carve it up.
inline size_t forward_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lq;
  return static_cast<size_t>(2 * lk * (d + 4) + kWarps * (round4(lk) + d)) * sizeof(float);
}
inline size_t backward_query_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lq;
  return static_cast<size_t>(2 * lk * (d + 4) + kWarps * (2 * round4(lk) + 2 * d)) * sizeof(float);
}
inline size_t backward_key_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lk;
  return static_cast<size_t>(2 * lq * (d + 4) + 2 * round4(lq) +
                             kWarps * (2 * round4(lq) + 2 * d)) *
         sizeof(float);
}

FG_KERNELS_END
}  // namespace fg::cuda::simt
