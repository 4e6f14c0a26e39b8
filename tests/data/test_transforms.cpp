// Sample transforms: image/mask alignment through every geometric step, pixel
// agreement with torchvision's crop, resize and normalization, RandomErasing,
// RandAugment's configuration and draws, and mixup/cutmix.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "data/mixup.h"
#include "data/rand_augment.h"
#include "data/transforms.h"
#include "helpers.h"

using namespace fg;
using namespace fg::data;
using namespace fg::data::testing;
using nlohmann::json;

namespace {

// An image that is black except for coloured objects; its mask is exactly the
// nonzero pixels.
struct MaskedImage {
  InterleavedImage rgb;
  PlanarImage mask;
};

MaskedImage object_image(int width, int height, uint64_t seed) {
  MaskedImage m;
  m.rgb.reset(width, height, 3);
  std::fill(m.rgb.pixels.begin(), m.rgb.pixels.end(), 0);
  m.mask.reset(width, height, 1);
  std::fill(m.mask.pixels.begin(), m.mask.pixels.end(), 0);
  const InterleavedImage texture = random_image(width, height, 3, seed);
  // A disc, a bar and a square at fixed fractions of the size.
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double u = x / double(width), v = y / double(height);
      const bool disc = (u - 0.35) * (u - 0.35) + (v - 0.45) * (v - 0.45) < 0.04;
      const bool bar = u > 0.6 && u < 0.68 && v > 0.1 && v < 0.9;
      const bool square = u > 0.75 && u < 0.92 && v > 0.65 && v < 0.85;
      if (disc || bar || square) {
        for (int c = 0; c < 3; ++c) {
          m.rgb.row(y)[x * 3 + c] = static_cast<uint8_t>(120 + texture.row(y)[x * 3 + c] / 2);
        }
        m.mask.plane(0)[y * width + x] = 1;
      }
    }
  }
  return m;
}

// Pixels where "image is foreground" and the mask disagree, away from the
// mask's boundary (band pixels wide), where interpolation legitimately differs.
struct Agreement {
  int64_t interior_disagreements = 0;
  int64_t interior = 0;
  int64_t foreground = 0;
};

Agreement compare_with_mask(const PlanarImage& image, const PlanarImage& mask, int band) {
  Agreement a;
  const int w = image.width, h = image.height;
  auto image_fg = [&](int x, int y) {
    int v = 0;
    for (int c = 0; c < 3; ++c) v = std::max<int>(v, image.plane(c)[y * w + x]);
    return v > 60;
  };
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const uint8_t m = mask.plane(0)[y * w + x];
      bool near_edge = false;
      for (int dy = -band; dy <= band && !near_edge; ++dy) {
        for (int dx = -band; dx <= band && !near_edge; ++dx) {
          const int xx = std::clamp(x + dx, 0, w - 1), yy = std::clamp(y + dy, 0, h - 1);
          near_edge = mask.plane(0)[yy * w + xx] != m;
        }
      }
      a.foreground += m;
      if (near_edge) continue;
      ++a.interior;
      a.interior_disagreements += image_fg(x, y) != (m != 0);
    }
  }
  return a;
}

DataOptions plain_options() {
  DataOptions o;
  o.auto_augment = "none";
  o.reprob = 0;
  o.hflip = 0;
  o.jpeg_dct_scaling = false;
  return o;
}

}  // namespace

