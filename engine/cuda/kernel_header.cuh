// What a kernel header (.cuh) needs to compile both with nvcc and for the host
// under the tests' emulation of the CUDA subset (tests/cuda_emu/cuda_emu.h,
// included first, defines FGMOE_CUDA_EMULATION):
// - FG_DYNAMIC_SHARED(T, name): the block's dynamic shared memory as a T*;
// - FG_KERNELS_BEGIN / FG_KERNELS_END around a header's kernels: an inline
//   namespace that differs between the two builds, so that a test linking the
//   engine never has two different functions under one name (nvcc emits host
//   launch stubs for the same kernel templates the test compiles as host code).
#pragma once

#if defined(FGMOE_CUDA_EMULATION)
#define FG_KERNELS_BEGIN inline namespace host_emulation {
#else
#define FG_KERNELS_BEGIN inline namespace device {
#define FG_DYNAMIC_SHARED(T, name)                      \
  extern __shared__ __align__(128) float4 name##_raw[]; \
  T* name = reinterpret_cast<T*>(name##_raw)
#endif
#define FG_KERNELS_END }
