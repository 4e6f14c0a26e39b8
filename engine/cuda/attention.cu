// Fused scaled dot-product attention for short sequences (the ViT's 196 tokens):
//   P = softmax(scale q k^T),  O = (P * M) v
// with M the dropout mask (0 or 1 / (1 - p), drawn from the shared Philox
// exactly as dropout_mask draws a contiguous (B, H, Lq, Lk) mask, so this path
// and the composite one drop the same entries).
//
// These kernels serve float32 (and bfloat16 when the tensor-core kernels of
// attention_tc.cuh are switched off or do not fit). Deliberately simple, to be
// right before it is fast: CUDA cores in float, no tensor cores. Each block stages the whole K and V (or Q and dO) of one
// (batch, head) in shared memory as float, rows padded to D + 4 floats so that
// a warp's 16-byte row reads hit distinct banks; each warp then owns one row at
// a time: scores for that row in a per-warp buffer, softmax by warp shuffles,
// the weighted sum with each lane owning D / 32 output columns.
// Sequences whose K and V do not fit in shared memory, and head dims other than
// 32, 64 and 128, are left to the composite path (supports() says so).
//
// Backward, without atomics (deterministic), in two kernels:
//  A (per query row i): recompute p_ij = exp(s_ij - lse_i), dp_ij = m_ij (dO_i . v_j),
//    Delta_i = dO_i . O_i, ds_ij = p_ij (dp_ij - Delta_i); dQ_i = scale sum_j ds_ij k_j.
//    Writes Delta for kernel B.
//  B (per key row j): dV_j = sum_i p_ij m_ij dO_i, dK_j = scale sum_i ds_ij q_i.
#include <algorithm>

#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/attention_tc.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/philox.h"

namespace fg::cuda {

namespace {

constexpr int kWarps = 4;          // warps per block
constexpr int kRowsPerBlock = 32;  // query (or key) rows per block
constexpr int kThreads = kWarps * 32;

HeadLayout layout_of(const Tensor& t) { return HeadLayout{t.stride(0), t.stride(1), t.stride(2)}; }

template <int D>
__host__ __device__ constexpr int padded() {
  return D + 4;
}

// Per-warp buffers start on 16-byte boundaries (they are read as float4).
__host__ __device__ __forceinline__ int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }

// Multiplies buf[j] (j < n) by mask element row_base + j (per-warp buffer; the
// caller separates this pass from the others with __syncwarp).
__device__ void apply_row_dropout(float* buf, int n, uint64_t row_base, const AttentionParams& p,
                                  int lane) {
  const uint64_t first = row_base >> 2, last = (row_base + static_cast<uint64_t>(n) - 1) >> 2;
  for (uint64_t block = first + lane; block <= last; block += 32) {
    const Philox4 r = philox4x32(block, p.offset, p.seed);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t e = block * 4 + w;
      if (e >= row_base && e < row_base + static_cast<uint64_t>(n))
        buf[e - row_base] *= keep_word(r.v[w], p.dropout_p) ? p.dropout_scale : 0.0f;
    }
  }
}

