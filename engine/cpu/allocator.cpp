// A caching allocator for large CPU blocks. A training step allocates and frees
// the same large activations every iteration; going to the system each time
// costs an mmap, page faults and zeroing per block. Blocks are rounded to a
// size class and kept on free lists instead; small blocks use malloc directly.
// Live bytes (after rounding) and their peak are counted for every block.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace fg::cpu {

namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kSmallBlock = 1 << 16;
// Cached bytes beyond this are returned to the system.
constexpr size_t kCacheLimit = size_t{8} << 30;

size_t size_class(size_t nbytes) {
  if (nbytes <= kSmallBlock) return (nbytes + kAlignment - 1) & ~(kAlignment - 1);
  // Round up to 1/8 steps between powers of two: at most 12.5% waste.
  size_t pow2 = 1;
  while (pow2 < nbytes) pow2 <<= 1;
  const size_t step = pow2 / 16;
  return (nbytes + step - 1) / step * step;
}

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;
  size_t cached = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may die during static destruction
  return *c;
}

std::atomic<size_t> g_allocated{0};
std::atomic<size_t> g_system_allocations{0};
std::atomic<size_t> g_peak{0};

void count_allocation(size_t size) {
  const size_t now = g_allocated.fetch_add(size, std::memory_order_relaxed) + size;
  size_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace

void* CpuBackend::allocate(size_t nbytes) {
  const size_t size = size_class(std::max<size_t>(nbytes, 1));
  count_allocation(size);
  if (size > kSmallBlock) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_blocks.find(size);
    if (it != c.free_blocks.end()) {
      void* ptr = it->second;
      c.free_blocks.erase(it);
      c.cached -= size;
      return ptr;
    }
  }
  if (size > kSmallBlock) g_system_allocations.fetch_add(1, std::memory_order_relaxed);
  void* ptr = std::aligned_alloc(kAlignment, size);
  if (ptr == nullptr) g_allocated.fetch_sub(size, std::memory_order_relaxed);
  FG_CHECK(ptr != nullptr, "out of host memory allocating ", nbytes, " bytes");
  return ptr;
}

void CpuBackend::deallocate(void* ptr, size_t nbytes) {
  if (!ptr) return;
  const size_t size = size_class(std::max<size_t>(nbytes, 1));
  g_allocated.fetch_sub(size, std::memory_order_relaxed);
  if (size > kSmallBlock) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.cached + size <= kCacheLimit) {
      c.free_blocks.emplace(size, ptr);
      c.cached += size;
      return;
    }
  }
  std::free(ptr);
}

size_t system_allocations() { return g_system_allocations.load(std::memory_order_relaxed); }

size_t cached_bytes() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  return cache().cached;
}

void release_cached_memory() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto& [size, ptr] : c.free_blocks) std::free(ptr);
  c.free_blocks.clear();
  c.cached = 0;
}

size_t CpuBackend::allocated_bytes() const { return g_allocated.load(std::memory_order_relaxed); }
size_t CpuBackend::peak_bytes() const { return g_peak.load(std::memory_order_relaxed); }
void CpuBackend::reset_peak() { g_peak.store(g_allocated.load(std::memory_order_relaxed), std::memory_order_relaxed); }

void CpuBackend::copy_from_host(void* dst, const void* src, size_t nbytes) {
  std::memcpy(dst, src, nbytes);
}

void CpuBackend::copy_to_host(void* dst, const void* src, size_t nbytes) {
  std::memcpy(dst, src, nbytes);
}

}  // namespace fg::cpu
