// Device queries and the CUDA facilities of engine/cuda_support.h for a build
// without the CUDA backend: host memory instead of pinned memory, no device.
#include <algorithm>
#include <cstdlib>

#include "engine/cuda_graph.h"
#include "engine/cuda_support.h"
#include "engine/device.h"

namespace fg {

bool cuda_compiled() { return false; }
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }

namespace {
constexpr size_t kHostAlignment = 64;
bool g_allow_tf32 = false;
bool g_fused_attention = true;
bool g_tensor_core_attention = true;
}  // namespace

void* pinned_alloc(size_t nbytes) {
  const size_t rounded =
      (std::max<size_t>(nbytes, 1) + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* ptr = std::aligned_alloc(kHostAlignment, rounded);
  FG_CHECK(ptr != nullptr, "out of host memory allocating ", nbytes, " bytes");
  return ptr;
}

void pinned_free(void* ptr) { std::free(ptr); }

Tensor empty_pinned(const Shape& shape, DType dtype) {
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor::from_blob(pinned_alloc(nbytes), shape, dtype, kCPU,
                           [](void* p) { pinned_free(p); });
}

void copy_to_device_async(const Tensor&, const Tensor&) {
  FG_CHECK(false, "copy_to_device_async: fgmoe was built without CUDA");
}

UploadFence::~UploadFence() = default;
void UploadFence::record() {}
bool UploadFence::ready() const { return true; }
void UploadFence::wait() const {}

void cuda_set_device(int index) {
  FG_CHECK(index == 0, "cuda_set_device(", index, "): fgmoe was built without CUDA");
}
int cuda_current_device() { return -1; }
void* cuda_stream() { return nullptr; }
void cuda_synchronize() {}

CudaMemoryStats cuda_memory_stats() { return {}; }
void cuda_reset_peak_memory() {}
void cuda_empty_cache() {}
void cuda_set_poison_allocations(bool) {}

void cuda_set_allow_tf32(bool on) { g_allow_tf32 = on; }
bool cuda_allow_tf32() { return g_allow_tf32; }
void cuda_set_fused_attention(bool on) { g_fused_attention = on; }
bool cuda_fused_attention() { return g_fused_attention; }
void cuda_set_tensor_core_attention(bool on) { g_tensor_core_attention = on; }
bool cuda_tensor_core_attention() { return g_tensor_core_attention; }

// ---- CUDA graphs: never capturing; capturing needs a GPU
bool cuda_graph_capturing() { return false; }
void cuda_graph_on_replay(std::function<void()>) {
  FG_CHECK(false, "cuda_graph_on_replay: fgmoe was built without CUDA");
}
const uint64_t* cuda_graph_offset_base(Generator&) {
  FG_CHECK(false, "cuda_graph_offset_base: fgmoe was built without CUDA");
}
void cuda_write_float64(const Tensor&, const std::vector<double>&) {
  FG_CHECK(false, "cuda_write_float64: fgmoe was built without CUDA");
}

struct CudaGraph::Impl {};
CudaGraph::CudaGraph() = default;
CudaGraph::~CudaGraph() = default;
void CudaGraph::capture(const std::function<void()>&) {
  FG_CHECK(false, "CudaGraph::capture: fgmoe was built without CUDA");
}
void CudaGraph::replay() { FG_CHECK(false, "CudaGraph::replay: nothing has been captured"); }
bool CudaGraph::captured() const { return false; }
size_t CudaGraph::nodes() const { return 0; }
size_t CudaGraph::pool_bytes() const { return 0; }
void CudaGraph::reset() {}

}  // namespace fg
