// The Soft MoE ViT: names, shapes, initialization, forward, LayerScale, the
// foreground-guided loss, and float64 gradient checks.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "gradcheck.h"
#include "models/soft_moe_vit.h"

using namespace fg;
using namespace fg::models;

namespace {

ModelConfig tiny_config() {
  ModelConfig c = model_preset("soft_moe_32", 5);
  c.image_size = 32;
  c.patch_size = 8;  // 4x4 = 16 tokens
  c.width = 16;
  c.heads = 2;
  c.depth = 3;
  c.ffn_width = 24;
  c.moe_layers = 2;
  c.num_experts = 4;
  c.slots_per_expert = 2;
  c.layer_scale_layers = {2};
  c.aux_layer = 2;
  return c;
}

}  // namespace

TEST_CASE("model: soft_moe_32 has the reference's state_dict keys and shapes") {
  SoftMoEViT model(model_preset("soft_moe_32", 100));
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : model.named_parameters()) shapes[name] = t.shape();
  std::map<std::string, Shape> expected = {
      {"patch_to_embedding.0.weight", {768}}, {"patch_to_embedding.0.bias", {768}},
      {"patch_to_embedding.1.weight", {384, 768}}, {"patch_to_embedding.1.bias", {384}},
      {"patch_to_embedding.2.weight", {384}}, {"patch_to_embedding.2.bias", {384}},
      {"pos_embedding", {1, 196, 384}}, {"out.weight", {100, 384}}, {"out.bias", {100}},
      {"encoder.layers.7.gamma_2", {384}}};
  for (int i = 0; i < 8; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    expected[p + "norm1.weight"] = {384};
    expected[p + "norm1.bias"] = {384};
    expected[p + "self_attn.in_proj_weight"] = {1152, 384};
    expected[p + "self_attn.in_proj_bias"] = {1152};
    expected[p + "self_attn.out_proj.weight"] = {384, 384};
    expected[p + "self_attn.out_proj.bias"] = {384};
    expected[p + "norm2.weight"] = {384};
    expected[p + "norm2.bias"] = {384};
    expected[p + "linear.weight"] = {2048, 384};
    expected[p + "linear.bias"] = {2048};
    if (i < 6) {
      expected[p + "ffn.weight"] = {384, 2048};
      expected[p + "ffn.bias"] = {384};
    } else {
      expected[p + "ffn.phi"] = {2048, 32, 1};
      expected[p + "ffn.experts.weight"] = {32, 2048, 384};
      expected[p + "ffn.experts.bias"] = {32, 384};
    }
  }
  CHECK(shapes == expected);
  // Parameter count from the shapes above.
  int64_t count = 0;
  for (auto& [name, shape] : expected) count += shape_numel(shape);
  CHECK(model.parameter_count() == count);
  // The soft_moe_128 preset differs only in the number of experts.
  SoftMoEViT big(model_preset("soft_moe_128", 100));
  CHECK(big.state_dict().at("encoder.layers.6.ffn.phi").shape() == Shape{2048, 128, 1});
}

TEST_CASE("model: forward FLOPs of soft_moe_32 agree with the published 6.97 GFLOP") {
  SoftMoEViT model(model_preset("soft_moe_32", 1000));
  CHECK(model.forward_flops_per_image() / 1e9 == doctest::Approx(6.97).epsilon(0.02));
}