// Stages rows [0, rows) of a (row-strided, unit column stride) matrix in shared
// memory as float, times `factor`, with padded rows.
template <class T, int D>
__device__ void stage_rows(float* dst, const T* src, int64_t row_stride, int rows, float factor) {
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    dst[r * padded<D>() + d] = convert<float>(src[r * row_stride + d]) * factor;
  }
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
  extern __shared__ float4 shared_raw[];
  float* shared = reinterpret_cast<float*>(shared_raw);
  constexpr int kPer = D / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  const int lk = p.kv_len;
  float* k_s = shared;
  float* v_s = k_s + lk * padded<D>();
  float* probs = v_s + lk * padded<D>() + warp * (round4(lk) + D);
  float* q_row = probs + round4(lk);

  stage_rows<T, D>(k_s, static_cast<const T*>(p.k) + head_offset(p.k_layout, b, h), p.k_layout.row,
                   lk, 1.0f);
  stage_rows<T, D>(v_s, static_cast<const T*>(p.v) + head_offset(p.v_layout, b, h), p.v_layout.row,
                   lk, 1.0f);
  __syncthreads();

  const T* q_base = static_cast<const T*>(p.q) + head_offset(p.q_layout, b, h);
  T* o_base = static_cast<T*>(p.result) + head_offset(p.result_layout, b, h);
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
  extern __shared__ float4 shared_raw[];
  float* shared = reinterpret_cast<float*>(shared_raw);
  constexpr int kPer = D / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  const int lk = p.kv_len;
  float* k_s = shared;
  float* v_s = k_s + lk * padded<D>();
  float* p_buf = v_s + lk * padded<D>() + warp * (2 * round4(lk) + 2 * D);
  float* dp_buf = p_buf + round4(lk);
  float* q_row = dp_buf + round4(lk);
  float* do_row = q_row + D;

  stage_rows<T, D>(k_s, static_cast<const T*>(p.k) + head_offset(p.k_layout, b, h), p.k_layout.row,
                   lk, 1.0f);
  stage_rows<T, D>(v_s, static_cast<const T*>(p.v) + head_offset(p.v_layout, b, h), p.v_layout.row,
                   lk, 1.0f);
  __syncthreads();

  const T* q_base = static_cast<const T*>(p.q) + head_offset(p.q_layout, b, h);
  const T* o_base = static_cast<const T*>(p.out) + head_offset(p.out_layout, b, h);
  const T* do_base = static_cast<const T*>(p.grad_out) + head_offset(p.grad_out_layout, b, h);
  T* dq_base = static_cast<T*>(p.result) + head_offset(p.result_layout, b, h);
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
  extern __shared__ float4 shared_raw[];
  float* shared = reinterpret_cast<float*>(shared_raw);
  constexpr int kPer = D / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  const int lq = p.q_len, lk = p.kv_len;
  float* q_s = shared;  // scaled q
  float* do_s = q_s + lq * padded<D>();
  float* lse_s = do_s + lq * padded<D>();
  float* delta_s = lse_s + round4(lq);
  float* pm_buf = delta_s + round4(lq) + warp * (2 * round4(lq) + 2 * D);
  float* ds_buf = pm_buf + round4(lq);
  float* k_row = ds_buf + round4(lq);
  float* v_row = k_row + D;

  stage_rows<T, D>(q_s, static_cast<const T*>(p.q) + head_offset(p.q_layout, b, h), p.q_layout.row,
                   lq, p.scale);
  stage_rows<T, D>(do_s, static_cast<const T*>(p.grad_out) + head_offset(p.grad_out_layout, b, h),
                   p.grad_out_layout.row, lq, 1.0f);
  for (int i = threadIdx.x; i < lq; i += blockDim.x) {
    lse_s[i] = p.logsumexp[bh * lq + i];
    delta_s[i] = p.delta[bh * lq + i];
  }
  __syncthreads();

  const T* k_base = static_cast<const T*>(p.k) + head_offset(p.k_layout, b, h);
  const T* v_base = static_cast<const T*>(p.v) + head_offset(p.v_layout, b, h);
  T* dk_base = static_cast<T*>(p.result2) + head_offset(p.result2_layout, b, h);
  T* dv_base = static_cast<T*>(p.result3) + head_offset(p.result3_layout, b, h);
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

// ---------------------------------------------------------------- host side

// Shared memory of each kernel, in the order the kernels carve it up.
size_t forward_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lq;
  return static_cast<size_t>(2 * lk * (d + 4) + kWarps * (round4(lk) + d)) * sizeof(float);
}
size_t backward_query_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lq;
  return static_cast<size_t>(2 * lk * (d + 4) + kWarps * (2 * round4(lk) + 2 * d)) * sizeof(float);
}
size_t backward_key_shared_bytes(int64_t lq, int64_t lk, int64_t d) {
  (void)lk;
  return static_cast<size_t>(2 * lq * (d + 4) + 2 * round4(lq) +
                             kWarps * (2 * round4(lq) + 2 * d)) *
         sizeof(float);
}

