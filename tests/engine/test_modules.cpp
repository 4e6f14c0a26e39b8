// Modules, layers, AdamW and gradient clipping.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>

#include "engine/nn/layers.h"
#include "engine/optim/adamw.h"

using namespace fg;

namespace {

struct Block : nn::Module {
  explicit Block(Generator& gen) {
    norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(4));
    self_attn = register_module("self_attn", std::make_shared<nn::MultiheadAttention>(4, 2, 0.0, gen));
    scale = Tensor::zeros({4});
    register_parameter("gamma_2", &scale);
    register_buffer("counter", &counter);
  }
  std::shared_ptr<nn::LayerNorm> norm1;
  std::shared_ptr<nn::MultiheadAttention> self_attn;
  Tensor scale;
  Tensor counter = Tensor::zeros({1}, DType::Int64);
};

struct Net : nn::Module {
  explicit Net(Generator& gen) {
    layers = register_module("layers", std::make_shared<nn::ModuleList<Block>>());
    layers->push_back(std::make_shared<Block>(gen));
    layers->push_back(std::make_shared<Block>(gen));
  }
  std::shared_ptr<nn::ModuleList<Block>> layers;
};

}  // namespace

TEST_CASE("modules: dotted parameter names and shapes as PyTorch's") {
  Generator gen(1);
  Net net(gen);
  std::vector<std::string> names;
  for (auto& [name, t] : net.named_parameters()) names.push_back(name);
  const std::vector<std::string> expected = {
      "layers.0.gamma_2", "layers.0.norm1.weight", "layers.0.norm1.bias",
      "layers.0.self_attn.in_proj_weight", "layers.0.self_attn.in_proj_bias",
      "layers.0.self_attn.out_proj.weight", "layers.0.self_attn.out_proj.bias",
      "layers.1.gamma_2", "layers.1.norm1.weight", "layers.1.norm1.bias",
      "layers.1.self_attn.in_proj_weight", "layers.1.self_attn.in_proj_bias",
      "layers.1.self_attn.out_proj.weight", "layers.1.self_attn.out_proj.bias"};
  CHECK(names == expected);
  CHECK(net.named_buffers().size() == 2);
  CHECK(net.layers->items()[0]->self_attn->in_proj_weight.shape() == Shape{12, 4});
  for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());
  const StateDict sd = net.state_dict();
  CHECK(sd.size() == 16);
  CHECK(sd.contains("layers.1.counter"));
}

TEST_CASE("modules: train/eval propagates; zero_grad clears") {
  Generator gen(2);
  Net net(gen);
  net.eval();
  CHECK_FALSE(net.layers->items()[1]->self_attn->is_training());
  net.train();
  CHECK(net.layers->items()[1]->norm1->is_training());
  Tensor& w = net.layers->items()[0]->norm1->weight;
  sum(w).backward();
  CHECK(w.grad().defined());
  net.zero_grad();
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("modules: load_state_dict reports every problem key by name") {
  Generator gen(3);
  Net a(gen), b(gen);
  StateDict sd = a.state_dict();
  b.load_state_dict(sd);
  CHECK(max_abs_diff(b.layers->items()[0]->self_attn->in_proj_weight,
                     a.layers->items()[0]->self_attn->in_proj_weight) == 0);
  sd.erase("layers.0.gamma_2");
  sd.insert("layers.9.extra", Tensor::zeros({1}));
  sd.insert("layers.1.norm1.weight", Tensor::zeros({5}));
  try {
    b.load_state_dict(sd);
    FAIL("strict load accepted a mismatching state dict");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("layers.0.gamma_2") != std::string::npos);
    CHECK(msg.find("layers.9.extra") != std::string::npos);
    CHECK(msg.find("layers.1.norm1.weight: expected (4,), got (5,)") != std::string::npos);
  }
  const auto report = b.load_state_dict(sd, false);
  CHECK(report.missing == std::vector<std::string>{"layers.0.gamma_2"});
  CHECK(report.unexpected == std::vector<std::string>{"layers.9.extra"});
  CHECK(report.mismatched.size() == 1);
}

