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

void Backend::sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out) {
  fill(out, 0.0);
  const Tensor one = Tensor::empty(out.shape(), out.dtype(), out.device());
  for (const Tensor& x : xs) {
    sum_squares(x, one);
    binary(BinaryOp::Add, out, one, out);
  }
}

void Backend::scale_many(const std::vector<Tensor>& xs, const Tensor& factor) {
  for (const Tensor& x : xs)
    if (x.numel()) binary(BinaryOp::Mul, x, factor.reshape({}).expand(x.shape()), x);
}

namespace {

// t in dtype `to` (t itself when it has it), through the backend's copy.
Tensor converted(Backend& backend, const Tensor& t, DType to) {
  if (t.dtype() == to) return t;
  Tensor out = Tensor::empty(t.shape(), to, t.device());
  backend.copy(t, out);
  return out;
}

}  // namespace

void Backend::add_layer_norm(const AddLayerNormArgs& a) {
  Tensor branch = a.x;
  if (a.dropout.p > 0.0) {
    branch = Tensor::empty(a.x.shape(), a.x.dtype(), a.x.device());
    dropout(a.x, branch, a.dropout);
  }
  binary(BinaryOp::Add, a.residual, converted(*this, branch, a.sum.dtype()), a.sum);
  layer_norm(a.sum, a.weight, a.bias, a.eps, a.rows, a.cols, a.out, a.mean, a.rstd);
}

void Backend::add_layer_norm_backward(const AddLayerNormBackwardArgs& a) {
  Tensor grad_sum = a.grad_residual;
  if (!grad_sum.defined() && a.grad_x.defined())
    grad_sum = Tensor::empty(a.sum.shape(), a.sum.dtype(), a.sum.device());
  layer_norm_backward(a.grad, a.sum, a.mean, a.rstd, a.weight, a.rows, a.cols, grad_sum,
                      a.grad_weight, a.grad_bias);
  if (!a.grad_x.defined()) return;
  const Tensor g = converted(*this, grad_sum, a.grad_x.dtype());
  if (a.dropout.p > 0.0)
    dropout_backward(g, Tensor(), a.grad_x, a.dropout);
  else
    copy(g, a.grad_x);
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