TEST_CASE("alignment: the mask follows the image through crop, flip and every geometric op") {
  const MaskedImage src = object_image(480, 360, 21);
  const std::vector<uint8_t> png = encode_png(src.rgb);
  DataOptions options = plain_options();
  options.hflip = 0.5;
  const TrainTransform transform(options);
  TransformWorkspace ws;
  const int S = 224;
  std::vector<float> image(3 * S * S), mask(S * S);
  int flips = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    Generator rng(seed);
    SampleTrace trace;
    transform(png.data(), png.size(), &src.mask, rng, SampleOutput{image.data(), mask.data()}, ws,
              &trace);
    flips += trace.hflip;
    // Back from normalized floats to "is the pixel black": the mask must match.
    PlanarImage restored, m;
    restored.reset(S, S, 3);
    m.reset(S, S, 1);
    const Normalizer normalizer(options.mean, options.std);
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < S * S; ++i) {
        restored.plane(c)[i] = image[c * S * S + i] > normalizer.value(c, 60) ? 255 : 0;
      }
    }
    for (int i = 0; i < S * S; ++i) m.plane(0)[i] = mask[i] != 0.0f;
    const Agreement a = compare_with_mask(restored, m, 3);
    CAPTURE(seed);
    CHECK(a.interior_disagreements == 0);
  }
  CHECK(flips > 5);
  CHECK(flips < 35);

  // Each geometric RandAugment op at several strengths, both signs, on a 224 crop.
  PlanarImage base_image = to_planar(src.rgb), base_mask = src.mask;
  PlanarImage cropped, cropped_mask;
  ImagingScratch scratch;
  resize_crop_planar(base_image, PixelRect{40, 30, 400, 300}, FloatBox{0, 0, 400, 300}, S, S,
                     PixelRect{0, 0, S, S}, Interpolation::Bicubic, cropped, scratch);
  resize_crop_planar(base_mask, PixelRect{40, 30, 400, 300}, FloatBox{0, 0, 400, 300}, S, S,
                     PixelRect{0, 0, S, S}, Interpolation::Nearest, cropped_mask, scratch);
  const std::array<uint8_t, 3> black{0, 0, 0};
  for (AugmentOp op :
       {AugmentOp::Rotate, AugmentOp::ShearX, AugmentOp::ShearY, AugmentOp::TranslateXRel,
        AugmentOp::TranslateYRel, AugmentOp::TranslateX, AugmentOp::TranslateY}) {
    for (double strength : {-1.0, -0.4, 0.3, 1.0}) {
      for (Interpolation interp : {Interpolation::Bicubic, Interpolation::Bilinear}) {
        AugmentStep step;
        step.op = op;
        step.interpolation = interp;
        step.argument = op == AugmentOp::Rotate                                ? 30 * strength
                        : (op == AugmentOp::ShearX || op == AugmentOp::ShearY) ? 0.3 * strength
                        : (op == AugmentOp::TranslateX || op == AugmentOp::TranslateY)
                            ? 100 * strength
                            : 0.45 * strength;
        PlanarImage img = cropped, m = cropped_mask, temp;
        apply_augment_step(step, black, img, &m, temp, scratch);
        const Agreement a = compare_with_mask(img, m, 2);
        CAPTURE(augment_op_name(op));
        CAPTURE(step.argument);
        CHECK(a.interior > S * S / 2);
        CHECK(a.interior_disagreements == 0);
        // The op did move the content (so that the check above means something).
        CHECK(m.pixels != cropped_mask.pixels);
      }
    }
  }
  // A mask left in place while the image moves is caught by this check.
  {
    AugmentStep step{AugmentOp::ShearX, 0.3, Interpolation::Bicubic};
    PlanarImage img = cropped, temp;
    apply_augment_step(step, black, img, nullptr, temp, scratch);
    CHECK(compare_with_mask(img, cropped_mask, 2).interior_disagreements > 100);
  }
  // Colour ops leave the mask alone.
  {
    AugmentStep step{AugmentOp::Invert, 0, Interpolation::Bicubic};
    PlanarImage img = cropped, m = cropped_mask, temp;
    apply_augment_step(step, black, img, &m, temp, scratch);
    CHECK(m.pixels == cropped_mask.pixels);
  }
}

