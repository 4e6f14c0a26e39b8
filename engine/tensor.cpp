#include "engine/tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <sstream>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/state_dict.h"

namespace fg {

// ---------------------------------------------------------------- helpers

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  FG_CHECK(dim >= lo && dim <= hi, op, ": dimension ", dim, " out of range for a tensor of ",
           ndim, " dimensions");
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

// ---------------------------------------------------------------- storage

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = backend_for(device).allocate(nbytes);
  owned_by_backend_ = true;
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

Storage::~Storage() {
  if (owned_by_backend_) {
    backend_for(device_).deallocate(data_, nbytes_);
  } else if (deleter_) {
    deleter_(data_);
  }
}

// ---------------------------------------------------------------- state dict

void StateDict::insert(const std::string& name, const Tensor& tensor) {
  for (auto& entry : entries_) {
    if (entry.first == name) {
      entry.second = tensor;
      return;
    }
  }
  entries_.emplace_back(name, tensor);
}

const Tensor* StateDict::find(const std::string& name) const {
  for (const auto& entry : entries_)
    if (entry.first == name) return &entry.second;
  return nullptr;
}

const Tensor& StateDict::at(const std::string& name) const {
  const Tensor* t = find(name);
  FG_CHECK(t != nullptr, "state dict has no key '", name, "'");
  return *t;
}

bool StateDict::erase(const std::string& name) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& e) { return e.first == name; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

// ---------------------------------------------------------------- creation

namespace {

Tensor make_tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset,
                   DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

void check_shape(const Shape& shape) {
  for (int64_t s : shape) FG_CHECK(s >= 0, "negative size in shape ", shape_str(shape));
}

// A view of t's storage with new geometry; autograd is the caller's business.
Tensor alias(const Tensor& t, Shape shape, Shape strides, int64_t offset) {
  return make_tensor(t.storage(), std::move(shape), std::move(strides), offset, t.dtype());
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape);
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto storage = std::make_shared<Storage>(nbytes, device);
  return make_tensor(std::move(storage), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.numel() > 0) backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::scalar(double value, DType dtype, Device device) {
  return full({}, value, dtype, device);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  std::vector<double> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), 0.0);
  return from_vector(values, {n}, device).to(dtype);
}

Tensor Tensor::from_host(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  const size_t nbytes = static_cast<size_t>(t.numel()) * dtype_size(dtype);
  if (nbytes) backend_for(device).copy_from_host(t.data_ptr(), data, nbytes);
  return t;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  static_assert(!std::is_same_v<T, bool>, "use uint8_t values and .to(DType::Bool)");
  FG_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
           values.size(), " values do not fill shape ", shape_str(shape));
  return from_host(values.data(), shape, DTypeOf<T>::value, device);
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<BFloat16>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<Float16>&, const Shape&, Device);

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device,
                         std::function<void(void*)> deleter) {
  check_shape(shape);
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto storage = std::make_shared<Storage>(data, nbytes, device, std::move(deleter));
  return make_tensor(std::move(storage), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                            const Shape& strides, int64_t offset, DType dtype) {
  check_shape(shape);
  FG_CHECK(strides.size() == shape.size(), "from_storage: ", strides.size(),
           " strides for shape ", shape_str(shape));
  FG_CHECK(offset >= 0, "from_storage: negative offset ", offset);
  // The furthest element touched must lie inside the storage.
  int64_t last = offset;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty = true;
    FG_CHECK(strides[i] >= 0, "from_storage: negative stride ", strides[i]);
    last += (shape[i] - 1) * strides[i];
  }
  if (!empty) {
    FG_CHECK(static_cast<size_t>(last + 1) * dtype_size(dtype) <= storage->nbytes(),
             "from_storage: view of shape ", shape_str(shape), " at offset ", offset,
             " reaches past the end of a storage of ", storage->nbytes(), " bytes");
  }
  return make_tensor(std::move(storage), shape, strides, offset, dtype);
}

