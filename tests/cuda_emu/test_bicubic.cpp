// The bicubic resize kernel (engine/cuda/bicubic_kernels.cuh), compiled for
// the host and run through the CUDA emulation, against the CPU backend's
// bicubic_resize on the same planes: up and down, with and without
// align_corners, a one-pixel output side (align_corners' special case) and a
// one-pixel input side (every tap clamped). The CPU sums in the same order, so
// float32 and float64 agree to their last bits; bfloat16 is computed in float
// (the CPU's float32 result rounded once).
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/bicubic_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
namespace bk = fg::cuda::bicubic_detail;

namespace {

template <class T>
void run(DType dtype, int64_t h, int64_t w, int64_t oh, int64_t ow, bool align_corners) {
  INFO(std::string(dtype_name(dtype)) << ": " << h << "x" << w << " to " << oh << "x" << ow
                         << (align_corners ? ", align_corners" : ""));
  const int64_t n = 2, c = 3;
  std::mt19937_64 rng(static_cast<uint64_t>(h * 1000 + w * 10 + oh));
  const fg_emu_test::Values<T> x(n * c * h * w, rng, -1.0f, 1.0f);
  std::vector<T> out(static_cast<size_t>(n * c * oh * ow), fg::cuda::convert<T>(1e30f));
  // 2 blocks of 64 threads: fewer than the outputs, so threads loop.
  fg_emu::launch(dim3(2), dim3(64), 0, bk::bicubic_kernel<T>, x.data.data(), out.data(), n * c, h,
                 w, oh, ow, align_corners);

  const DType compute = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
  const Tensor src = x.tensor({n, c, h, w}).to(compute);
  const Tensor expected = Tensor::empty({n, c, oh, ow}, compute);
  backend_for(kCPU).bicubic_resize(src, expected, align_corners);
  const std::vector<double> want = fg_emu_test::to_vector(expected.to(dtype));
  const std::vector<double> got = fg_emu_test::doubles(out);
  // Within the float type's rounding: the compilers may contract a multiply-add differently.
  const double tol = dtype == DType::Float64 ? 1e-14 : (dtype == DType::Float32 ? 2e-6 : 0.0);
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": " << got[i] << " against " << want[i]);
    if (dtype == DType::BFloat16)
      // One bfloat16 step at most: a float sum that lands on a rounding boundary.
      REQUIRE(std::abs(got[i] - want[i]) <= std::abs(want[i]) * 0x1p-7);
    else
      REQUIRE(std::abs(got[i] - want[i]) <= tol * std::max(1.0, std::abs(want[i])));
  }
}

}  // namespace

TEST_CASE("bicubic kernel (emulated): the CPU's resize, up and down, in three dtypes") {
  struct Case {
    int64_t h, w, oh, ow;
  };
  for (const Case& s : {Case{7, 9, 13, 5}, Case{12, 10, 4, 23}, Case{5, 6, 1, 1}, Case{1, 1, 3, 4},
                        Case{8, 8, 8, 8}}) {
    for (bool align : {false, true}) {
      run<float>(DType::Float32, s.h, s.w, s.oh, s.ow, align);
      run<double>(DType::Float64, s.h, s.w, s.oh, s.ow, align);
      run<fg::cuda::bf16>(DType::BFloat16, s.h, s.w, s.oh, s.ow, align);
    }
  }
}