TEST_CASE("alignment: masks of another size, JPEGs decoded with DCT-domain scaling") {
  // A large JPEG so that big crops decode at 1/2 or 1/4 size; its mask given at
  // half resolution (the transform scales it to the image first).
  const MaskedImage src = object_image(1600, 1200, 22);
  const auto jpeg = encode_jpeg(src.rgb, {95, false, false, 444});
  PlanarImage half_mask;
  ImagingScratch scratch;
  resize_crop_planar(src.mask, PixelRect{0, 0, 1600, 1200}, FloatBox{0, 0, 1600, 1200}, 800, 600,
                     PixelRect{0, 0, 800, 600}, Interpolation::Nearest, half_mask, scratch);
  DataOptions fast = plain_options();
  fast.jpeg_dct_scaling = true;
  DataOptions exact = plain_options();
  const TrainTransform with_dct(fast), without_dct(exact);
  TransformWorkspace ws;
  const int S = 224;
  std::vector<float> a(3 * S * S), am(S * S), b(3 * S * S);
  int scaled = 0;
  double worst_mean_levels = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    Generator g1(seed), g2(seed);
    SampleTrace trace;
    with_dct(jpeg.data(), jpeg.size(), &half_mask, g1, SampleOutput{a.data(), am.data()}, ws,
             &trace);
    without_dct(jpeg.data(), jpeg.size(), nullptr, g2, SampleOutput{b.data(), nullptr}, ws);
    scaled += trace.decode_scale > 1;
    // The DCT scale is taken only when the crop keeps at least S pixels per side.
    CHECK(trace.crop_width / trace.decode_scale >= S);
    CHECK(trace.crop_height / trace.decode_scale >= S);
    double total = 0;
    for (size_t k = 0; k < a.size(); ++k) total += std::fabs(a[k] - b[k]);
    worst_mean_levels = std::max(worst_mean_levels, total / a.size() * 0.226 * 255);
    PlanarImage restored, m;
    restored.reset(S, S, 3);
    m.reset(S, S, 1);
    const Normalizer normalizer(fast.mean, fast.std);
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < S * S; ++i)
        restored.plane(c)[i] = a[c * S * S + i] > normalizer.value(c, 60) ? 255 : 0;
    }
    for (int i = 0; i < S * S; ++i) m.plane(0)[i] = am[i] != 0.0f;
    CAPTURE(seed);
    CHECK(compare_with_mask(restored, m, 3).interior_disagreements == 0);
  }
  CHECK(scaled > 5);
  CHECK(worst_mean_levels < 3.0);
}