TEST_CASE("model: initialization follows the reference's distributions") {
  SoftMoEViT model(model_preset("soft_moe_32", 100), 7);
  const StateDict sd = model.state_dict();
  auto max_abs = [&](const std::string& k) { return max(abs(sd.at(k))).item(); };
  CHECK(max_abs("encoder.layers.6.ffn.phi") <= 1 / std::sqrt(32.0));
  CHECK(max_abs("encoder.layers.6.ffn.phi") > 0.9 / std::sqrt(32.0));
  const double expert_bound = 1 / std::sqrt(2048.0 * 384.0);
  CHECK(max_abs("encoder.layers.7.ffn.experts.weight") <= expert_bound);
  CHECK(max_abs("encoder.layers.7.ffn.experts.bias") <= expert_bound);
  CHECK(max_abs("encoder.layers.7.ffn.experts.bias") > 0.9 * expert_bound);
  CHECK(max_abs("encoder.layers.7.gamma_2") == 0.0);
  CHECK(max_abs("encoder.layers.0.self_attn.in_proj_bias") == 0.0);
  CHECK(max_abs("encoder.layers.0.self_attn.in_proj_weight") <= std::sqrt(6.0 / (384 + 1152)));
  CHECK(max_abs("encoder.layers.3.linear.weight") <= 1 / std::sqrt(384.0));
  CHECK(max_abs("encoder.layers.3.ffn.weight") <= 1 / std::sqrt(2048.0));
  const Tensor pos = sd.at("pos_embedding");
  const double m = mean(pos).item();
  CHECK(std::abs(m) < 0.01);
  CHECK(std::sqrt(mean(square(pos - m)).item()) == doctest::Approx(1.0).epsilon(0.02));
  CHECK(max_abs("patch_to_embedding.0.bias") == 0.0);
  // Deep-copied layers: identical attention and dense FFN, distinct Soft MoE layers.
  CHECK(max_abs_diff(sd.at("encoder.layers.0.self_attn.in_proj_weight"),
                     sd.at("encoder.layers.7.self_attn.in_proj_weight")) == 0);
  CHECK(max_abs_diff(sd.at("encoder.layers.1.ffn.weight"), sd.at("encoder.layers.5.ffn.weight")) == 0);
  CHECK(max_abs_diff(sd.at("encoder.layers.6.ffn.phi"), sd.at("encoder.layers.7.ffn.phi")) > 0);
  ModelConfig independent = model_preset("soft_moe_32", 100);
  independent.identical_layer_init = false;
  SoftMoEViT other(independent, 7);
  CHECK(max_abs_diff(other.state_dict().at("encoder.layers.0.linear.weight"),
                     other.state_dict().at("encoder.layers.1.linear.weight")) > 0);
}

TEST_CASE("model: forward outputs, dispatch weights and the auxiliary loss") {
  SoftMoEViT model(tiny_config(), 3);
  model.eval();
  Generator gen(4);
  const Tensor images = randn({2, 3, 32, 32}, gen);
  const Tensor masks = gt(rand({2, 1, 32, 32}, gen), 0.5).to(DType::Float32);
  auto out = model.forward(images, Tensor(), Tensor(), true);
  CHECK(out.logits.shape() == Shape{2, 5});
  CHECK_FALSE(out.aux.defined());
  REQUIRE(out.dispatch.size() == 2);
  CHECK(out.dispatch[0].shape() == Shape{2, 16, 4, 2});
  for (double v : sum(out.dispatch[1], {1}).to_vector<double>()) CHECK(v == doctest::Approx(1.0).epsilon(1e-5));
  // Combine weights come with them: a softmax over all slots of each token.
  REQUIRE(out.combine.size() == 2);
  CHECK(out.combine[1].shape() == Shape{2, 16, 4, 2});
  for (double v : sum(out.combine[1], {2, 3}).to_vector<double>()) CHECK(v == doctest::Approx(1.0).epsilon(1e-5));
  auto with_masks = model.forward(images, masks);
  REQUIRE(with_masks.aux.defined());
  CHECK(with_masks.aux.dim() == 0);
  CHECK(std::isfinite(with_masks.aux.item()));
  CHECK(max_abs_diff(with_masks.logits, out.logits) == 0);
  // The baseline has neither LayerScale nor an auxiliary loss.
  SoftMoEViT baseline(without_method(tiny_config()), 3);
  CHECK_FALSE(baseline.forward(images, masks).aux.defined());
  CHECK_FALSE(baseline.state_dict().contains("encoder.layers.2.gamma_2"));
  // A dense ViT has no Soft MoE layers.
  ModelConfig dense = model_preset("vit", 5);
  dense.image_size = 32;
  dense.patch_size = 8;
  dense.width = 16;
  dense.heads = 2;
  dense.depth = 2;
  dense.ffn_width = 24;
  SoftMoEViT vit(dense, 3);
  CHECK(vit.forward(images, masks, Tensor(), true).dispatch.empty());
  CHECK_THROWS_WITH_AS(model.forward(randn({2, 3, 16, 16}, gen)), doctest::Contains("expected images"), Error);
}

