#include "models/soft_moe_vit.h"

#include <algorithm>
#include <cmath>

#include "engine/ops.h"

namespace fg::models {

// ---------------------------------------------------------------- configuration

bool ModelConfig::has_layer_scale(int64_t layer) const {
  return std::find(layer_scale_layers.begin(), layer_scale_layers.end(), layer) !=
         layer_scale_layers.end();
}

void ModelConfig::validate() const {
  FG_CHECK(image_size > 0 && patch_size > 0 && image_size % patch_size == 0, "model: image size ",
           image_size, " is not a multiple of the patch size ", patch_size);
  FG_CHECK(width > 0 && heads > 0 && width % heads == 0, "model: width ", width,
           " is not divisible by the number of heads ", heads);
  FG_CHECK(depth > 0, "model: depth must be positive, got ", depth);
  FG_CHECK(ffn_width > 0, "model: FFN width must be positive, got ", ffn_width);
  FG_CHECK(moe_layers >= 0 && moe_layers <= depth, "model: ", moe_layers,
           " Soft MoE layers do not fit in ", depth, " layers");
  FG_CHECK(moe_layers == 0 || (num_experts > 0 && slots_per_expert > 0),
           "model: experts and slots per expert must be positive");
  FG_CHECK(num_classes > 0, "model: number of classes must be positive, got ", num_classes);
  FG_CHECK(dropout >= 0 && dropout < 1 && embed_dropout >= 0 && embed_dropout < 1,
           "model: dropout must be in [0, 1)");
  for (int64_t layer : layer_scale_layers)
    FG_CHECK(layer >= 0 && layer < depth, "model: LayerScale layer ", layer, " is not in 0..",
             depth - 1);
  FG_CHECK(aux_layer < 0 || (aux_layer < depth && is_moe_layer(aux_layer)), "model: auxiliary loss layer ",
           aux_layer, " is not a Soft MoE layer (those are ", depth - moe_layers, "..", depth - 1, ")");
}

ModelConfig model_preset(const std::string& name, int64_t num_classes) {
  ModelConfig config;
  config.type = name;
  config.num_classes = num_classes;
  if (name == "soft_moe_32") return config;
  if (name == "soft_moe_128") {
    config.num_experts = 128;
    return config;
  }
  if (name == "vit") {
    config.moe_layers = 0;
    config.layer_scale_layers.clear();
    config.aux_layer = -1;
    return config;
  }
  FG_CHECK(false, "unknown model type '", name, "' (known: soft_moe_32, soft_moe_128, vit)");
  return config;
}

std::vector<std::string> model_preset_names() { return {"soft_moe_32", "soft_moe_128", "vit"}; }

ModelConfig without_method(ModelConfig config) {
  config.layer_scale_layers.clear();
  config.aux_layer = -1;
  return config;
}

// ---------------------------------------------------------------- Soft MoE

MultiExpertLayer::MultiExpertLayer(int64_t in, int64_t out, int64_t n, Generator& gen) {
  // PyTorch's fan-in of a (n, in, out) tensor is in * out.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * out));
  weight = rand({n, in, out}, gen, -bound, bound);
  bias = rand({n, out}, gen, -bound, bound);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Tensor MultiExpertLayer::forward(const Tensor& x) const {
  const int64_t b = x.size(0), n = x.size(1), p = x.size(2), in = x.size(3);
  FG_CHECK(n == weight.size(0) && in == weight.size(1), "experts: input of shape ",
           shape_str(x.shape()), " for weights of shape ", shape_str(weight.shape()));
  // One batched GEMM over the experts: (n, b*p, in) @ (n, in, out).
  const Tensor per_expert = x.permute({1, 0, 2, 3}).reshape({n, b * p, in});
  const Tensor y = add(matmul(per_expert, weight), bias.unsqueeze(1));
  return y.reshape({n, b, p, weight.size(2)}).permute({1, 0, 2, 3});
}

SoftMoE::SoftMoE(int64_t in, int64_t out, int64_t n, int64_t p, Generator& gen)
    : num_experts(n), slots_per_expert(p) {
  // kaiming_uniform(a=sqrt(5)) with PyTorch's fan-in of (in, n, p): n * p.
  const double bound = 1.0 / std::sqrt(static_cast<double>(n * p));
  phi = rand({in, n, p}, gen, -bound, bound);
  register_parameter("phi", &phi);
  experts = register_module("experts", std::make_shared<MultiExpertLayer>(in, out, n, gen));
}

SoftMoE::Output SoftMoE::forward(const Tensor& x) const {
  FG_CHECK(x.dim() == 3 && x.size(2) == phi.size(0), "Soft MoE: input of shape ",
           shape_str(x.shape()), ", expected (b, m, ", phi.size(0), ")");
  const int64_t b = x.size(0), m = x.size(1), n = num_experts, p = slots_per_expert;
  const Tensor logits = matmul(x, phi.reshape({phi.size(0), n * p}));  // (b, m, n*p)
  const Tensor dispatch = softmax(logits, 1);                          // over tokens
  const Tensor combine = softmax(logits, -1);                          // over all slots
  const Tensor slots = matmul(dispatch.transpose(1, 2), x);           // (b, n*p, d)
  const Tensor expert_out = experts->forward(slots.reshape({b, n, p, x.size(2)}));
  const Tensor y = matmul(combine, expert_out.reshape({b, n * p, expert_out.size(3)}));
  return {y, dispatch.reshape({b, m, n, p}), combine.reshape({b, m, n, p})};
}

// ---------------------------------------------------------------- encoder layer

EncoderLayer::EncoderLayer(const ModelConfig& c, int64_t index, Generator& init_gen,
                           Generator& dropout_gen)
    : index(index), is_moe(c.is_moe_layer(index)), dropout_p(c.dropout), dropout_gen_(&dropout_gen) {
  norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(c.width, c.layer_norm_eps));
  self_attn = register_module("self_attn", std::make_shared<nn::MultiheadAttention>(
                                                c.width, c.heads, c.dropout, init_gen, &dropout_gen));
  norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(c.width, c.layer_norm_eps));
  linear = register_module("linear", std::make_shared<nn::Linear>(c.width, c.ffn_width, true, init_gen));
  if (is_moe) {
    moe_ffn = register_module("ffn", std::make_shared<SoftMoE>(c.ffn_width, c.width, c.num_experts,
                                                               c.slots_per_expert, init_gen));
  } else {
    dense_ffn = register_module("ffn", std::make_shared<nn::Linear>(c.ffn_width, c.width, true, init_gen));
  }
  if (c.has_layer_scale(index)) {
    gamma_2 = Tensor::full({c.width}, c.layer_scale_init);
    register_parameter("gamma_2", &gamma_2);
  }
}

