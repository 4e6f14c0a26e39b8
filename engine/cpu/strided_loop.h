// Iteration over N operands sharing one shape with arbitrary (byte) strides.
// Dimensions are coalesced where every operand is contiguous across them, so a
// contiguous case becomes one flat loop; the index range is split among OpenMP
// threads when it is large enough to pay.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "engine/tensor.h"

namespace fg::cpu {

constexpr int kMaxLoopDims = 16;
// Below this many elements a loop runs on one thread.
constexpr int64_t kParallelGrain = 32768;

template <int N>
struct StridedLoop {
  int ndim = 0;
  int64_t sizes[kMaxLoopDims];
  int64_t strides[N][kMaxLoopDims];  // bytes; innermost dimension last
  std::array<char*, N> base;
  int64_t numel = 1;
};

// Operands must all have `shape` (broadcasting already applied as stride 0).
template <int N>
StridedLoop<N> make_loop(const Shape& shape, const std::array<const Tensor*, N>& operands) {
  StridedLoop<N> loop;
  FG_CHECK(shape.size() <= static_cast<size_t>(kMaxLoopDims), "tensors of more than ",
           kMaxLoopDims, " dimensions are not supported");
  for (int op = 0; op < N; ++op) loop.base[op] = static_cast<char*>(operands[op]->data_ptr());
  // Build from the innermost dimension outwards, skipping size-1 dimensions and
  // merging a dimension into the previous one when every operand allows it.
  int64_t sizes[kMaxLoopDims];
  int64_t strides[N][kMaxLoopDims];
  int nd = 0;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    const int64_t size = shape[d];
    loop.numel *= size;
    if (size == 1) continue;
    if (nd > 0) {
      bool mergeable = true;
      for (int op = 0; op < N; ++op) {
        const int64_t stride =
            operands[op]->strides()[d] * static_cast<int64_t>(operands[op]->element_size());
        if (stride != strides[op][nd - 1] * sizes[nd - 1]) mergeable = false;
      }
      if (mergeable) {
        sizes[nd - 1] *= size;
        continue;
      }
    }
    sizes[nd] = size;
    for (int op = 0; op < N; ++op)
      strides[op][nd] =
          operands[op]->strides()[d] * static_cast<int64_t>(operands[op]->element_size());
    ++nd;
  }
  if (nd == 0) {  // a single element
    sizes[0] = 1;
    for (int op = 0; op < N; ++op) strides[op][0] = 0;
    nd = 1;
  }
  loop.ndim = nd;
  for (int i = 0; i < nd; ++i) {  // reverse into outermost-first order
    loop.sizes[i] = sizes[nd - 1 - i];
    for (int op = 0; op < N; ++op) loop.strides[op][i] = strides[op][nd - 1 - i];
  }
  return loop;
}

// Calls inner(ptrs, count, inner_strides) over runs of the innermost dimension
// covering linear indices [begin, end).
template <int N, class Inner>
void run_range(const StridedLoop<N>& loop, int64_t begin, int64_t end, Inner& inner) {
  const int nd = loop.ndim;
  const int64_t inner_size = loop.sizes[nd - 1];
  int64_t coord[kMaxLoopDims];
  int64_t rest = begin;
  for (int d = nd - 1; d >= 0; --d) {
    coord[d] = rest % loop.sizes[d];
    rest /= loop.sizes[d];
  }
  std::array<char*, N> ptrs;
  int64_t inner_strides[N];
  for (int op = 0; op < N; ++op) inner_strides[op] = loop.strides[op][nd - 1];
  int64_t index = begin;
  while (index < end) {
    for (int op = 0; op < N; ++op) {
      char* p = loop.base[op];
      for (int d = 0; d < nd; ++d) p += coord[d] * loop.strides[op][d];
      ptrs[op] = p;
    }
    const int64_t count = std::min(inner_size - coord[nd - 1], end - index);
    inner(ptrs, count, inner_strides);
    index += count;
    coord[nd - 1] += count;
    for (int d = nd - 1; d > 0 && coord[d] >= loop.sizes[d]; --d) {
      coord[d] = 0;
      ++coord[d - 1];
    }
  }
}

template <int N, class Inner>
void for_each_run(const StridedLoop<N>& loop, Inner inner) {
  const int64_t total = loop.numel;
  if (total == 0) return;
  const int threads = omp_get_max_threads();
  if (total < kParallelGrain || threads == 1 || omp_in_parallel()) {
    run_range(loop, 0, total, inner);
    return;
  }
  const int64_t chunks = std::min<int64_t>(threads, (total + kParallelGrain - 1) / kParallelGrain);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
  for (int64_t c = 0; c < chunks; ++c) {
    // Chunk borders rounded to 16 elements keep vector loops aligned.
    int64_t begin = total * c / chunks, end = total * (c + 1) / chunks;
    begin = c == 0 ? 0 : (begin & ~int64_t{15});
    end = c == chunks - 1 ? total : (end & ~int64_t{15});
    Inner local = inner;
    run_range(loop, begin, end, local);
  }
}

// Splits [0, n) among threads when work (an estimate of elements touched) is large.
template <class F>
void parallel_for(int64_t n, int64_t work, F fn) {
  const int threads = omp_get_max_threads();
  if (n <= 1 || work < kParallelGrain || threads == 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(threads, n);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
  for (int64_t c = 0; c < chunks; ++c) fn(n * c / chunks, n * (c + 1) / chunks);
}

}  // namespace fg::cpu