TEST_CASE("layers: Linear and MultiheadAttention initialization bounds") {
  Generator gen(4);
  nn::Linear lin(300, 20, true, gen);
  const double bound = 1 / std::sqrt(300.0);
  CHECK(max(abs(lin.weight)).item() <= bound);
  CHECK(max(abs(lin.weight)).item() > 0.9 * bound);
  nn::MultiheadAttention mha(384, 6, 0.1, gen);
  const double xavier = std::sqrt(6.0 / (384 + 1152));
  CHECK(max(abs(mha.in_proj_weight)).item() <= xavier);
  CHECK(max(abs(mha.in_proj_weight)).item() > 0.9 * xavier);
  CHECK(max(abs(mha.in_proj_bias)).item() == 0);
  CHECK(max(abs(mha.out_proj->bias)).item() == 0);
}

TEST_CASE("layers: MultiheadAttention equals its definition") {
  Generator gen(5);
  nn::MultiheadAttention mha(8, 2, 0.0, gen);
  {
    NoGradGuard g;
    normal_(mha.in_proj_bias, gen, 0, 1);
  }
  const Tensor x = randn({2, 3, 8}, gen);
  const Tensor out = mha.forward(x);
  // Reference: per head h, softmax(q_h k_h^T / sqrt(4)) v_h, then out_proj.
  const Tensor qkv = add(matmul(x, mha.in_proj_weight.transpose(0, 1)), mha.in_proj_bias);
  std::vector<Tensor> heads;
  for (int h = 0; h < 2; ++h) {
    const Tensor q = qkv.slice(2, h * 4, h * 4 + 4), k = qkv.slice(2, 8 + h * 4, 8 + h * 4 + 4),
                 v = qkv.slice(2, 16 + h * 4, 16 + h * 4 + 4);
    heads.push_back(matmul(softmax(div(matmul(q, k.transpose(1, 2)), 2.0), -1), v));
  }
  const Tensor expected = linear(concat(heads, 2), mha.out_proj->weight, mha.out_proj->bias);
  CHECK(max_abs_diff(out, expected) < 1e-5);
  const Tensor cross = mha.forward(x, x, x);
  CHECK(max_abs_diff(cross, expected) < 1e-5);
}

TEST_CASE("optim: one and two AdamW steps against hand-computed values") {
  Tensor p = Tensor::from_vector<double>({1.0, -2.0}, {2});
  p.set_requires_grad();
  optim::AdamW opt({{{p}, 0.01}}, 0.1, 0.9, 0.999, 1e-8);
  p.set_grad(Tensor::from_vector<double>({0.5, 0.0}, {2}));
  opt.step();
  // p = 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.05; v = 0.00025;
  // update = (0.1 / 0.1) * 0.05 / (sqrt(0.00025) / sqrt(0.001) + 1e-8) = 0.1 (to 1e-8)
  const auto v1 = p.to_vector<double>();
  CHECK(v1[0] == doctest::Approx(0.999 - 0.05 / (0.5 + 1e-8)).epsilon(1e-12));
  CHECK(v1[1] == doctest::Approx(-2.0 * 0.999).epsilon(1e-12));  // decay only
  p.set_grad(Tensor::from_vector<double>({-1.0, 0.0}, {2}));
  opt.step();
  // m = 0.9 * 0.05 - 0.1 = -0.055; v = 0.999 * 0.00025 + 0.001 = 0.00124975
  // bias corrections 1 - 0.81 = 0.19 and 1 - 0.998001 = 0.001999
  const double p1 = (0.999 - 0.05 / (0.5 + 1e-8)) * (1 - 0.001);
  const double step = (0.1 / 0.19) * -0.055 / (std::sqrt(0.00124975) / std::sqrt(0.001999) + 1e-8);
  CHECK(p.to_vector<double>()[0] == doctest::Approx(p1 - step).epsilon(1e-12));
  CHECK(opt.states()[0].step == 2);
}

