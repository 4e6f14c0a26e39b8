// What the rest of fgmoe may ask of the CUDA side, whether or not CUDA was
// compiled in: page-locked host memory for the data loader, asynchronous
// uploads, the device's stream, the caching allocator's statistics and the
// math-mode switches. Without CUDA (or without a GPU) pinned memory falls back
// to ordinary host memory, the uploads are plain copies and the statistics are 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/device.h"
#include "engine/tensor.h"

namespace fg {

// ---- page-locked host memory ----
// nbytes of host memory the GPU can read by DMA (ordinary aligned memory when
// there is no GPU). Free with pinned_free.
void* pinned_alloc(size_t nbytes);
void pinned_free(void* ptr);
// A CPU tensor whose storage is page-locked when a GPU is present.
Tensor empty_pinned(const Shape& shape, DType dtype = DType::Float32);

// ---- asynchronous uploads ----
// Queues a copy of the contiguous CPU tensor `host` into the contiguous CUDA
// tensor `device_dst` (same shape and dtype) on the device's stream and returns
// at once. The host memory must stay unchanged until an UploadFence recorded
// after this call reports ready: use pinned host memory (a pageable source makes
// CUDA stage it, which waits). Without CUDA it throws (there is no device).
// The copy is ordered after the kernels already queued (one stream): the host
// does not wait, but the copy does not overlap compute. Overlap needs a copy
// stream and an event the compute stream waits on (not built yet).
void copy_to_device_async(const Tensor& host, const Tensor& device_dst);

// A marker in the device's stream: ready once everything queued before record()
// has run. The loader records one after each upload and refills that pinned
// buffer only when it is ready.
class UploadFence {
 public:
  UploadFence() = default;
  ~UploadFence();
  UploadFence(const UploadFence&) = delete;
  UploadFence& operator=(const UploadFence&) = delete;
  void record();       // no-op without a GPU
  bool ready() const;  // true when nothing is pending
  void wait() const;   // blocks the calling thread until ready

 private:
  [[maybe_unused]] void* event_ = nullptr;  // cudaEvent_t (unused without CUDA)
};

// Uploads the host tensors of one batch after another without waiting for the
// device: each upload is queued with copy_to_device_async, and the host tensors
// are kept alive until a fence recorded after them reports that the copies have
// run, so a loader cannot refill memory the device is still reading. For a CPU
// device the host tensors are used as they are. A training loop calls, per
// batch: release() (before fetching the next batch), upload() for each tensor,
// then commit().
class BatchUploader {
 public:
  explicit BatchUploader(Device device) : device_(device) {}
  ~BatchUploader();
  BatchUploader(const BatchUploader&) = delete;
  BatchUploader& operator=(const BatchUploader&) = delete;
  // Waits for the committed batch's copies (normally long done) and lets go of its host tensors.
  void release();
  // The device copy of the CPU tensor `host`, queued; an undefined tensor stays undefined.
  Tensor upload(const Tensor& host);
  // Marks the end of this batch's copies.
  void commit();
  // Host tensors still held (their copies may be in flight).
  size_t held() const { return held_.size(); }

 private:
  Device device_;
  std::vector<Tensor> held_;
  bool committed_ = true;
  UploadFence fence_;
};

// ---- the device ----
// Selects the GPU this process uses (one per process, as one rank of a
// distributed run). Must be called before the first CUDA tensor is created.
void cuda_set_device(int index);
int cuda_current_device();
// The one stream every kernel of this process runs on (a cudaStream_t), for
// libraries such as NCCL that take a stream; nullptr without a GPU.
void* cuda_stream();
// Waits until every queued kernel has finished (no-op without a GPU).
void cuda_synchronize();

// ---- the caching allocator ----
struct CudaMemoryStats {
  size_t allocated = 0;           // bytes in live tensors
  size_t peak_allocated = 0;      // since start or the last reset_peak
  // The tensors' own sizes, each rounded up to 512 bytes (allocated counts the
  // size classes, up to 6.25% more): what PyTorch's memory_allocated counts.
  size_t requested = 0, peak_requested = 0;
  size_t reserved = 0;            // bytes obtained from cudaMalloc (live + cached)
  size_t device_allocations = 0;  // cudaMalloc calls so far (flat in the steady state)
  bool caching = true;            // false when FGMOE_CUDA_EXACT_ALLOC turns the cache off
};
CudaMemoryStats cuda_memory_stats();
void cuda_reset_peak_memory();
// Returns cached, unused blocks to the driver (synchronizes the device).
void cuda_empty_cache();
// Testing aid: when on, every block handed out is first filled with 0xFF bytes
// (NaN for floating types), so a kernel that leaves an output element unwritten
// is caught by a NaN check.
void cuda_set_poison_allocations(bool on);

// ---- math modes ----
// TF32 tensor cores for float32 GEMMs and the fused attention (off by default,
// as PyTorch's matmul).
void cuda_set_allow_tf32(bool on);
bool cuda_allow_tf32();
// The fused attention kernel (on by default); off makes CUDA use the composite
// matmul-softmax-dropout-matmul path, as the CPU does.
void cuda_set_fused_attention(bool on);
bool cuda_fused_attention();
// Tensor cores for the fused attention (on by default): bfloat16, and float32
// as TF32 when TF32 is allowed; off makes both use the CUDA-core kernel (for
// comparisons).
void cuda_set_tensor_core_attention(bool on);
bool cuda_tensor_core_attention();

}  // namespace fg