EncoderLayer::Output EncoderLayer::forward(const Tensor& x_in) const {
  const bool train = is_training();
  Generator& gen = *dropout_gen_;
  // Post-norm: x = norm1(x + drop(attn(x))); x = norm2(s * x + drop(ffn(drop(relu(linear(x)))))).
  const Tensor x = norm1->forward_add(x_in, self_attn->forward(x_in), dropout_p, train, gen);
  const Tensor hidden = relu_dropout(linear->forward(x), dropout_p, train, gen);
  Output out;
  Tensor ffn_out;
  if (is_moe) {
    SoftMoE::Output moe = moe_ffn->forward(hidden);
    ffn_out = moe.y;
    out.dispatch = moe.dispatch;
    out.combine = moe.combine;
  } else {
    ffn_out = dense_ffn->forward(hidden);
  }
  const Tensor skip = gamma_2.defined() ? mul(x, gamma_2) : x;
  out.x = norm2->forward_add(skip, ffn_out, dropout_p, train, gen);
  return out;
}

// ---------------------------------------------------------------- the model

SoftMoEViT::SoftMoEViT(ModelConfig config, uint64_t init_seed, uint64_t dropout_seed)
    : config_(std::move(config)), dropout_gen_(dropout_seed) {
  config_.validate();
  const ModelConfig& c = config_;
  Generator init_gen(init_seed);
  const int64_t patch_dim = c.num_channels * c.patch_size * c.patch_size;
  patch_to_embedding = register_module("patch_to_embedding", std::make_shared<Container>());
  patch_norm = patch_to_embedding->add("0", std::make_shared<nn::LayerNorm>(patch_dim, c.layer_norm_eps));
  patch_linear = patch_to_embedding->add("1", std::make_shared<nn::Linear>(patch_dim, c.width, true, init_gen));
  embed_norm = patch_to_embedding->add("2", std::make_shared<nn::LayerNorm>(c.width, c.layer_norm_eps));
  pos_embedding = randn({1, c.tokens(), c.width}, init_gen);
  register_parameter("pos_embedding", &pos_embedding);
  encoder = register_module("encoder", std::make_shared<Container>());
  layers = encoder->add("layers", std::make_shared<nn::ModuleList<EncoderLayer>>());
  for (int64_t i = 0; i < c.depth; ++i)
    layers->push_back(std::make_shared<EncoderLayer>(c, i, init_gen, dropout_gen_));
  out = register_module("out", std::make_shared<nn::Linear>(c.width, c.num_classes, true, init_gen));

  if (c.identical_layer_init && c.depth > 1) {
    // Copy layer 0's attention, norms, first FFN linear and (between dense
    // layers) dense FFN into every other layer, as the reference's deep copies do.
    NoGradGuard no_grad;
    const StateDict first = (*layers)[0].state_dict();
    for (int64_t i = 1; i < c.depth; ++i) {
      EncoderLayer& layer = (*layers)[static_cast<size_t>(i)];
      for (auto& [name, param] : layer.named_parameters()) {
        const bool ffn = name.rfind("ffn.", 0) == 0;
        if (ffn && (layer.is_moe || (*layers)[0].is_moe)) continue;
        if (name == "gamma_2") continue;
        if (const Tensor* src = first.find(name)) copy_(param, *src);
      }
    }
  }
}