// Raises a kernel's dynamic shared-memory limit to the device's opt-in maximum (once).
template <class Kernel>
void allow_shared(Kernel kernel) {
  FG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(device_properties().sharedMemPerBlockOptin)));
}

template <class F>
void dispatch_attention(const AttentionShape& shape, const char* name, F f) {
  auto with_dim = [&](auto type_tag) {
    using T = decltype(type_tag);
    switch (shape.head_dim) {
      case 32:
        f(T{}, std::integral_constant<int, 32>{});
        break;
      case 64:
        f(T{}, std::integral_constant<int, 64>{});
        break;
      case 128:
        f(T{}, std::integral_constant<int, 128>{});
        break;
      default:
        FG_CHECK(false, name, ": head dim ", shape.head_dim, " is not supported");
    }
  };
  if (shape.dtype == DType::Float32)
    with_dim(float{});
  else if (shape.dtype == DType::BFloat16)
    with_dim(bf16{});
  else
    FG_CHECK(false, name, ": dtype ", dtype_name(shape.dtype), " is not supported");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_head_tensor(const Tensor& t, const AttentionShape& s, int64_t len, const char* what) {
  FG_CHECK(t.defined() && t.dim() == 4 && t.size(0) == s.batch && t.size(1) == s.heads &&
               t.size(2) == len && t.size(3) == s.head_dim && t.stride(3) == 1 &&
               t.dtype() == s.dtype && t.device().is_cuda(),
           "attention: ", what, " must be a (", s.batch, ", ", s.heads, ", ", len, ", ", s.head_dim,
           ") ", dtype_name(s.dtype), " CUDA view with unit stride in the last dim");
}

// 16-byte pieces: bfloat16 rows (the tensor-core kernels' only dtype) with
// every stride a multiple of 8 elements.
bool rows_move_in_chunks(const Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % 8 == 0 &&
         t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
}

AttentionParams common_params(const AttentionShape& s, const Tensor& q, const Tensor& k,
                              const Tensor& v, double scale, double dropout_p, uint64_t seed,
                              uint64_t offset) {
  check_head_tensor(q, s, s.q_len, "q");
  check_head_tensor(k, s, s.kv_len, "k");
  check_head_tensor(v, s, s.kv_len, "v");
  AttentionParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_layout = layout_of(q);
  p.k_layout = layout_of(k);
  p.v_layout = layout_of(v);
  p.heads = static_cast<int>(s.heads);
  p.q_len = static_cast<int>(s.q_len);
  p.kv_len = static_cast<int>(s.kv_len);
  p.scale = static_cast<float>(scale);
  p.dropout = s.dropout && dropout_p > 0.0;
  p.dropout_p = static_cast<float>(dropout_p);
  p.dropout_scale = static_cast<float>(1.0 / (1.0 - dropout_p));
  p.seed = seed;
  p.offset = offset;
  p.vector_io = rows_move_in_chunks(q) && rows_move_in_chunks(k) && rows_move_in_chunks(v);
  return p;
}

// ---------------------------------------------------------------- tensor-core path

bool shape_in_grid_limits(const AttentionShape& s) {
  if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128) return false;
  if (s.batch <= 0 || s.heads <= 0 || s.q_len <= 0 || s.kv_len <= 0) return false;
  return s.batch * s.heads <= 65535 && s.q_len <= (int64_t{1} << 24) &&
         s.kv_len <= (int64_t{1} << 24);
}

template <class F>
void dispatch_tc_dim(int64_t head_dim, F f) {
  switch (head_dim) {
    case 32:
      f(std::integral_constant<int, 32>{});
      break;
    case 64:
      f(std::integral_constant<int, 64>{});
      break;
    case 128:
      f(std::integral_constant<int, 128>{});
      break;
    default:
      FG_CHECK(false, "attention: head dim ", head_dim, " is not supported by the tensor-core kernel");
  }
}

