// Shared plumbing for op implementations (not part of the public API).
#pragma once

#include <vector>

#include "engine/ops.h"

namespace fg::detail {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// A stride-0 view of t with `shape`, outside autograd.
Tensor broadcast_view(const Tensor& t, const Shape& shape);
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
// Sorted, de-duplicated, wrapped dimensions; empty input means all dimensions.
std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op);
// The shape after reducing dims, with or without the reduced dimensions kept as 1.
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim);
// Outer/n/inner sizes for an op over the adjacent block dims (must be adjacent).
void block_sizes(const Shape& shape, const std::vector<int64_t>& dims, const char* op,
                 int64_t& outer, int64_t& n, int64_t& inner);
// Throws when an in-place op would write to a tensor autograd is tracking.
void check_inplace(const Tensor& dst, const char* op);

}  // namespace fg::detail
