#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "engine/philox.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fg::data {

std::array<int, 4> random_resized_crop_box(int width, int height, double scale_min,
                                           double scale_max, double ratio_min, double ratio_max,
                                           Generator& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_ratio_min = std::log(ratio_min), log_ratio_max = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = uniform(rng, scale_min, scale_max) * area;
    const double aspect = std::exp(uniform(rng, log_ratio_min, log_ratio_max));
    // Python's round() rounds half to even, as nearbyint does.
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w <= width && h <= height) {
      const int y = static_cast<int>(randint_inclusive(rng, 0, height - h));
      const int x = static_cast<int>(randint_inclusive(rng, 0, width - w));
      return {x, y, w, h};
    }
  }
  // Fallback: the central crop of the allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio_min) {
    h = static_cast<int>(std::nearbyint(w / ratio_min));
  } else if (in_ratio > ratio_max) {
    w = static_cast<int>(std::nearbyint(h * ratio_max));
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

Normalizer::Normalizer(const std::array<double, 3>& mean, const std::array<double, 3>& std) {
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(mean[c]);
    const float s = static_cast<float>(std[c]);
    mean_[c] = m;
    std_[c] = s;
    for (int v = 0; v < 256; ++v) table_[c][v] = (static_cast<float>(v) / 255.0f - m) / s;
  }
}

void Normalizer::apply(const PlanarImage& image, float* out) const {
  const size_t n = image.plane_size();
  for (int c = 0; c < 3; ++c) {
    const uint8_t* in = image.plane(c);
    const float* table = table_[c].data();
    float* o = out + c * n;
    size_t i = 0;
#if defined(__AVX2__)
    // The table's own float operations, 8 values at a time (same results;
    // vector stores instead of one store per value).
    const __m256 scale = _mm256_set1_ps(255.0f), mean = _mm256_set1_ps(mean_[c]);
    const __m256 std = _mm256_set1_ps(std_[c]);
    for (; i + 8 <= n; i += 8) {
      int64_t bytes;
      std::memcpy(&bytes, in + i, 8);
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes)));
      _mm256_storeu_ps(o + i, _mm256_div_ps(_mm256_sub_ps(_mm256_div_ps(v, scale), mean), std));
    }
#endif
    for (; i < n; ++i) o[i] = table[in[i]];
  }
}

void random_erasing(float* image, float* mask, int height, int width, double probability,
                    const std::string& mode, int max_count, Generator& rng, SampleTrace* trace) {
  if (rng.uniform() > probability) return;
  constexpr double kMinArea = 0.02, kMaxArea = 1.0 / 3.0, kMinAspect = 0.3;
  const double log_aspect_min = std::log(kMinAspect), log_aspect_max = std::log(1.0 / kMinAspect);
  const double area = static_cast<double>(height) * width;
  const int count = max_count <= 1 ? 1 : static_cast<int>(randint_inclusive(rng, 1, max_count));
  const size_t plane = static_cast<size_t>(height) * width;
  const bool per_pixel = mode == "pixel", per_channel = mode == "rand";
  thread_local std::vector<float> noise;
  for (int box = 0; box < count; ++box) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target_area = uniform(rng, kMinArea, kMaxArea) * area / count;
      const double aspect = std::exp(uniform(rng, log_aspect_min, log_aspect_max));
      const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
      const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
      if (w < width && h < height) {
        const int top = static_cast<int>(randint_inclusive(rng, 0, height - h));
        const int left = static_cast<int>(randint_inclusive(rng, 0, width - w));
        for (int c = 0; c < 3; ++c) {
          float* first_row = image + c * plane + static_cast<size_t>(top) * width + left;
          if (per_pixel) {
            // The box's rows are filled straight from the generator's stream.
            noise.resize(static_cast<size_t>(h) * w);
            fill_normal(noise.data(), noise.size(), rng.seed(), rng.next_offset());
            for (int y = 0; y < h; ++y) {
              std::copy_n(noise.data() + static_cast<size_t>(y) * w, w,
                          first_row + static_cast<size_t>(y) * width);
            }
          } else {
            float value = 0.0f;
            if (per_channel) fill_normal(&value, 1, rng.seed(), rng.next_offset());
            for (int y = 0; y < h; ++y)
              std::fill_n(first_row + static_cast<size_t>(y) * width, w, value);
          }
        }
        if (mask) {
          for (int y = 0; y < h; ++y) {
            std::fill_n(mask + static_cast<size_t>(top + y) * width + left, w, 0.0f);
          }
        }
        if (trace) {
          trace->erased = true;
          trace->erase_x = left;
          trace->erase_y = top;
          trace->erase_width = w;
          trace->erase_height = h;
        }
        break;
      }
    }
  }
}

