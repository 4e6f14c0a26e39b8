// The CUDA-core attention kernels (engine/cuda/attention_simt.cuh) compiled
// for the host and run through the CUDA emulation, in float32 and bfloat16,
// against the CPU backend's composite attention in float64 on the same inputs
// and the same dropout draws (the generator's seed and offset go to the
// kernels). The three kernels run in the order attention.cu launches them:
// the backward's key kernel reads the log-sum-exp of the forward and the
// Delta of the query kernel.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/cuda/attention_simt.cuh"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "head_operand.h"

using namespace fg;
using fg::cuda::convert;
using fg_emu_test::AttentionProblem;
using fg_emu_test::check_close;
using fg_emu_test::Operand;
namespace simt = fg::cuda::simt;

namespace {

struct Case {
  int64_t batch, heads, q_len, kv_len, pad;
  double dropout;
  bool graph_shift = false;  // the offset as a CUDA graph replay gives it
};

template <class T, int D>
void run(const Case& c) {
  const std::string what = std::string(std::is_same_v<T, float> ? "float32" : "bfloat16") + " B " +
                           std::to_string(c.batch) + " H " + std::to_string(c.heads) + " Lq " +
                           std::to_string(c.q_len) + " Lk " + std::to_string(c.kv_len) + " D " +
                           std::to_string(D) + " pad " + std::to_string(c.pad) + " p " +
                           std::to_string(c.dropout) + (c.graph_shift ? " graph shift" : "");
  AttentionProblem<T> problem(c.batch, c.heads, c.q_len, c.kv_len, D, c.pad, c.dropout, 4321);
  if (c.graph_shift) problem.as_graph_replay(1000);

  // float32 results carry the float sums' rounding (about 4e-7 here, more
  // where a gradient vanishes), bfloat16 ones the storage's (about 2e-3).
  constexpr bool kFloat = std::is_same_v<T, float>;
  const double out_tolerance = kFloat ? 5e-6 : 5e-3, grad_tolerance = kFloat ? 5e-5 : 5e-3;
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  const dim3 block(simt::kThreads);
  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    const std::string where = what + ", " + fg_emu_test::describe(options);
    problem.clear();
    fg_emu::launch(options, dim3(simt::row_blocks(c.q_len), bh), block,
                   simt::forward_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_forward_kernel<T, D>, problem.forward());
    check_close(problem.out.read(), problem.out_expected, out_tolerance, where + ": out");
    check_close(std::vector<double>(problem.lse.begin(), problem.lse.end()), problem.lse_expected,
                1e-6, where + ": lse");

    const fg::cuda::AttentionParams bwd = problem.backward();
    fg_emu::launch(options, dim3(simt::row_blocks(c.q_len), bh), block,
                   simt::backward_query_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_backward_query_kernel<T, D>, bwd);
    fg_emu::launch(options, dim3(simt::row_blocks(c.kv_len), bh), block,
                   simt::backward_key_shared_bytes(c.q_len, c.kv_len, D),
                   simt::attention_backward_key_kernel<T, D>, bwd);

    // Delta = dO . O per query, of the output the kernel wrote.
    std::vector<double> delta_expected(problem.delta.size(), 0.0);
    const std::vector<double> out_got = problem.out.read();
    const Operand<T>& grad_out = problem.grad_out;
    for (int64_t bi = 0; bi < c.batch; ++bi)
      for (int64_t hi = 0; hi < c.heads; ++hi)
        for (int64_t i = 0; i < c.q_len; ++i)
          for (int64_t d = 0; d < D; ++d)
            delta_expected[static_cast<size_t>((bi * c.heads + hi) * c.q_len + i)] +=
                grad_out.values[grad_out.flat(bi, hi, i, d)] * out_got[grad_out.flat(bi, hi, i, d)];
    check_close(std::vector<double>(problem.delta.begin(), problem.delta.end()), delta_expected,
                1e-6, where + ": delta");
    check_close(problem.grad_q.read(), problem.grad_q_expected, grad_tolerance, where + ": grad q");
    check_close(problem.grad_k.read(), problem.grad_k_expected, grad_tolerance, where + ": grad k");
    check_close(problem.grad_v.read(), problem.grad_v_expected, grad_tolerance, where + ": grad v");
    for (const Operand<T>* o : problem.outputs())
      CHECK_MESSAGE(o->padding_untouched(), (where + ": the padding between heads was written"));
  }
}

}  // namespace

TEST_CASE("CUDA-core attention (emulated): the ViT's shape, 197 tokens, head dim 64") {
  // Seven blocks of 32 rows, the last holding 5; every warp's last row partial.
  run<float, 64>({2, 2, 197, 197, 0, 0.0});
  run<float, 64>({1, 2, 197, 197, 0, 0.1});
  run<fg::cuda::bf16, 64>({1, 2, 197, 197, 0, 0.1});
}

TEST_CASE("CUDA-core attention (emulated): the dropout offset shifted by a graph replay") {
  run<float, 32>({1, 2, 70, 33, 3, 0.25, true});
}

TEST_CASE("CUDA-core attention (emulated): Lq != Lk, odd row strides, head dims 32 and 128") {
  run<float, 32>({2, 1, 70, 33, 3, 0.25});  // a key row past the first 32 lanes
  run<fg::cuda::bf16, 32>({1, 2, 33, 70, 1, 0.0});
  run<float, 128>({1, 1, 45, 31, 2, 0.1});
  run<fg::cuda::bf16, 128>({1, 2, 9, 40, 0, 0.25});
  run<float, 128>({1, 1, 1, 1, 0, 0.0});  // one query, one key
}
