#include "models/foreground_loss.h"

#include <cmath>

#include "engine/ops.h"

namespace fg::models {

Tensor foreground_tokens(const Tensor& masks, int64_t grid) {
  FG_CHECK(masks.dim() == 4 && masks.size(1) == 1, "foreground loss: masks must be (b, 1, H, W), got ",
           shape_str(masks.shape()));
  NoGradGuard no_grad;
  // The reference interpolates float masks bicubically and keeps any nonzero response.
  const Tensor resized = bicubic_resize(masks.to(float_math_dtype(masks.dtype())), grid, grid);
  return ne(resized, 0.0).reshape({masks.size(0), grid * grid});
}

ForegroundLoss foreground_guided_loss(const Tensor& dispatch, const Tensor& masks,
                                      const Tensor& mask_valid, bool foreground) {
  FG_CHECK(dispatch.dim() == 4, "foreground loss: dispatch weights must be (b, m, n, p), got ",
           shape_str(dispatch.shape()));
  const int64_t batch = dispatch.size(0), tokens = dispatch.size(1);
  const auto grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tokens))));
  FG_CHECK(grid * grid == tokens, "foreground loss: ", tokens, " tokens do not form a square grid");
  FG_CHECK(masks.size(0) == batch, "foreground loss: ", masks.size(0), " masks for a batch of ", batch);
  // The reference computes the loss in float32 even under mixed precision.
  const Tensor weights = dispatch.dtype() == DType::Float64 ? dispatch : dispatch.to(DType::Float32);
  const Tensor a = mean(weights, {2, 3});  // (b, m), sums to 1 over m

  Tensor fg_tokens = foreground_tokens(masks, grid);
  Tensor valid = gt(sum(fg_tokens.to(DType::Int64), {1}), 0.0);
  if (mask_valid.defined()) valid = logical_and(valid, mask_valid.to(DType::Bool).to(valid.device()));
  // Validity is decided on the foreground before the background variant flips it.
  if (!foreground) fg_tokens = logical_not(fg_tokens);

  Tensor above_mean;
  {
    NoGradGuard no_grad;
    above_mean = ge(a, mean(a, {1}, true));
  }
  const Tensor inner = logical_and(above_mean, fg_tokens).to(a.dtype());
  const Tensor outer = logical_or(above_mean, fg_tokens).to(a.dtype());
  const Tensor q = div(sum(mul(a, inner), {1}), sum(mul(a, outer), {1}));
  const Tensor per_sample = neg(log(add(q, 1e-4)));
  const Tensor valid_f = valid.to(a.dtype());
  const Tensor count = maximum(sum(valid_f), Tensor::scalar(1.0, a.dtype(), a.device()));
  // Invalid samples are masked out with where() so a non-finite value there cannot leak.
  const Tensor loss = div(sum(where(valid, per_sample, 0.0)), count);
  return {loss, q, valid};
}

}  // namespace fg::models