TEST_CASE("model: LayerScale gamma_2 = 0 removes the skip path of its layer") {
  // With gamma_2 = 0, layer 2's output depends on its input only through the FFN branch:
  // norm2(0 * x + f). Setting gamma_2 = 1 must change the logits.
  SoftMoEViT model(tiny_config(), 5);
  model.eval();
  Generator gen(6);
  const Tensor images = randn({1, 3, 32, 32}, gen);
  const Tensor a = model.forward(images).logits;
  {
    NoGradGuard g;
    fill_(model.layers->items()[2]->gamma_2, 1.0);
  }
  const Tensor b = model.forward(images).logits;
  CHECK(max_abs_diff(a, b) > 1e-4);
}

TEST_CASE("model: invalid configurations are refused by name") {
  ModelConfig c = tiny_config();
  c.aux_layer = 0;
  CHECK_THROWS_WITH_AS(SoftMoEViT{c}, doctest::Contains("auxiliary loss layer 0"), Error);
  c = tiny_config();
  c.patch_size = 5;
  CHECK_THROWS_WITH_AS(SoftMoEViT{c}, doctest::Contains("patch size"), Error);
  CHECK_THROWS_WITH_AS(model_preset("resnet"), doctest::Contains("unknown model type"), Error);
}

TEST_CASE("model: decay groups as the reference's optimizer") {
  SoftMoEViT model(tiny_config());
  std::vector<Tensor> decay, no_decay;
  model.split_decay_groups(decay, no_decay);
  size_t matrices = 0;
  for (auto& [name, p] : model.named_parameters())
    matrices += (p.dim() > 1 && name.find(".bias") == std::string::npos);
  CHECK(decay.size() == matrices);
  CHECK(decay.size() + no_decay.size() == model.parameters().size());
  bool experts_bias_in_no_decay = false;
  for (const Tensor& p : no_decay)
    experts_bias_in_no_decay |= p.same(model.layers->items()[1]->moe_ffn->experts->bias);
  CHECK(experts_bias_in_no_decay);  // 2-D but named .bias
}

// ---------------------------------------------------------------- the foreground loss

TEST_CASE("foreground loss: hand-computed q on a 2x2 grid") {
  // b=1, m=4 tokens, n=2 experts, p=1. a = mean over experts.
  const Tensor dispatch = Tensor::from_vector<double>({0.1, 0.3, 0.2, 0.2, 0.3, 0.1, 0.4, 0.4}, {1, 4, 2, 1});
  // a = [0.2, 0.2, 0.2, 0.4]; mean 0.25 -> B = [0, 0, 0, 1].
  // Mask (2x2, resized to 2x2 is the identity): foreground tokens 2 and 3.
  const Tensor mask = Tensor::from_vector<double>({0, 0, 1, 1}, {1, 1, 2, 2});
  auto r = foreground_guided_loss(dispatch, mask);
  // inner = B and fg = {3}: 0.4; outer = B or fg = {2, 3}: 0.6 -> q = 2/3.
  CHECK(r.q.item() == doctest::Approx(2.0 / 3.0));
  CHECK(r.loss.item() == doctest::Approx(-std::log(2.0 / 3.0 + 1e-4)));
  // Background variant: fg = {0, 1}; inner = {} -> 0; outer = {0, 1, 3}: 0.8 -> q = 0.
  auto back = foreground_guided_loss(dispatch, mask, Tensor(), false);
  CHECK(back.q.item() == doctest::Approx(0.0));
  CHECK(back.loss.item() == doctest::Approx(-std::log(1e-4)));
}

