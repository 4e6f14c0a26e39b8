// The layer-norm kernels (engine/cuda/layer_norm_kernels.cuh) compiled for the
// host and run through the CUDA emulation with the launch shapes layer_norm.cu
// uses, against the CPU backend in float64 on the same inputs: the forward's
// output and statistics, the input gradient (both from the warp-per-row and
// the block-per-row variants) and the parameter gradients' two-kernel
// deterministic reduction.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/layer_norm_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
using fg::cuda::convert;
using fg_emu_test::check_close;
using fg_emu_test::doubles;
using fg_emu_test::Values;
using fg_emu_test::to_vector;
namespace ln = fg::cuda::layer_norm_detail;

namespace {

template <class X>
DType dtype_of() {
  if constexpr (std::is_same_v<X, float>) return DType::Float32;
  if constexpr (std::is_same_v<X, double>) return DType::Float64;
  return DType::BFloat16;
}

struct Case {
  int64_t rows, cols;
  bool params;  // weight and bias, or neither
};

// T: the activations' type, W: the parameters' (layer_norm.cu pairs bfloat16
// activations with float32 or bfloat16 parameters).
template <class T, class W, bool Block>
void run_variant(const Case& c) {
  using A = fg::cuda::accum_t<T>;
  const std::string what = std::string(std::is_same_v<T, float> ? "float32" : "bfloat16") + "/" +
                           (std::is_same_v<W, float> ? "float32" : "bfloat16") + " rows " +
                           std::to_string(c.rows) + " cols " + std::to_string(c.cols) +
                           (c.params ? "" : " without parameters") +
                           (Block ? ", block per row" : ", warp per row");
  const int64_t rows = c.rows, cols = c.cols;
  const double eps = 1e-5;
  std::mt19937_64 rng(static_cast<uint64_t>(rows * 7919 + cols));
  // An offset mean, so that a one-pass variance would lose digits.
  Values<T> x(rows * cols, rng, 2.0f, 4.0f), grad(rows * cols, rng, -1.0f, 1.0f);
  Values<W> weight(cols, rng, 0.5f, 1.5f), bias(cols, rng, -0.5f, 0.5f);

  // Expected: the CPU backend in float64.
  Backend& cpu = backend_for(kCPU);
  const Tensor tx = x.tensor({rows, cols}), tg = grad.tensor({rows, cols});
  const Tensor tw = c.params ? weight.tensor({cols}) : Tensor(),
               tb = c.params ? bias.tensor({cols}) : Tensor();
  const Tensor y_ref = Tensor::empty({rows, cols}, DType::Float64),
               mean_ref = Tensor::empty({rows}, DType::Float64),
               rstd_ref = Tensor::empty({rows}, DType::Float64);
  cpu.layer_norm(tx, tw, tb, eps, rows, cols, y_ref, mean_ref, rstd_ref);
  const Tensor gx_ref = Tensor::empty({rows, cols}, DType::Float64),
               gw_ref = Tensor::empty({cols}, DType::Float64),
               gb_ref = Tensor::empty({cols}, DType::Float64);
  cpu.layer_norm_backward(tg, tx, mean_ref, rstd_ref, tw, rows, cols, gx_ref, gw_ref, gb_ref);

  const ln::RowLaunch launch = ln::row_launch(rows, cols);
  REQUIRE(launch.block_per_row == Block);
  const W* wp = c.params ? weight.data.data() : nullptr;
  const W* bp = c.params ? bias.data.data() : nullptr;
  const ln::ParamChunks split = ln::param_chunks(rows);
  // float32 results carry the float sums' rounding (below 2e-6 here),
  // bfloat16 ones the storage's (about 2e-3).
  constexpr bool kFloat = std::is_same_v<T, float>;
  const double tolerance = kFloat ? 1e-5 : 5e-3;
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string where = what + ", " + fg_emu_test::describe(options);
    std::vector<T> y(static_cast<size_t>(rows * cols), convert<T>(NAN)),
        gx(static_cast<size_t>(rows * cols), convert<T>(NAN));
    std::vector<A> mean(static_cast<size_t>(rows), NAN), rstd(static_cast<size_t>(rows), NAN);
    fg_emu::launch(options, dim3(static_cast<unsigned>(launch.grid)), dim3(launch.threads), 0,
                   ln::layer_norm_forward<T, W, Block>, x.data.data(), wp, bp, y.data(),
                   mean.data(), rstd.data(), rows, cols, eps);
    check_close(doubles(y), to_vector(y_ref), tolerance, where + ": y");
    check_close(doubles(mean), to_vector(mean_ref), 1e-6, where + ": mean");
    check_close(doubles(rstd), to_vector(rstd_ref), 1e-6, where + ": rstd");

    // The backward reads the kernel's own statistics, as on the device.
    fg_emu::launch(options, dim3(static_cast<unsigned>(launch.grid)), dim3(launch.threads), 0,
                   ln::layer_norm_backward_input<T, W, Block>, grad.data.data(), x.data.data(),
                   static_cast<const A*>(mean.data()), static_cast<const A*>(rstd.data()), wp,
                   gx.data(), rows, cols);
    check_close(doubles(gx), to_vector(gx_ref), kFloat ? 2e-5 : 5e-3, where + ": grad x");

    if (!c.params) continue;
    std::vector<A> partial(static_cast<size_t>(2 * split.chunks * cols), NAN);
    A* partial_w = partial.data();
    A* partial_b = partial_w + split.chunks * cols;
    fg_emu::launch(options, ln::param_partials_grid(cols, split.chunks),
                   dim3(ln::kParamWidth, ln::kParamDepth), 0, ln::layer_norm_param_partials<T>,
                   grad.data.data(), x.data.data(), static_cast<const A*>(mean.data()),
                   static_cast<const A*>(rstd.data()), rows, cols, split.chunk, partial_w,
                   partial_b);
    // layer_norm.cu sizes the finishing grid to the device (grid_for); the loop
    // is grid-strided, so one block, each thread taking several columns, stands
    // for any grid.
    std::vector<W> gw(static_cast<size_t>(cols), convert<W>(NAN)),
        gb(static_cast<size_t>(cols), convert<W>(NAN));
    fg_emu::launch(options, dim3(1), dim3(256), 0, ln::layer_norm_param_finish<A>,
                   static_cast<const A*>(partial_w), static_cast<const A*>(partial_b), split.chunks,
                   cols, static_cast<void*>(gw.data()), dtype_of<W>(),
                   static_cast<void*>(gb.data()), dtype_of<W>());
    const double param_tolerance = std::is_same_v<W, float> ? 1e-5 : 5e-3;
    check_close(doubles(gw), to_vector(gw_ref), param_tolerance, where + ": grad weight");
    check_close(doubles(gb), to_vector(gb_ref), param_tolerance, where + ": grad bias");
  }
}

}  // namespace

TEST_CASE("layer norm kernels (emulated): warp per row, the model's 384 columns") {
  // 130 rows: the last block of 8 rows holds 2; 3 chunks of 44 rows for the
  // parameter gradients, the last holding 42.
  run_variant<float, float, false>({130, 384, true});
  run_variant<fg::cuda::bf16, float, false>({130, 384, true});
  run_variant<fg::cuda::bf16, fg::cuda::bf16, false>({13, 384, true});
}

TEST_CASE("layer norm kernels (emulated): warp per row, odd sizes, no parameters") {
  // Columns not a multiple of 32 (nor of any vector width), and fewer than a
  // warp's lanes (fewer than 3 leave the input gradient zero up to rounding).
  run_variant<float, float, false>({11, 45, true});
  run_variant<float, float, false>({9, 45, false});
  run_variant<float, float, false>({5, 3, true});
}

TEST_CASE("layer norm kernels (emulated): block per row past 4096 columns") {
  run_variant<float, float, true>({3, 5003, true});
  run_variant<fg::cuda::bf16, float, true>({2, 5003, false});
}
