// Reusable layers with PyTorch's parameter names, shapes and default initialization.
#pragma once

#include "engine/nn/module.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace fg::nn {

// y = x W^T + b, W (out, in). Init: U(-1/sqrt(in), 1/sqrt(in)) for both, as torch.nn.Linear.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) const { return linear(x, weight, bias); }
  int64_t in_features, out_features;
  Tensor weight, bias;
};

// Over the last dimension of size `features`; weight 1, bias 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) const { return layer_norm(x, 1, weight, bias, eps); }
  // forward(residual + dropout(x, p, training, gen)), fused (add_layer_norm).
  Tensor forward_add(const Tensor& residual, const Tensor& x, double p, bool training,
                     Generator& gen) const {
    return add_layer_norm(residual, x, weight, bias, eps, p, training, gen);
  }
  int64_t features;
  double eps;
  Tensor weight, bias;
};

class Dropout : public Module {
 public:
  Dropout(double p, Generator& gen) : p(p), gen_(&gen) {}
  Tensor forward(const Tensor& x) const { return dropout(x, p, is_training(), *gen_); }
  double p;

 private:
  Generator* gen_;
};

// Batch-first multi-head self/cross attention with PyTorch's packed projection:
// in_proj_weight (3E, E) holds q, k, v stacked, in_proj_bias (3E), out_proj (E -> E).
// Init as torch.nn.MultiheadAttention: in_proj_weight Xavier-uniform, biases 0,
// out_proj.weight as Linear.
class MultiheadAttention : public Module {
 public:
  // Weights are drawn from init_gen; dropout masks from dropout_gen (init_gen when null).
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout, Generator& init_gen,
                     Generator* dropout_gen = nullptr);
  // query (B, L, E), key/value (B, S, E) -> (B, L, E). Dropout on the attention probabilities.
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value) const;
  // Self-attention with one fused QKV projection.
  Tensor forward(const Tensor& x) const;
  int64_t embed_dim, num_heads;
  double dropout_p;
  Tensor in_proj_weight, in_proj_bias;
  std::shared_ptr<Linear> out_proj;

 private:
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v) const;
  Generator* gen_;
};

}  // namespace fg::nn
