// The CUDA backend's shared state and checks, usable from host-only (.cpp) and
// device (.cu) translation units: the error macros, the one stream, device
// properties and temporary device buffers from the caching allocator.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/tensor.h"

namespace fg::cuda {

[[noreturn]] void throw_cuda_error(const char* file, int line, const char* what,
                                   cudaError_t status);

// Every CUDA runtime call goes through this; the message names the call.
#define FG_CUDA_CHECK(expr)                                                    \
  do {                                                                         \
    const cudaError_t fg_cuda_status = (expr);                                 \
    if (fg_cuda_status != cudaSuccess)                                         \
      ::fg::cuda::throw_cuda_error(__FILE__, __LINE__, #expr, fg_cuda_status); \
  } while (0)

// After every kernel launch: a bad configuration shows at once; with
// FGMOE_CUDA_SYNC_CHECK=1 in the environment the stream is also synchronized so
// that a fault inside the kernel is reported against the op that caused it.
void check_launch(const char* op);
#define FG_CUDA_LAUNCH_CHECK(op) ::fg::cuda::check_launch(op)

// The stream every kernel, copy and library call of this process is queued on.
cudaStream_t stream();
int device_index();
const cudaDeviceProp& device_properties();
int multiprocessor_count();

// Grid size for a grid-stride loop over n items with `threads` per block: enough
// blocks to fill the GPU a few times over, never more than the work needs.
int64_t grid_for(int64_t n, int threads);

// Switches set through engine/cuda_support.h.
bool allow_tf32();
bool fused_attention_enabled();
bool tensor_core_attention_enabled();

// A temporary device buffer from the caching allocator, released (to the cache,
// stream-ordered) when it goes out of scope. Kernels use it for partial sums.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t nbytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
};

// The caching allocator (engine/cuda/allocator.cpp).
void* cached_malloc(size_t nbytes);
void cached_free(void* ptr, size_t nbytes);

// A CUDA graph's own memory. While a thread captures into a pool, its
// allocations come from the pool (blocks the graph writes at every replay, so
// no one outside the graph may get them) and blocks of the shared cache freed
// on that thread wait in the pool (the graph may still read them) until it is
// released. Blocks of a pool freed by anyone, at any time, go back to the pool.
struct GraphPool;
GraphPool* create_graph_pool();
// Routes this thread's allocations and frees to pool (nullptr: back to the shared cache).
void set_capture_pool(GraphPool* pool);
// Gives every block of pool to the shared cache (blocks still in use join it
// when freed) and deletes it. The graph must be gone and its replays finished.
void release_graph_pool(GraphPool* pool);
size_t graph_pool_bytes(const GraphPool* pool);

}  // namespace fg::cuda
