// Per-sample transforms. Training transforms image and mask jointly with one
// set of random parameters, as the reference's CustomDualTransform:
//   RandomResizedCrop(IMG_SIZE, scale (0.08, 1), ratio (3/4, 4/3), bicubic; mask nearest)
//   -> horizontal flip p 0.5 -> RandAugment (geometric ops move the mask)
//   -> to float, normalize -> RandomErasing (the mask is zeroed in the box).
// Validation: shorter side to int(256/224 * IMG_SIZE), bicubic -> center crop -> normalize.
//
// Pixels follow PIL's arithmetic exactly (data/imaging.h); a JPEG decoded with
// DCT-domain downscaling (DataOptions::jpeg_dct_scaling, used only when the crop
// is at least twice the output) is the one planned difference.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/decode.h"
#include "data/image.h"
#include "data/imaging.h"
#include "data/options.h"
#include "data/rand_augment.h"
#include "engine/error.h"
#include "engine/random.h"

namespace fg::data {

// Where a sample's output goes (rows of a batch).
struct SampleOutput {
  float* image = nullptr;  // 3 x S x S, normalized
  float* mask = nullptr;   // S x S, 0 or 1 (may be null: the mask is not wanted)
};

// Buffers reused from sample to sample by one worker.
struct TransformWorkspace {
  std::vector<uint8_t> image_bytes;
  std::vector<uint8_t> mask_bytes;
  DecodedImage decoded;
  PlanarImage image, image_temp;
  PlanarImage mask, mask_full;
  PlanarImage mask_source;  // the mask as loaded, before scaling to the image
  ImagingScratch scratch;
  InterleavedImage mask_gray;
};

// The random parameters one training sample drew (for tests and debugging).
struct SampleTrace {
  int crop_x = 0, crop_y = 0, crop_width = 0, crop_height = 0;  // in source pixels
  int decode_scale = 1;
  Interpolation crop_interpolation = Interpolation::Bicubic;
  bool hflip = false, vflip = false;
  std::vector<AugmentStep> augment;
  bool erased = false;
  int erase_x = 0, erase_y = 0, erase_width = 0, erase_height = 0;  // the last box
};

// The RandomResizedCrop box (timm's get_params): x, y, width, height.
std::array<int, 4> random_resized_crop_box(int width, int height, double scale_min,
                                           double scale_max, double ratio_min, double ratio_max,
                                           Generator& rng);

// Normalization of 8-bit values exactly as ToTensor + Normalize compute it in float32.
class Normalizer {
 public:
  Normalizer(const std::array<double, 3>& mean, const std::array<double, 3>& std);
  void apply(const PlanarImage& image, float* out) const;  // 3 planes
  float value(int channel, uint8_t v) const { return table_[channel][v]; }

 private:
  std::array<std::array<float, 256>, 3> table_;
  std::array<float, 3> mean_{}, std_{};
};

class TrainTransform {
 public:
  explicit TrainTransform(const DataOptions& options);
  // image_bytes: the encoded image. mask: a binary (0/1) single-channel mask at
  // any size (scaled to the image), or null when the sample has none (the
  // output mask is then all zero). All randomness is drawn from rng.
  // Throws DecodeError for an undecodable image.
  void operator()(const uint8_t* image_bytes, size_t size, const PlanarImage* mask, Generator& rng,
                  const SampleOutput& out, TransformWorkspace& ws,
                  SampleTrace* trace = nullptr) const;
  const DataOptions& options() const { return options_; }

 private:
  DataOptions options_;
  std::optional<RandAugment> rand_augment_;
  Normalizer normalizer_;
  bool random_interpolation_ = false;
  Interpolation interpolation_ = Interpolation::Bicubic;
};

class EvalTransform {
 public:
  explicit EvalTransform(const DataOptions& options);
  void operator()(const uint8_t* image_bytes, size_t size, const PlanarImage* mask,
                  const SampleOutput& out, TransformWorkspace& ws) const;

 private:
  DataOptions options_;
  Normalizer normalizer_;
  Interpolation interpolation_ = Interpolation::Bicubic;
};

// RandomErasing (timm) on a normalized 3 x h x w image; the mask (h x w, may be
// null) is zeroed inside the erased boxes. mode: "pixel" (N(0,1) per value),
// "rand" (N(0,1) per channel) or "const" (0).
void random_erasing(float* image, float* mask, int height, int width, double probability,
                    const std::string& mode, int max_count, Generator& rng,
                    SampleTrace* trace = nullptr);

// Fills n values with N(0, 1) from Philox (seed, offset), 4 values per block.
void fill_normal(float* out, size_t n, uint64_t seed, uint64_t offset);

}  // namespace fg::data
