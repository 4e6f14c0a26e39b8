// One training step as fgmoe-bench and the trainer run it (forward with the
// foreground masks, soft cross-entropy plus the auxiliary loss, backward,
// gradient clipping, AdamW, zero_grad), shared by the CPU and CUDA tests that
// check a step neither reads tensors back to the host nor takes new memory
// from the system once warmed up.
#pragma once

#include <memory>
#include <vector>

#include "engine/autocast.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "models/soft_moe_vit.h"

namespace fg::testing {

// A small Soft MoE ViT whose activations and weights exceed the CPU allocator's
// 64 KiB small-block limit (64 tokens of width 128), with the method's LayerScale
// and auxiliary loss.
inline models::ModelConfig step_test_config(int64_t heads) {
  models::ModelConfig c = models::model_preset("soft_moe_32", 10);
  c.image_size = 64;
  c.patch_size = 8;
  c.width = 128;
  c.heads = heads;
  c.depth = 3;
  c.ffn_width = 512;
  c.moe_layers = 2;
  c.num_experts = 8;
  c.slots_per_expert = 2;
  c.layer_scale_layers = {2};
  c.aux_layer = 2;
  return c;
}

struct StepFixture {
  models::SoftMoEViT model;
  std::vector<Tensor> decay, no_decay;
  std::unique_ptr<optim::AdamW> opt;
  Tensor images, masks, targets;

  StepFixture(const models::ModelConfig& config, Device device) : model(config, 1) {
    model.to(device);
    model.train();
    model.split_decay_groups(decay, no_decay);
    opt = std::make_unique<optim::AdamW>(
        std::vector<optim::ParamGroup>{{decay, 0.05}, {no_decay, 0.0}}, 1e-4);
    Generator gen(2);
    const int64_t size = config.image_size;
    images = randn({4, 3, size, size}, gen).to(device);
    masks = gt(rand({4, 1, size, size}, gen), 0.5).to(DType::Float32).to(device);
    targets = softmax(randn({4, config.num_classes}, gen), -1).to(device);
  }

  // bf16: the forward and the loss under bf16 autocast (CUDA), as fgmoe-bench runs it.
  // Returns the loss (not read back).
  Tensor step(bool bf16 = false) {
    Tensor loss;
    {
      AutocastGuard autocast(bf16);
      auto out = model.forward(images, masks);
      loss = soft_cross_entropy(out.logits, targets);
      if (out.aux.defined()) loss = add(loss, mul(out.aux, model.config().aux_weight));
    }
    loss.backward();
    // Clipping applied by the update, as the trainer does.
    opt->step(optim::clip_coefficient(model.parameters(), 5.0).coef);
    opt->zero_grad();
    return loss;
  }
};

}  // namespace fg::testing