// ---------------------------------------------------------------- geometry

const Shape& Tensor::shape() const { return impl_->shape; }
const Shape& Tensor::strides() const { return impl_->strides; }
int64_t Tensor::offset() const { return impl_->offset; }
int64_t Tensor::dim() const { return static_cast<int64_t>(impl_->shape.size()); }
int64_t Tensor::size(int64_t d) const { return impl_->shape[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return impl_->strides[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(impl_->shape); }
DType Tensor::dtype() const { return impl_->dtype; }
Device Tensor::device() const { return impl_->storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { return impl_->storage; }

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl_->storage->data()) +
         impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = impl_->shape.size(); i-- > 0;) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

// ---------------------------------------------------------------- host access

namespace {
std::atomic<uint64_t> g_host_reads{0};
std::atomic<uint64_t> g_host_waits{0};
}  // namespace

uint64_t host_read_count() { return g_host_reads.load(std::memory_order_relaxed); }
uint64_t host_wait_count() { return g_host_waits.load(std::memory_order_relaxed); }
void note_host_wait() { g_host_waits.fetch_add(1, std::memory_order_relaxed); }

template <class T>
std::vector<T> Tensor::to_vector() const {
  static_assert(!std::is_same_v<T, bool>, "use to_vector<uint8_t>() for bool tensors");
  NoGradGuard no_grad;
  Tensor t = to(DTypeOf<T>::value).contiguous();
  g_host_reads.fetch_add(1, std::memory_order_relaxed);
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty())
    backend_for(t.device()).copy_to_host(out.data(), t.data_ptr(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<uint8_t> Tensor::to_vector() const;
template std::vector<BFloat16> Tensor::to_vector() const;
template std::vector<Float16> Tensor::to_vector() const;

double Tensor::item() const {
  FG_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape_str(shape()));
  if (dtype() == DType::Int64) return static_cast<double>(to_vector<int64_t>()[0]);
  return to_vector<double>()[0];
}

// ---------------------------------------------------------------- conversion

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), target, device());
  if (out.numel()) backend_of(*this).copy(*this, out);
  if (!is_floating(target)) return out;
  const DType source = dtype();
  return record("to_dtype", out, {*this}, [source](const Tensor& g, InputGrads& grads) {
    grads.set(0, g.to(source));
  });
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor src = contiguous();
  Tensor out = Tensor::empty(shape(), dtype(), target);
  const size_t nbytes = static_cast<size_t>(numel()) * element_size();
  if (nbytes) {
    if (target.is_cpu()) {
      g_host_reads.fetch_add(1, std::memory_order_relaxed);
      backend_for(src.device()).copy_to_host(out.data_ptr(), src.data_ptr(), nbytes);
    } else if (src.device().is_cpu()) {
      backend_for(target).copy_from_host(out.data_ptr(), src.data_ptr(), nbytes);
    } else {  // between two accelerators: through the host
      std::vector<char> staging(nbytes);
      g_host_reads.fetch_add(1, std::memory_order_relaxed);
      backend_for(src.device()).copy_to_host(staging.data(), src.data_ptr(), nbytes);
      backend_for(target).copy_from_host(out.data_ptr(), staging.data(), nbytes);
    }
  }
  const Device source = device();
  return record("to_device", out, {*this}, [source](const Tensor& g, InputGrads& grads) {
    grads.set(0, g.to(source));
  });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), dtype(), device());
  if (out.numel()) backend_of(*this).copy(*this, out);
  return record("clone", out, {*this}, [](const Tensor& g, InputGrads& grads) { grads.set(0, g); });
}

// ---------------------------------------------------------------- autograd

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  FG_CHECK(is_leaf() || on, "set_requires_grad(false) on a non-leaf; use detach()");
  FG_CHECK(!on || is_floating(dtype()), "only floating tensors can require gradients, got ",
           dtype_name(dtype()));
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl_->grad; }
void Tensor::set_grad(const Tensor& grad) const { impl_->grad = grad; }
void Tensor::zero_grad() const { impl_->grad = Tensor(); }
bool Tensor::is_leaf() const { return impl_->grad_fn == nullptr; }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return impl_->grad_fn; }

