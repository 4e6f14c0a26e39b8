// The foreground-guided auxiliary loss on Soft MoE dispatch weights
// ("Guiding the Experts", Min et al., 2025), computed as the reference does.
#pragma once

#include "engine/tensor.h"

namespace fg::models {

struct ForegroundLoss {
  Tensor loss;   // 0-d: mean over valid samples of -log(q + 1e-4); 0 when none is valid
  Tensor q;      // (b): soft IoU of above-mean dispatch tokens with the foreground
  Tensor valid;  // (b) bool: samples with at least one foreground token (and a usable mask)
};

// dispatch: (b, m, n, p) dispatch weights of one Soft MoE layer, m a square grid.
// masks: (b, 1, H, W), nonzero = foreground (any dtype). mask_valid: optional (b) bool
// marking samples whose mask is usable (a sample without a mask file is left out).
// foreground=false is the "background" variant (the complement of the mask).
// Steps: a = mean of D over the slots; masks bicubic-resized to the token grid,
// fg = (value != 0); B = a >= mean(a); q = sum(a [B and fg]) / sum(a [B or fg]).
ForegroundLoss foreground_guided_loss(const Tensor& dispatch, const Tensor& masks,
                                      const Tensor& mask_valid = Tensor(), bool foreground = true);

// The token-grid foreground of masks (b, 1, H, W) for a grid of side `grid`: (b, grid*grid) bool.
Tensor foreground_tokens(const Tensor& masks, int64_t grid);

}  // namespace fg::models
