// A caching allocator for device memory. A training step allocates and frees
// the same activations every iteration; cudaMalloc and cudaFree synchronize and
// cost tens of microseconds each, so freed blocks are kept on free lists by size
// class and handed out again.
//
// Stream ordering: every kernel of the process runs on one stream, so a block
// freed on the host (its tensor died while kernels using it may still be queued)
// can be handed out at once: whatever uses it next is queued after those kernels.
// Work on another stream (e.g. a future gradient all-reduce) must make the
// compute stream wait on it (an event) before the tensors it touches die.
//
// FGMOE_CUDA_EXACT_ALLOC=1 turns the cache off (one cudaMalloc of the exact size
// per tensor, cudaFree when it dies): slow, but compute-sanitizer's memcheck then
// sees every out-of-bounds access instead of one that lands in a block's slack.
//
// CUDA graphs get pools of their own (GraphPool, below): a captured step's
// allocations must keep their addresses for every replay, so they never mix
// with the shared cache.
//
// Pinned host memory for the loader lives here too.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/cuda/context.h"
#include "engine/cuda_graph.h"
#include "engine/cuda_support.h"

namespace fg {
namespace cuda {

namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr size_t kSmallGranule = 512;

// Size classes: multiples of 512 bytes up to 1 MiB, then 16 steps per power of
// two (at most 6.25% rounding waste). Only exact classes are reused, so a
// repeating sequence of shapes reaches a steady state with no cudaMalloc.
size_t size_class(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (nbytes <= kSmallLimit) return (nbytes + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  size_t pow2 = kSmallLimit;
  while (pow2 < nbytes) pow2 <<= 1;
  const size_t step = pow2 / 16;
  return (nbytes + step - 1) / step * step;
}

size_t requested_bytes(size_t nbytes) {
  return (std::max<size_t>(nbytes, 1) + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
}

}  // namespace

struct GraphPool {
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // by size
  // Blocks of the shared cache freed during the capture: (pointer, size).
  std::vector<std::pair<void*, size_t>> held;
  size_t reserved = 0;  // bytes obtained from cudaMalloc for this pool
};

namespace {

thread_local GraphPool* t_capture_pool = nullptr;

struct Pool {
  Pool() {
    const char* exact_env = std::getenv("FGMOE_CUDA_EXACT_ALLOC");
    exact = exact_env != nullptr && exact_env[0] != '\0' && std::string(exact_env) != "0";
  }
  std::mutex mutex;
  bool exact = false;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  size_t allocated = 0, peak = 0, reserved = 0, device_allocations = 0;
  // What tensors asked for, each rounded up to 512 bytes: the count PyTorch's
  // max_memory_allocated makes, so peaks compare without the size classes' slack.
  size_t requested = 0, peak_requested = 0;
  bool poison = false;
  std::unordered_map<void*, GraphPool*> graph_owner;  // blocks of the graph pools
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may die during static destruction
  return *p;
}

// Frees every cached block (caller holds the lock). Queued kernels may still use
// blocks that were freed on the host, so the stream is drained first.
void release_cached_locked(Pool& p) {
  FG_CUDA_CHECK(cudaStreamSynchronize(stream()));
  // Each block leaves its list before it is freed: a failed cudaFree (which
  // throws) must not leave freed blocks behind to be handed out again.
  for (auto& [size, blocks] : p.free_blocks) {
    while (!blocks.empty()) {
      void* ptr = blocks.back();
      blocks.pop_back();
      p.reserved -= size;
      FG_CUDA_CHECK(cudaFree(ptr));
    }
  }
  p.free_blocks.clear();
}

// A block for a graph being captured: from the pool's free blocks, else a new
// one (cudaMalloc is not a stream operation, so it is allowed to run, not
// recorded, while this thread captures).
void* graph_malloc_locked(Pool& p, GraphPool& g, size_t size) {
  auto it = g.free_blocks.find(size);
  if (it != g.free_blocks.end() && !it->second.empty()) {
    void* ptr = it->second.back();
    it->second.pop_back();
    return ptr;
  }
  void* ptr = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  FG_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  const cudaError_t status = cudaMalloc(&ptr, size);
  cudaThreadExchangeStreamCaptureMode(&mode);
  if (status != cudaSuccess) {
    cudaGetLastError();
    FG_CHECK(false, "CUDA out of memory while capturing a CUDA graph: allocating ", size,
             " bytes with ", p.allocated, " bytes in use, ", p.reserved, " reserved and ", g.reserved,
             " in the graph's pool (", cudaGetErrorString(status), ")");
  }
  g.reserved += size;
  p.reserved += size;
  ++p.device_allocations;
  p.graph_owner.emplace(ptr, &g);
  return ptr;
}

}  // namespace

void* cached_malloc(size_t nbytes) {
  Pool& p = pool();
  const size_t size = p.exact ? std::max<size_t>(nbytes, 1) : size_class(nbytes);
  std::lock_guard<std::mutex> lock(p.mutex);
  void* ptr = nullptr;
  auto it = p.exact ? p.free_blocks.end() : p.free_blocks.find(size);
  if (t_capture_pool) {
    ptr = graph_malloc_locked(p, *t_capture_pool, size);
  } else if (it != p.free_blocks.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
  } else {
    stream();  // makes sure this thread talks to the process's device
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it, give the cache back and try once more
      release_cached_locked(p);
      status = cudaMalloc(&ptr, size);
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      FG_CHECK(false, "CUDA out of memory: allocating ", size, " bytes with ", p.allocated,
               " bytes in use and ", p.reserved, " reserved (", cudaGetErrorString(status), ")");
    }
    p.reserved += size;
    ++p.device_allocations;
  }
  p.allocated += size;
  if (p.allocated > p.peak) p.peak = p.allocated;
  p.requested += requested_bytes(nbytes);
  if (p.requested > p.peak_requested) p.peak_requested = p.requested;
  if (p.poison) FG_CUDA_CHECK(cudaMemsetAsync(ptr, 0xFF, size, stream()));
  return ptr;
}

void cached_free(void* ptr, size_t nbytes) {
  if (!ptr) return;
  Pool& p = pool();
  const size_t size = p.exact ? std::max<size_t>(nbytes, 1) : size_class(nbytes);
  std::lock_guard<std::mutex> lock(p.mutex);
  p.allocated -= size;
  p.requested -= requested_bytes(nbytes);
  if (!p.graph_owner.empty()) {  // no lookup on every free while there are no graphs
    const auto owner = p.graph_owner.find(ptr);
    if (owner != p.graph_owner.end()) {
      owner->second->free_blocks[size].push_back(ptr);
      return;
    }
  }
  if (t_capture_pool) {  // the graph being captured may read it at every replay
    t_capture_pool->held.emplace_back(ptr, size);
    return;
  }
  if (p.exact) {
    // Queued kernels may still use the block (cudaFree is not documented to wait
    // for them): this mode is for compute-sanitizer runs, where speed does not count.
    cudaStreamSynchronize(stream());
    cudaFree(ptr);  // no throw from here: this runs in destructors
    p.reserved -= size;
    return;
  }
  p.free_blocks[size].push_back(ptr);
}

GraphPool* create_graph_pool() { return new GraphPool(); }

void set_capture_pool(GraphPool* pool) { t_capture_pool = pool; }

size_t graph_pool_bytes(const GraphPool* pool) {
  if (!pool) return 0;
  std::lock_guard<std::mutex> lock(cuda::pool().mutex);
  return pool->reserved;
}

void release_graph_pool(GraphPool* pool) {
  if (!pool) return;
  Pool& p = cuda::pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  // Runs from destructors: no throw. In the exact mode blocks are not cached.
  auto give_back = [&](void* ptr, size_t size) {
    if (p.exact) {
      cudaFree(ptr);
      p.reserved -= size;
    } else {
      p.free_blocks[size].push_back(ptr);
    }
  };
  for (auto& [size, blocks] : pool->free_blocks)
    for (void* ptr : blocks) {
      p.graph_owner.erase(ptr);
      give_back(ptr, size);
    }
  for (auto& [ptr, size] : pool->held) give_back(ptr, size);
  // Blocks still in use (say a loss the caller keeps) join the shared cache when freed.
  for (auto it = p.graph_owner.begin(); it != p.graph_owner.end();)
    it = it->second == pool ? p.graph_owner.erase(it) : std::next(it);
  delete pool;
}

DeviceBuffer::DeviceBuffer(size_t nbytes) : ptr_(cached_malloc(nbytes)), nbytes_(nbytes) {}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cached_free(ptr_, nbytes_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(other.ptr_), nbytes_(other.nbytes_) {
  other.ptr_ = nullptr;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cached_free(ptr_, nbytes_);
    ptr_ = other.ptr_;
    nbytes_ = other.nbytes_;
    other.ptr_ = nullptr;
  }
  return *this;
}

}  // namespace cuda

// ---------------------------------------------------------------- public API

CudaMemoryStats cuda_memory_stats() {
  CudaMemoryStats stats;
  if (!cuda_available()) return stats;
  cuda::Pool& p = cuda::pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  stats.allocated = p.allocated;
  stats.peak_allocated = p.peak;
  stats.requested = p.requested;
  stats.peak_requested = p.peak_requested;
  stats.reserved = p.reserved;
  stats.device_allocations = p.device_allocations;
  stats.caching = !p.exact;
  return stats;
}

void cuda_reset_peak_memory() {
  cuda::Pool& p = cuda::pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.peak = p.allocated;
  p.peak_requested = p.requested;
}

void cuda_empty_cache() {
  if (!cuda_available()) return;
  FG_CHECK(!cuda_graph_capturing(), "cuda_empty_cache: not allowed inside a CUDA graph capture (it waits for the device)");
  cuda::Pool& p = cuda::pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  cuda::release_cached_locked(p);
}

void cuda_set_poison_allocations(bool on) {
  cuda::Pool& p = cuda::pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.poison = on;
}

// ---------------------------------------------------------------- pinned host memory

namespace {

struct PinnedRegistry {
  std::mutex mutex;
  std::unordered_set<void*> pinned;  // from cudaHostAlloc; others came from aligned_alloc
};

PinnedRegistry& pinned_registry() {
  static PinnedRegistry* r = new PinnedRegistry();
  return *r;
}

constexpr size_t kHostAlignment = 64;

}  // namespace

void* pinned_alloc(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (cuda_available()) {
    cuda::stream();  // the device of this process, on this thread
    void* ptr = nullptr;
    FG_CUDA_CHECK(cudaHostAlloc(&ptr, nbytes, cudaHostAllocDefault));
    PinnedRegistry& r = pinned_registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.pinned.insert(ptr);
    return ptr;
  }
  void* ptr = std::aligned_alloc(kHostAlignment,
                                 (nbytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
  FG_CHECK(ptr != nullptr, "out of host memory allocating ", nbytes, " bytes");
  return ptr;
}

void pinned_free(void* ptr) {
  if (!ptr) return;
  bool was_pinned = false;
  {
    PinnedRegistry& r = pinned_registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    was_pinned = r.pinned.erase(ptr) > 0;
  }
  if (was_pinned) {
    // Runs from tensor destructors (possibly at exit, after the runtime shut
    // down): an error here cannot be thrown and there is nothing to undo.
    const cudaError_t status = cudaFreeHost(ptr);
    if (status != cudaSuccess) cudaGetLastError();
  } else {
    std::free(ptr);
  }
}

Tensor empty_pinned(const Shape& shape, DType dtype) {
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* ptr = pinned_alloc(nbytes);
  return Tensor::from_blob(ptr, shape, dtype, kCPU, [](void* p) { pinned_free(p); });
}

}  // namespace fg
