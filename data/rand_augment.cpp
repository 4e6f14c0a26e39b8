#include "data/rand_augment.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "data/options.h"
#include "engine/error.h"

namespace fg::data {

const char* augment_op_name(AugmentOp op) {
  switch (op) {
    case AugmentOp::AutoContrast:
      return "AutoContrast";
    case AugmentOp::Equalize:
      return "Equalize";
    case AugmentOp::Invert:
      return "Invert";
    case AugmentOp::Rotate:
      return "Rotate";
    case AugmentOp::Posterize:
      return "Posterize";
    case AugmentOp::PosterizeIncreasing:
      return "PosterizeIncreasing";
    case AugmentOp::PosterizeOriginal:
      return "PosterizeOriginal";
    case AugmentOp::Solarize:
      return "Solarize";
    case AugmentOp::SolarizeIncreasing:
      return "SolarizeIncreasing";
    case AugmentOp::SolarizeAdd:
      return "SolarizeAdd";
    case AugmentOp::Color:
      return "Color";
    case AugmentOp::ColorIncreasing:
      return "ColorIncreasing";
    case AugmentOp::Contrast:
      return "Contrast";
    case AugmentOp::ContrastIncreasing:
      return "ContrastIncreasing";
    case AugmentOp::Brightness:
      return "Brightness";
    case AugmentOp::BrightnessIncreasing:
      return "BrightnessIncreasing";
    case AugmentOp::Sharpness:
      return "Sharpness";
    case AugmentOp::SharpnessIncreasing:
      return "SharpnessIncreasing";
    case AugmentOp::ShearX:
      return "ShearX";
    case AugmentOp::ShearY:
      return "ShearY";
    case AugmentOp::TranslateX:
      return "TranslateX";
    case AugmentOp::TranslateY:
      return "TranslateY";
    case AugmentOp::TranslateXRel:
      return "TranslateXRel";
    case AugmentOp::TranslateYRel:
      return "TranslateYRel";
  }
  return "?";
}

bool is_geometric(AugmentOp op) {
  switch (op) {
    case AugmentOp::Rotate:
    case AugmentOp::ShearX:
    case AugmentOp::ShearY:
    case AugmentOp::TranslateX:
    case AugmentOp::TranslateY:
    case AugmentOp::TranslateXRel:
    case AugmentOp::TranslateYRel:
      return true;
    default:
      return false;
  }
}

double uniform(Generator& rng, double low, double high) {
  return low + (high - low) * rng.uniform();
}

double gauss(Generator& rng, double mean, double std) { return mean + std * rng.normal(); }

int64_t randint_inclusive(Generator& rng, int64_t low, int64_t high) {
  FG_CHECK(high >= low, "randint: empty range [", low, ", ", high, "]");
  return low + rng.randint(high - low + 1);
}

namespace {

// timm's op sets, in timm's order (the order matters for the choice weights).
const std::vector<AugmentOp> kRandTransforms = {
    AugmentOp::AutoContrast, AugmentOp::Equalize,      AugmentOp::Invert,       AugmentOp::Rotate,
    AugmentOp::Posterize,    AugmentOp::Solarize,      AugmentOp::SolarizeAdd,  AugmentOp::Color,
    AugmentOp::Contrast,     AugmentOp::Brightness,    AugmentOp::Sharpness,    AugmentOp::ShearX,
    AugmentOp::ShearY,       AugmentOp::TranslateXRel, AugmentOp::TranslateYRel};

const std::vector<AugmentOp> kRandIncreasingTransforms = {AugmentOp::AutoContrast,
                                                          AugmentOp::Equalize,
                                                          AugmentOp::Invert,
                                                          AugmentOp::Rotate,
                                                          AugmentOp::PosterizeIncreasing,
                                                          AugmentOp::SolarizeIncreasing,
                                                          AugmentOp::SolarizeAdd,
                                                          AugmentOp::ColorIncreasing,
                                                          AugmentOp::ContrastIncreasing,
                                                          AugmentOp::BrightnessIncreasing,
                                                          AugmentOp::SharpnessIncreasing,
                                                          AugmentOp::ShearX,
                                                          AugmentOp::ShearY,
                                                          AugmentOp::TranslateXRel,
                                                          AugmentOp::TranslateYRel};

// timm's _RAND_CHOICE_WEIGHTS_0, by position in kRandTransforms.
const std::vector<double> kChoiceWeights0 = {0.025, 0.005, 0.0,   0.3, 0.0, 0.005, 0.005, 0.025,
                                             0.005, 0.005, 0.025, 0.2, 0.2, 0.1,   0.1};

constexpr double kLevelDenominator = 10.0;

// The key a spec's numbers are reported under: the config key and the whole spec.
std::string spec_key(const std::string& spec) { return "AUG.AUTO_AUGMENT '" + spec + "'"; }

double randomly_negate(double v, Generator& rng) { return rng.uniform() > 0.5 ? -v : v; }

}  // namespace

RandAugmentConfig RandAugmentConfig::parse(const std::string& spec, int img_size,
                                           const std::array<double, 3>& mean,
                                           const std::string& interpolation) {
  RandAugmentConfig c;
  std::vector<std::string> sections;
  size_t start = 0;
  while (true) {
    const size_t dash = spec.find('-', start);
    sections.push_back(spec.substr(start, dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  FG_CHECK(sections[0] == "rand", "config key AUG.AUTO_AUGMENT: '", spec,
           "': only RandAugment specs ('rand-...') are supported; AutoAugment policies and AugMix "
           "are not mask-aware in the reference either");
  c.ops = kRandTransforms;
  for (size_t i = 1; i < sections.size(); ++i) {
    const std::string& s = sections[i];
    // timm splits each section at its first digit: key, then value.
    const size_t digit = s.find_first_of("0123456789");
    if (digit == std::string::npos) continue;
    const std::string key = s.substr(0, digit);
    const std::string value = s.substr(digit);
    if (key == "mstd") {
      double mstd = parse_config_number(spec_key(spec), value);
      if (mstd > 100) mstd = std::numeric_limits<double>::infinity();
      c.magnitude_std = mstd;
    } else if (key == "mmax") {
      c.magnitude_max = parse_config_int(spec_key(spec), value);
    } else if (key == "inc") {
      // timm tests bool(value) of the text, which is true even for "inc0";
      // fgmoe reads the number, so inc0 means the standard op set.
      if (parse_config_int(spec_key(spec), value) != 0) c.ops = kRandIncreasingTransforms;
    } else if (key == "m") {
      c.magnitude = parse_config_int(spec_key(spec), value);
    } else if (key == "n") {
      c.num_layers = parse_config_int(spec_key(spec), value);
    } else if (key == "w") {
      c.weight_index = parse_config_int(spec_key(spec), value);
      FG_CHECK(c.weight_index == 0, "config key AUG.AUTO_AUGMENT: '", spec,
               "': only choice weights w0 exist");
    } else {
      FG_CHECK(false, "config key AUG.AUTO_AUGMENT: '", spec, "': unknown section '", s, "'");
    }
  }
  FG_CHECK(c.num_layers >= 0, "config key AUG.AUTO_AUGMENT: '", spec, "': n must not be negative");
  FG_CHECK(c.weight_index < 0 || c.num_layers <= static_cast<int>(c.ops.size()),
           "config key AUG.AUTO_AUGMENT: '", spec,
           "': more ops than exist for a choice without replacement");
  c.translate_const = static_cast<int>(img_size * 0.45);
  for (int k = 0; k < 3; ++k) {
    c.fill[k] = static_cast<uint8_t>(std::min(255.0, std::nearbyint(255 * mean[k])));
  }
  if (interpolation.empty() || interpolation == "random") {
    c.random_interpolation = true;
  } else {
    c.interpolation = parse_interpolation(interpolation);
    FG_CHECK(c.interpolation == Interpolation::Nearest ||
                 c.interpolation == Interpolation::Bilinear ||
                 c.interpolation == Interpolation::Bicubic,
             "config key DATA.INTERPOLATION: RandAugment's rotate, shear and translate support "
             "nearest, bilinear and bicubic (as PIL), not ",
             interpolation);
  }
  return c;
}

RandAugment::RandAugment(RandAugmentConfig config) : config_(std::move(config)) {
  if (config_.weight_index >= 0) {
    double total = 0;
    for (double w : kChoiceWeights0) total += w;
    for (double w : kChoiceWeights0) choice_weights_.push_back(w / total);
  }
}

AugmentStep RandAugment::draw_step(AugmentOp op, Generator& rng) const {
  double magnitude = config_.magnitude;
  if (config_.magnitude_std > 0) {
    if (std::isinf(config_.magnitude_std)) {
      magnitude = uniform(rng, 0, magnitude);
    } else {
      magnitude = gauss(rng, magnitude, config_.magnitude_std);
    }
  }
  const double upper = config_.magnitude_max;
  magnitude = std::max(0.0, std::min(magnitude, upper));
  const double level = magnitude / kLevelDenominator;
  AugmentStep step;
  step.op = op;
  switch (op) {
    case AugmentOp::AutoContrast:
    case AugmentOp::Equalize:
    case AugmentOp::Invert:
      break;
    case AugmentOp::Rotate:
      step.argument = randomly_negate(level * 30., rng);
      break;
    case AugmentOp::Posterize:
      step.argument = static_cast<int>(level * 4);
      break;
    case AugmentOp::PosterizeIncreasing:
      step.argument = 4 - static_cast<int>(level * 4);
      break;
    case AugmentOp::PosterizeOriginal:
      step.argument = static_cast<int>(level * 4) + 4;
      break;
    case AugmentOp::Solarize:
      step.argument = static_cast<int>(level * 256);
      break;
    case AugmentOp::SolarizeIncreasing:
      step.argument = 256 - static_cast<int>(level * 256);
      break;
    case AugmentOp::SolarizeAdd:
      step.argument = static_cast<int>(level * 110);
      break;
    case AugmentOp::Color:
    case AugmentOp::Contrast:
    case AugmentOp::Brightness:
    case AugmentOp::Sharpness:
      step.argument = level * 1.8 + 0.1;
      break;
    case AugmentOp::ColorIncreasing:
    case AugmentOp::ContrastIncreasing:
    case AugmentOp::BrightnessIncreasing:
    case AugmentOp::SharpnessIncreasing:
      step.argument = std::max(0.1, 1.0 + randomly_negate(level * .9, rng));
      break;
    case AugmentOp::ShearX:
    case AugmentOp::ShearY:
      step.argument = randomly_negate(level * 0.3, rng);
      break;
    case AugmentOp::TranslateX:
    case AugmentOp::TranslateY:
      step.argument = randomly_negate(level * config_.translate_const, rng);
      break;
    case AugmentOp::TranslateXRel:
    case AugmentOp::TranslateYRel:
      step.argument = randomly_negate(level * config_.translate_pct, rng);
      break;
  }
  if (is_geometric(op)) {
    step.interpolation =
        config_.random_interpolation
            ? (rng.uniform() < 0.5 ? Interpolation::Bilinear : Interpolation::Bicubic)
            : config_.interpolation;
  }
  return step;
}

void RandAugment::apply(PlanarImage& image, PlanarImage* mask, Generator& rng, PlanarImage& temp,
                        ImagingScratch& scratch, std::vector<AugmentStep>* applied) const {
  const auto& ops = config_.ops;
  std::vector<AugmentOp> chosen;
  if (choice_weights_.empty()) {
    for (int k = 0; k < config_.num_layers; ++k) {
      chosen.push_back(ops[rng.randint(static_cast<int64_t>(ops.size()))]);
    }
  } else {
    // Weighted choice without replacement (numpy's choice(replace=False, p=w)).
    std::vector<double> weights = choice_weights_;
    for (int k = 0; k < config_.num_layers; ++k) {
      double total = 0;
      for (double w : weights) total += w;
      double u = rng.uniform() * total;
      size_t pick = 0;
      for (; pick + 1 < weights.size(); ++pick) {
        if (weights[pick] > 0 && u < weights[pick]) break;
        u -= weights[pick];
      }
      while (weights[pick] <= 0 && pick > 0) --pick;
      chosen.push_back(ops[pick]);
      weights[pick] = 0;
    }
  }
  for (AugmentOp op : chosen) {
    if (config_.prob < 1.0 && rng.uniform() > config_.prob) continue;
    const AugmentStep step = draw_step(op, rng);
    apply_augment_step(step, config_.fill, image, mask, temp, scratch);
    if (applied) applied->push_back(step);
  }
}

void apply_augment_step(const AugmentStep& step, const std::array<uint8_t, 3>& fill,
                        PlanarImage& image, PlanarImage* mask, PlanarImage& temp,
                        ImagingScratch& scratch) {
  static const uint8_t kMaskFill[3] = {0, 0, 0};
  auto warp = [&](const AffineMatrix& m) {
    affine_transform(image, m, step.interpolation, fill.data(), temp);
    std::swap(image, temp);
    if (mask) {
      affine_transform(*mask, m, Interpolation::Nearest, kMaskFill, scratch.image);
      std::swap(*mask, scratch.image);
    }
  };
  const double a = step.argument;
  switch (step.op) {
    case AugmentOp::AutoContrast:
      autocontrast(image);
      break;
    case AugmentOp::Equalize:
      equalize(image);
      break;
    case AugmentOp::Invert:
      invert(image);
      break;
    case AugmentOp::Rotate:
      rotate(image, a, step.interpolation, fill.data(), temp);
      std::swap(image, temp);
      if (mask) {
        rotate(*mask, a, Interpolation::Nearest, kMaskFill, scratch.image);
        std::swap(*mask, scratch.image);
      }
      break;
    case AugmentOp::Posterize:
    case AugmentOp::PosterizeIncreasing:
    case AugmentOp::PosterizeOriginal:
      posterize(image, static_cast<int>(a));
      break;
    case AugmentOp::Solarize:
    case AugmentOp::SolarizeIncreasing:
      solarize(image, static_cast<int>(a));
      break;
    case AugmentOp::SolarizeAdd:
      solarize_add(image, static_cast<int>(a), 128);
      break;
    case AugmentOp::Color:
    case AugmentOp::ColorIncreasing:
      enhance_color(image, a, scratch);
      break;
    case AugmentOp::Contrast:
    case AugmentOp::ContrastIncreasing:
      enhance_contrast(image, a, scratch);
      break;
    case AugmentOp::Brightness:
    case AugmentOp::BrightnessIncreasing:
      enhance_brightness(image, a);
      break;
    case AugmentOp::Sharpness:
    case AugmentOp::SharpnessIncreasing:
      enhance_sharpness(image, a, scratch);
      break;
    case AugmentOp::ShearX:
      warp(AffineMatrix{{1, a, 0, 0, 1, 0}});
      break;
    case AugmentOp::ShearY:
      warp(AffineMatrix{{1, 0, 0, a, 1, 0}});
      break;
    case AugmentOp::TranslateX:
      warp(AffineMatrix{{1, 0, a, 0, 1, 0}});
      break;
    case AugmentOp::TranslateY:
      warp(AffineMatrix{{1, 0, 0, 0, 1, a}});
      break;
    case AugmentOp::TranslateXRel:
      warp(AffineMatrix{{1, 0, a * image.width, 0, 1, 0}});
      break;
    case AugmentOp::TranslateYRel:
      warp(AffineMatrix{{1, 0, 0, 0, 1, a * image.height}});
      break;
  }
}

}  // namespace fg::data