namespace {

// The mask at the image's size, as the transforms expect it (PIL nearest resize).
const PlanarImage& mask_at_size(const PlanarImage& mask, int width, int height, PlanarImage& scaled,
                                ImagingScratch& scratch) {
  if (mask.width == width && mask.height == height) return mask;
  resize_crop_planar(
      mask, PixelRect{0, 0, mask.width, mask.height},
      FloatBox{0, 0, static_cast<float>(mask.width), static_cast<float>(mask.height)}, width,
      height, PixelRect{0, 0, width, height}, Interpolation::Nearest, scaled, scratch);
  return scaled;
}

void mask_to_float(const PlanarImage& mask, float* out) {
  const size_t n = mask.plane_size();
  const uint8_t* in = mask.plane(0);
  for (size_t i = 0; i < n; ++i) out[i] = in[i] ? 1.0f : 0.0f;
}

// The largest power-of-two DCT reduction that leaves at least `needed_width` x
// `needed_height` pixels of the region that has `width` x `height` at full size.
int dct_scale_for(int width, int height, int needed_width, int needed_height) {
  int denominator = 1;
  for (int d : {2, 4, 8}) {
    if (width / d >= needed_width && height / d >= needed_height) denominator = d;
  }
  return denominator;
}

}  // namespace

TrainTransform::TrainTransform(const DataOptions& options)
    : options_(options), normalizer_(options.mean, options.std) {
  options_.validate();
  if (!options_.auto_augment.empty() && options_.auto_augment != "none") {
    rand_augment_.emplace(RandAugmentConfig::parse(options_.auto_augment, options_.img_size,
                                                   options_.mean, options_.interpolation));
  }
  random_interpolation_ = options_.interpolation == "random";
  if (!random_interpolation_) interpolation_ = parse_interpolation(options_.interpolation);
}

