// The reduction kernels (engine/cuda/reduce_kernels.cuh) compiled for the host
// and run through the CUDA emulation, launched the way reduce.cu does from the
// header's plan (a warp or a block per row, long rows split into chunks and
// combined by a second launch, column tiles with and without a split of r),
// against the CPU backend in float64 on the same inputs: sums within the
// float accumulation's rounding, max and min exactly, NaN propagated.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/reduce_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
using fg::cuda::accum_t;
using fg::cuda::convert;
namespace rd = fg::cuda::reduce_detail;

namespace {

struct Case {
  int64_t outer, r, inner;
  const char* path;  // what the plan is expected to take, for the message
};

const char* op_name(ReduceOp op) {
  return op == ReduceOp::Sum ? "sum" : op == ReduceOp::Max ? "max" : "min";
}

template <class In, class A, class Out>
void rows(const fg_emu::LaunchOptions& options, const In* x, Out* out, int64_t rows, int64_t r,
          int64_t chunks, ReduceOp op) {
  const rd::RowLaunch l = rd::row_launch(rows, r, chunks);
  const dim3 grid(static_cast<unsigned>(l.grid)), block(rd::kRowThreads);
  if (!l.block_per_task)
    fg_emu::launch(options, grid, block, 0, rd::reduce_rows_warp<In, A, Out>, x, out, l.tasks, r,
                   chunks, l.chunk, op);
  else
    fg_emu::launch(options, grid, block, 0, rd::reduce_rows_block<In, A, Out>, x, out, l.tasks, r,
                   chunks, l.chunk, op);
}

template <class In, class A, class Out>
void columns(const fg_emu::LaunchOptions& options, const In* x, Out* out, int64_t outer, int64_t r,
             int64_t inner, int64_t chunks, ReduceOp op) {
  const rd::ColumnLaunch l = rd::column_launch(outer, r, inner, chunks);
  fg_emu::launch(options, l.grid, l.block, 0, rd::reduce_columns<In, A, Out>, x, out, r, inner,
                 chunks, l.chunk, op);
}

// reduce.cu's reduce_typed over host buffers (outer <= 65535).
template <class T>
std::vector<T> reduce(const fg_emu::LaunchOptions& options, ReduceOp op, const std::vector<T>& x,
                      const Case& c) {
  using A = accum_t<T>;
  std::vector<T> out(static_cast<size_t>(c.outer * c.inner), convert<T>(NAN));
  if (c.inner == 1) {
    const int64_t chunks = rd::row_chunks(c.outer, c.r);
    if (chunks == 1) {
      rows<T, A, T>(options, x.data(), out.data(), c.outer, c.r, 1, op);
    } else {
      std::vector<A> partial(static_cast<size_t>(c.outer * chunks), convert<A>(NAN));
      rows<T, A, A>(options, x.data(), partial.data(), c.outer, c.r, chunks, op);
      rows<A, A, T>(options, static_cast<const A*>(partial.data()), out.data(), c.outer, chunks, 1,
                    op);
    }
    return out;
  }
  const int64_t chunks = rd::column_chunks(c.outer, c.r, c.inner);
  if (chunks == 1) {
    columns<T, A, T>(options, x.data(), out.data(), c.outer, c.r, c.inner, 1, op);
  } else {
    std::vector<A> partial(static_cast<size_t>(c.outer * chunks * c.inner), convert<A>(NAN));
    columns<T, A, A>(options, x.data(), partial.data(), c.outer, c.r, c.inner, chunks, op);
    columns<A, A, T>(options, static_cast<const A*>(partial.data()), out.data(), c.outer, chunks,
                     c.inner, 1, op);
  }
  return out;
}

template <class T>
void run(const Case& c, bool all_schedules) {
  const int64_t numel = c.outer * c.r * c.inner;
  std::mt19937_64 rng(static_cast<uint64_t>(numel * 7 + c.inner));
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::vector<T> x;
  for (int64_t i = 0; i < numel; ++i) x.push_back(convert<T>(dist(rng)));
  // A NaN halfway through the last output's reduction: max and min must return it.
  const bool with_nan = !std::is_same_v<T, int64_t> && numel > 0;
  if (with_nan)
    x[static_cast<size_t>(((c.outer - 1) * c.r + c.r / 2) * c.inner + c.inner - 1)] =
        convert<T>(NAN);
  const std::vector<double> exact = fg_emu_test::doubles(x);
  const Tensor tx = Tensor::from_vector(exact, {c.outer, c.r, c.inner});

  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
    if (std::is_same_v<T, int64_t> && op != ReduceOp::Sum) continue;
    const Tensor ref = Tensor::empty({c.outer, c.inner}, DType::Float64);
    backend_for(kCPU).reduce(op, tx, c.outer, c.r, c.inner, ref);
    const std::vector<double> expected = fg_emu_test::to_vector(ref);
    std::vector<fg_emu::LaunchOptions> schedules = fg_emu_test::schedules();
    if (!all_schedules) schedules.resize(1);
    for (const fg_emu::LaunchOptions& options : schedules) {
      const std::string what = std::string(op_name(op)) + ", outer " + std::to_string(c.outer) +
                               " r " + std::to_string(c.r) + " inner " + std::to_string(c.inner) +
                               " (" + c.path + "), " + fg_emu_test::describe(options);
      INFO(what);
      const std::vector<double> got = fg_emu_test::doubles(reduce<T>(options, op, x, c));
      REQUIRE(got.size() == expected.size());
      if (op == ReduceOp::Sum && !std::is_same_v<T, int64_t>) {
        // The NaN makes its output NaN; the others within the float sum's rounding
        // (bfloat16: the output's own rounding).
        const double tolerance = std::is_same_v<T, double>  ? 1e-12
                                 : std::is_same_v<T, float> ? 2e-6
                                                            : 8e-3;
        for (size_t i = 0; i < got.size(); ++i) {
          INFO("output " << i << ": " << got[i] << " against " << expected[i]);
          if (std::isnan(expected[i])) {
            REQUIRE(std::isnan(got[i]));
          } else {
            const double scale = std::max(1.0, std::sqrt(static_cast<double>(c.r)) * 4.0);
            REQUIRE(std::abs(got[i] - expected[i]) <=
                    tolerance * scale + tolerance * std::abs(expected[i]));
          }
        }
      } else {
        for (size_t i = 0; i < got.size(); ++i) {
          INFO("output " << i << ": " << got[i] << " against " << expected[i]);
          if (std::isnan(expected[i]))
            REQUIRE(std::isnan(got[i]));
          else
            REQUIRE(got[i] == convert<double>(convert<T>(expected[i])));
        }
      }
      if (with_nan && op != ReduceOp::Sum) CHECK(std::isnan(got.back()));
    }
  }
}

template <class T>
void run_all(bool all_schedules) {
  const std::vector<Case> cases = {
      {37, 100, 1, "a warp per row"},
      {3, 3000, 1, "a block per row"},
      {2, 20000, 1, "rows split into chunks, then a warp per row"},
      {1, 70001, 1, "one row split into 18 chunks"},
      {2, 1000, 50, "columns, r split in 8"},
      {1, 300, 33, "columns, r split, a partial tile"},
      {16, 3, 1030, "columns, no split"},
      {3, 0 + 1, 5, "a reduction of length 1"},
  };
  for (const Case& c : cases) run<T>(c, all_schedules && c.outer * c.r * c.inner <= 100000);
}

}  // namespace

TEST_CASE("reduction kernels (emulated): float32 sums, max and min against the CPU") {
  run_all<float>(true);
}

TEST_CASE("reduction kernels (emulated): bfloat16, float64 and int64 against the CPU") {
  run_all<__nv_bfloat16>(false);
  run_all<double>(false);
  run_all<int64_t>(false);
}
