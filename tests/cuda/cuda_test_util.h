// Helpers for the CUDA tests: the skip marker, random inputs, and comparisons
// of a CUDA result with the CPU's that name the worst element.
//
// Without a GPU every GPU test prints FGMOE_SKIPPED and returns; ctest's
// SKIP_REGULAR_EXPRESSION (tests/cuda/CMakeLists.txt) reports it as skipped.
// With a GPU, every device allocation is filled with 0xFF bytes first (NaN for
// floating types), so an output element a kernel forgets to write fails the
// comparison.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cuda_support.h"
#include "engine/ops.h"

namespace fg::cuda_testing {

inline bool no_gpu() {
  if (cuda_available()) {
    static const bool poisoned = (cuda_set_poison_allocations(true), true);
    (void)poisoned;
    return false;
  }
  std::printf("FGMOE_SKIPPED: no CUDA GPU on this machine\n");
  std::fflush(stdout);
  return true;
}

// Returns from the test case (reported as skipped) when there is no GPU.
#define FG_SKIP_WITHOUT_GPU()                 \
  do {                                        \
    if (::fg::cuda_testing::no_gpu()) return; \
  } while (0)

// Uniform random values on the CPU in [low, high), converted to dtype.
inline Tensor random_cpu(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0,
                         DType dtype = DType::Float32) {
  Generator gen(seed);
  Tensor t = rand(shape, gen, low, high, dtype == DType::Float64 ? DType::Float64 : DType::Float32);
  return t.dtype() == dtype ? t : t.to(dtype);
}

// t rounded through dtype and back to float32: the values a CUDA tensor of that
// dtype holds, so that the CPU reference starts from the same numbers.
inline Tensor rounded(const Tensor& t, DType dtype) {
  NoGradGuard no_grad;
  return t.to(dtype).to(DType::Float32);
}

inline Tensor on_gpu(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().to(kCUDA);
}

inline std::vector<double> host_values(const Tensor& t) {
  NoGradGuard no_grad;
  // Bytes to the host first, so the conversion is the CPU's, not a kernel under test.
  return t.detach().to(kCPU).to_vector<double>();
}

// |got - expected| <= atol + rtol * |expected| everywhere; NaN in got fails
// unless expected is NaN at that element; equal values (infinities too) pass.
inline void check_close(const Tensor& got, const Tensor& expected, double rtol, double atol,
                        const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(expected.defined());
  REQUIRE(shape_str(got.shape()) == shape_str(expected.shape()));
  const std::vector<double> g = host_values(got), e = host_values(expected);
  double worst = 0;
  int64_t worst_index = -1;
  int64_t failures = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool both_nan = std::isnan(g[i]) && std::isnan(e[i]);
    if (both_nan || g[i] == e[i]) continue;  // equal infinities too (inf - inf is NaN)
    const double excess = std::abs(g[i] - e[i]) - (atol + rtol * std::abs(e[i]));
    if (!(excess <= 0)) {  // NaN lands here too
      ++failures;
      const double severity = std::isnan(excess) ? INFINITY : excess;
      if (worst_index < 0 || severity > worst) {
        worst = severity;
        worst_index = static_cast<int64_t>(i);
      }
    }
  }
  std::ostringstream os;
  if (worst_index >= 0)
    os << failures << " of " << g.size() << " elements off; worst at " << worst_index << ": got "
       << g[worst_index] << ", expected " << e[worst_index];
  INFO(os.str());
  CHECK(failures == 0);
}

// Bitwise equality of the values (after conversion to double).
inline void check_equal(const Tensor& got, const Tensor& expected, const std::string& what) {
  check_close(got, expected, 0.0, 0.0, what);
}

// Tolerances by dtype for results of a few roundings (elementwise ops, softmax, norms).
inline double rtol_for(DType dtype) {
  switch (dtype) {
    case DType::Float64:
      return 1e-12;
    case DType::BFloat16:
      return 1.6e-2;
    default:
      return 2e-5;
  }
}

// Restores the TF32 switch however a case ends, so later cases run in full float32.
struct Tf32Restore {
  bool saved = cuda_allow_tf32();
  ~Tf32Restore() { cuda_set_allow_tf32(saved); }
};

}  // namespace fg::cuda_testing
