// The one kernel of the CUDA graphs (graph.cu): before a replay, a handful of
// values (the captured generators' Philox offset shifts, or values a step
// reads from device memory) written into device memory by value, in one
// launch that can run ahead of the replay on the same stream.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host.
#pragma once

#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda::graph_detail {

// Values one write may carry: the kernel's block size.
constexpr int kMaxValues = 16;

template <class T>
struct Values {
  T v[kMaxValues];
  int n;
};

FG_KERNELS_BEGIN

// One block of kMaxValues threads; values past n leave dst as it was.
template <class T>
__global__ void write_values(T* dst, Values<T> values) {
  if (static_cast<int>(threadIdx.x) < values.n) dst[threadIdx.x] = values.v[threadIdx.x];
}

FG_KERNELS_END

}  // namespace fg::cuda::graph_detail
