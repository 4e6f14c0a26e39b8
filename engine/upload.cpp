// BatchUploader: asynchronous batch uploads, the same code with and without CUDA
// (copy_to_device_async and UploadFence do the device work).
#include <cstdio>

#include "engine/cuda_support.h"

namespace fg {

BatchUploader::~BatchUploader() {
  try {
    release();
  } catch (const std::exception& e) {
    // The host tensors are freed below; a device that failed cannot read them any more.
    std::fprintf(stderr, "fgmoe: waiting for batch uploads failed: %s\n", e.what());
  }
}

void BatchUploader::release() {
  if (held_.empty()) return;
  if (!committed_) fence_.record();  // uploads without commit(): fence them now
  fence_.wait();
  held_.clear();
}

Tensor BatchUploader::upload(const Tensor& host) {
  if (!host.defined() || device_.is_cpu()) return host;
  FG_CHECK(host.device().is_cpu(), "BatchUploader: the source must be a CPU tensor, got one on ",
           host.device().str());
  const Tensor source = host.contiguous();
  Tensor out = Tensor::empty(source.shape(), source.dtype(), device_);
  copy_to_device_async(source, out);
  held_.push_back(source);
  committed_ = false;
  return out;
}

void BatchUploader::commit() {
  if (!held_.empty() && !committed_) fence_.record();
  committed_ = true;
}

}  // namespace fg