void Tensor::backward() const {
  FG_CHECK(numel() == 1, "backward() without a gradient needs a one-element tensor, got shape ",
           shape_str(shape()));
  run_backward(*this, Tensor::ones(shape(), dtype(), device()));
}

void Tensor::backward(const Tensor& gradient) const { run_backward(*this, gradient); }

Tensor Tensor::detach() const { return alias(*this, shape(), strides(), offset()); }

// ---------------------------------------------------------------- views

namespace {

// Strides for viewing (shape, strides) as new_shape without a copy, if possible
// (the same rule as PyTorch's view: each group of old dimensions merged or split
// must be contiguous within itself).
bool view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape,
                  Shape& new_strides) {
  new_strides.assign(new_shape.size(), 0);
  if (shape_numel(shape) <= 1) {
    new_strides = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.empty() ? 1 : strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(shape.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= shape[tensor_d];
    if (tensor_d == 0 ||
        (shape[tensor_d - 1] != 1 && strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (tensor_d > 0) {
        chunk_base_stride = strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

Shape infer_shape(const Shape& requested, int64_t numel, const char* op) {
  Shape shape = requested;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      FG_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(requested));
      infer = static_cast<int64_t>(i);
    } else {
      FG_CHECK(shape[i] >= 0, op, ": invalid size in ", shape_str(requested));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    FG_CHECK(known > 0 && numel % known == 0, op, ": shape ", shape_str(requested),
             " is invalid for ", numel, " elements");
    shape[infer] = numel / known;
  }
  FG_CHECK(shape_numel(shape) == numel, op, ": shape ", shape_str(requested),
           " is invalid for ", numel, " elements");
  return shape;
}

Tensor record_reshape(const char* name, const Tensor& input, Tensor out) {
  const Shape in_shape = input.shape();
  return record(name, std::move(out), {input}, [in_shape](const Tensor& g, InputGrads& grads) {
    grads.set(0, g.reshape(in_shape));
  });
}

}  // namespace

Tensor Tensor::view(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), "view");
  Shape strides;
  FG_CHECK(view_strides(this->shape(), this->strides(), shape, strides), "view: a tensor of shape ",
           shape_str(this->shape()), " with strides ", shape_str(this->strides()),
           " cannot be viewed as ", shape_str(shape), " (use reshape)");
  return record_reshape("view", *this, alias(*this, shape, strides, offset()));
}

Tensor Tensor::reshape(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), "reshape");
  Shape strides;
  if (view_strides(this->shape(), this->strides(), shape, strides))
    return record_reshape("reshape", *this, alias(*this, shape, strides, offset()));
  return clone().view(shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  FG_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape;
  for (int64_t d = 0; d < start_dim; ++d) shape.push_back(size(d));
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= size(d);
  shape.push_back(merged);
  for (int64_t d = end_dim + 1; d < dim(); ++d) shape.push_back(size(d));
  return reshape(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  FG_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(),
           " dimensions given for a tensor of ", dim());
  Shape shape(dims.size()), strides(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    FG_CHECK(inverse[d] < 0, "permute: dimension ", d, " repeated");
    inverse[d] = static_cast<int64_t>(i);
    shape[i] = size(d);
    strides[i] = stride(d);
  }
  return record("permute", alias(*this, shape, strides, offset()), {*this},
                [inverse](const Tensor& g, InputGrads& grads) { grads.set(0, g.permute(inverse)); });
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  std::vector<int64_t> dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(dim0, dim(), "transpose")], dims[wrap_dim(dim1, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  FG_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = size(d);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), strides = this->strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  const int64_t off = offset() + start * stride(d);
  const Shape in_shape = this->shape();
  return record("slice", alias(*this, shape, strides, off), {*this},
                [in_shape, d, start, end, step](const Tensor& g, InputGrads& grads) {
                  Tensor full = Tensor::zeros(in_shape, g.dtype(), g.device());
                  copy_(full.slice(d, start, end, step), g);
                  grads.set(0, full);
                });
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = size(d);
  FG_CHECK(index >= -n && index < n, "select: index ", index, " out of range for size ", n);
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& requested) const {
  FG_CHECK(static_cast<int64_t>(requested.size()) >= dim(), "expand: cannot expand shape ",
           shape_str(shape()), " to ", shape_str(requested));
  const size_t lead = requested.size() - shape().size();
  Shape shape(requested.size()), strides(requested.size());
  for (size_t i = 0; i < requested.size(); ++i) {
    if (i < lead) {
      FG_CHECK(requested[i] >= 0, "expand: invalid size in ", shape_str(requested));
      shape[i] = requested[i];
      strides[i] = 0;
      continue;
    }
    const int64_t have = this->shape()[i - lead];
    const int64_t want = requested[i] == -1 ? have : requested[i];
    if (have == want) {
      shape[i] = have;
      strides[i] = this->strides()[i - lead];
    } else {
      FG_CHECK(have == 1, "expand: cannot expand shape ", shape_str(this->shape()), " to ",
               shape_str(requested));
      shape[i] = want;
      strides[i] = 0;
    }
  }
  if (shape == this->shape()) return *this;
  const Shape in_shape = this->shape();
  return record("expand", alias(*this, shape, strides, offset()), {*this},
                [in_shape](const Tensor& g, InputGrads& grads) { grads.set(0, sum_to(g, in_shape)); });
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape shape = this->shape(), strides = this->strides();
  const int64_t stride = d < dim() ? this->strides()[d] * this->shape()[d] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return record_reshape("unsqueeze", *this, alias(*this, shape, strides, offset()));
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (size(d) != 1) return *this;
  Shape shape = this->shape(), strides = this->strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return record_reshape("squeeze", *this, alias(*this, shape, strides, offset()));
}

