// Test-only companion of test_parity.py: exports an fgmoe model with inputs,
// outputs and gradients for the PyTorch reference to check, and runs fgmoe on
// weights PyTorch wrote.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/serialize/pth.h"
#include "models/reference_config.h"
#include "models/soft_moe_vit.h"

using namespace fg;
using serialize::Value;

namespace {

models::ModelConfig parity_config(const std::string& name) {
  if (name == "soft_moe_32") {
    models::ModelConfig c = models::model_preset("soft_moe_32", 10);
    c.dropout = 0.0;
    return c;
  }
  FG_CHECK(name == "small", "unknown parity config ", name);
  models::ModelConfig c = models::model_preset("soft_moe_32", 7);
  c.image_size = 32;
  c.patch_size = 8;
  c.width = 32;
  c.heads = 2;
  c.depth = 3;
  c.ffn_width = 48;
  c.moe_layers = 2;
  c.num_experts = 4;
  c.slots_per_expert = 2;
  c.layer_scale_layers = {2};
  c.aux_layer = 2;
  c.dropout = 0.0;
  return c;
}

int export_case(const std::string& dir, const std::string& name) {
  const models::ModelConfig config = parity_config(name);
  models::SoftMoEViT model(config, 11, 12);
  Generator gen(13);
  {
    // A non-trivial LayerScale so the scaled skip path is exercised.
    NoGradGuard g;
    for (const auto& layer : model.layers->items())
      if (layer->gamma_2.defined()) uniform_(layer->gamma_2, gen, 0.2, 1.0);
  }
  const int64_t batch = 3, size = config.image_size;
  const Tensor images = randn({batch, 3, size, size}, gen);
  // Rectangular foreground masks; the last sample has none (left out of the loss).
  Tensor masks = Tensor::zeros({batch, 1, size, size});
  {
    NoGradGuard g;
    fill_(masks.select(0, 0).select(0, 0).slice(0, size / 4, size / 2).slice(1, size / 8, size * 3 / 4), 1.0);
    fill_(masks.select(0, 1).select(0, 0).slice(0, size / 2, size).slice(1, size / 2, size), 1.0);
  }
  const Tensor proj = randn({batch, config.num_classes}, gen);
  model.train();  // dropout is 0: train and eval agree, and the aux loss is on
  auto out = model.forward(images, masks);
  Tensor loss = add(sum(mul(out.logits, proj)), out.aux);
  loss.backward();
  StateDict grads;
  for (auto& [n, p] : model.named_parameters()) grads.insert(n, p.grad());

  serialize::save_state_dict_pth(dir + "/weights.pth", model.state_dict());
  serialize::save_state_dict_pth(dir + "/grads.pth", grads);
  Value inputs = Value::dict();
  inputs.set("images", images);
  inputs.set("masks", masks);
  inputs.set("proj", proj);
  serialize::save_pth(dir + "/inputs.pth", inputs);
  Value outputs = Value::dict();
  outputs.set("logits", out.logits.detach());
  outputs.set("aux", out.aux.detach());
  serialize::save_pth(dir + "/outputs.pth", outputs);
  std::ofstream(dir + "/config.json") << models::reference_config_json(config).dump(2);
  return 0;
}

int forward_case(const std::string& name, const std::string& weights, const std::string& inputs,
                 const std::string& out_path) {
  models::SoftMoEViT model(parity_config(name));
  model.load_state_dict(serialize::load_state_dict_pth(weights), true);
  model.eval();
  const Tensor images = serialize::load_pth(inputs).at("images").as_tensor().to(DType::Float32);
  NoGradGuard g;
  const Tensor logits = model.forward(images).logits;
  serialize::save_tensor_pth(out_path, logits);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "export" && argc == 4) return export_case(argv[2], argv[3]);
    if (mode == "forward" && argc == 6) return forward_case(argv[2], argv[3], argv[4], argv[5]);
    std::fprintf(stderr,
                 "usage: parity_tool export DIR small|soft_moe_32\n"
                 "       parity_tool forward small|soft_moe_32 WEIGHTS.pth INPUTS.pth OUT.pth\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity_tool: %s\n", e.what());
    return 1;
  }
}
