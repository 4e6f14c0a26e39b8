#include "models/alignment.h"

#include <cmath>

#include "engine/ops.h"
#include "models/foreground_loss.h"

namespace fg::models {

Tensor token_dispatch_map(const Tensor& dispatch) {
  FG_CHECK(dispatch.dim() == 4, "dispatch weights must be (b, m, n, p), got ", shape_str(dispatch.shape()));
  NoGradGuard no_grad;
  return mean(dispatch.to(DType::Float32), {2, 3});
}

AlignmentSums dispatch_alignment(const Tensor& dispatch, const Tensor& masks, const Tensor& mask_valid) {
  NoGradGuard no_grad;
  const Tensor a = token_dispatch_map(dispatch).cpu();
  const int64_t b = a.size(0), m = a.size(1);
  const auto grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(m))));
  FG_CHECK(grid * grid == m, "alignment: ", m, " tokens do not form a square grid");
  const std::vector<uint8_t> fg = foreground_tokens(masks.cpu(), grid).to_vector<uint8_t>();
  const std::vector<float> w = a.to_vector<float>();
  std::vector<uint8_t> usable(static_cast<size_t>(b), 1);
  if (mask_valid.defined()) usable = mask_valid.cpu().to(DType::UInt8).to_vector<uint8_t>();
  AlignmentSums sums;
  for (int64_t s = 0; s < b; ++s) {
    const float* ws = &w[static_cast<size_t>(s * m)];
    const uint8_t* fs = &fg[static_cast<size_t>(s * m)];
    double mean_w = 0;
    int64_t fg_count = 0;
    for (int64_t t = 0; t < m; ++t) {
      mean_w += ws[t];
      fg_count += fs[t] != 0;
    }
    if (!usable[static_cast<size_t>(s)] || fg_count == 0) continue;
    mean_w /= static_cast<double>(m);
    double inner_w = 0, outer_w = 0;
    int64_t inner = 0, outer = 0;
    for (int64_t t = 0; t < m; ++t) {
      const bool above = ws[t] >= mean_w, f = fs[t] != 0;
      if (above && f) {
        inner_w += ws[t];
        ++inner;
      }
      if (above || f) {
        outer_w += ws[t];
        ++outer;
      }
    }
    sums.soft_iou += outer_w > 0 ? inner_w / outer_w : 0.0;
    sums.iou += outer > 0 ? static_cast<double>(inner) / static_cast<double>(outer) : 0.0;
    ++sums.count;
  }
  return sums;
}

}  // namespace fg::models