TEST_CASE("train crop and eval resize give torchvision's pixels; normalization equals torch's") {
  TempDir dir("tv");
  json jobs = json::array();
  struct Item {
    std::string file;
    int width, height;
  };
  const std::vector<Item> items = {{"a.jpg", 500, 375},
                                   {"b.jpg", 333, 500},
                                   {"c.jpg", 240, 180},
                                   {"d.jpg", 1024, 683},
                                   {"e.png", 301, 257}};
  for (size_t i = 0; i < items.size(); ++i) {
    const InterleavedImage img = random_image(items[i].width, items[i].height, 3, 30 + i);
    write_bytes(dir / items[i].file, items[i].file.back() == 'g' && items[i].file[2] == 'p'
                                         ? encode_png(img)
                                         : encode_jpeg(img, {90, i == 1, false, 420}));
  }
  // Training: the transform's own crop (traced), with every other step off.
  DataOptions options = plain_options();
  options.jpeg_dct_scaling = false;
  const TrainTransform train(options);
  const EvalTransform eval(options);
  TransformWorkspace ws;
  const int S = 224;
  std::vector<std::vector<float>> ours_train, ours_eval;
  std::vector<float> image(3 * S * S);
  for (size_t i = 0; i < items.size(); ++i) {
    const auto bytes = read_bytes(dir / items[i].file);
    for (uint64_t seed = 0; seed < 3; ++seed) {
      Generator rng(seed + 100 * i);
      SampleTrace trace;
      train(bytes.data(), bytes.size(), nullptr, rng, SampleOutput{image.data(), nullptr}, ws,
            &trace);
      ours_train.push_back(image);
      jobs.push_back({{"op", "tv_resized_crop"},
                      {"input", dir / items[i].file},
                      {"crop", {trace.crop_x, trace.crop_y, trace.crop_width, trace.crop_height}},
                      {"size", S},
                      {"output", dir / ("train" + std::to_string(ours_train.size()) + ".raw")}});
    }
    eval(bytes.data(), bytes.size(), nullptr, SampleOutput{image.data(), nullptr}, ws);
    ours_eval.push_back(image);
    jobs.push_back({{"op", "tv_eval"},
                    {"input", dir / items[i].file},
                    {"resize", 256},
                    {"size", S},
                    {"output", dir / ("eval" + std::to_string(i) + ".raw")}});
  }
  // Every 8-bit value through ToTensor + Normalize.
  InterleavedImage ramp;
  ramp.reset(256, 1, 3);
  for (int v = 0; v < 256; ++v) {
    for (int c = 0; c < 3; ++c) ramp.pixels[v * 3 + c] = static_cast<uint8_t>(v);
  }
  write_bytes(dir / "ramp.raw", ramp.pixels);
  jobs.push_back({{"op", "tv_normalize"},
                  {"input", dir / "ramp.raw"},
                  {"width", 256},
                  {"height", 1},
                  {"mode", "RGB"},
                  {"output", dir / "ramp.out"}});
  run_pil_oracle(jobs, dir.path());

  const Normalizer normalizer(options.mean, options.std);
  auto to_floats = [&](const std::vector<uint8_t>& hwc) {
    std::vector<float> chw(3 * S * S);
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < S * S; ++i) chw[c * S * S + i] = normalizer.value(c, hwc[i * 3 + c]);
    }
    return chw;
  };
  for (size_t k = 0; k < ours_train.size(); ++k) {
    CAPTURE(k);
    CHECK(ours_train[k] == to_floats(read_bytes(dir / ("train" + std::to_string(k + 1) + ".raw"))));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    CAPTURE(items[i].file);
    CHECK(ours_eval[i] == to_floats(read_bytes(dir / ("eval" + std::to_string(i) + ".raw"))));
  }
  const std::vector<uint8_t> torch_ramp = read_bytes(dir / "ramp.out");
  REQUIRE(torch_ramp.size() == 3 * 256 * sizeof(float));
  int mismatches = 0;
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      float t;
      std::memcpy(&t, torch_ramp.data() + (c * 256 + v) * sizeof(float), sizeof(float));
      mismatches += t != normalizer.value(c, static_cast<uint8_t>(v));
    }
  }
  CHECK(mismatches == 0);

  // DCT-domain downscaling (on by default) only applies when the region is at
  // least twice the output and stays close to the exact pixels.
  DataOptions fast = options;
  fast.jpeg_dct_scaling = true;
  const EvalTransform eval_fast(fast);
  const auto big = read_bytes(dir / "d.jpg");
  std::vector<float> exact(3 * S * S), scaled(3 * S * S);
  eval(big.data(), big.size(), nullptr, SampleOutput{exact.data(), nullptr}, ws);
  eval_fast(big.data(), big.size(), nullptr, SampleOutput{scaled.data(), nullptr}, ws);
  CHECK(ws.decoded.scale_denominator == 2);
  double total = 0;
  for (size_t k = 0; k < exact.size(); ++k) total += std::fabs(exact[k] - scaled[k]);
  const double mean_levels = total / exact.size() * 0.226 * 255;  // back to 8-bit levels
  CHECK(mean_levels > 0.0);
  CHECK(mean_levels < 4.0);
  const auto small = read_bytes(dir / "a.jpg");
  eval_fast(small.data(), small.size(), nullptr, SampleOutput{scaled.data(), nullptr}, ws);
  CHECK(ws.decoded.scale_denominator == 1);
}

TEST_CASE("random erasing: one box of noise, mask zeroed inside it, probability as set") {
  const int S = 64;
  std::vector<float> image(3 * S * S), mask(S * S);
  int erased = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    std::fill(image.begin(), image.end(), 7.0f);
    std::fill(mask.begin(), mask.end(), 1.0f);
    Generator rng(seed);
    SampleTrace trace;
    random_erasing(image.data(), mask.data(), S, S, 0.25, "pixel", 1, rng, &trace);
    if (!trace.erased) {
      CHECK(std::count(image.begin(), image.end(), 7.0f) == 3 * S * S);
      continue;
    }
    ++erased;
    int64_t inside_changed = 0, outside_changed = 0, mask_zero = 0;
    for (int y = 0; y < S; ++y) {
      for (int x = 0; x < S; ++x) {
        const bool inside = x >= trace.erase_x && x < trace.erase_x + trace.erase_width &&
                            y >= trace.erase_y && y < trace.erase_y + trace.erase_height;
        for (int c = 0; c < 3; ++c) {
          const bool changed = image[c * S * S + y * S + x] != 7.0f;
          (inside ? inside_changed : outside_changed) += changed;
        }
        if (mask[y * S + x] == 0.0f) {
          ++mask_zero;
          CHECK(inside);
        }
      }
    }
    const int64_t area = static_cast<int64_t>(trace.erase_width) * trace.erase_height;
    CHECK(outside_changed == 0);
    CHECK(inside_changed == 3 * area);
    CHECK(mask_zero == area);
    CHECK(area >= static_cast<int64_t>(0.015 * S * S));
    CHECK(area <= static_cast<int64_t>(0.36 * S * S));
  }
  CHECK(erased > 70);
  CHECK(erased < 130);
  // Per-pixel noise is standard normal.
  std::vector<float> noise(100000);
  fill_normal(noise.data(), noise.size(), 42, 7);
  double mean = 0, var = 0;
  for (float v : noise) mean += v;
  mean /= noise.size();
  for (float v : noise) var += (v - mean) * (v - mean);
  var /= noise.size();
  CHECK(std::fabs(mean) < 0.02);
  CHECK(std::fabs(var - 1.0) < 0.03);
}

