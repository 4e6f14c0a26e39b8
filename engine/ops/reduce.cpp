// Reductions: sum, mean, max, argmax, and sum_to for broadcast gradients.
#include <algorithm>
#include <numeric>

#include "engine/ops/op_helpers.h"

namespace fg {

namespace detail {

std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    out.resize(static_cast<size_t>(ndim));
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  FG_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": repeated dimension");
  return out;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const bool reduced = std::binary_search(dims.begin(), dims.end(), d);
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

void block_sizes(const Shape& shape, const std::vector<int64_t>& dims, const char* op,
                 int64_t& outer, int64_t& n, int64_t& inner) {
  for (size_t i = 1; i < dims.size(); ++i)
    FG_CHECK(dims[i] == dims[i - 1] + 1, op, ": dimensions must be adjacent");
  outer = n = inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < dims.front()) outer *= shape[d];
    else if (d <= dims.back()) n *= shape[d];
    else inner *= shape[d];
  }
}

}  // namespace detail

using namespace detail;

namespace {

// Reduces x over dims (normalized) to the keepdim shape.
Tensor reduce_forward(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims,
                      const char* name) {
  const Shape keep_shape = reduced_shape(x.shape(), dims, true);
  if (op != ReduceOp::Sum)
    FG_CHECK(x.numel() > 0, name, ": reduction of an empty tensor has no identity");
  Tensor out = Tensor::empty(keep_shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  NoGradGuard no_grad;
  bool adjacent = true;
  for (size_t i = 1; i < dims.size(); ++i) adjacent &= dims[i] == dims[i - 1] + 1;
  if (dims.empty()) {
    backend_of(x).copy(x, out);
    return out;
  }
  if (adjacent) {
    int64_t outer, r, inner;
    block_sizes(x.shape(), dims, name, outer, r, inner);
    backend_of(x).reduce(op, x.contiguous(), outer, r, inner, out);
    return out;
  }
  // Move the reduced dimensions last, then reduce them as one block.
  std::vector<int64_t> order;
  int64_t kept = 1, reduced = 1;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) {
      order.push_back(d);
      kept *= x.size(d);
    }
  for (int64_t d : dims) {
    order.push_back(d);
    reduced *= x.size(d);
  }
  backend_of(x).reduce(op, x.permute(order).contiguous(), kept, reduced, 1, out);
  return out;
}

Tensor squeeze_reduced(const Tensor& keep, const Shape& shape, const std::vector<int64_t>& dims,
                       bool keepdim) {
  return keepdim ? keep : keep.reshape(reduced_shape(shape, dims, false));
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  const auto dims = normalize_dims(dims_in, x.dim(), "sum");
  Tensor out = reduce_forward(ReduceOp::Sum, x, dims, "sum");
  const Shape in_shape = x.shape(), keep_shape = out.shape();
  out = record("sum", out, {x}, [in_shape](const Tensor& g, InputGrads& grads) {
    grads.set(0, g.expand(in_shape));
  });
  return squeeze_reduced(out, in_shape, dims, keepdim);
}

Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  const auto dims = normalize_dims(dims_in, x.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= x.size(d);
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(std::max<int64_t>(count, 1)));
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }

Tensor max(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  const auto dims = normalize_dims(dims_in, x.dim(), "max");
  Tensor out = reduce_forward(ReduceOp::Max, x, dims, "max");
  Tensor xd = x.detach(), yd = out.detach();
  const std::vector<int64_t> d = dims;
  out = record("max", out, {x}, [xd, yd, d](const Tensor& g, InputGrads& grads) {
    const Tensor is_max = eq(xd, yd).to(g.dtype());
    const Tensor count = sum(is_max, d, true);
    grads.set(0, mul(is_max, div(g, count)));
  });
  return squeeze_reduced(out, x.shape(), dims, keepdim);
}

Tensor max(const Tensor& x) { return max(x, {}, false); }

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim(), "argmax");
  // Small outputs (accuracy over logits); computed on the host.
  const Tensor xc = x.detach().permute([&] {
    std::vector<int64_t> order;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != dim) order.push_back(d);
    order.push_back(dim);
    return order;
  }());
  const std::vector<double> values = xc.to_vector<double>();
  const int64_t n = x.size(dim), rows = n ? static_cast<int64_t>(values.size()) / n : 0;
  FG_CHECK(n > 0, "argmax: empty dimension");
  std::vector<int64_t> idx(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
      if (values[r * n + i] > values[r * n + best]) best = i;
    idx[r] = best;
  }
  const Shape shape = reduced_shape(x.shape(), {dim}, keepdim);
  return Tensor::from_vector(idx, shape).to(x.device());
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  FG_CHECK(lead >= 0, "sum_to: cannot reduce ", shape_str(x.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.size(d) != 1) {
      dims.push_back(d);
    } else {
      FG_CHECK(shape[d - lead] == x.size(d), "sum_to: cannot reduce ", shape_str(x.shape()),
               " to ", shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace fg
