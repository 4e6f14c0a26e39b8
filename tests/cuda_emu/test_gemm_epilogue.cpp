// The GEMM's own epilogue kernels (engine/cuda/gemm_epilogue_kernels.cuh),
// compiled for the host and run through the CUDA emulation, against the CPU
// backend's ops on the same values: C started from beta * C plus a bias row
// (beta 0 must not read C, which may hold NaN), then ReLU, over a batch of
// row-major blocks whose rows are padded (ldc > n) and whose batch stride
// leaves a gap; the padding must come out untouched.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/cuda/gemm_epilogue_kernels.cuh"
#include "engine/ops.h"
#include "engine/tensor.h"

using namespace fg;
namespace ge = fg::cuda::gemm_epilogue_detail;

namespace {

constexpr int64_t kBatch = 3, kM = 5, kN = 7, kLdc = 9, kStride = kM * kLdc + 4;
const dim3 kGrid(2), kBlock(32);  // 64 threads for 105 elements: every thread loops

// The storage of C: a value per slot, NaN in the slots outside the (batch, m, n) view.
std::vector<double> storage(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-2.0, 2.0);
  std::vector<double> c(static_cast<size_t>(kBatch * kStride), NAN);
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t r = 0; r < kM; ++r)
      for (int64_t j = 0; j < kN; ++j) c[b * kStride + r * kLdc + j] = dist(rng);
  return c;
}

// The (batch, m, n) view of a storage, as a tensor.
Tensor view_of(const std::vector<double>& c) {
  std::vector<double> v;
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t r = 0; r < kM; ++r)
      for (int64_t j = 0; j < kN; ++j) v.push_back(c[b * kStride + r * kLdc + j]);
  return Tensor::from_vector(v, {kBatch, kM, kN});
}

template <class T>
void run(DType dtype, double beta, bool with_bias, bool relu) {
  INFO(std::string(dtype_name(dtype)) << ", beta " << beta << (with_bias ? ", bias" : "")
                         << (relu ? ", relu" : ""));
  std::mt19937_64 rng(7);
  std::vector<double> c0 = storage(rng);
  // beta == 0: C's values are garbage the kernel must not read.
  if (beta == 0.0)
    for (int64_t b = 0; b < kBatch; ++b) c0[b * kStride + kLdc + 2] = NAN;
  // The values rounded to T, as the kernel holds them.
  std::vector<T> c;
  for (double v : c0) c.push_back(fg::cuda::convert<T>(v));
  const fg_emu_test::Values<T> bias(kN, rng, -1.0f, 1.0f);
  std::vector<double> rounded;
  for (const T& v : c) rounded.push_back(fg::cuda::convert<double>(v));

  fg_emu::launch(kGrid, kBlock, 0, ge::start_rows_kernel<T>, c.data(), kLdc, kStride, kBatch, kM,
                 kN, with_bias ? bias.data.data() : nullptr, beta);
  if (relu)
    fg_emu::launch(kGrid, kBlock, 0, ge::relu_rows_kernel<T>, c.data(), kLdc, kStride, kBatch, kM,
                   kN);

  // The CPU backend in T (float for bfloat16), rounded to T at the end.
  const DType compute = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
  Tensor expected = beta == 0.0 ? Tensor::zeros({kBatch, kM, kN}, compute)
                                : mul(view_of(rounded).to(compute), beta);
  if (with_bias) expected = add(expected, bias.tensor({kN}).to(compute));
  if (relu) expected = fg::relu(expected);
  const std::vector<double> want = fg_emu_test::to_vector(expected.to(dtype));

  std::vector<double> got;
  for (const T& v : c) got.push_back(fg::cuda::convert<double>(v));
  const std::vector<double> inside = fg_emu_test::to_vector(view_of(got));
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": " << inside[i] << " against " << want[i]);
    REQUIRE(inside[i] == want[i]);
  }
  // Row padding and the gap between batches: as they were, bit for bit (NaN stays NaN).
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t k = 0; k < kStride; ++k) {
      const bool in_view = k / kLdc < kM && k % kLdc < kN;
      if (!in_view) REQUIRE(std::isnan(got[b * kStride + k]));
    }
}

}  // namespace

TEST_CASE("GEMM epilogue kernels (emulated): bias rows, beta C and ReLU as the CPU computes them") {
  for (double beta : {0.0, 1.0, 0.5}) {
    for (bool with_bias : {true, false}) {
      for (bool relu : {false, true}) {
        run<float>(DType::Float32, beta, with_bias, relu);
        run<double>(DType::Float64, beta, with_bias, relu);
        run<fg::cuda::bf16>(DType::BFloat16, beta, with_bias, relu);
      }
    }
  }
}
