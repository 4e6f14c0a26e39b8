// Fused scaled dot-product attention: the launches of the CUDA-core kernels
// (attention_simt.cuh, float32 and bfloat16) and of the tensor-core kernels
// (attention_tc.cuh, bfloat16, and float32 as TF32 where allowed, on sm_80 and
// later), and the choice between them
// and the composite path.
#include <algorithm>

#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/attention_simt.cuh"
#include "engine/cuda/attention_tc.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/philox.h"

namespace fg::cuda {

namespace {

using namespace simt;

HeadLayout layout_of(const Tensor& t) { return HeadLayout{t.stride(0), t.stride(1), t.stride(2)}; }

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

// Rows move in 16-byte pieces (the tensor-core kernels): the data 16-byte
// aligned and every stride a whole number of pieces.
bool rows_move_in_chunks(const Tensor& t) {
  const int64_t per = 16 / static_cast<int64_t>(dtype_size(t.dtype()));
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % per == 0 &&
         t.stride(1) % per == 0 && t.stride(2) % per == 0;
}

AttentionParams common_params(const AttentionShape& s, const Tensor& q, const Tensor& k,
                              const Tensor& v, double scale, double dropout_p, uint64_t seed,
                              uint64_t offset, const uint64_t* offset_base) {
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
  p.offset_base = offset_base;
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

// bfloat16 always; float32 as TF32 only where TF32 is allowed (cuda_set_allow_tf32),
// as for float32 GEMMs.
bool tensor_core_supported(const AttentionShape& s) {
  if (!tensor_core_attention_enabled() || !shape_in_grid_limits(s)) return false;
  if (s.dtype != DType::BFloat16 && !(s.dtype == DType::Float32 && allow_tf32())) return false;
  if (device_properties().major < 8) return false;  // bfloat16 and tf32 WMMA need sm_80
  size_t most = 0;
  dispatch_attention(s, "attention", [&](auto type_tag, auto dim) {
    most = tc::Layout<decltype(type_tag), decltype(dim)::value>::kMostBytes;
  });
  return most <= device_properties().sharedMemPerBlockOptin;
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
  const bool tensor_cores = tensor_core_supported(s);
  FG_CHECK(tensor_cores || cuda_core_supported(s),
           "attention: shape not supported by the fused kernel");
  AttentionParams p = common_params(s, a.q, a.k, a.v, a.scale, a.dropout_p, a.seed, a.offset,
                                    a.offset_base);
  check_head_tensor(a.out, s, s.q_len, "out");
  FG_CHECK(a.logsumexp.defined() && a.logsumexp.dtype() == DType::Float32 &&
               a.logsumexp.is_contiguous() && a.logsumexp.numel() == s.batch * s.heads * s.q_len,
           "attention: logsumexp must be a contiguous float32 tensor of B * H * Lq values");
  p.result = a.out.data_ptr();
  p.result_layout = layout_of(a.out);
  p.logsumexp = static_cast<float*>(a.logsumexp.data_ptr());
  p.vector_io = p.vector_io && rows_move_in_chunks(a.out);
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  dispatch_attention(s, "attention", [&](auto type_tag, auto dim) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim)::value;
    if (tensor_cores) {
      static const bool configured = (allow_shared(tc::forward_kernel<T, D>), true);
      (void)configured;
      tc::forward_kernel<T, D><<<dim3(static_cast<unsigned>(ceil_div(s.q_len, tc::kRows)), bh),
                                 tc::kThreads, tc::Layout<T, D>::kForwardBytes, stream()>>>(p);
    } else {
      static const bool configured = (allow_shared(attention_forward_kernel<T, D>), true);
      (void)configured;
      attention_forward_kernel<T, D><<<dim3(row_blocks(s.q_len), bh), kThreads,
                                       forward_shared_bytes(s.q_len, s.kv_len, D), stream()>>>(p);
    }
  });
  FG_CUDA_LAUNCH_CHECK(tensor_cores ? "attention (tensor cores)" : "attention");
}

void attention_backward(const AttentionBackwardArgs& a) {
  const AttentionShape& s = a.shape;
  const bool tensor_cores = tensor_core_supported(s);
  FG_CHECK(tensor_cores || cuda_core_supported(s),
           "attention backward: shape not supported by the fused kernel");
  AttentionParams p = common_params(s, a.q, a.k, a.v, a.scale, a.dropout_p, a.seed, a.offset,
                                    a.offset_base);
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
  // The dQ kernel writes result, the dK/dV kernel result2 and result3.
  p.result = a.grad_q.data_ptr();
  p.result_layout = layout_of(a.grad_q);
  p.result2 = a.grad_k.data_ptr();
  p.result2_layout = layout_of(a.grad_k);
  p.result3 = a.grad_v.data_ptr();
  p.result3_layout = layout_of(a.grad_v);
  for (const Tensor* t : {&a.out, &a.grad_out, &a.grad_q, &a.grad_k, &a.grad_v})
    p.vector_io = p.vector_io && rows_move_in_chunks(*t);
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  dispatch_attention(s, "attention backward", [&](auto type_tag, auto dim) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim)::value;
    if (tensor_cores) {
      using L = tc::Layout<T, D>;
      static const bool configured = (allow_shared(tc::backward_query_kernel<T, D>),
                                      allow_shared(tc::backward_key_kernel<T, D>), true);
      (void)configured;
      tc::backward_query_kernel<T, D>
          <<<dim3(static_cast<unsigned>(ceil_div(s.q_len, tc::kRows)), bh), tc::kThreads,
             L::kQueryBytes, stream()>>>(p);
      FG_CUDA_LAUNCH_CHECK("attention backward (tensor cores, dq)");
      tc::backward_key_kernel<T, D>
          <<<dim3(static_cast<unsigned>(ceil_div(s.kv_len, tc::kRows)), bh), tc::kThreads,
             L::kKeyBytes, stream()>>>(p);
      FG_CUDA_LAUNCH_CHECK("attention backward (tensor cores, dk, dv)");
      return;
    }
    static const bool configured = (allow_shared(attention_backward_query_kernel<T, D>),
                                    allow_shared(attention_backward_key_kernel<T, D>), true);
    (void)configured;
    attention_backward_query_kernel<T, D>
        <<<dim3(row_blocks(s.q_len), bh), kThreads,
           backward_query_shared_bytes(s.q_len, s.kv_len, D), stream()>>>(p);
    FG_CUDA_LAUNCH_CHECK("attention backward (dq)");
    attention_backward_key_kernel<T, D>
        <<<dim3(row_blocks(s.kv_len), bh), kThreads,
           backward_key_shared_bytes(s.q_len, s.kv_len, D), stream()>>>(p);
    FG_CUDA_LAUNCH_CHECK("attention backward (dk, dv)");
  });
}

}  // namespace fg::cuda