// The fused AdamW kernel (engine/cuda/adamw_kernels.cuh) compiled for the host
// and run through the CUDA emulation, launched the way adamw.cu does from
// plan_multi_tensor_launches, against the CPU backend's adamw: the same
// parameters and moments within a few units in the last place (the compilers
// may fuse a multiply-add differently), float32 and float64, with no gradient
// scale, a float32 one and a float64 one. Small chunks and launch limits make
// the plan split tensors across blocks and launches.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/adamw_kernels.cuh"
#include "engine/cuda/multi_tensor_plan.h"
#include "engine/device.h"

namespace aw = fg::cuda::adamw_detail;

namespace {

enum class Scale { none, f32, f64 };

using Plan = fg_emu_test::MultiTensorLimits;

// Within a few units in the last place of the operands' magnitude: the host
// compiler and nvcc may each contract a multiply and an add into one fused
// step (p * decay - update is one), or not, and where the two terms nearly
// cancel the result's own last place is finer. A gradient scale left out
// moves every moment by far more.
template <class T>
void check_close(const std::vector<T>& got, const std::vector<T>& expected,
                 const std::vector<T>& before, const std::vector<T>& grad, const char* what) {
  INFO(what);
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const T magnitude = std::abs(expected[i]) + std::abs(before[i]) + std::abs(grad[i]);
    INFO("element " << i << ": " << got[i] << " against " << expected[i]);
    REQUIRE(std::abs(got[i] - expected[i]) <= 4 * std::numeric_limits<T>::epsilon() * magnitude);
  }
}

template <class T>
void run(const std::vector<int64_t>& sizes, const Plan& plan, Scale scale) {
  std::ostringstream what;
  what << (sizeof(T) == 4 ? "float32" : "float64") << ", sizes";
  for (int64_t n : sizes) what << " " << n;
  what << ", chunk " << plan.chunk << ", at most " << plan.max_tensors << " tensors and "
       << plan.max_blocks << " blocks a launch, gradient scale "
       << (scale == Scale::none  ? "none"
           : scale == Scale::f32 ? "float32"
                                 : "float64");
  INFO(what.str());
  std::mt19937_64 rng(sizes.size() * 131 + static_cast<uint64_t>(plan.chunk));
  std::normal_distribution<double> dist;
  // Parameters, gradients and moments (v >= 0), as kernel buffers and CPU tensors.
  std::vector<std::vector<T>> p, g, m, v;
  std::vector<fg::Tensor> tp, tg, tm, tv;
  auto make = [&](std::vector<std::vector<T>>& bufs, std::vector<fg::Tensor>& tensors, int64_t n,
                  bool positive) {
    std::vector<T> b;
    for (int64_t i = 0; i < n; ++i) {
      const double x = dist(rng);
      b.push_back(static_cast<T>(positive ? x * x * 1e-3 : x));
    }
    bufs.push_back(b);
    tensors.push_back(fg::Tensor::from_vector<T>(b, {n}));
  };
  for (int64_t n : sizes) {
    make(p, tp, n, false);
    make(g, tg, n, false);
    make(m, tm, n, false);
    make(v, tv, n, true);
  }

  const std::vector<std::vector<T>> p0 = p, m0 = m, v0 = v;
  fg::AdamWParams hp;
  hp.lr = 3e-3;
  hp.beta1 = 0.9;
  hp.beta2 = 0.98;
  hp.eps = 1e-7;
  hp.weight_decay = 0.05;
  hp.step = 7;
  const float scale32 = 0.3712f;
  const double scale64 = 0.62171234567891;
  aw::GradScale grad_scale;
  if (scale == Scale::f32) {
    grad_scale.f32 = &scale32;
    hp.grad_scale = fg::Tensor::from_vector<float>({scale32}, {});
  } else if (scale == Scale::f64) {
    grad_scale.f64 = &scale64;
    hp.grad_scale = fg::Tensor::from_vector<double>({scale64}, {});
  }
  fg::backend_for(fg::kCPU).adamw(tp, tg, tm, tv, hp);

  const aw::AdamWScalars scalars{hp.lr,  hp.beta1,        hp.beta2,
                                 hp.eps, hp.weight_decay, static_cast<double>(hp.step)};
  std::vector<int64_t> numels(sizes.begin(), sizes.end());
  int64_t blocks_run = 0;
  for (const auto& l : fg::cuda::plan_multi_tensor_launches(numels, plan.max_tensors,
                                                            plan.max_blocks, plan.chunk)) {
    const aw::AdamWBatch<T> batch = aw::make_batch<T>(l, [&](size_t i) {
      return aw::AdamWTensors<T>{p[i].data(), g[i].data(), m[i].data(), v[i].data(), numels[i]};
    });
    const int blocks = static_cast<int>(l.block_tensor.size());
    fg_emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(plan.threads), 0, aw::adamw_kernel<T>,
                   batch, plan.chunk, &scalars, grad_scale);
    blocks_run += blocks;
  }
  const int64_t chunks = fg_emu_test::chunks_of(sizes, plan.chunk);
  CHECK(blocks_run == chunks);

  for (size_t t = 0; t < sizes.size(); ++t) {
    INFO("tensor " << t);
    check_close(p[t], tp[t].to_vector<T>(), p0[t], g[t], "parameters");
    check_close(m[t], tm[t].to_vector<T>(), m0[t], g[t], "exp_avg");
    check_close(v[t], tv[t].to_vector<T>(), v0[t], g[t], "exp_avg_sq");
  }
}

}  // namespace

TEST_CASE("AdamW kernel (emulated): the CPU backend's update, tensors split across launches") {
  for (Scale scale : {Scale::none, Scale::f32, Scale::f64}) {
    // The device's limits, with a chunk small enough for several chunks a tensor.
    run<float>({5, 0, 3000, 1, 1003}, Plan{aw::kMaxTensors, aw::kMaxBlocks, 256, 64}, scale);
    run<double>({5, 0, 3000, 1, 1003}, Plan{aw::kMaxTensors, aw::kMaxBlocks, 256, 64}, scale);
    // Tight limits: tensors continue in the next launch's slot 0.
    run<float>({1000, 7, 0, 2500, 3}, Plan{2, 3, 128, 96}, scale);
  }
}
