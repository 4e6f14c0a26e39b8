// The gradient-clipping kernels (engine/cuda/multi_tensor_kernels.cuh)
// compiled for the host and run through the CUDA emulation, launched the way
// grad_clip.cu does from plan_multi_tensor_launches: the sum of squares of
// many tensors against a float64 sum, and the scale bitwise against the CPU's
// float multiply. Small chunks and launch limits make the plan split tensors
// across blocks and launches, as a model's large tensors are on the device.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/cuda/multi_tensor_kernels.cuh"
#include "engine/cuda/multi_tensor_plan.h"

namespace mt = fg::cuda::multi_tensor_detail;

namespace {

using Plan = fg_emu_test::MultiTensorLimits;

// Runs the plan over the tensors; launch(batch, blocks, first_block) per launch.
template <class F>
int64_t for_each_launch(std::vector<std::vector<float>>& tensors, const Plan& plan, F launch) {
  std::vector<int64_t> numels;
  for (const auto& t : tensors) numels.push_back(static_cast<int64_t>(t.size()));
  int64_t first_block = 0;
  for (const auto& l : fg::cuda::plan_multi_tensor_launches(numels, plan.max_tensors,
                                                            plan.max_blocks, plan.chunk)) {
    const mt::FloatBatch batch = mt::make_batch(
        l, [&](size_t i) { return tensors[i].data(); }, [&](size_t i) { return numels[i]; });
    const int blocks = static_cast<int>(l.block_tensor.size());
    launch(batch, blocks, first_block);
    first_block += blocks;
  }
  return first_block;
}

void run(const std::vector<int64_t>& sizes, const Plan& plan) {
  std::ostringstream what;
  what << "sizes";
  for (int64_t n : sizes) what << " " << n;
  what << ", chunk " << plan.chunk << ", at most " << plan.max_tensors << " tensors and "
       << plan.max_blocks << " blocks a launch";
  INFO(what.str());
  std::mt19937_64 rng(sizes.size() * 977 + static_cast<uint64_t>(plan.chunk));
  std::normal_distribution<float> dist;
  std::vector<std::vector<float>> tensors;
  double expected = 0.0;
  for (int64_t n : sizes) {
    std::vector<float> t;
    for (int64_t i = 0; i < n; ++i) {
      t.push_back(dist(rng));
      expected += static_cast<double>(t.back()) * t.back();
    }
    tensors.push_back(t);
  }
  const int64_t chunks = fg_emu_test::chunks_of(sizes, plan.chunk);

  for (const fg_emu::LaunchOptions& options : fg_emu_test::schedules()) {
    INFO(fg_emu_test::describe(options));
    std::vector<double> partials(static_cast<size_t>(chunks) + 1, NAN);
    const int64_t blocks =
        for_each_launch(tensors, plan, [&](const mt::FloatBatch& batch, int n, int64_t first) {
          fg_emu::launch(options, dim3(static_cast<unsigned>(n)), dim3(plan.threads), 0,
                         mt::sum_squares_partials, batch, plan.chunk, partials.data() + first);
        });
    CHECK(blocks == chunks);
    CHECK(std::isnan(partials[static_cast<size_t>(chunks)]));  // nothing past the plan's blocks
    float total = NAN;
    fg_emu::launch(options, dim3(1), dim3(256), 0, mt::sum_partials,
                   static_cast<const double*>(partials.data()), chunks, &total);
    CHECK(static_cast<double>(total) == doctest::Approx(expected).epsilon(1e-6));
  }

  // The scale: every element times the factor, in float, nothing else touched.
  std::vector<std::vector<float>> scaled = tensors;
  const float factor = 0.37f;
  for_each_launch(scaled, plan, [&](const mt::FloatBatch& batch, int n, int64_t) {
    fg_emu::launch(dim3(static_cast<unsigned>(n)), dim3(plan.threads), 0, mt::scale_chunks, batch,
                   plan.chunk, &factor);
  });
  for (size_t t = 0; t < tensors.size(); ++t)
    for (size_t i = 0; i < tensors[t].size(); ++i) REQUIRE(scaled[t][i] == tensors[t][i] * factor);
}

}  // namespace

TEST_CASE("multi-tensor clipping kernels (emulated): tensors split across blocks and launches") {
  // The device's limits, with a chunk small enough for several chunks a tensor.
  run({5, 0, 3000, 1, 1003}, Plan{mt::kMaxTensors, mt::kMaxBlocks, 256, 64});
  // Tight limits: tensors continue in the next launch's slot 0.
  run({1000, 7, 0, 2500, 3}, Plan{2, 3, 128, 96});
  run({}, Plan{mt::kMaxTensors, mt::kMaxBlocks, 256, 64});  // nothing: a sum of 0
}
