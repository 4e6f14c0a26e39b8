// How well Soft MoE dispatch weights line up with the foreground: the paper's
// soft IoU q (as in the auxiliary loss) and the plain IoU of the binary maps
// (tokens at or above the mean dispatch weight vs. foreground tokens).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace fg::models {

struct AlignmentSums {
  double soft_iou = 0;  // sum of q over valid samples
  double iou = 0;       // sum of the binary IoU over valid samples
  int64_t count = 0;    // valid samples (with some foreground)
  void merge(const AlignmentSums& o) {
    soft_iou += o.soft_iou;
    iou += o.iou;
    count += o.count;
  }
  double mean_soft_iou() const { return count ? soft_iou / static_cast<double>(count) : 0.0; }
  double mean_iou() const { return count ? iou / static_cast<double>(count) : 0.0; }
};

// dispatch (b, m, n, p) of one layer; masks (b, 1, H, W) nonzero = foreground;
// mask_valid (b) bool or undefined. Samples without foreground are left out.
AlignmentSums dispatch_alignment(const Tensor& dispatch, const Tensor& masks,
                                 const Tensor& mask_valid = Tensor());

// The mean dispatch weight per token, (b, m): what the maps tool draws.
Tensor token_dispatch_map(const Tensor& dispatch);

}  // namespace fg::models
