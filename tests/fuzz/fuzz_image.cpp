// libFuzzer target for image decoding and the sample transforms: any bytes,
// handed to the loader as an image file or as a mask image, must either become
// a sample or be refused with an fg::Error (DecodeError). Every path the
// loader takes runs: the header probe, a full decode, the training transform
// (crop window, DCT scaling, RandAugment, erasing, a mask scaled to the image)
// and the validation transform.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/decode.h"
#include "data/options.h"
#include "data/transforms.h"
#include "engine/error.h"
#include "engine/random.h"

namespace {

constexpr int kSize = 32;  // IMG_SIZE: small, so an input runs in microseconds

struct Pipelines {
  fg::data::TrainTransform train;
  fg::data::EvalTransform eval;
  fg::data::PlanarImage mask;

  static fg::data::DataOptions options() {
    fg::data::DataOptions o;
    o.img_size = kSize;
    o.reprob = 1.0;  // always erase, so that path runs too
    o.validate();
    return o;
  }
  Pipelines() : train(options()), eval(options()) {
    mask.reset(9, 7, 1);
    for (size_t i = 0; i < mask.pixels.size(); ++i) mask.pixels[i] = (i % 3 == 0) ? 1 : 0;
  }
};

uint64_t seed_of(const uint8_t* data, size_t size) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the draws follow the input
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Pipelines p;
  static fg::data::TransformWorkspace ws;
  std::vector<float> image(3 * kSize * kSize), mask(kSize * kSize);
  const fg::data::SampleOutput out{image.data(), mask.data()};
  try {
    // A large image is legitimate up to kMaxImagePixels but takes seconds under
    // the sanitizers: past the limit its refusal runs, below it nothing does.
    const fg::data::ImageInfo info = fg::data::probe_image(data, size);
    const int64_t pixels = int64_t{info.width} * info.height;
    if (pixels > (int64_t{1} << 22) && pixels <= fg::data::kMaxImagePixels) return 0;
  } catch (const fg::Error&) {
  }
  try {
    fg::data::DecodedImage decoded;
    fg::data::decode_image(data, size, fg::data::DecodeRequest{}, decoded);
  } catch (const fg::Error&) {
  }
  fg::Generator rng(seed_of(data, size));
  for (const fg::data::PlanarImage* m : {&p.mask, static_cast<const fg::data::PlanarImage*>(nullptr)}) {
    try {
      p.train(data, size, m, rng, out, ws);
    } catch (const fg::Error&) {
    }
  }
  try {
    p.eval(data, size, &p.mask, out, ws);
  } catch (const fg::Error&) {
  }
  try {
    fg::data::InterleavedImage gray;
    fg::data::decode_gray(data, size, gray);
  } catch (const fg::Error&) {
  }
  return 0;
}
