// The Soft MoE vision transformer of the reference, with the paper's LayerScale
// on the FFN skip path and the foreground-guided auxiliary loss. Parameter
// names and shapes are the reference's state_dict keys (shared/SPEC.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/nn/layers.h"
#include "models/foreground_loss.h"

namespace fg::models {

// Every knob the reference hard-codes, with the reference's value as default.
struct ModelConfig {
  std::string type = "soft_moe_32";  // preset the rest was derived from
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t num_channels = 3;
  int64_t width = 384;             // d_model
  int64_t heads = 6;
  int64_t depth = 8;               // encoder layers
  int64_t ffn_width = 2048;        // dim_feedforward (not 4 * width)
  int64_t moe_layers = 2;          // the last this many layers use Soft MoE ("last_n")
  int64_t num_experts = 32;
  int64_t slots_per_expert = 1;
  double dropout = 0.1;            // attention probabilities, attention output, after ReLU, FFN output
  double embed_dropout = 0.0;      // after adding the position embedding
  double layer_norm_eps = 1e-5;
  int64_t num_classes = 1000;
  std::vector<int64_t> layer_scale_layers = {7};  // layers whose FFN skip path is scaled by gamma_2
  double layer_scale_init = 0.0;
  int64_t aux_layer = 7;           // layer whose dispatch weights feed the auxiliary loss (-1: none)
  double aux_weight = 0.01;        // loss = classification + aux_weight * aux
  bool aux_foreground = true;      // false: the "background" variant
  // The reference builds every encoder layer as a deep copy of one template
  // layer, so all layers start with the same attention, norm and first FFN
  // weights (only the Soft MoE layers differ). false initializes each independently.
  bool identical_layer_init = true;

  int64_t grid() const { return image_size / patch_size; }
  int64_t tokens() const { return grid() * grid(); }
  bool is_moe_layer(int64_t layer) const { return layer >= depth - moe_layers; }
  bool has_layer_scale(int64_t layer) const;
  // Throws naming the offending option when the configuration cannot be built.
  void validate() const;
};

// "soft_moe_32" (the paper's model), "soft_moe_128", "vit" (dense FFN everywhere).
ModelConfig model_preset(const std::string& name, int64_t num_classes = 1000);
std::vector<std::string> model_preset_names();
// The paper's baseline: no LayerScale and no auxiliary loss.
ModelConfig without_method(ModelConfig config);

// Experts as one batched weight: Y[b, n] = X[b, n] @ weight[n] + bias[n].
class MultiExpertLayer : public nn::Module {
 public:
  MultiExpertLayer(int64_t in_features, int64_t out_features, int64_t num_experts, Generator& gen);
  // x (b, n, p, in) -> (b, n, p, out)
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;  // (n, in, out), (n, out)
};

class SoftMoE : public nn::Module {
 public:
  SoftMoE(int64_t in_features, int64_t out_features, int64_t num_experts, int64_t slots_per_expert,
          Generator& gen);
  struct Output {
    Tensor y;         // (b, m, out)
    Tensor dispatch;  // (b, m, n, p), softmax over m
    Tensor combine;   // (b, m, n, p), softmax over (n, p)
  };
  Output forward(const Tensor& x) const;
  int64_t num_experts, slots_per_expert;
  Tensor phi;  // (in, n, p)
  std::shared_ptr<MultiExpertLayer> experts;
};

class EncoderLayer : public nn::Module {
 public:
  EncoderLayer(const ModelConfig& config, int64_t index, Generator& init_gen, Generator& dropout_gen);
  struct Output {
    Tensor x;
    Tensor dispatch;  // defined for Soft MoE layers
    Tensor combine;   // defined for Soft MoE layers
  };
  Output forward(const Tensor& x) const;
  int64_t index;
  bool is_moe;
  double dropout_p;
  std::shared_ptr<nn::MultiheadAttention> self_attn;
  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<nn::Linear> linear;
  std::shared_ptr<nn::Linear> dense_ffn;  // "ffn" in dense layers
  std::shared_ptr<SoftMoE> moe_ffn;       // "ffn" in Soft MoE layers
  Tensor gamma_2;                         // LayerScale on the skip path (when configured)

 private:
  Generator* dropout_gen_;
};

// A container whose children are named by the caller ("0", "1", ... as
// torch.nn.Sequential, or "layers" for the encoder).
class Container : public nn::Module {
 public:
  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> module) {
    return register_module(name, std::move(module));
  }
};

class SoftMoEViT : public nn::Module {
 public:
  // Parameters are drawn from init_seed; dropout masks from a generator seeded with dropout_seed.
  explicit SoftMoEViT(ModelConfig config, uint64_t init_seed = 0, uint64_t dropout_seed = 1);

  struct Output {
    Tensor logits;                       // (b, num_classes)
    Tensor aux;                          // 0-d auxiliary loss, when masks were given and enabled
    ForegroundLoss aux_details;          // q and valid per sample
    std::vector<Tensor> dispatch;        // (b, m, n, p) per Soft MoE layer, when asked for
    std::vector<Tensor> combine;         // (b, m, n, p) per Soft MoE layer, with dispatch
  };
  // images (b, C, H, W) normalized; masks (b, 1, H, W) or undefined; mask_valid (b) bool or undefined.
  Output forward(const Tensor& images, const Tensor& masks = Tensor(),
                 const Tensor& mask_valid = Tensor(), bool return_dispatch = false) const;

  const ModelConfig& config() const { return config_; }
  Generator& dropout_generator() { return dropout_gen_; }
  // Parameters that get weight decay (matrices) and those that do not (1-D
  // parameters, biases, gamma_2), as the reference's optimizer groups them.
  void split_decay_groups(std::vector<Tensor>& decay, std::vector<Tensor>& no_decay) const;
  int64_t parameter_count() const;
  // Forward floating-point operations for one image (multiply-add = 2).
  double forward_flops_per_image() const;

  std::shared_ptr<Container> patch_to_embedding;  // 0: LayerNorm, 1: Linear, 2: LayerNorm
  std::shared_ptr<nn::LayerNorm> patch_norm, embed_norm;
  std::shared_ptr<nn::Linear> patch_linear;
  Tensor pos_embedding;  // (1, tokens, width)
  std::shared_ptr<Container> encoder;
  std::shared_ptr<nn::ModuleList<EncoderLayer>> layers;  // encoder.layers
  std::shared_ptr<nn::Linear> out;

 private:
  ModelConfig config_;
  Generator dropout_gen_;
};

}  // namespace fg::models
