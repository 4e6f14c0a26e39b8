// What the kernel tests of this folder share: the schedules every launch runs
// in, and the comparison of a kernel's results with the CPU backend's.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "engine/cuda/device_utils.cuh"
#include "engine/tensor.h"

namespace fg_emu_test {

// Threads in rounds (a missing __syncwarp shows) and warps running ahead to
// their next __syncthreads (a missing __syncthreads shows), each in forward
// and reverse order.
inline std::vector<fg_emu::LaunchOptions> schedules() {
  std::vector<fg_emu::LaunchOptions> out;
  for (bool ahead : {false, true})
    for (fg_emu::Order order : {fg_emu::Order::forward, fg_emu::Order::reverse})
      out.push_back(fg_emu::LaunchOptions{order, 0, ahead});
  return out;
}

inline std::string describe(const fg_emu::LaunchOptions& o) {
  return std::string(o.order == fg_emu::Order::forward ? "forward" : "reverse") + " order" +
         (o.warps_run_ahead ? ", warps run ahead" : ", in rounds");
}

// Values of element type X, drawn uniformly and kept as doubles too (rounded
// to X, so that the reference computes on what the kernel reads).
template <class X>
struct Values {
  std::vector<X> data;
  std::vector<double> exact;
  Values(int64_t n, std::mt19937_64& rng, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    for (int64_t i = 0; i < n; ++i) {
      data.push_back(fg::cuda::convert<X>(dist(rng)));
      exact.push_back(fg::cuda::convert<double>(data.back()));
    }
  }
  fg::Tensor tensor(const fg::Shape& shape) const { return fg::Tensor::from_vector(exact, shape); }
};

// A kernel's results of element type X as doubles.
template <class X>
std::vector<double> doubles(const std::vector<X>& v) {
  std::vector<double> out;
  for (const X& x : v) out.push_back(fg::cuda::convert<double>(x));
  return out;
}

inline std::vector<double> to_vector(const fg::Tensor& t) {
  const fg::Tensor c = t.contiguous().to(fg::DType::Float64);
  const double* p = static_cast<const double*>(c.data_ptr());
  return std::vector<double>(p, p + c.numel());
}

// Checks ||got - expected|| <= relative * ||expected|| (the squared norm
// floored at floor_per_value per value, as some gradients vanish and leave
// only rounding), every value finite.
inline void check_close(const std::vector<double>& got, const std::vector<double>& expected,
                        double relative, const std::string& what, double floor_per_value = 1e-6) {
  REQUIRE_MESSAGE(got.size() == expected.size(), what);
  double diff = 0.0, norm = 0.0, largest = 0.0;
  bool finite = true;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = got[i] - expected[i];
    diff += e * e;
    norm += expected[i] * expected[i];
    largest = std::max(largest, std::abs(e));
    finite = finite && std::isfinite(got[i]);
  }
  const double error =
      std::sqrt(diff / std::max(norm, floor_per_value * static_cast<double>(got.size())));
  INFO(what << ": relative error " << error << ", largest difference " << largest);
  CHECK(finite);
  CHECK(error <= relative);
}

// A multi-tensor kernel's launch limits as plan_multi_tensor_launches takes
// them (tests shrink them to make the plan split tensors), and the block size.
struct MultiTensorLimits {
  int max_tensors, max_blocks;
  int64_t chunk;
  unsigned threads;
};

// The chunks (blocks over all launches) that tensors of these sizes take.
inline int64_t chunks_of(const std::vector<int64_t>& sizes, int64_t chunk) {
  int64_t chunks = 0;
  for (int64_t n : sizes) chunks += (n + chunk - 1) / chunk;
  return chunks;
}

}  // namespace fg_emu_test