TEST_CASE("optim: AdamW on a long float32 tensor matches the formula at every element") {
  // 1003 values: the vectorized body and the scalar tail both run. Two steps, so the
  // moments carry over.
  const int64_t n = 1003;
  Generator gen(8);
  Tensor p = rand({n}, gen, -1.0, 1.0);
  p.set_requires_grad();
  const auto start = p.to_vector<float>();
  std::vector<double> pv(start.begin(), start.end());
  std::vector<double> m(n, 0.0), v(n, 0.0);
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
  optim::AdamW opt({{{p}, wd}}, lr, b1, b2, eps);
  for (int step = 1; step <= 2; ++step) {
    const Tensor g = rand({n}, gen, -2.0, 2.0);
    const auto gv = g.to_vector<float>();
    p.set_grad(g);
    opt.step();
    const double bias1 = 1 - std::pow(b1, step), bias2 = 1 - std::pow(b2, step);
    for (int64_t i = 0; i < n; ++i) {
      pv[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * gv[i];
      v[i] = b2 * v[i] + (1 - b2) * gv[i] * gv[i];
      pv[i] -= (lr / bias1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bias2) + eps);
    }
  }
  const auto got = p.to_vector<float>();
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(got[i] - pv[i]));
  CHECK(worst < 1e-6);
  // The update moved every element by about lr (Adam's normalized step), so a skipped
  // element would show.
  const auto exp_avg = opt.states()[0].exp_avg.to_vector<float>();
  for (int64_t i = 0; i < n; ++i) REQUIRE(std::abs(exp_avg[i] - m[i]) < 1e-6);
}

TEST_CASE("optim: parameters without gradients are left alone") {
  Tensor p = Tensor::ones({2});
  p.set_requires_grad();
  optim::AdamW opt({{{p}, 0.05}}, 0.1);
  opt.step();
  CHECK(p.to_vector<float>() == std::vector<float>{1, 1});
  CHECK(opt.states()[0].step == 0);
}

TEST_CASE("optim: gradient clipping covers every gradient, float32 together or mixed dtypes") {
  // float32 gradients go through the backend's multi-tensor passes: the sum of
  // every square (in double, rounded once), then every gradient times one
  // float32 coefficient.
  Generator gen(3);
  std::vector<Tensor> params;
  for (int64_t n : {5, 0, 70000, 1, 1003, 150000}) {
    Tensor p = Tensor::zeros({n});
    p.set_requires_grad();
    p.set_grad(randn({n}, gen));
    params.push_back(p);
  }
  Tensor no_grad = Tensor::zeros({4});  // no gradient: skipped
  no_grad.set_requires_grad();
  params.push_back(no_grad);
  std::vector<std::vector<float>> before;
  double expected_sq = 0.0;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    before.push_back(p.grad().to_vector<float>());
    for (float x : before.back()) expected_sq += static_cast<double>(x) * x;
  }
  const Tensor norm = optim::clip_grad_norm_(params, 1.0);
  CHECK(norm.dtype() == DType::Float32);
  CHECK(norm.item() == doctest::Approx(std::sqrt(expected_sq)).epsilon(1e-7));
  const float norm_f = static_cast<float>(norm.item());
  const float coef = std::min(1.0f / (norm_f + 1e-6f), 1.0f);
  size_t k = 0;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const std::vector<float> after = p.grad().to_vector<float>();
    for (size_t i = 0; i < after.size(); ++i) REQUIRE(after[i] == before[k][i] * coef);
    ++k;
  }
  CHECK(k == 6);
  CHECK(!no_grad.grad().defined());

  // The multi-tensor sum does not depend on the thread count.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor one_thread = optim::grad_norm(params);
  omp_set_num_threads(threads);
  CHECK(one_thread.item() == optim::grad_norm(params).item());

  // A float64 gradient among float32 ones: the per-tensor path, in float64.
  Tensor d = Tensor::zeros({3}, DType::Float64);
  d.set_requires_grad();
  d.set_grad(Tensor::from_vector<double>({0, 0, 12}, {3}));
  Tensor f = Tensor::zeros({1});
  f.set_requires_grad();
  f.set_grad(Tensor::from_vector<float>({5}, {1}));
  const Tensor mixed = optim::clip_grad_norm_({f, d}, 26.0);
  CHECK(mixed.item() == doctest::Approx(13.0));
  CHECK(f.grad().to_vector<float>()[0] == 5.0f);  // under the threshold: unchanged
}

