// Whole-step CUDA graphs (engine/cuda_graph.h): replays of a captured training
// step compute what eager steps compute (dropout draws moving on, the learning
// rate and step count read at each replay), the graph's memory is its own, and
// what a capture cannot hold is refused with a message that says what.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "engine/cuda_graph.h"
#include "tests/models/training_step.h"

using namespace fg;

namespace {

// Largest absolute difference over every parameter of two models.
double parameter_distance(models::SoftMoEViT& a, models::SoftMoEViT& b) {
  const std::vector<Tensor> pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  double worst = 0.0;
  for (size_t i = 0; i < pa.size(); ++i) {
    const std::vector<float> va = pa[i].to(kCPU).to_vector<float>();
    const std::vector<float> vb = pb[i].to(kCPU).to_vector<float>();
    REQUIRE(va.size() == vb.size());
    for (size_t j = 0; j < va.size(); ++j)
      worst = std::max(worst, static_cast<double>(std::fabs(va[j] - vb[j])));
  }
  return worst;
}

}  // namespace

TEST_CASE("cuda host: without a GPU a graph capture says why, and nothing is capturing") {
  CHECK_FALSE(cuda_graph_capturing());
  Generator gen(5);
  CHECK(gen.next_offset() == 0);  // draws outside a capture are plain
  CHECK(gen.offset_base() == nullptr);
  CudaGraph graph;
  CHECK_FALSE(graph.captured());
  CHECK_THROWS_WITH_AS(graph.replay(), doctest::Contains("nothing has been captured"), Error);
  if (cuda_available()) return;  // the GPU tests below cover the rest
  bool ran = false;
  CHECK_THROWS_WITH_AS(graph.capture([&] { ran = true; }),
                       doctest::Contains(cuda_compiled() ? "no CUDA GPU" : "built without CUDA"),
                       Error);
  CHECK_FALSE(ran);
  CHECK_FALSE(cuda_graph_capturing());
}

TEST_CASE("cuda host: graph inputs are copies of the captured batch that later batches are copied into") {
  const Tensor a = Tensor::full({2, 3}, 1.0), t = Tensor::full({2}, 4.0, DType::Int64);
  GraphInputs inputs({a, Tensor(), t});
  REQUIRE(inputs.tensors().size() == 3);
  CHECK_FALSE(inputs.tensors()[1].defined());
  CHECK(inputs.tensors()[0].data_ptr() != a.data_ptr());  // a copy, not the batch itself
  const Tensor b = Tensor::full({2, 3}, 2.0), u = Tensor::full({2}, 5.0, DType::Int64);
  CHECK(inputs.fits({b, Tensor(), u}));
  inputs.copy_from({b, Tensor(), u});
  CHECK(inputs.tensors()[0].to_vector<float>() == std::vector<float>(6, 2.0f));
  CHECK(inputs.tensors()[2].to_vector<int64_t>() == std::vector<int64_t>{5, 5});
  CHECK(a.to_vector<float>() == std::vector<float>(6, 1.0f));
  // Another shape, dtype, a missing or an extra part: does not fit, and is refused.
  CHECK_FALSE(inputs.fits({Tensor::full({3, 3}, 2.0), Tensor(), u}));
  CHECK_FALSE(inputs.fits({b, Tensor(), u.to(DType::Float32)}));
  CHECK_FALSE(inputs.fits({b, b, u}));
  CHECK_FALSE(inputs.fits({b, Tensor()}));
  CHECK_THROWS_WITH_AS(inputs.copy_from({b, b, u}), doctest::Contains("does not fit"), Error);
}

