// Mixup and CutMix as batch operations (timm's Mixup, which the reference
// applies to each training batch): element i is mixed with element B-1-i, the
// targets become soft with label smoothing folded in. Masks are left as they
// are unless DataOptions::cutmix_moves_mask asks to paste mask boxes too.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "data/options.h"
#include "engine/random.h"

namespace fg::data {

struct MixupParams {
  // Per element: the lambda the targets use (after CutMix's area correction),
  // whether CutMix mixed it, and its box (y0, y1, x0, x1) when it did.
  std::vector<double> lambda;
  std::vector<uint8_t> cutmix;
  std::vector<std::array<int, 4>> box;
};

class Mixup {
 public:
  Mixup(const DataOptions& options, int64_t num_classes);
  // timm's mixup_active: any of mixup, cutmix or cutmix_minmax set.
  bool enabled() const { return enabled_; }
  // Draws the parameters for a batch of images of height x width.
  MixupParams draw(int64_t batch, int height, int width, Generator& rng) const;
  // Mixes images (B x 3 x H x W) in place and writes soft targets (B x C).
  // masks (B x H x W) and mask_valid are changed only when CutMix moves masks.
  void apply(const MixupParams& params, float* images, float* masks, bool* mask_valid,
             const int64_t* labels, float* targets, int64_t batch, int height, int width) const;

 private:
  double mixup_alpha_, cutmix_alpha_;
  std::vector<double> cutmix_minmax_;
  double mix_prob_, switch_prob_, smoothing_;
  std::string mode_;
  bool moves_mask_;
  int64_t num_classes_;
  bool enabled_;
};

// Targets without mixing: one-hot with label smoothing (on = 1 - s + s/C, off = s/C).
void smoothed_targets(const int64_t* labels, int64_t batch, int64_t num_classes, double smoothing,
                      float* targets);

// numpy-equivalent draws on fgmoe's generator.
double sample_gamma(Generator& rng, double shape);
double sample_beta(Generator& rng, double a, double b);

}  // namespace fg::data