bool tensor_core_supported(const AttentionShape& s) {
  if (!tensor_core_attention_enabled() || s.dtype != DType::BFloat16 || !shape_in_grid_limits(s))
    return false;
  if (device_properties().major < 8) return false;  // bfloat16 WMMA needs sm_80
  size_t most = 0;
  dispatch_tc_dim(s.head_dim, [&](auto dim) {
    using L = tc::Layout<decltype(dim)::value>;
    most = std::max({L::kForwardBytes, L::kQueryBytes, L::kKeyBytes});
  });
  return most <= device_properties().sharedMemPerBlockOptin;
}

void tc_forward(const AttentionShape& s, AttentionParams p) {
  const dim3 grid(static_cast<unsigned>(ceil_div(s.q_len, tc::kRows)),
                  static_cast<unsigned>(s.batch * s.heads));
  dispatch_tc_dim(s.head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    static const bool configured = (allow_shared(tc::forward_kernel<D>), true);
    (void)configured;
    tc::forward_kernel<D><<<grid, tc::kThreads, tc::Layout<D>::kForwardBytes, stream()>>>(p);
  });
  FG_CUDA_LAUNCH_CHECK("attention (tensor cores)");
}

// p holds the forward's inputs, out, grad_out, logsumexp and delta; the
// gradients' pointers are set here.
void tc_backward(const AttentionBackwardArgs& a, AttentionParams p) {
  const AttentionShape& s = a.shape;
  p.result = a.grad_q.data_ptr();
  p.result_layout = layout_of(a.grad_q);
  p.result2 = a.grad_k.data_ptr();
  p.result2_layout = layout_of(a.grad_k);
  p.result3 = a.grad_v.data_ptr();
  p.result3_layout = layout_of(a.grad_v);
  p.vector_io = p.vector_io && rows_move_in_chunks(a.grad_q) && rows_move_in_chunks(a.grad_k) &&
                rows_move_in_chunks(a.grad_v);
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  dispatch_tc_dim(s.head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    using L = tc::Layout<D>;
    static const bool configured =
        (allow_shared(tc::backward_query_kernel<D>), allow_shared(tc::backward_key_kernel<D>), true);
    (void)configured;
    tc::backward_query_kernel<D>
        <<<dim3(static_cast<unsigned>(ceil_div(s.q_len, tc::kRows)), bh), tc::kThreads,
           L::kQueryBytes, stream()>>>(p);
    FG_CUDA_LAUNCH_CHECK("attention backward (tensor cores, dq)");
    tc::backward_key_kernel<D>
        <<<dim3(static_cast<unsigned>(ceil_div(s.kv_len, tc::kRows)), bh), tc::kThreads,
           L::kKeyBytes, stream()>>>(p);
    FG_CUDA_LAUNCH_CHECK("attention backward (tensor cores, dk, dv)");
  });
}

bool cuda_core_supported(const AttentionShape& s) {
  if (s.dtype != DType::Float32 && s.dtype != DType::BFloat16) return false;
  if (!shape_in_grid_limits(s)) return false;
  const size_t limit = device_properties().sharedMemPerBlockOptin;
  return forward_shared_bytes(s.q_len, s.kv_len, s.head_dim) <= limit &&
         backward_query_shared_bytes(s.q_len, s.kv_len, s.head_dim) <= limit &&
         backward_key_shared_bytes(s.q_len, s.kv_len, s.head_dim) <= limit;
}

}  // namespace

bool attention_supported(const AttentionShape& s) {
  return tensor_core_supported(s) || cuda_core_supported(s);
}

