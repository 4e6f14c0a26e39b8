#include "engine/device.h"

#include "engine/backend.h"
#include "engine/error.h"

namespace fg {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return kCPU;
  if (text.rfind("cuda", 0) == 0) {
    if (text == "cuda") return kCUDA;
    if (text.size() > 5 && text[4] == ':') {
      try {
        size_t used = 0;
        const int index = std::stoi(text.substr(5), &used);
        if (used == text.size() - 5 && index >= 0) return Device(DeviceType::CUDA, index);
      } catch (const std::exception&) {
      }
    }
  }
  FG_CHECK(false, "unknown device '", text, "' (expected cpu, cuda or cuda:N)");
  return kCPU;
}

std::string Device::str() const {
  if (type == DeviceType::CPU) return "cpu";
  return "cuda:" + std::to_string(index);
}

namespace {
Backend* g_backends[2] = {nullptr, nullptr};
}

void register_backend(DeviceType type, Backend* backend) {
  g_backends[static_cast<int>(type)] = backend;
}

void Backend::sum_squares(const Tensor& x, const Tensor& out) {
  const Tensor squares = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel()) unary(UnaryOp::Square, x, squares);
  reduce(ReduceOp::Sum, squares, 1, x.numel(), 1, out);
}

void Backend::attention(const AttentionForwardArgs&) {
  FG_CHECK(false, "fused attention is not available on ", device().str());
}

void Backend::attention_backward(const AttentionBackwardArgs&) {
  FG_CHECK(false, "fused attention backward is not available on ", device().str());
}

Backend& cpu_backend();  // engine/cpu

Backend& backend_for(Device device) {
  if (device.is_cpu()) return cpu_backend();
  const bool available = cuda_available();  // registers the CUDA backend on first use
  Backend* backend = g_backends[static_cast<int>(device.type)];
  FG_CHECK(backend != nullptr && available, "device ", device.str(),
           " is not available: ",
           cuda_compiled() ? "no CUDA GPU was found" : "fgmoe was built without CUDA");
  return *backend;
}

}  // namespace fg