TEST_CASE("RandAugment: the reference's spec, op choice, probability and magnitudes") {
  const std::array<double, 3> mean{0.485, 0.456, 0.406};
  const RandAugmentConfig c =
      RandAugmentConfig::parse("rand-m9-mstd0.5-inc1", 224, mean, "bicubic");
  CHECK(c.num_layers == 2);
  CHECK(c.magnitude == 9);
  CHECK(c.magnitude_std == 0.5);
  CHECK(c.prob == 0.5);
  REQUIRE(c.ops.size() == 15);
  CHECK(c.ops[4] == AugmentOp::PosterizeIncreasing);
  CHECK(c.ops[9] == AugmentOp::BrightnessIncreasing);
  CHECK(c.fill == std::array<uint8_t, 3>{124, 116, 104});
  CHECK(c.translate_const == 100);
  CHECK_FALSE(c.random_interpolation);
  CHECK(RandAugmentConfig::parse("rand-m9-mstd0.5", 224, mean, "bicubic").ops[4] ==
        AugmentOp::Posterize);
  CHECK(RandAugmentConfig::parse("rand-n3-m5-mstd101", 224, mean, "random").random_interpolation);
  CHECK(std::isinf(
      RandAugmentConfig::parse("rand-n3-m5-mstd101", 224, mean, "bicubic").magnitude_std));
  CHECK_THROWS_WITH_AS(RandAugmentConfig::parse("rand-m9-foo3", 224, mean, "bicubic"),
                       doctest::Contains("AUG.AUTO_AUGMENT"), Error);
  CHECK_THROWS_WITH_AS(RandAugmentConfig::parse("original-mstd0.5", 224, mean, "bicubic"),
                       doctest::Contains("RandAugment"), Error);
  CHECK_THROWS_AS(RandAugmentConfig::parse("rand-m9", 224, mean, "lanczos"), Error);
  // Numbers past int's range are refused by name (converting them is undefined).
  for (const std::string spec : {"rand-mmax1e32", "rand-n3000000000", "rand-m5000000000"}) {
    CAPTURE(spec);
    CHECK_THROWS_WITH_AS(RandAugmentConfig::parse(spec, 224, mean, "bicubic"),
                         doctest::Contains("out of range"), Error);
  }
  CHECK(RandAugmentConfig::parse("rand-n2147483647", 224, mean, "bicubic").num_layers == 2147483647);

  // Draws: 2 ops with p 0.5 each -> 1 applied on average; magnitudes as the level functions give.
  const RandAugment ra(c);
  PlanarImage image, temp;
  ImagingScratch scratch;
  const InterleavedImage src = random_image(32, 32, 3, 5);
  int64_t applied = 0, rotations = 0;
  double abs_degrees = 0;
  std::map<AugmentOp, int> seen;
  const int trials = 3000;
  for (int t = 0; t < trials; ++t) {
    image = to_planar(src);
    Generator rng(t);
    std::vector<AugmentStep> steps;
    ra.apply(image, nullptr, rng, temp, scratch, &steps);
    applied += static_cast<int64_t>(steps.size());
    for (const AugmentStep& s : steps) {
      ++seen[s.op];
      if (s.op == AugmentOp::Rotate) {
        ++rotations;
        abs_degrees += std::fabs(s.argument);
        CHECK(std::fabs(s.argument) <= 30.0);
      }
      if (s.op == AugmentOp::PosterizeIncreasing)
        CHECK((s.argument == 1 || s.argument == 0 || s.argument == 2));
      if (s.op == AugmentOp::SolarizeIncreasing) CHECK(s.argument >= 0);
      if (s.op == AugmentOp::ShearX) CHECK(std::fabs(s.argument) <= 0.3);
      if (s.op == AugmentOp::ColorIncreasing) CHECK((s.argument >= 0.1 && s.argument <= 1.9));
    }
  }
  CHECK(std::fabs(applied / double(trials) - 1.0) < 0.05);
  CHECK(seen.size() == 15);
  // |N(9, 0.5)| clipped to 10, times 3 degrees per unit: about 26.9 on average.
  CHECK(std::fabs(abs_degrees / rotations - 26.9) < 0.5);
}