void attention(const AttentionForwardArgs& a) {
  const AttentionShape& s = a.shape;
  FG_CHECK(attention_supported(s), "attention: shape not supported by the fused kernel");
  AttentionParams p = common_params(s, a.q, a.k, a.v, a.scale, a.dropout_p, a.seed, a.offset);
  check_head_tensor(a.out, s, s.q_len, "out");
  FG_CHECK(a.logsumexp.defined() && a.logsumexp.dtype() == DType::Float32 &&
               a.logsumexp.is_contiguous() && a.logsumexp.numel() == s.batch * s.heads * s.q_len,
           "attention: logsumexp must be a contiguous float32 tensor of B * H * Lq values");
  p.result = a.out.data_ptr();
  p.result_layout = layout_of(a.out);
  p.logsumexp = static_cast<float*>(a.logsumexp.data_ptr());
  if (tensor_core_supported(s)) {
    p.vector_io = p.vector_io && rows_move_in_chunks(a.out);
    tc_forward(s, p);
    return;
  }
  const size_t shared = forward_shared_bytes(s.q_len, s.kv_len, s.head_dim);
  const dim3 grid(static_cast<unsigned>(ceil_div(s.q_len, kRowsPerBlock)),
                  static_cast<unsigned>(s.batch * s.heads));
  dispatch_attention(s, "attention", [&](auto type_tag, auto dim) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim)::value;
    static const bool configured = (allow_shared(attention_forward_kernel<T, D>), true);
    (void)configured;
    attention_forward_kernel<T, D><<<grid, kThreads, shared, stream()>>>(p);
  });
  FG_CUDA_LAUNCH_CHECK("attention");
}

void attention_backward(const AttentionBackwardArgs& a) {
  const AttentionShape& s = a.shape;
  FG_CHECK(attention_supported(s), "attention backward: shape not supported by the fused kernel");
  AttentionParams p = common_params(s, a.q, a.k, a.v, a.scale, a.dropout_p, a.seed, a.offset);
  check_head_tensor(a.out, s, s.q_len, "out");
  check_head_tensor(a.grad_out, s, s.q_len, "grad_out");
  check_head_tensor(a.grad_q, s, s.q_len, "grad_q");
  check_head_tensor(a.grad_k, s, s.kv_len, "grad_k");
  check_head_tensor(a.grad_v, s, s.kv_len, "grad_v");
  FG_CHECK(a.logsumexp.defined() && a.logsumexp.dtype() == DType::Float32 &&
               a.logsumexp.numel() == s.batch * s.heads * s.q_len,
           "attention backward: logsumexp from the forward is missing");
  p.out = a.out.data_ptr();
  p.out_layout = layout_of(a.out);
  p.grad_out = a.grad_out.data_ptr();
  p.grad_out_layout = layout_of(a.grad_out);
  p.logsumexp = static_cast<float*>(a.logsumexp.data_ptr());
  DeviceBuffer delta(static_cast<size_t>(s.batch * s.heads * s.q_len) * sizeof(float));
  p.delta = delta.as<float>();
  if (tensor_core_supported(s)) {
    p.vector_io = p.vector_io && rows_move_in_chunks(a.out) && rows_move_in_chunks(a.grad_out);
    tc_backward(a, p);
    return;
  }
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  dispatch_attention(s, "attention backward", [&](auto type_tag, auto dim) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim)::value;
    static const bool configured = (allow_shared(attention_backward_query_kernel<T, D>),
                                    allow_shared(attention_backward_key_kernel<T, D>), true);
    (void)configured;
    AttentionParams query = p;
    query.result = a.grad_q.data_ptr();
    query.result_layout = layout_of(a.grad_q);
    attention_backward_query_kernel<T, D>
        <<<dim3(static_cast<unsigned>(ceil_div(s.q_len, kRowsPerBlock)), bh), kThreads,
           backward_query_shared_bytes(s.q_len, s.kv_len, s.head_dim), stream()>>>(query);
    FG_CUDA_LAUNCH_CHECK("attention backward (dq)");
    AttentionParams key = p;
    key.result2 = a.grad_k.data_ptr();
    key.result2_layout = layout_of(a.grad_k);
    key.result3 = a.grad_v.data_ptr();
    key.result3_layout = layout_of(a.grad_v);
    attention_backward_key_kernel<T, D>
        <<<dim3(static_cast<unsigned>(ceil_div(s.kv_len, kRowsPerBlock)), bh), kThreads,
           backward_key_shared_bytes(s.q_len, s.kv_len, s.head_dim), stream()>>>(key);
    FG_CUDA_LAUNCH_CHECK("attention backward (dk, dv)");
  });
}

}  // namespace fg::cuda
