// The process's device, its one stream, launch checks and the public CUDA
// facilities of engine/cuda_support.h.
#include "engine/cuda/context.h"
#include "engine/cuda_graph.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/cuda_support.h"

namespace fg {
namespace cuda {

namespace {

std::atomic<int> g_requested_device{0};
std::atomic<bool> g_context_created{false};
std::atomic<bool> g_allow_tf32{false};
std::atomic<bool> g_fused_attention{true};
std::atomic<bool> g_tensor_core_attention{true};

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaDeviceProp properties{};
  bool sync_checks = false;
};

Context& context() {
  static Context* ctx = [] {
    auto* c = new Context();  // never destroyed: kernels may be queued during static destruction
    c->device = g_requested_device.load();
    g_context_created = true;
    FG_CUDA_CHECK(cudaSetDevice(c->device));
    // Non-blocking: no implicit synchronization with the legacy default stream.
    FG_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    FG_CUDA_CHECK(cudaGetDeviceProperties(&c->properties, c->device));
    const char* sync = std::getenv("FGMOE_CUDA_SYNC_CHECK");
    c->sync_checks = sync != nullptr && std::strcmp(sync, "0") != 0 && sync[0] != '\0';
    return c;
  }();
  return *ctx;
}

// The CUDA runtime's current device is per host thread: a loader thread that
// uploads a batch must talk to the same GPU as the training thread.
thread_local bool t_device_set = false;

}  // namespace

void throw_cuda_error(const char* file, int line, const char* what, cudaError_t status) {
  throw_error(file, line,
              str_cat("CUDA error in ", what, ": ", cudaGetErrorName(status), " (",
                      cudaGetErrorString(status), ")"));
}

cudaStream_t stream() {
  Context& c = context();
  if (!t_device_set) {
    FG_CUDA_CHECK(cudaSetDevice(c.device));
    t_device_set = true;
  }
  return c.stream;
}

int device_index() { return context().device; }
const cudaDeviceProp& device_properties() { return context().properties; }
int multiprocessor_count() { return context().properties.multiProcessorCount; }

void check_launch(const char* op) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw_error(__FILE__, __LINE__,
                str_cat("CUDA kernel launch failed in ", op, ": ", cudaGetErrorName(status), " (",
                        cudaGetErrorString(status), ")"));
  if (context().sync_checks && !cuda_graph_capturing()) {  // a capture runs nothing to wait for
    const cudaError_t run = cudaStreamSynchronize(context().stream);
    if (run != cudaSuccess)
      throw_error(__FILE__, __LINE__,
                  str_cat("CUDA kernel failed in ", op, ": ", cudaGetErrorName(run), " (",
                          cudaGetErrorString(run), ")"));
  }
}

int64_t grid_for(int64_t n, int threads) {
  const int64_t needed = (n + threads - 1) / threads;
  const int64_t fill = int64_t{multiprocessor_count()} * 2048 / threads * 4;
  return std::max<int64_t>(1, std::min(needed, fill));
}

bool allow_tf32() { return g_allow_tf32.load(); }
bool fused_attention_enabled() { return g_fused_attention.load(); }
bool tensor_core_attention_enabled() { return g_tensor_core_attention.load(); }

}  // namespace cuda

// ---------------------------------------------------------------- public API

void cuda_set_device(int index) {
  FG_CHECK(index >= 0 && index < std::max(cuda_device_count(), 1), "cuda_set_device: no GPU ",
           index, " (", cuda_device_count(), " found)");
  FG_CHECK(!cuda::g_context_created || index == cuda::g_requested_device, "cuda_set_device(", index,
           "): the process already uses GPU ", cuda::g_requested_device.load(),
           "; select the device before the first CUDA tensor");
  cuda::g_requested_device = index;
}

int cuda_current_device() { return cuda_available() ? cuda::device_index() : -1; }

void* cuda_stream() { return cuda_available() ? static_cast<void*>(cuda::stream()) : nullptr; }

void cuda_synchronize() {
  if (!cuda_available()) return;
  FG_CHECK(!cuda_graph_capturing(), "cuda_synchronize: not allowed inside a CUDA graph capture");
  FG_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
}

void cuda_set_allow_tf32(bool on) { cuda::g_allow_tf32 = on; }
bool cuda_allow_tf32() { return cuda::g_allow_tf32.load(); }
void cuda_set_fused_attention(bool on) { cuda::g_fused_attention = on; }
bool cuda_fused_attention() { return cuda::g_fused_attention.load(); }
void cuda_set_tensor_core_attention(bool on) { cuda::g_tensor_core_attention = on; }
bool cuda_tensor_core_attention() { return cuda::g_tensor_core_attention.load(); }

void copy_to_device_async(const Tensor& host, const Tensor& device_dst) {
  FG_CHECK(host.defined() && device_dst.defined(), "copy_to_device_async: undefined tensor");
  FG_CHECK(host.device().is_cpu() && device_dst.device().is_cuda(),
           "copy_to_device_async: needs a CPU source and a CUDA destination, got ",
           host.device().str(), " and ", device_dst.device().str());
  FG_CHECK(host.shape() == device_dst.shape() && host.dtype() == device_dst.dtype(),
           "copy_to_device_async: source ", shape_str(host.shape()), " ", dtype_name(host.dtype()),
           " does not match destination ", shape_str(device_dst.shape()), " ",
           dtype_name(device_dst.dtype()));
  FG_CHECK(host.is_contiguous() && device_dst.is_contiguous(),
           "copy_to_device_async: tensors must be contiguous");
  const size_t nbytes = static_cast<size_t>(host.numel()) * host.element_size();
  if (nbytes == 0) return;
  FG_CUDA_CHECK(cudaMemcpyAsync(device_dst.data_ptr(), host.data_ptr(), nbytes,
                                cudaMemcpyHostToDevice, cuda::stream()));
}

UploadFence::~UploadFence() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void UploadFence::record() {
  if (!cuda_available()) return;
  if (!event_) {
    cudaEvent_t event;
    cuda::stream();
    FG_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    event_ = event;
  }
  FG_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda::stream()));
}

bool UploadFence::ready() const {
  if (!event_) return true;
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) {
    cudaGetLastError();  // "not ready" must not reach the next launch check as an error
    return false;
  }
  FG_CUDA_CHECK(status);
  return true;
}

void UploadFence::wait() const {
  if (event_) FG_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

}  // namespace fg
