// The add_layer_norm kernels (engine/cuda/layer_norm_kernels.cuh: a residual
// connection with dropout and the layer norm after it, one pass each way)
// compiled for the host and run through the CUDA emulation with layer_norm.cu's
// launch shapes, against the CPU backend's composition (dropout, add,
// layer_norm and their backwards) in float64 on the same inputs and the same
// dropout draw: the kept sum, the output, the statistics, and the residual's and
// the branch's gradients; float32 throughout, and a bfloat16 branch onto a
// float32 stream (autocast). Rows whose length is not a multiple of four share
// Philox quads with their neighbours.
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
using fg_emu_test::to_vector;
using fg_emu_test::Values;
namespace ln = fg::cuda::layer_norm_detail;

namespace {

struct Case {
  int64_t rows, cols;
  bool params;
  // The kernels get the offset as a captured CUDA graph gives it: a captured
  // offset plus the replay's shift read from memory.
  bool graph_shift = false;
};

// T: the residual stream's type (float here), X: the branch's.
template <class T, class X, bool Block>
void run(const Case& c) {
  using A = fg::cuda::accum_t<T>;
  using C = fg::cuda::compute_t<X>;
  const std::string what = std::string(std::is_same_v<X, float> ? "float32" : "bfloat16") +
                           " branch, rows " + std::to_string(c.rows) + " cols " +
                           std::to_string(c.cols) + (c.params ? "" : " without parameters") +
                           (Block ? ", block per row" : ", warp per row") +
                           (c.graph_shift ? ", graph shift" : "");
  INFO(what);
  const int64_t rows = c.rows, cols = c.cols, n = rows * cols;
  const double eps = 1e-5, p = 0.25;
  std::mt19937_64 rng(static_cast<uint64_t>(rows * 131 + cols));
  const Values<T> residual(n, rng, 1.0f, 3.0f), grad(n, rng, -1.0f, 1.0f);
  const Values<X> x(n, rng, -2.0f, 2.0f);
  const Values<T> weight(cols, rng, 0.5f, 1.5f), bias(cols, rng, -0.5f, 0.5f);
  const DropoutArgs drop{p, 0x1234567890abcdefull, 17, false};

  // Expected: the CPU backend's composition in float64, the same draw.
  Backend& cpu = backend_for(kCPU);
  const Shape shape{rows, cols};
  AddLayerNormArgs ref;
  ref.residual = residual.tensor(shape);
  ref.x = x.tensor(shape);
  ref.weight = c.params ? weight.tensor({cols}) : Tensor();
  ref.bias = c.params ? bias.tensor({cols}) : Tensor();
  ref.dropout = drop;
  ref.eps = eps;
  ref.rows = rows;
  ref.cols = cols;
  ref.out = Tensor::empty(shape, DType::Float64);
  ref.sum = Tensor::empty(shape, DType::Float64);
  ref.mean = Tensor::empty({rows}, DType::Float64);
  ref.rstd = Tensor::empty({rows}, DType::Float64);
  cpu.add_layer_norm(ref);
  AddLayerNormBackwardArgs ref_back = ref.backward();
  ref_back.grad = grad.tensor(shape);
  ref_back.grad_residual = Tensor::empty(shape, DType::Float64);
  ref_back.grad_x = Tensor::empty(shape, DType::Float64);
  cpu.add_layer_norm_backward(ref_back);

  const ln::RowLaunch launch = ln::row_launch(rows, cols);
  REQUIRE(launch.block_per_row == Block);
  const dim3 grid(static_cast<unsigned>(launch.grid)), block(launch.threads);
  const T* wp = c.params ? weight.data.data() : nullptr;
  const T* bp = c.params ? bias.data.data() : nullptr;
  const uint64_t replay_shift = 5;
  const ln::RowDropout d{true, drop.seed, c.graph_shift ? drop.offset - replay_shift : drop.offset,
                         static_cast<float>(p), c.graph_shift ? &replay_shift : nullptr};
  const C scale = static_cast<C>(1.0 / (1.0 - p));
  // float32 carries the float sums' rounding; a bfloat16 branch its kept
  // products rounded to bfloat16 (the reference keeps them exact).
  const double tolerance = std::is_same_v<X, float> ? 1e-5 : 5e-3;
  const double grad_tolerance = std::is_same_v<X, float> ? 2e-5 : 5e-3;
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string where = what + ", " + fg_emu_test::describe(options);
    std::vector<T> sum(static_cast<size_t>(n), convert<T>(NAN)), y(sum), gr(sum);
    std::vector<X> gx(static_cast<size_t>(n), convert<X>(NAN));
    std::vector<A> mean(static_cast<size_t>(rows), NAN), rstd(mean);
    fg_emu::launch(options, grid, block, 0, ln::add_layer_norm_forward<T, X, T, Block>,
                   residual.data.data(), x.data.data(), wp, bp, sum.data(), y.data(), mean.data(),
                   rstd.data(), rows, cols, eps, d, scale);
    check_close(doubles(sum), to_vector(ref.sum), tolerance, where + ": sum");
    check_close(doubles(y), to_vector(ref.out), tolerance, where + ": y");
    check_close(doubles(mean), to_vector(ref.mean), tolerance, where + ": mean");
    check_close(doubles(rstd), to_vector(ref.rstd), tolerance, where + ": rstd");

    // Both gradients, then each alone (the other pointer null).
    for (int wanted = 0; wanted < 3; ++wanted) {
      std::fill(gr.begin(), gr.end(), convert<T>(NAN));
      std::fill(gx.begin(), gx.end(), convert<X>(NAN));
      T* grp = wanted != 2 ? gr.data() : nullptr;
      X* gxp = wanted != 1 ? gx.data() : nullptr;
      fg_emu::launch(options, grid, block, 0, ln::add_layer_norm_backward_input<T, X, T, Block>,
                     grad.data.data(), static_cast<const T*>(sum.data()),
                     static_cast<const A*>(mean.data()), static_cast<const A*>(rstd.data()), wp,
                     grp, gxp, rows, cols, d, scale);
      const std::string which = where + (wanted == 0   ? ""
                                         : wanted == 1 ? ", residual's only"
                                                       : ", branch's only");
      if (grp)
        check_close(doubles(gr), to_vector(ref_back.grad_residual), grad_tolerance,
                    which + ": grad residual");
      else
        CHECK(std::isnan(convert<float>(gr[0])));
      if (gxp)
        check_close(doubles(gx), to_vector(ref_back.grad_x), grad_tolerance, which + ": grad x");
      else
        CHECK(std::isnan(convert<float>(gx[0])));
    }
  }
}

}  // namespace

TEST_CASE("add_layer_norm kernels (emulated): warp per row, the model's 384 columns") {
  run<float, float, false>({130, 384, true});
  run<float, fg::cuda::bf16, false>({130, 384, true});
}

TEST_CASE("add_layer_norm kernels (emulated): rows sharing Philox quads, no parameters") {
  // 45 columns: rows start at every residue mod 4, so quads straddle rows.
  run<float, float, false>({11, 45, true});
  run<float, fg::cuda::bf16, false>({9, 45, false});
  run<float, float, false>({7, 3, true});  // fewer columns than a quad
}

TEST_CASE("add_layer_norm kernels (emulated): the offset shifted by a graph replay") {
  run<float, float, false>({11, 45, true, true});
  run<float, fg::cuda::bf16, true>({2, 5003, true, true});
}

TEST_CASE("add_layer_norm kernels (emulated): block per row past 4096 columns") {
  run<float, float, true>({3, 5003, true});
  run<float, fg::cuda::bf16, true>({2, 5003, false});
}