TEST_CASE("optim: clipping applied by the update equals clipping the gradients first, bitwise") {
  // clip_coefficient + AdamW::step(coef) must give clip_grad_norm_ + step():
  // the same parameters and moments to the bit, over two steps, with the
  // gradients themselves left unscaled. float32 parameters (the multi-tensor
  // path, float32 coefficient) and a float64 one among float32 (the
  // per-tensor path, float64 coefficient); clipping that scales (max_norm 0.5)
  // and that does not (max_norm 1e6, coefficient 1).
  for (const bool mixed : {false, true}) {
    for (const double max_norm : {0.5, 1e6}) {
      CAPTURE(mixed);
      CAPTURE(max_norm);
      auto make = [&] {
        std::vector<Tensor> ps;
        Generator init(11);
        for (int64_t n : {7, 1003, 70000}) {
          const DType dtype = mixed && n == 1003 ? DType::Float64 : DType::Float32;
          Tensor p = randn({n}, init).to(dtype);
          p.set_requires_grad();
          ps.push_back(p);
        }
        return ps;
      };
      std::vector<Tensor> first = make(), second = make();
      optim::AdamW a({{first, 0.05}}, 0.01), b({{second, 0.05}}, 0.01);
      Generator grads(5);
      for (int step = 0; step < 2; ++step) {
        for (size_t i = 0; i < first.size(); ++i) {
          const Tensor g = randn(first[i].shape(), grads).to(first[i].dtype());
          first[i].set_grad(g.clone());
          second[i].set_grad(g.clone());
        }
        const Tensor norm_a = optim::clip_grad_norm_(first, max_norm);
        a.step();
        const std::vector<double> unscaled = second[1].grad().to(DType::Float64).to_vector<double>();
        const optim::ClipCoefficient clip = optim::clip_coefficient(second, max_norm);
        CHECK(clip.norm.item() == norm_a.item());
        CHECK(clip.coef.dtype() == clip.norm.dtype());
        CHECK((max_norm > 1.0 ? clip.coef.item() == 1.0 : clip.coef.item() < 1.0));
        b.step(clip.coef);
        // The gradients stay as they were.
        CHECK(second[1].grad().to(DType::Float64).to_vector<double>() == unscaled);
        for (size_t i = 0; i < first.size(); ++i) {
          CAPTURE(i);
          REQUIRE(first[i].to(DType::Float64).to_vector<double>() ==
                  second[i].to(DType::Float64).to_vector<double>());
          REQUIRE(a.states()[i].exp_avg_sq.to(DType::Float64).to_vector<double>() ==
                  b.states()[i].exp_avg_sq.to(DType::Float64).to_vector<double>());
        }
      }
    }
  }
}

TEST_CASE("optim: gradient clipping on a known gradient") {
  Tensor a = Tensor::zeros({2}), b = Tensor::zeros({1});
  a.set_requires_grad();
  b.set_requires_grad();
  a.set_grad(Tensor::from_vector<float>({3, 0}, {2}));
  b.set_grad(Tensor::from_vector<float>({4}, {1}));
  const Tensor norm = optim::clip_grad_norm_({a, b}, 1.0);
  CHECK(norm.item() == doctest::Approx(5.0));
  const double coef = 1.0 / (5.0 + 1e-6);
  CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(3 * coef));
  CHECK(b.grad().to_vector<float>()[0] == doctest::Approx(4 * coef));
  // Below the threshold nothing changes, and the returned norm is the new one.
  const Tensor norm2 = optim::clip_grad_norm_({a, b}, 10.0);
  CHECK(norm2.item() == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(3 * coef));
}
