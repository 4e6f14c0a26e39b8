#include "data/mixup.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/error.h"

namespace fg::data {

double sample_gamma(Generator& rng, double shape) {
  // Marsaglia and Tsang; shapes below 1 are boosted by U^(1/shape).
  if (shape < 1.0) {
    const double u = 1.0 - rng.uniform();  // (0, 1]
    return sample_gamma(rng, shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = rng.normal();
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

double sample_beta(Generator& rng, double a, double b) {
  const double x = sample_gamma(rng, a);
  const double y = sample_gamma(rng, b);
  return x / (x + y);
}

void smoothed_targets(const int64_t* labels, int64_t batch, int64_t num_classes, double smoothing,
                      float* targets) {
  const float off = static_cast<float>(smoothing / num_classes);
  const float on = static_cast<float>(1.0 - smoothing + smoothing / num_classes);
  for (int64_t i = 0; i < batch; ++i) {
    FG_CHECK(labels[i] >= 0 && labels[i] < num_classes, "label ", labels[i], " outside [0, ",
             num_classes, ")");
    std::fill_n(targets + i * num_classes, num_classes, off);
    targets[i * num_classes + labels[i]] = on;
  }
}

Mixup::Mixup(const DataOptions& options, int64_t num_classes)
    : mixup_alpha_(options.mixup),
      cutmix_alpha_(options.cutmix),
      cutmix_minmax_(options.cutmix_minmax),
      mix_prob_(options.mixup_prob),
      switch_prob_(options.mixup_switch_prob),
      smoothing_(options.label_smoothing),
      mode_(options.mixup_mode),
      moves_mask_(options.cutmix_moves_mask),
      num_classes_(num_classes) {
  FG_CHECK(num_classes > 0, "mixup: num_classes must be positive");
  // timm forces alpha 1 when min/max ratios define the CutMix box.
  if (!cutmix_minmax_.empty()) cutmix_alpha_ = 1.0;
  enabled_ = options.mixup > 0 || options.cutmix > 0 || !options.cutmix_minmax.empty();
}

namespace {

// timm's rand_bbox / rand_bbox_minmax + lambda correction (correct_lam=True).
std::array<int, 4> cutmix_box(int height, int width, double& lambda,
                              const std::vector<double>& minmax, Generator& rng) {
  int y0, y1, x0, x1;
  if (!minmax.empty()) {
    const int hl = static_cast<int>(height * minmax[0]), hh = static_cast<int>(height * minmax[1]);
    const int wl = static_cast<int>(width * minmax[0]), wh = static_cast<int>(width * minmax[1]);
    const int cut_h = hl + static_cast<int>(rng.randint(std::max(1, hh - hl)));
    const int cut_w = wl + static_cast<int>(rng.randint(std::max(1, wh - wl)));
    y0 = static_cast<int>(rng.randint(std::max(1, height - cut_h)));
    x0 = static_cast<int>(rng.randint(std::max(1, width - cut_w)));
    y1 = y0 + cut_h;
    x1 = x0 + cut_w;
  } else {
    const double ratio = std::sqrt(1.0 - lambda);
    const int cut_h = static_cast<int>(height * ratio), cut_w = static_cast<int>(width * ratio);
    const int cy = static_cast<int>(rng.randint(height));
    const int cx = static_cast<int>(rng.randint(width));
    y0 = std::clamp(cy - cut_h / 2, 0, height);
    y1 = std::clamp(cy + cut_h / 2, 0, height);
    x0 = std::clamp(cx - cut_w / 2, 0, width);
    x1 = std::clamp(cx + cut_w / 2, 0, width);
  }
  lambda = 1.0 - static_cast<double>(y1 - y0) * (x1 - x0) / (static_cast<double>(height) * width);
  return {y0, y1, x0, x1};
}

}  // namespace

MixupParams Mixup::draw(int64_t batch, int height, int width, Generator& rng) const {
  FG_CHECK(batch % 2 == 0, "mixup/cutmix needs an even batch size, got ", batch);
  MixupParams p;
  p.lambda.assign(static_cast<size_t>(batch), 1.0);
  p.cutmix.assign(static_cast<size_t>(batch), 0);
  p.box.assign(static_cast<size_t>(batch), {0, 0, 0, 0});
  if (!enabled_) return p;
  // One (lambda, cutmix?) draw; timm's _params_per_batch / per element.
  auto draw_one = [&](double& lambda, bool& use_cutmix) {
    lambda = 1.0;
    use_cutmix = false;
    if (rng.uniform() >= mix_prob_) return;
    if (mixup_alpha_ > 0 && cutmix_alpha_ > 0) {
      use_cutmix = rng.uniform() < switch_prob_;
      lambda = use_cutmix ? sample_beta(rng, cutmix_alpha_, cutmix_alpha_)
                          : sample_beta(rng, mixup_alpha_, mixup_alpha_);
    } else if (mixup_alpha_ > 0) {
      lambda = sample_beta(rng, mixup_alpha_, mixup_alpha_);
    } else {
      use_cutmix = true;
      lambda = sample_beta(rng, cutmix_alpha_, cutmix_alpha_);
    }
  };
  if (mode_ == "batch") {
    double lambda;
    bool use_cutmix;
    draw_one(lambda, use_cutmix);
    std::array<int, 4> box{0, 0, 0, 0};
    if (lambda != 1.0 && use_cutmix) box = cutmix_box(height, width, lambda, cutmix_minmax_, rng);
    for (int64_t i = 0; i < batch; ++i) {
      p.lambda[i] = lambda;
      p.cutmix[i] = use_cutmix;
      p.box[i] = box;
    }
    return p;
  }
  const int64_t draws = mode_ == "pair" ? batch / 2 : batch;
  for (int64_t i = 0; i < draws; ++i) {
    double lambda;
    bool use_cutmix;
    draw_one(lambda, use_cutmix);
    lambda = static_cast<float>(lambda);  // timm keeps per-element lambdas in float32
    std::array<int, 4> box{0, 0, 0, 0};
    if (lambda != 1.0 && use_cutmix) box = cutmix_box(height, width, lambda, cutmix_minmax_, rng);
    p.lambda[i] = lambda;
    p.cutmix[i] = use_cutmix;
    p.box[i] = box;
    if (mode_ == "pair") {
      const int64_t j = batch - 1 - i;
      p.lambda[j] = lambda;
      p.cutmix[j] = use_cutmix;
      p.box[j] = box;
    }
  }
  return p;
}

void Mixup::apply(const MixupParams& p, float* images, float* masks, bool* mask_valid,
                  const int64_t* labels, float* targets, int64_t batch, int height,
                  int width) const {
  const size_t plane = static_cast<size_t>(height) * width;
  const size_t image_size = 3 * plane;
  std::vector<float> original_i, original_j;
  // Pairs (i, B-1-i) mix with each other's original pixels; a middle element
  // (odd batch) would mix with itself.
  for (int64_t i = 0; i < (batch + 1) / 2; ++i) {
    const int64_t j = batch - 1 - i;
    float* xi = images + i * image_size;
    float* xj = images + j * image_size;
    const bool both = i != j;
    // Element i uses p[i] with partner j, element j uses p[j] with partner i.
    auto mix = [&](int64_t e, float* xe, const float* partner, const float* partner_mask,
                   bool partner_valid) {
      const double lambda = p.lambda[e];
      if (lambda == 1.0 && !p.cutmix[e]) return;
      if (p.cutmix[e]) {
        const auto& b = p.box[e];
        for (int c = 0; c < 3; ++c) {
          for (int y = b[0]; y < b[1]; ++y) {
            std::copy_n(partner + c * plane + static_cast<size_t>(y) * width + b[2], b[3] - b[2],
                        xe + c * plane + static_cast<size_t>(y) * width + b[2]);
          }
        }
        if (moves_mask_ && masks && b[1] > b[0] && b[3] > b[2]) {
          float* me = masks + e * plane;
          for (int y = b[0]; y < b[1]; ++y) {
            std::copy_n(partner_mask + static_cast<size_t>(y) * width + b[2], b[3] - b[2],
                        me + static_cast<size_t>(y) * width + b[2]);
          }
          if (mask_valid) mask_valid[e] = mask_valid[e] && partner_valid;
        }
      } else {
        const float a = static_cast<float>(lambda);
        const float b = static_cast<float>(1.0 - lambda);
        for (size_t k = 0; k < image_size; ++k) xe[k] = xe[k] * a + partner[k] * b;
      }
    };
    if (!both) {
      original_i.assign(xi, xi + image_size);
      std::vector<float> mask_i;
      if (masks) mask_i.assign(masks + i * plane, masks + (i + 1) * plane);
      mix(i, xi, original_i.data(), masks ? mask_i.data() : nullptr,
          mask_valid ? mask_valid[i] : false);
      continue;
    }
    original_i.assign(xi, xi + image_size);
    original_j.assign(xj, xj + image_size);
    std::vector<float> mask_i, mask_j;
    if (masks && moves_mask_) {
      mask_i.assign(masks + i * plane, masks + (i + 1) * plane);
      mask_j.assign(masks + j * plane, masks + (j + 1) * plane);
    }
    const bool valid_i = mask_valid ? mask_valid[i] : false;
    const bool valid_j = mask_valid ? mask_valid[j] : false;
    mix(i, xi, original_j.data(), mask_j.empty() ? nullptr : mask_j.data(), valid_j);
    mix(j, xj, original_i.data(), mask_i.empty() ? nullptr : mask_i.data(), valid_i);
  }
  // Targets: y_i * lambda_i + y_{B-1-i} * (1 - lambda_i), both smoothed one-hots.
  const double off = smoothing_ / num_classes_;
  const float off_f = static_cast<float>(off);
  const float on_f = static_cast<float>(1.0 - smoothing_ + off);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t j = batch - 1 - i;
    FG_CHECK(labels[i] >= 0 && labels[i] < num_classes_, "label ", labels[i], " outside [0, ",
             num_classes_, ")");
    const float a = static_cast<float>(p.lambda[i]);
    const float b = static_cast<float>(1.0 - p.lambda[i]);
    float* t = targets + i * num_classes_;
    for (int64_t c = 0; c < num_classes_; ++c) {
      const float y1 = c == labels[i] ? on_f : off_f;
      const float y2 = c == labels[j] ? on_f : off_f;
      t[c] = y1 * a + y2 * b;
    }
  }
}

}  // namespace fg::data
