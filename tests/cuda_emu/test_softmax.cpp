// The softmax kernels (engine/cuda/softmax_kernels.cuh) compiled for the host
// and run through the CUDA emulation with the launch shapes softmax.cu uses,
// against the CPU backend in float64 on the same inputs: softmax and
// log-softmax, forward and backward, over rows (a warp or a block per row)
// and over the middle dimension of (outer, n, inner) (column tiles).
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/softmax_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
using fg::cuda::convert;
using fg_emu_test::check_close;
using fg_emu_test::doubles;
using fg_emu_test::to_vector;
namespace sm = fg::cuda::softmax_detail;

namespace {

struct Case {
  int64_t outer, n, inner;
};

template <class T, bool Log>
void run(const Case& c) {
  const std::string what = std::string(std::is_same_v<T, float> ? "float32" : "bfloat16") +
                           (Log ? " log_softmax" : " softmax") + " outer " +
                           std::to_string(c.outer) + " n " + std::to_string(c.n) + " inner " +
                           std::to_string(c.inner);
  const int64_t numel = c.outer * c.n * c.inner;
  std::mt19937_64 rng(static_cast<uint64_t>(numel * 31 + c.inner));
  // Logits wide enough that the max subtraction matters in float.
  std::uniform_real_distribution<float> logits(-8.0f, 8.0f), grads(-1.0f, 1.0f);
  std::vector<T> x, g;
  for (int64_t i = 0; i < numel; ++i) {
    x.push_back(convert<T>(logits(rng)));
    g.push_back(convert<T>(grads(rng)));
  }

  // Expected: the CPU backend in float64.
  Backend& cpu = backend_for(kCPU);
  const Shape shape{c.outer, c.n, c.inner};
  const Tensor tx = Tensor::from_vector(doubles(x), shape),
               tg = Tensor::from_vector(doubles(g), shape);
  const Tensor y_ref = Tensor::empty(shape, DType::Float64),
               gx_ref = Tensor::empty(shape, DType::Float64);
  cpu.softmax(tx, y_ref, c.outer, c.n, c.inner, Log);
  cpu.softmax_backward(y_ref, tg, gx_ref, c.outer, c.n, c.inner, Log);

  // float32 results carry the float sums' rounding (below 3e-7 here),
  // bfloat16 ones the storage's (about 2e-3; the backward reads the rounded y).
  constexpr bool kFloat = std::is_same_v<T, float>;
  const double tolerance = kFloat ? 2e-6 : 5e-3;
  const sm::RowLaunch rows = sm::row_launch(c.outer, c.n);
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string where = what + ", " + fg_emu_test::describe(options);
    std::vector<T> y(static_cast<size_t>(numel), convert<T>(NAN)),
        gx(static_cast<size_t>(numel), convert<T>(NAN));
    const T* yp = y.data();
    if (c.inner == 1) {
      const dim3 grid(static_cast<unsigned>(rows.grid)), block(rows.threads);
      if (!rows.block_per_row) {
        fg_emu::launch(options, grid, block, 0, sm::softmax_rows_warp<T, Log>,
                       static_cast<const T*>(x.data()), y.data(), c.outer, c.n);
        fg_emu::launch(options, grid, block, 0, sm::softmax_backward_rows_warp<T, Log>, yp,
                       static_cast<const T*>(g.data()), gx.data(), c.outer, c.n);
      } else {
        fg_emu::launch(options, grid, block, 0, sm::softmax_rows_block<T, Log>,
                       static_cast<const T*>(x.data()), y.data(), c.outer, c.n);
        fg_emu::launch(options, grid, block, 0, sm::softmax_backward_rows_block<T, Log>, yp,
                       static_cast<const T*>(g.data()), gx.data(), c.outer, c.n);
      }
    } else {
      const dim3 grid = sm::column_launch_grid(c.outer, c.inner),
                 block(sm::kColumnWidth, sm::kColumnDepth);
      fg_emu::launch(options, grid, block, 0, sm::softmax_columns<T, Log>,
                     static_cast<const T*>(x.data()), y.data(), c.outer, c.n, c.inner);
      fg_emu::launch(options, grid, block, 0, sm::softmax_backward_columns<T, Log>, yp,
                     static_cast<const T*>(g.data()), gx.data(), c.outer, c.n, c.inner);
    }
    check_close(doubles(y), to_vector(y_ref), tolerance, where + ": y");
    check_close(doubles(gx), to_vector(gx_ref), kFloat ? 2e-6 : 1e-2, where + ": grad x");
  }
}

template <class T>
void both(const Case& c) {
  run<T, false>(c);
  run<T, true>(c);
}

}  // namespace

TEST_CASE("softmax kernels (emulated): a warp per row") {
  // Attention-probability rows of 197: not a multiple of 32; 37 rows leave the
  // last block of 8 warps with 5.
  both<float>({37, 197, 1});
  both<fg::cuda::bf16>({37, 197, 1});
  both<float>({9, 3, 1});  // fewer values than lanes
}

TEST_CASE("softmax kernels (emulated): a block per row past 2048 values") {
  both<float>({3, 2061, 1});
  both<fg::cuda::bf16>({2, 2061, 1});
}

TEST_CASE("softmax kernels (emulated): over the middle dimension, column tiles") {
  // inner 70: three tiles of 32 columns, the last with 6; n 45 not a multiple
  // of the 8 slices.
  both<float>({3, 45, 70});
  both<fg::cuda::bf16>({2, 45, 70});
  both<float>({2, 5, 3});  // n below the block's 8 slices
}