SoftMoEViT::Output SoftMoEViT::forward(const Tensor& images, const Tensor& masks,
                                       const Tensor& mask_valid, bool return_dispatch) const {
  const ModelConfig& c = config_;
  FG_CHECK(images.dim() == 4 && images.size(1) == c.num_channels && images.size(2) == c.image_size &&
               images.size(3) == c.image_size,
           "model: expected images of shape (b, ", c.num_channels, ", ", c.image_size, ", ",
           c.image_size, "), got ", shape_str(images.shape()));
  Tensor x = patchify(images, c.patch_size);
  x = embed_norm->forward(patch_linear->forward(patch_norm->forward(x)));
  x = add(x, pos_embedding);
  x = dropout(x, c.embed_dropout, is_training(), const_cast<Generator&>(dropout_gen_));
  Output result;
  for (const auto& layer : layers->items()) {
    EncoderLayer::Output o = layer->forward(x);
    x = o.x;
    if (o.dispatch.defined()) {
      if (return_dispatch) {
        result.dispatch.push_back(o.dispatch);
        result.combine.push_back(o.combine);
      }
      if (layer->index == c.aux_layer && masks.defined()) {
        result.aux_details = foreground_guided_loss(o.dispatch, masks, mask_valid, c.aux_foreground);
        result.aux = result.aux_details.loss;
      }
    }
  }
  result.logits = out->forward(mean(x, {1}));
  return result;
}

void SoftMoEViT::split_decay_groups(std::vector<Tensor>& decay, std::vector<Tensor>& no_decay) const {
  for (auto& [name, param] : named_parameters()) {
    const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (param.dim() == 1 || bias) no_decay.push_back(param);
    else decay.push_back(param);
  }
}

int64_t SoftMoEViT::parameter_count() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += p.numel();
  return n;
}

double SoftMoEViT::forward_flops_per_image() const {
  const ModelConfig& c = config_;
  const double m = static_cast<double>(c.tokens()), d = static_cast<double>(c.width);
  const double f = static_cast<double>(c.ffn_width);
  const double patch_dim = static_cast<double>(c.num_channels * c.patch_size * c.patch_size);
  double flops = 2 * m * patch_dim * d;  // patch embedding
  for (int64_t i = 0; i < c.depth; ++i) {
    flops += 2 * m * d * 3 * d;  // qkv
    flops += 2 * 2 * m * m * d;  // scores and context
    flops += 2 * m * d * d;      // out projection
    flops += 2 * m * d * f;      // linear
    if (c.is_moe_layer(i)) {
      const double slots = static_cast<double>(c.num_experts * c.slots_per_expert);
      flops += 2 * m * f * slots;      // logits
      flops += 2 * slots * m * f;      // dispatch
      flops += 2 * slots * f * d;      // experts
      flops += 2 * m * slots * d;      // combine
    } else {
      flops += 2 * m * f * d;
    }
  }
  flops += 2 * d * static_cast<double>(c.num_classes);
  return flops;
}

}  // namespace fg::models
