// The random fills (engine/cuda/random_kernels.cuh) compiled for the host and
// run through the CUDA emulation, against the CPU backend with the same seed
// and offset: dropout masks bitwise, uniform values within a float's last
// place, normal values within the float transcendental functions' rounding.
// A grid smaller than the work makes every thread take several Philox blocks;
// sizes that are not multiples of four leave a partial last block.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/random_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
namespace rk = fg::cuda::random_detail;

namespace {

constexpr uint64_t kSeed = 0x9E3779B97F4A7C15ull, kOffset = 12345;
const dim3 kGrid(2), kBlock(64);

template <class T>
void run(DType dtype, int64_t n) {
  const std::string what = std::string(dtype_name(dtype)) + ", " + std::to_string(n) + " values";
  INFO(what);
  Backend& cpu = backend_for(kCPU);
  // NaN-filled outputs: an element the kernel skips shows.
  auto fresh = [&] { return Tensor::full({n}, NAN, dtype); };

  const Tensor mask = fresh(), mask_ref = Tensor::empty({n}, dtype);
  const double p = 0.3;
  // The scale as random.cu rounds it: in double for double, else through float.
  const T scale = std::is_same_v<T, double>
                      ? static_cast<T>(1.0 / (1.0 - p))
                      : fg::cuda::convert<T>(static_cast<float>(1.0 / (1.0 - p)));
  fg_emu::launch(kGrid, kBlock, 0, rk::dropout_mask_kernel<T>, static_cast<T*>(mask.data_ptr()), n,
                 kSeed, kOffset, static_cast<float>(p), scale);
  cpu.dropout_mask(mask_ref, p, kSeed, kOffset);
  const std::vector<double> m = fg_emu_test::to_vector(mask), mr = fg_emu_test::to_vector(mask_ref);
  for (int64_t i = 0; i < n; ++i) REQUIRE(m[i] == mr[i]);

  const Tensor u = fresh(), u_ref = Tensor::empty({n}, dtype);
  fg_emu::launch(kGrid, kBlock, 0, rk::uniform_kernel<T>, static_cast<T*>(u.data_ptr()), n, kSeed,
                 kOffset, -2.0, 3.0);
  cpu.uniform(u_ref, kSeed, kOffset, -2.0, 3.0);
  const std::vector<double> uv = fg_emu_test::to_vector(u), ur = fg_emu_test::to_vector(u_ref);
  const double ulp = std::is_same_v<T, double> ? 1e-15 : 3e-7;
  for (int64_t i = 0; i < n; ++i) {
    INFO("uniform element " << i << ": " << uv[i] << " against " << ur[i]);
    REQUIRE(std::abs(uv[i] - ur[i]) <= ulp * 4.0);
  }

  const Tensor z = fresh(), z_ref = Tensor::empty({n}, dtype);
  fg_emu::launch(kGrid, kBlock, 0, rk::normal_kernel<T>, static_cast<T*>(z.data_ptr()), n, kSeed,
                 kOffset, 0.5, 2.0);
  cpu.normal(z_ref, kSeed, kOffset, 0.5, 2.0);
  const std::vector<double> zv = fg_emu_test::to_vector(z), zr = fg_emu_test::to_vector(z_ref);
  for (int64_t i = 0; i < n; ++i) {
    INFO("normal element " << i << ": " << zv[i] << " against " << zr[i]);
    REQUIRE(std::abs(zv[i] - zr[i]) <= 2e-5 * std::max(1.0, std::abs(zr[i])));
  }
}

}  // namespace

TEST_CASE("random kernels (emulated): the CPU's Philox stream, element by element") {
  for (int64_t n : {1, 6, 1001, 2050}) {
    run<float>(DType::Float32, n);
    run<double>(DType::Float64, n);
  }
}