void TrainTransform::operator()(const uint8_t* image_bytes, size_t size, const PlanarImage* mask,
                                Generator& rng, const SampleOutput& out, TransformWorkspace& ws,
                                SampleTrace* trace) const {
  const int S = options_.img_size;
  const DataOptions& o = options_;
  std::array<int, 4> crop{};
  int full_width = 0, full_height = 0;
  // The crop is drawn once the header gives the size; the decoder then reads
  // only what the crop needs.
  decode_image(
      image_bytes, size,
      [&](const ImageInfo& info) {
        full_width = info.width;
        full_height = info.height;
        crop = random_resized_crop_box(info.width, info.height, o.scale_min, o.scale_max,
                                       o.ratio_min, o.ratio_max, rng);
        DecodeRequest request;
        if (o.jpeg_dct_scaling && info.format == ImageFormat::Jpeg) {
          request.scale_denominator = dct_scale_for(crop[2], crop[3], S, S);
        }
        if (o.jpeg_crop_decode) {
          request.x = crop[0];
          request.y = crop[1];
          request.width = crop[2];
          request.height = crop[3];
        }
        return request;
      },
      ws.decoded);
  const Interpolation crop_interpolation =
      random_interpolation_
          ? (rng.uniform() < 0.5 ? Interpolation::Bilinear : Interpolation::Bicubic)
          : interpolation_;

  // Crop + resize, in the decoded image's coordinates. At full scale this is
  // PIL's img.crop(box).resize((S, S)); with DCT scaling the crop maps to a
  // fractional box.
  const DecodedImage& d = ws.decoded;
  const int scale = d.scale_denominator;
  PixelRect window;
  FloatBox box;
  if (scale == 1) {
    window = PixelRect{crop[0], crop[1], crop[2], crop[3]};
    box = FloatBox{0, 0, static_cast<float>(crop[2]), static_cast<float>(crop[3])};
  } else {
    const double x0 = static_cast<double>(crop[0]) / scale,
                 y0 = static_cast<double>(crop[1]) / scale;
    const double x1 = static_cast<double>(crop[0] + crop[2]) / scale;
    const double y1 = static_cast<double>(crop[1] + crop[3]) / scale;
    const int wx0 = static_cast<int>(std::floor(x0)), wy0 = static_cast<int>(std::floor(y0));
    const int wx1 = std::min(d.scaled_width, static_cast<int>(std::ceil(x1)));
    const int wy1 = std::min(d.scaled_height, static_cast<int>(std::ceil(y1)));
    window = PixelRect{wx0, wy0, wx1 - wx0, wy1 - wy0};
    box = FloatBox{static_cast<float>(x0 - wx0), static_cast<float>(y0 - wy0),
                   static_cast<float>(std::min(x1, static_cast<double>(wx1)) - wx0),
                   static_cast<float>(std::min(y1, static_cast<double>(wy1)) - wy0)};
  }
  FG_CHECK(window.x >= d.origin_x && window.y >= d.origin_y &&
               window.x + window.width <= d.origin_x + d.rgb.width &&
               window.y + window.height <= d.origin_y + d.rgb.height,
           "internal error: decoded window does not cover the crop");
  resize_crop(d.rgb.pixels.data(), d.rgb.row_bytes(), 3, d.origin_x, d.origin_y, d.rgb.width,
              d.rgb.height, window, box, S, S, PixelRect{0, 0, S, S}, crop_interpolation, ws.image,
              ws.scratch);

  PlanarImage* mask_plane = nullptr;
  if (mask && out.mask) {
    const PlanarImage& full =
        mask_at_size(*mask, full_width, full_height, ws.mask_full, ws.scratch);
    resize_crop_planar(full, PixelRect{crop[0], crop[1], crop[2], crop[3]},
                       FloatBox{0, 0, static_cast<float>(crop[2]), static_cast<float>(crop[3])}, S,
                       S, PixelRect{0, 0, S, S}, Interpolation::Nearest, ws.mask, ws.scratch);
    mask_plane = &ws.mask;
  }

  const bool hflip = o.hflip > 0 && rng.uniform() < o.hflip;
  if (hflip) {
    flip_horizontal(ws.image);
    if (mask_plane) flip_horizontal(*mask_plane);
  }
  const bool vflip = o.vflip > 0 && rng.uniform() < o.vflip;
  if (vflip) {
    for (PlanarImage* p : {&ws.image, mask_plane}) {
      if (!p) continue;
      for (int c = 0; c < p->channels; ++c) {
        for (int y = 0; y < p->height / 2; ++y) {
          std::swap_ranges(p->plane(c) + static_cast<size_t>(y) * p->width,
                           p->plane(c) + static_cast<size_t>(y + 1) * p->width,
                           p->plane(c) + static_cast<size_t>(p->height - 1 - y) * p->width);
        }
      }
    }
  }
  std::vector<AugmentStep>* applied = trace ? &trace->augment : nullptr;
  if (rand_augment_) {
    rand_augment_->apply(ws.image, mask_plane, rng, ws.image_temp, ws.scratch, applied);
  }

  normalizer_.apply(ws.image, out.image);
  if (out.mask) {
    if (mask_plane) {
      mask_to_float(*mask_plane, out.mask);
    } else {
      std::fill_n(out.mask, static_cast<size_t>(S) * S, 0.0f);
    }
  }
  if (o.reprob > 0) {
    random_erasing(out.image, out.mask, S, S, o.reprob, o.remode, o.recount, rng, trace);
  }
  if (trace) {
    trace->crop_x = crop[0];
    trace->crop_y = crop[1];
    trace->crop_width = crop[2];
    trace->crop_height = crop[3];
    trace->decode_scale = scale;
    trace->crop_interpolation = crop_interpolation;
    trace->hflip = hflip;
    trace->vflip = vflip;
  }
}

