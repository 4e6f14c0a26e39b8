// RandAugment as timm implements it and the reference extends it to masks:
// `rand-m9-mstd0.5-inc1` picks 2 ops (with replacement) from the
// increasing-severity op set; each runs with probability 0.5 at a magnitude
// drawn from N(9, 0.5) clipped to [0, 10]; signed arguments are negated with
// probability 0.5. Colour ops change the image only; rotate, shear and
// translate move the mask too (nearest neighbour, filled with background).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/imaging.h"
#include "engine/random.h"

namespace fg::data {

enum class AugmentOp {
  AutoContrast,
  Equalize,
  Invert,
  Rotate,
  Posterize,
  PosterizeIncreasing,
  PosterizeOriginal,
  Solarize,
  SolarizeIncreasing,
  SolarizeAdd,
  Color,
  ColorIncreasing,
  Contrast,
  ContrastIncreasing,
  Brightness,
  BrightnessIncreasing,
  Sharpness,
  SharpnessIncreasing,
  ShearX,
  ShearY,
  TranslateX,
  TranslateY,
  TranslateXRel,
  TranslateYRel,
};

const char* augment_op_name(AugmentOp op);
// True for the ops that move pixels (and therefore the mask).
bool is_geometric(AugmentOp op);

struct RandAugmentConfig {
  int num_layers = 2;                          // n
  double magnitude = 10;                       // m
  double magnitude_std = 0;                    // mstd (infinity: uniform in [0, m])
  double magnitude_max = 10;                   // mmax: the magnitude's upper clip
  int weight_index = -1;                       // w: weighted choice without replacement
  std::vector<AugmentOp> ops;                  // the op set (inc1 selects the increasing one)
  double prob = 0.5;                           // per-op probability
  double translate_pct = 0.45;                 // TranslateXRel/YRel range
  double translate_const = 100;                // TranslateX/Y range in pixels: int(img_size * 0.45)
  std::array<uint8_t, 3> fill{124, 116, 104};  // round(255 * mean)
  bool random_interpolation = false;           // bilinear or bicubic per op
  Interpolation interpolation = Interpolation::Bicubic;

  // Parses timm's spec ("rand-m9-mstd0.5-inc1"); img_size, mean and the
  // interpolation name give the remaining hyper-parameters as the reference sets them.
  static RandAugmentConfig parse(const std::string& spec, int img_size,
                                 const std::array<double, 3>& mean,
                                 const std::string& interpolation);
};

// One op with its argument as the level functions compute it (degrees, factor,
// bits, threshold, shear, translation fraction or pixels).
struct AugmentStep {
  AugmentOp op = AugmentOp::AutoContrast;
  double argument = 0;
  Interpolation interpolation = Interpolation::Bicubic;
};

// Applies one op to image (3-channel planar) and, for geometric ops, to mask
// (1-channel planar, may be null). `temp` is scratch of the image's size.
void apply_augment_step(const AugmentStep& step, const std::array<uint8_t, 3>& fill,
                        PlanarImage& image, PlanarImage* mask, PlanarImage& temp,
                        ImagingScratch& scratch);

class RandAugment {
 public:
  explicit RandAugment(RandAugmentConfig config);
  const RandAugmentConfig& config() const { return config_; }
  // Draws and applies the ops; the steps that ran are appended to `applied` when given.
  void apply(PlanarImage& image, PlanarImage* mask, Generator& rng, PlanarImage& temp,
             ImagingScratch& scratch, std::vector<AugmentStep>* applied = nullptr) const;

 private:
  AugmentStep draw_step(AugmentOp op, Generator& rng) const;
  RandAugmentConfig config_;
  std::vector<double> choice_weights_;
};

// Python's random.gauss and random.uniform on fgmoe's generator.
double gauss(Generator& rng, double mean, double std);
double uniform(Generator& rng, double low, double high);
// Python's random.randint: uniform in [low, high], both included.
int64_t randint_inclusive(Generator& rng, int64_t low, int64_t high);

}  // namespace fg::data