TEST_CASE("transforms are pure functions of the generator") {
  const InterleavedImage img = random_image(200, 160, 3, 9);
  const auto jpeg = encode_jpeg(img);
  MaskedImage masked = object_image(200, 160, 3);
  const TrainTransform transform{DataOptions{}};
  TransformWorkspace ws1, ws2;
  const int S = 224;
  std::vector<float> a(3 * S * S), am(S * S), b(3 * S * S), bm(S * S);
  Generator g1(77), g2(77), g3(78);
  transform(jpeg.data(), jpeg.size(), &masked.mask, g1, SampleOutput{a.data(), am.data()}, ws1);
  transform(jpeg.data(), jpeg.size(), &masked.mask, g2, SampleOutput{b.data(), bm.data()}, ws2);
  CHECK(a == b);
  CHECK(am == bm);
  transform(jpeg.data(), jpeg.size(), &masked.mask, g3, SampleOutput{b.data(), bm.data()}, ws2);
  CHECK(a != b);
}

TEST_CASE("mixup and cutmix: pairs (i, B-1-i), corrected lambda, smoothed soft targets") {
  const int B = 6, H = 16, W = 16, C = 5;
  const size_t plane = H * W;
  std::vector<float> images(B * 3 * plane), masks(B * plane);
  for (int i = 0; i < B; ++i) {
    std::fill_n(images.begin() + i * 3 * plane, 3 * plane, float(i));
    std::fill_n(masks.begin() + i * plane, plane, float(i % 2));
  }
  const std::vector<int64_t> labels = {0, 1, 2, 3, 4, 0};
  std::vector<float> targets(B * C);
  bool valid[B] = {true, true, false, true, true, true};

  DataOptions o;
  o.mixup = 0.8;
  o.cutmix = 1.0;
  o.label_smoothing = 0.1;
  const Mixup mixup(o, C);
  REQUIRE(mixup.enabled());
  int cutmix_batches = 0, mixup_batches = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    Generator rng(seed);
    const MixupParams p = mixup.draw(B, H, W, rng);
    const double lambda = p.lambda[0];
    CHECK(lambda >= 0.0);
    CHECK(lambda <= 1.0);
    for (int i = 1; i < B; ++i) CHECK(p.lambda[i] == lambda);  // one lambda per batch
    if (p.cutmix[0]) {
      ++cutmix_batches;
      const auto& b = p.box[0];
      CHECK(lambda == doctest::Approx(1.0 - double(b[1] - b[0]) * (b[3] - b[2]) / (H * W)));
    } else {
      ++mixup_batches;
    }
  }
  // Switch probability 0.5 between the two.
  CHECK(cutmix_batches > 70);
  CHECK(mixup_batches > 70);

  // Apply one CutMix and one mixup draw and check pixels and targets.
  for (bool want_cutmix : {true, false}) {
    for (uint64_t seed = 0;; ++seed) {
      Generator rng(seed);
      const MixupParams p = mixup.draw(B, H, W, rng);
      if (p.cutmix[0] != want_cutmix || p.lambda[0] == 1.0) continue;
      if (want_cutmix && (p.box[0][1] - p.box[0][0]) * (p.box[0][3] - p.box[0][2]) == 0) continue;
      std::vector<float> x = images, m = masks;
      bool v[B];
      std::copy(valid, valid + B, v);
      mixup.apply(p, x.data(), m.data(), v, labels.data(), targets.data(), B, H, W);
      const double lambda = p.lambda[0];
      for (int i = 0; i < B; ++i) {
        const int j = B - 1 - i;
        if (want_cutmix) {
          const auto& b = p.box[0];
          int64_t in_box_wrong = 0, outside_wrong = 0;
          for (int y = 0; y < H; ++y) {
            for (int x0 = 0; x0 < W; ++x0) {
              const bool in_box = y >= b[0] && y < b[1] && x0 >= b[2] && x0 < b[3];
              const float v0 = x[i * 3 * plane + 2 * plane + y * W + x0];
              (in_box ? in_box_wrong : outside_wrong) += v0 != float(in_box ? j : i);
            }
          }
          CHECK(in_box_wrong == 0);
          CHECK(outside_wrong == 0);
        } else {
          const float expected = float(i) * float(lambda) + float(j) * float(1.0 - lambda);
          CHECK(x[i * 3 * plane + 5] == expected);
        }
        // Masks and validity are untouched by default.
        CHECK(m[i * plane + 3] == float(i % 2));
        CHECK(v[i] == valid[i]);
        // Targets: smoothed one-hots mixed with the partner's.
        double sum = 0;
        for (int c = 0; c < C; ++c) {
          sum += targets[i * C + c];
          const double y1 = (c == labels[i] ? 0.9 + 0.02 : 0.02);
          const double y2 = (c == labels[j] ? 0.9 + 0.02 : 0.02);
          CHECK(targets[i * C + c] ==
                doctest::Approx(y1 * lambda + y2 * (1 - lambda)).epsilon(1e-5));
        }
        CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
      }
      break;
    }
  }

  // With cutmix_moves_mask, mask boxes travel with the image boxes and a row
  // pasted from a sample without a mask loses its validity.
  DataOptions moving = o;
  moving.mixup = 0;  // CutMix only
  moving.cutmix_moves_mask = true;
  const Mixup cutmix(moving, C);
  for (uint64_t seed = 0;; ++seed) {
    Generator rng(seed);
    const MixupParams p = cutmix.draw(B, H, W, rng);
    const auto& b = p.box[0];
    if (!p.cutmix[0] || (b[1] - b[0]) * (b[3] - b[2]) == 0) continue;
    std::vector<float> x = images, m = masks;
    bool v[B];
    std::copy(valid, valid + B, v);
    cutmix.apply(p, x.data(), m.data(), v, labels.data(), targets.data(), B, H, W);
    for (int i = 0; i < B; ++i) {
      const int j = B - 1 - i;
      CHECK(m[i * plane + b[0] * W + b[2]] == float(j % 2));
      CHECK(v[i] == (valid[i] && valid[j]));
    }
    break;
  }

  // No mixing: label smoothing only.
  smoothed_targets(labels.data(), B, C, 0.1, targets.data());
  CHECK(targets[0] == doctest::Approx(0.92));
  CHECK(targets[1] == doctest::Approx(0.02));
  // An odd batch cannot be mixed (timm asserts the same).
  Generator rng(1);
  CHECK_THROWS_AS(mixup.draw(5, H, W, rng), Error);
}