TEST_CASE("cuda: replays of a captured training step compute what eager steps compute") {
  FG_SKIP_WITHOUT_GPU();
  const models::ModelConfig c = testing::step_test_config(2);
  for (const bool bf16 : {false, true}) {
    INFO("bf16 autocast: " << bf16);
    testing::StepFixture eager(c, kCUDA), graphed(c, kCUDA);
    REQUIRE(parameter_distance(eager.model, graphed.model) == 0.0);
    // One eager warm-up step each (the optimizer's moments come to exist).
    eager.step(bf16);
    graphed.step(bf16);

    Tensor graph_loss;
    CudaGraph graph;
    const uint64_t offset_before = graphed.model.dropout_generator().offset();
    graph.capture([&] { graph_loss = graphed.step(bf16); });
    REQUIRE(graph.captured());
    CHECK(graph.nodes() > 50);
    CHECK(graph.pool_bytes() > 0);
    // The capture ran nothing: the generator and the step counts stand still.
    CHECK(graphed.model.dropout_generator().offset() == offset_before);
    CHECK(graphed.opt->states().front().step == 1);

    // Three steps with a learning rate that changes at each: read at replay time.
    for (int k = 0; k < 3; ++k) {
      const double lr = 1e-4 * (k + 2);
      eager.opt->set_lr(lr);
      graphed.opt->set_lr(lr);
      const double eager_loss = eager.step(bf16).item();
      graph.replay();
      const double replay_loss = graph_loss.item();
      INFO("step " << k);
      CHECK(std::isfinite(replay_loss));
      CHECK(replay_loss == doctest::Approx(eager_loss).epsilon(1e-5));
      CHECK(graphed.model.dropout_generator().offset() == eager.model.dropout_generator().offset());
      CHECK(graphed.opt->states().front().step == eager.opt->states().front().step);
    }
    CHECK(graphed.opt->states().front().step == 4);
    // A replay that drew the capture's dropout masks again, or kept the captured
    // learning rate, moves parameters by about the learning rate (1e-4).
    CHECK(parameter_distance(eager.model, graphed.model) < 1e-6);

    // Eager steps after the graph is gone continue from where the replays left off.
    graph.reset();
    eager.opt->set_lr(1e-4);
    graphed.opt->set_lr(1e-4);
    const double a = eager.step(bf16).item(), b = graphed.step(bf16).item();
    CHECK(b == doctest::Approx(a).epsilon(1e-5));
  }
}

TEST_CASE(
    "cuda: a graph's memory is its own: eager tensors made between replays keep their values") {
  FG_SKIP_WITHOUT_GPU();
  const Tensor x = cuda_testing::on_gpu(cuda_testing::random_cpu({1 << 16}, 3));
  const std::vector<float> xs = x.to(kCPU).to_vector<float>();
  Tensor y;
  CudaGraph graph;
  // Intermediates of the same size as the eager tensors below, freed (to the
  // graph's pool) inside the capture; the replays write them again.
  graph.capture([&] {
    const Tensor a = mul(x, 2.0);
    const Tensor b = add(a, 1.0);
    y = sum(mul(b, b));
  });
  double expected = 0.0;
  for (float v : xs) expected += (2.0 * v + 1.0) * (2.0 * v + 1.0);
  for (int k = 0; k < 3; ++k) {
    INFO("replay " << k);
    // Had the capture's freed blocks gone back to the shared cache, these
    // would get them and the replay would overwrite them.
    std::vector<Tensor> eager;
    for (int i = 0; i < 8; ++i)
      eager.push_back(Tensor::full({1 << 16}, 5.0, DType::Float32, kCUDA));
    eager.push_back(Tensor::full({}, 5.0, DType::Float32, kCUDA));
    graph.replay();
    CHECK(y.item() == doctest::Approx(expected).epsilon(1e-4));
    for (const Tensor& t : eager) CHECK(sum(t).item() == 5.0 * static_cast<double>(t.numel()));
  }
}

TEST_CASE("cuda: what a capture cannot hold is refused by name, and the device works on") {
  FG_SKIP_WITHOUT_GPU();
  const Tensor x = cuda_testing::on_gpu(cuda_testing::random_cpu({64}, 4));
  CudaGraph graph;
  auto refused = [&](const std::function<void()>& step, const std::string& says) {
    INFO("expected message: " << says);
    CHECK_THROWS_WITH_AS(graph.capture(step), doctest::Contains(says.c_str()), Error);
    CHECK_FALSE(graph.captured());
    CHECK_FALSE(cuda_graph_capturing());
    // The stream is not left capturing: eager work runs and reads back.
    CHECK(sum(mul(x, 0.0)).item() == 0.0);
  };
  refused([&] { (void)sum(x).item(); }, "reading a CUDA tensor on the host");
  refused(
      [&] {
        (void)Tensor::from_vector(std::vector<float>{1.f, 2.f}, {2}, kCUDA);
      },
      "upload from host memory");
  refused([&] { backend_for(kCUDA).synchronize(); }, "synchronize");
  refused(
      [&] {
        Generator gen(1);
        (void)gen.uniform();
      },
      "drawn on the host");
  refused(
      [&] {
        Generator gen(1);
        (void)rand({4}, gen, 0.0, 1.0, DType::Float32, kCUDA);
      },
      "random fills");
  refused(
      [&] {
        Tensor p = Tensor::zeros({4}, DType::Float32, kCUDA);
        p.set_requires_grad(true);
        sum(mul(p, 2.0)).backward();
        optim::AdamW opt({{{p}, 0.0}}, 1e-3);
        opt.step();
      },
      "no optimizer state yet");
}