// ---------------------------------------------------------------- printing

namespace {

void print_recursive(std::ostream& os, const std::vector<double>& values, const Shape& shape,
                     size_t d, int64_t& index, int indent, bool integral, int64_t edge) {
  if (shape.empty()) {
    os << values[0];
    return;
  }
  os << '[';
  const int64_t n = shape[d];
  int64_t stride = 1;
  for (size_t i = d + 1; i < shape.size(); ++i) stride *= shape[i];
  for (int64_t i = 0; i < n; ++i) {
    if (edge > 0 && n > 2 * edge && i == edge) {
      os << "...";
      if (d + 1 < shape.size()) os << ",\n" << std::string(indent + 1, ' ');
      else os << ", ";
      index += (n - 2 * edge) * stride;
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == shape.size()) {
      const double v = values[static_cast<size_t>(index++)];
      if (integral) os << static_cast<long long>(v);
      else os << std::setprecision(4) << std::fixed << v << std::defaultfloat;
    } else {
      print_recursive(os, values, shape, d + 1, index, indent + 1, integral, edge);
    }
    if (i + 1 < n) {
      if (d + 1 < shape.size()) os << ",\n" << std::string(indent + 1, ' ');
      else os << ", ";
    }
  }
  os << ']';
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(";
  NoGradGuard no_grad;
  const std::vector<double> values = to_vector<double>();
  int64_t index = 0;
  const bool integral = !is_floating(dtype());
  const int64_t edge = numel() > 1000 ? 3 : 0;
  print_recursive(os, values, shape(), 0, index, 7, integral, edge);
  if (dtype() != DType::Float32 && dtype() != DType::Int64) os << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device='" << device().str() << "'";
  if (requires_grad()) os << ", requires_grad=True";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace fg
