// A model configuration as the cfg dict of the PyTorch reference model
// (tests/models/reference_model.py), for tools and tests that build that model
// beside fgmoe's.
#pragma once

#include <nlohmann/json.hpp>

#include "models/soft_moe_vit.h"

namespace fg::models {

inline nlohmann::json reference_config_json(const ModelConfig& c) {
  return {{"image_size", c.image_size},     {"patch_size", c.patch_size},
          {"num_channels", c.num_channels}, {"width", c.width},
          {"heads", c.heads},               {"depth", c.depth},
          {"ffn_width", c.ffn_width},       {"moe_layers", c.moe_layers},
          {"num_experts", c.num_experts},   {"slots_per_expert", c.slots_per_expert},
          {"dropout", c.dropout},           {"layer_norm_eps", c.layer_norm_eps},
          {"num_classes", c.num_classes},   {"layer_scale_layers", c.layer_scale_layers},
          {"layer_scale_init", c.layer_scale_init}, {"aux_layer", c.aux_layer},
          {"aux_foreground", c.aux_foreground}};
}

}  // namespace fg::models
