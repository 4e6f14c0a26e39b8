// What the kernel tests of this folder share: the schedules every launch runs
// in, and the comparison of a kernel's results with the CPU backend's.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_emu.h"
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

}  // namespace fg_emu_test
