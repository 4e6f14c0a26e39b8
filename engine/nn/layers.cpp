#include "engine/nn/layers.h"

#include <cmath>

namespace fg::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen)
    : in_features(in), out_features(out) {
  const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
  weight = rand({out, in}, gen, -bound, bound);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = rand({out}, gen, -bound, bound);
    register_parameter("bias", &bias);
  }
}

LayerNorm::LayerNorm(int64_t features, double eps, bool affine) : features(features), eps(eps) {
  if (affine) {
    weight = Tensor::ones({features});
    bias = Tensor::zeros({features});
    register_parameter("weight", &weight);
    register_parameter("bias", &bias);
  }
}

MultiheadAttention::MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout,
                                       Generator& gen, Generator* dropout_gen)
    : embed_dim(embed_dim), num_heads(num_heads), dropout_p(dropout),
      gen_(dropout_gen ? dropout_gen : &gen) {
  FG_CHECK(num_heads > 0 && embed_dim % num_heads == 0, "MultiheadAttention: embed_dim ",
           embed_dim, " is not divisible by num_heads ", num_heads);
  // Xavier-uniform over the packed (3E, E) matrix, as PyTorch.
  const double bound = std::sqrt(6.0 / static_cast<double>(embed_dim + 3 * embed_dim));
  in_proj_weight = rand({3 * embed_dim, embed_dim}, gen, -bound, bound);
  in_proj_bias = Tensor::zeros({3 * embed_dim});
  register_parameter("in_proj_weight", &in_proj_weight);
  register_parameter("in_proj_bias", &in_proj_bias);
  out_proj = register_module("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, true, gen));
  NoGradGuard no_grad;
  zero_(out_proj->bias);
}

Tensor MultiheadAttention::attend(const Tensor& q, const Tensor& k, const Tensor& v) const {
  // (B, L, E) -> (B, H, L, Dh)
  const int64_t head_dim = embed_dim / num_heads;
  auto heads = [&](const Tensor& t) {
    return t.reshape({t.size(0), t.size(1), num_heads, head_dim}).transpose(1, 2);
  };
  const Tensor context = scaled_dot_product_attention(heads(q), heads(k), heads(v), dropout_p,
                                                      is_training(), gen_);
  const Tensor merged = context.transpose(1, 2).reshape({q.size(0), q.size(1), embed_dim});
  return out_proj->forward(merged);
}

Tensor MultiheadAttention::forward(const Tensor& x) const {
  FG_CHECK(x.dim() == 3 && x.size(2) == embed_dim, "MultiheadAttention: input of shape ",
           shape_str(x.shape()), ", expected (B, L, ", embed_dim, ")");
  // Self-attention: the packed projection feeds the heads without splitting it.
  const Tensor qkv = linear(x, in_proj_weight, in_proj_bias);
  return out_proj->forward(packed_attention(qkv, num_heads, dropout_p, is_training(), gen_));
}

Tensor MultiheadAttention::forward(const Tensor& query, const Tensor& key,
                                   const Tensor& value) const {
  const auto weights = chunk(in_proj_weight, 3, 0);
  const auto biases = chunk(in_proj_bias, 3, 0);
  return attend(linear(query, weights[0], biases[0]), linear(key, weights[1], biases[1]),
                linear(value, weights[2], biases[2]));
}

}  // namespace fg::nn
