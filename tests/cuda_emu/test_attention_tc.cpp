// The tensor-core attention kernels (engine/cuda/attention_tc.cuh) compiled
// for the host and run through the CUDA emulation, against the CPU backend's
// composite attention in float64 on the same bfloat16 inputs and the same
// dropout draws (the generator's seed and offset are handed to the kernels).
// The emulation checks the kernels' logic: index arithmetic, ragged tiles,
// the online softmax, the dropout mask's layout, barriers (each case runs in
// two schedule orders), WMMA alignment rules. Timing and the hardware's own
// behaviour are left to the GPU tests.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "compare.h"
#include "engine/cuda/attention_tc.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "head_operand.h"

using namespace fg;
using fg_emu_test::AttentionProblem;
using fg_emu_test::Operand;
namespace tc = fg::cuda::tc;

namespace {

// Some gradients vanish (one key: the softmax is constant) and leave only the
// rounding of the products, larger for tf32 (10 mantissa bits) than the exact
// zeros of bfloat16's: the floor under the norm allows for it.
void check(const std::vector<double>& got, const std::vector<double>& expected, double relative,
           const std::string& what) {
  fg_emu_test::check_close(got, expected, relative, what, 1e-4);
}

struct Case {
  int64_t batch, heads, q_len, kv_len, head_dim, pad;
  double dropout;
  bool graph_shift = false;  // the offset as a CUDA graph replay gives it
};

template <class T, int D>
void run_case(const Case& c) {
  AttentionProblem<T> problem(c.batch, c.heads, c.q_len, c.kv_len, D, c.pad, c.dropout, 1234);
  if (c.graph_shift) problem.as_graph_replay(1000);
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  const auto tiles = [](int64_t n) {
    return static_cast<unsigned>((n + tc::kRows - 1) / tc::kRows);
  };
  // The scores' own rounding: bfloat16 products are exact in float, tf32 rounds the inputs.
  const double lse_tolerance = std::is_same_v<T, float> ? 2e-3 : 1e-5;
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string what = std::string(std::is_same_v<T, float> ? "float32 (tf32)" : "bfloat16") +
                             " B " + std::to_string(c.batch) + " H " + std::to_string(c.heads) +
                             " Lq " + std::to_string(c.q_len) + " Lk " + std::to_string(c.kv_len) +
                             " D " + std::to_string(c.head_dim) + " pad " + std::to_string(c.pad) +
                             " p " + std::to_string(c.dropout) + (c.graph_shift ? " graph shift" : "") + ", " +
                             fg_emu_test::describe(options);
    problem.clear();
    fg_emu::launch(options, dim3(tiles(c.q_len), bh), dim3(tc::kThreads),
                   tc::Layout<T, D>::kForwardBytes, tc::forward_kernel<T, D>, problem.forward());
    check(problem.out.read(), problem.out_expected, 1e-2, what + ": out");
    check(std::vector<double>(problem.lse.begin(), problem.lse.end()), problem.lse_expected,
          lse_tolerance, what + ": lse");

    const tc::Params bwd = problem.backward();
    fg_emu::launch(options, dim3(tiles(c.q_len), bh), dim3(tc::kThreads),
                   tc::Layout<T, D>::kQueryBytes, tc::backward_query_kernel<T, D>, bwd);
    fg_emu::launch(options, dim3(tiles(c.kv_len), bh), dim3(tc::kThreads),
                   tc::Layout<T, D>::kKeyBytes, tc::backward_key_kernel<T, D>, bwd);
    check(problem.grad_q.read(), problem.grad_q_expected, 2e-2, what + ": grad q");
    check(problem.grad_k.read(), problem.grad_k_expected, 2e-2, what + ": grad k");
    check(problem.grad_v.read(), problem.grad_v_expected, 2e-2, what + ": grad v");
    // The kernels must leave the storage between rows (the padding) alone.
    for (const Operand<T>* o : problem.outputs())
      CHECK_MESSAGE(o->padding_untouched(), (what + ": the padding between heads was written"));
  }
}

// The CPU's answers are computed once per case; each schedule reruns the kernels.
template <class T>
void run(const Case& c) {
  switch (c.head_dim) {
    case 32:
      run_case<T, 32>(c);
      break;
    case 64:
      run_case<T, 64>(c);
      break;
    case 128:
      run_case<T, 128>(c);
      break;
    default:
      FAIL("unsupported head dim");
  }
}

}  // namespace

TEST_CASE("tensor-core attention (emulated): the ViT's shape, 197 tokens, head dim 64") {
  // Four query and key tiles, the last holding 5 rows; rows 16-byte aligned.
  for (double p : {0.0, 0.1}) {
    run<tc::bf16>({1, 2, 197, 197, 64, 0, p});
    run<float>({1, 2, 197, 197, 64, 0, p});
  }
}

TEST_CASE("tensor-core attention (emulated): the dropout offset shifted by a graph replay") {
  run<tc::bf16>({2, 1, 70, 130, 32, 2, 0.1, true});
}

TEST_CASE("tensor-core attention (emulated): Lq != Lk, unaligned rows, head dims 32 and 128") {
  run<tc::bf16>({2, 1, 70, 130, 32, 2, 0.1});  // row stride 34: element-wise loads and stores
  run<tc::bf16>({1, 1, 130, 70, 32, 2, 0.0});
  run<tc::bf16>({1, 2, 65, 80, 128, 8, 0.25});  // padded but aligned rows
  run<tc::bf16>({1, 1, 1, 1, 64, 0, 0.0});      // one query, one key
  run<float>({2, 1, 70, 130, 32, 1, 0.1});      // row stride 33 floats
  run<float>({1, 1, 1, 1, 64, 0, 0.0});
}