TEST_CASE("options: config keys set fields, bad values name their key") {
  DataOptions o;
  o.set("AUG.REPROB", "0.3");
  o.set("AUG.CUTMIX_MINMAX", "[0.2, 0.8]");
  o.set("AUG.CUTMIX_MOVES_MASK", "true");
  o.set("DATA.INTERPOLATION", "'bilinear'");
  o.set("TEST.CROP", "False");
  CHECK(o.jpeg_dct_scaling);  // on unless switched off
  o.set("DATA.JPEG_DCT_SCALING", "false");
  CHECK_FALSE(o.jpeg_dct_scaling);
  CHECK(o.reprob == 0.3);
  CHECK(o.cutmix_minmax == std::vector<double>{0.2, 0.8});
  CHECK(o.cutmix_moves_mask);
  CHECK(o.interpolation == "bilinear");
  CHECK_FALSE(o.test_crop);
  o.validate();
  CHECK_THROWS_WITH_AS(o.set("AUG.REPROB", "lots"), doctest::Contains("AUG.REPROB"), Error);
  CHECK_THROWS_WITH_AS(o.set("AUG.NOPE", "1"), doctest::Contains("AUG.NOPE"), Error);
  o.set("AUG.MIXUP_MODE", "sometimes");
  CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("AUG.MIXUP_MODE"), Error);
  DataOptions eval;
  CHECK(eval.eval_resize_size() == 256);
}
