// FG_HOST_DEVICE: a function that both backends share, compiled for the GPU
// too when nvcc compiles the including file; a plain inline function for the
// host compiler (the CPU backend, and the tests' emulation of the CUDA subset).
#pragma once

#if defined(__CUDACC__)
#define FG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FG_HOST_DEVICE inline
#endif
