// What both fused attention paths (the CUDA-core kernels of attention.cu and
// the tensor-core kernels of attention_tc.cuh) take: pointers and strides of
// the (B, H, L, D) head views, sizes, scale and the dropout draw, plus the
// dropout mask's elements as dropout_mask draws them (element e of the
// contiguous (B, H, Lq, Lk) mask: word e % 4 of Philox block e / 4).
// Written against the CUDA subset the host emulation of the tests provides.
#pragma once

#include <cstdint>

#include "engine/philox.h"

namespace fg::cuda {

struct HeadLayout {
  int64_t batch = 0, head = 0, row = 0;  // element strides; the head dim has stride 1
};

struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const void* grad_out = nullptr;
  void* result = nullptr;   // forward: O; dQ kernel: dQ
  void* result2 = nullptr;  // dK/dV kernel: dK
  void* result3 = nullptr;  // dK/dV kernel: dV
  HeadLayout q_layout, k_layout, v_layout, out_layout, grad_out_layout;
  HeadLayout result_layout, result2_layout, result3_layout;
  float* logsumexp = nullptr;  // (B * H * Lq), of the scaled scores
  float* delta = nullptr;      // (B * H * Lq), backward only: dO . O per query
  int heads = 1, q_len = 0, kv_len = 0;
  float scale = 1.0f;
  bool dropout = false;
  float dropout_p = 0.0f, dropout_scale = 1.0f;
  uint64_t seed = 0, offset = 0;
  const uint64_t* offset_base = nullptr;  // see philox_offset_at (null outside a CUDA graph)
  // The offset the dropout draws use (a replay's shift added inside a CUDA graph).
  FG_HOST_DEVICE uint64_t philox_offset() const { return philox_offset_at(offset, offset_base); }
  // Every pointer 16-byte aligned and every stride a multiple of 16 bytes:
  // rows may move in 16-byte pieces (the tensor-core kernels use it).
  bool vector_io = false;
};

__device__ __forceinline__ int64_t head_offset(const HeadLayout& l, int64_t b, int64_t h) {
  return b * l.batch + h * l.head;
}

// Row `row` of head (b, h) of an operand laid out as `l` (an input: const; a
// result: writable).
template <class T>
__device__ __forceinline__ const T* head_row(const void* base, const HeadLayout& l, int64_t b,
                                             int64_t h, int64_t row = 0) {
  return static_cast<const T*>(base) + head_offset(l, b, h) + row * l.row;
}
template <class T>
__device__ __forceinline__ T* head_row(void* base, const HeadLayout& l, int64_t b, int64_t h,
                                       int64_t row = 0) {
  return static_cast<T*>(base) + head_offset(l, b, h) + row * l.row;
}

// The mask's value at element e: 0 or 1 / (1 - p).
__device__ __forceinline__ float mask_value(uint64_t e, const AttentionParams& p) {
  const Philox4 r = philox4x32(e >> 2, p.philox_offset(), p.seed);
  return philox_keeps(r.v[e & 3], p.dropout_p) ? p.dropout_scale : 0.0f;
}

}  // namespace fg::cuda
