// The CUDA graphs' value write (engine/cuda/graph_kernels.cuh), compiled for
// the host and run through the CUDA emulation: the first n slots take the
// values, in order, and the slots past n keep what they held, for n from 0 to
// the most one write carries, in float64 (values a step reads) and uint64
// (the generators' offset shifts, which wrap around).
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "engine/cuda/graph_kernels.cuh"

namespace gk = fg::cuda::graph_detail;

TEST_CASE("graph value write (emulated): n values written, the rest untouched") {
  for (int n = 0; n <= gk::kMaxValues; ++n) {
    INFO(n << " values");
    gk::Values<double> d{};
    gk::Values<uint64_t> u{};
    d.n = u.n = n;
    for (int i = 0; i < gk::kMaxValues; ++i) {
      d.v[i] = 0.25 * i - 1.0;
      u.v[i] = ~uint64_t{0} - static_cast<uint64_t>(i);  // wrapped shifts: the top of the range
    }
    std::vector<double> dd(gk::kMaxValues + 2, 42.0);
    std::vector<uint64_t> du(gk::kMaxValues + 2, 7);
    fg_emu::launch(dim3(1), dim3(gk::kMaxValues), 0, gk::write_values<double>, dd.data(), d);
    fg_emu::launch(dim3(1), dim3(gk::kMaxValues), 0, gk::write_values<uint64_t>, du.data(), u);
    for (int i = 0; i < gk::kMaxValues + 2; ++i) {
      CHECK(dd[i] == (i < n ? 0.25 * i - 1.0 : 42.0));
      CHECK(du[i] == (i < n ? ~uint64_t{0} - static_cast<uint64_t>(i) : 7));
    }
  }
}
