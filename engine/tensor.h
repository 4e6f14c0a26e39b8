// Tensor: a shared handle to (a view of) device storage with shape, strides,
// dtype and, for tensors that take part in autograd, a gradient and the node
// that produced it. Copying a Tensor copies the handle, not the data.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/storage.h"

namespace fg {

using Shape = std::vector<int64_t>;

class Node;
struct TensorImpl;

std::string shape_str(const Shape& shape);  // "(2, 3)"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// Maps a possibly negative dimension into [0, ndim); throws naming the op when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op = "op");

// How many times tensor data has been read into host memory: to_vector(), item(),
// and copies from an accelerator to the CPU (counted for CPU tensors as well). On an
// accelerator each read waits for the queued work, so a training step should make
// none; tests check that with this count.
uint64_t host_read_count();
// How many times the host has waited for an accelerator's queued work to copy
// data (reads back, and synchronous uploads such as from_vector on CUDA; not
// explicit synchronize() calls). A warmed-up training step should make none.
uint64_t host_wait_count();
void note_host_wait();  // for backends

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = kCPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = kCPU);
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = kCPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = kCPU);
  // A 0-dimensional tensor holding value.
  static Tensor scalar(double value, DType dtype = DType::Float32, Device device = kCPU);
  // 0, 1, ..., n-1
  static Tensor arange(int64_t n, DType dtype = DType::Int64, Device device = kCPU);
  // Copies host values (numel(shape) of them) into a new tensor of T's dtype on device.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = kCPU);
  // Copies nbytes of raw host data laid out contiguously as (shape, dtype).
  static Tensor from_host(const void* data, const Shape& shape, DType dtype, Device device = kCPU);
  // Wraps existing memory without copying; deleter runs when the last view dies.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device,
                          std::function<void(void*)> deleter = {});
  // A view of storage with explicit geometry (offset and strides in elements).
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                             const Shape& strides, int64_t offset, DType dtype);

  // ---- geometry ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;  // in elements, into the storage
  int64_t dim() const;
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t element_size() const { return dtype_size(dtype()); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  // Address of the first element (device memory for CUDA tensors).
  void* data_ptr() const;
  template <class T>
  T* data() const {
    FG_CHECK(dtype() == DTypeOf<T>::value, "tensor has dtype ", dtype_name(dtype()),
             ", accessed as ", dtype_name(DTypeOf<T>::value));
    return static_cast<T*>(data_ptr());
  }

  // ---- host access ----
  // Copies to the host in row-major order, converting to T.
  template <class T>
  std::vector<T> to_vector() const;
  // The value of a one-element tensor (synchronizes with the device).
  double item() const;

  // ---- conversion ----
  Tensor to(DType dtype) const;    // differentiable between floating types
  Tensor to(Device device) const;  // differentiable
  Tensor cpu() const { return to(kCPU); }
  Tensor contiguous() const;  // differentiable; returns *this when already contiguous
  Tensor clone() const;       // differentiable; always copies

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as needing a gradient.
  Tensor& set_requires_grad(bool on = true);
  // The accumulated gradient of a leaf (undefined until a backward reaches it).
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  void zero_grad() const;  // drops the gradient (the next backward allocates it afresh)
  bool is_leaf() const;
  const std::shared_ptr<Node>& grad_fn() const;
  // Backpropagates from a one-element tensor (gradient 1) or with an explicit gradient.
  void backward() const;
  void backward(const Tensor& gradient) const;
  // Same data, cut from the graph.
  Tensor detach() const;

  // ---- views and shape (all differentiable) ----
  Tensor reshape(const Shape& shape) const;  // a view when the layout allows it, else a copy
  Tensor view(const Shape& shape) const;     // a view or an error
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const {
    return slice(dim, start, start + length);
  }
  Tensor select(int64_t dim, int64_t index) const;  // removes dim
  Tensor expand(const Shape& shape) const;          // -1 keeps a size
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;

  // ---- printing ----
  std::string str() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  DType dtype = DType::Float32;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

// Element type dispatch: calls fn with a value of the matching C++ type.
#define FG_DISPATCH_CASE(ENUM, TYPE, ...) \
  case ENUM: {                            \
    using scalar_t = TYPE;                \
    __VA_ARGS__();                        \
    break;                                \
  }
// Float32 and Float64, the CPU's compute types.
#define FG_DISPATCH_FLOAT(dtype, name, ...)                                                \
  switch (dtype) {                                                                         \
    FG_DISPATCH_CASE(::fg::DType::Float32, float, __VA_ARGS__)                             \
    FG_DISPATCH_CASE(::fg::DType::Float64, double, __VA_ARGS__)                            \
    default:                                                                               \
      FG_CHECK(false, name, ": dtype ", ::fg::dtype_name(dtype),                           \
               " is not supported on the CPU (float32 and float64 are; convert with .to())"); \
  }
// Every dtype.
#define FG_DISPATCH_ALL(dtype, name, ...)                           \
  switch (dtype) {                                                  \
    FG_DISPATCH_CASE(::fg::DType::Float32, float, __VA_ARGS__)      \
    FG_DISPATCH_CASE(::fg::DType::Float64, double, __VA_ARGS__)     \
    FG_DISPATCH_CASE(::fg::DType::BFloat16, ::fg::BFloat16, __VA_ARGS__) \
    FG_DISPATCH_CASE(::fg::DType::Float16, ::fg::Float16, __VA_ARGS__) \
    FG_DISPATCH_CASE(::fg::DType::Int32, int32_t, __VA_ARGS__)      \
    FG_DISPATCH_CASE(::fg::DType::Int64, int64_t, __VA_ARGS__)      \
    FG_DISPATCH_CASE(::fg::DType::UInt8, uint8_t, __VA_ARGS__)      \
    FG_DISPATCH_CASE(::fg::DType::Bool, bool, __VA_ARGS__)          \
    default: FG_CHECK(false, name, ": unknown dtype");              \
  }

}  // namespace fg