EvalTransform::EvalTransform(const DataOptions& options)
    : options_(options), normalizer_(options.mean, options.std) {
  options_.validate();
  // timm maps 'random' to bilinear outside training.
  interpolation_ = options_.interpolation == "random" ? Interpolation::Bilinear
                                                      : parse_interpolation(options_.interpolation);
}

void EvalTransform::operator()(const uint8_t* image_bytes, size_t size, const PlanarImage* mask,
                               const SampleOutput& out, TransformWorkspace& ws) const {
  const int S = options_.img_size;
  int resized_width = S, resized_height = S;
  PixelRect out_rect{0, 0, S, S};
  int full_width = 0, full_height = 0;
  decode_image(
      image_bytes, size,
      [&](const ImageInfo& info) {
        full_width = info.width;
        full_height = info.height;
        if (options_.test_crop) {
          std::tie(resized_width, resized_height) =
              resize_shorter_side(info.width, info.height, options_.eval_resize_size());
          // CenterCrop: int(round((size - crop) / 2)), Python rounding.
          out_rect = PixelRect{static_cast<int>(std::nearbyint((resized_width - S) / 2.0)),
                               static_cast<int>(std::nearbyint((resized_height - S) / 2.0)), S, S};
        }
        DecodeRequest request;
        if (options_.jpeg_dct_scaling && info.format == ImageFormat::Jpeg) {
          request.scale_denominator =
              dct_scale_for(info.width, info.height, resized_width, resized_height);
        }
        if (options_.jpeg_crop_decode) {
          // The source pixels the center crop reads, at the decoded scale, as a
          // full-resolution window for the decoder.
          const int d = request.scale_denominator;
          const int scaled_width = (info.width + d - 1) / d;
          const int scaled_height = (info.height + d - 1) / d;
          const auto xs = resample_source_span(
              scaled_width, 0, static_cast<float>(static_cast<double>(info.width) / d),
              resized_width, out_rect.x, out_rect.x + S, interpolation_);
          const auto ys = resample_source_span(
              scaled_height, 0, static_cast<float>(static_cast<double>(info.height) / d),
              resized_height, out_rect.y, out_rect.y + S, interpolation_);
          request.x = xs.first * d;
          request.width = (xs.second - xs.first) * d;
          request.y = ys.first * d;
          request.height = (ys.second - ys.first) * d;
        }
        return request;
      },
      ws.decoded);
  const DecodedImage& d = ws.decoded;
  const int scale = d.scale_denominator;
  // The whole (possibly DCT-scaled) image is the resize's source; the decoded
  // pixels are the part of it the center crop reads.
  const float box_width = static_cast<float>(static_cast<double>(full_width) / scale);
  const float box_height = static_cast<float>(static_cast<double>(full_height) / scale);
  const PixelRect window{0, 0, d.scaled_width, d.scaled_height};
  resize_crop(d.rgb.pixels.data(), d.rgb.row_bytes(), 3, d.origin_x, d.origin_y, d.rgb.width,
              d.rgb.height, window, FloatBox{0, 0, box_width, box_height}, resized_width,
              resized_height, out_rect, interpolation_, ws.image, ws.scratch);
  normalizer_.apply(ws.image, out.image);
  if (out.mask) {
    if (mask) {
      const PlanarImage& full =
          mask_at_size(*mask, full_width, full_height, ws.mask_full, ws.scratch);
      resize_crop_planar(
          full, PixelRect{0, 0, full_width, full_height},
          FloatBox{0, 0, static_cast<float>(full_width), static_cast<float>(full_height)},
          resized_width, resized_height, out_rect, Interpolation::Nearest, ws.mask, ws.scratch);
      mask_to_float(ws.mask, out.mask);
    } else {
      std::fill_n(out.mask, static_cast<size_t>(S) * S, 0.0f);
    }
  }
}

}  // namespace fg::data