TEST_CASE("foreground loss: invalid samples are left out of the mean") {
  Generator gen(8);
  const Tensor dispatch = softmax(randn({3, 16, 4, 1}, gen, 0, 1, DType::Float64), 1);
  Tensor masks = Tensor::zeros({3, 1, 16, 16}, DType::Float64);
  {
    NoGradGuard g;
    fill_(masks.select(0, 0).slice(1, 0, 8), 1.0);   // top half foreground
    fill_(masks.select(0, 2).slice(2, 8, 16), 1.0);  // right half foreground
  }
  auto r = foreground_guided_loss(dispatch, masks);
  CHECK(r.valid.to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  const auto q = r.q.to_vector<double>();
  const double expected = (-std::log(q[0] + 1e-4) - std::log(q[2] + 1e-4)) / 2;
  CHECK(r.loss.item() == doctest::Approx(expected));
  // A mask marked unusable is left out too.
  const Tensor usable = Tensor::from_vector<uint8_t>({1, 1, 0}, {3}).to(DType::Bool);
  auto r2 = foreground_guided_loss(dispatch, masks, usable);
  CHECK(r2.loss.item() == doctest::Approx(-std::log(q[0] + 1e-4)));
  // No valid sample: the loss is 0.
  auto none = foreground_guided_loss(dispatch, Tensor::zeros({3, 1, 16, 16}));
  CHECK(none.loss.item() == 0.0);
}

TEST_CASE("foreground loss: bicubic ringing counts as foreground (!= 0)") {
  // A single foreground pixel block: bicubic to the 2x2 grid leaves small
  // nonzero (even negative) responses in neighbouring cells, which count.
  Tensor mask = Tensor::zeros({1, 1, 8, 8}, DType::Float64);
  {
    NoGradGuard g;
    fill_(mask.select(0, 0).select(0, 0).slice(0, 2, 4).slice(1, 2, 4), 1.0);
  }
  const auto fg = foreground_tokens(mask, 2).to_vector<uint8_t>();
  const auto resized = bicubic_resize(mask, 2, 2).to_vector<double>();
  for (size_t i = 0; i < 4; ++i) CHECK(fg[i] == (resized[i] != 0.0));
  CHECK(fg[0] == 1);
}

TEST_CASE("grad: Soft MoE layer in float64") {
  Generator gen(9);
  SoftMoE moe(6, 5, 3, 2, gen);
  moe.to(DType::Float64);
  using Inputs = std::vector<Tensor>;
  Inputs in = {fg::testing::random_input({2, 4, 6}, 10), moe.phi.detach(), moe.experts->weight.detach(),
               moe.experts->bias.detach()};
  fg::testing::check_gradients("soft moe", [&](const Inputs& x) {
    moe.phi = x[1];
    moe.experts->weight = x[2];
    moe.experts->bias = x[3];
    return moe.forward(x[0]).y;
  }, in);
}

TEST_CASE("grad: foreground-guided loss in float64") {
  Generator gen(11);
  Tensor masks = Tensor::zeros({2, 1, 8, 8}, DType::Float64);
  {
    NoGradGuard g;
    fill_(masks.select(0, 0).slice(1, 0, 4), 1.0);
    fill_(masks.select(0, 1).slice(2, 2, 6), 1.0);
  }
  // Dispatch weights from logits so they stay positive and normalized.
  std::vector<Tensor> in = {fg::testing::random_input({2, 16, 3, 1}, 12, -2, 2)};
  fg::testing::check_gradients("foreground loss", [&](const std::vector<Tensor>& x) {
    return foreground_guided_loss(softmax(x[0], 1), masks).loss;
  }, in);
  fg::testing::check_gradients("foreground loss, background variant", [&](const std::vector<Tensor>& x) {
    return foreground_guided_loss(softmax(x[0], 1), masks, Tensor(), false).loss;
  }, in);
}

TEST_CASE("grad: the whole tiny model in float64 (dropout off)") {
  ModelConfig c = tiny_config();
  c.dropout = 0.0;
  c.depth = 2;
  c.layer_scale_layers = {1};
  c.aux_layer = 1;
  c.layer_scale_init = 0.5;
  SoftMoEViT model(c, 13);
  model.to(DType::Float64);
  Generator gen(14);
  const Tensor images = randn({2, 3, 32, 32}, gen, 0, 1, DType::Float64);
  const Tensor masks = gt(rand({2, 1, 32, 32}, gen), 0.7).to(DType::Float64);
  // Check the gradients of a few parameters through logits + aux.
  auto params = model.named_parameters();
  std::vector<std::string> names = {"encoder.layers.1.gamma_2", "encoder.layers.1.ffn.phi",
                                    "patch_to_embedding.2.weight", "out.bias"};
  std::vector<Tensor*> slots = {&model.layers->items()[1]->gamma_2, &model.layers->items()[1]->moe_ffn->phi,
                                &model.embed_norm->weight, &model.out->bias};
  std::vector<Tensor> in;
  for (Tensor* s : slots) in.push_back(s->detach());
  fg::testing::check_gradients("tiny model", [&](const std::vector<Tensor>& x) {
    for (size_t i = 0; i < slots.size(); ++i) *slots[i] = x[i];
    auto out = model.forward(images, masks);
    return add(sum(out.logits), mul(out.aux, 0.01));
  }, in, {1e-6, 1e-6, 1e-5});
}
