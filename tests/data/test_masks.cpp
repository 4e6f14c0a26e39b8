// Mask files: torch.save tensors of every dtype and layout read by fgmoe,
// fgmoe's files read by torch.load(weights_only=True), and the 0/1 conversion.
#include <doctest/doctest.h>

#include <algorithm>

#include "data/dataset.h"
#include "engine/serialize/pth.h"
#include "helpers.h"

using namespace fg;
using namespace fg::data;
using namespace fg::data::testing;

namespace {

constexpr int H = 37, W = 53;

bool pattern(int y, int x) { return (x * 7 + y * 3) % 5 == 0; }

const std::vector<std::string> kDtypes = {"float32", "float16", "bfloat16", "float64",
                                          "uint8",   "bool",    "int64"};

DType dtype_of(const std::string& name) {
  if (name == "float32") return DType::Float32;
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "float64") return DType::Float64;
  if (name == "uint8") return DType::UInt8;
  if (name == "bool") return DType::Bool;
  return DType::Int64;
}

// The oracle's pattern in the given dtype (floats 0.75, integers 3, bool true).
Tensor pattern_tensor(const std::string& name, bool leading_one) {
  std::vector<double> values;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const double on = name == "bool" ? 1.0 : (name == "uint8" || name == "int64") ? 3.0 : 0.75;
      values.push_back(pattern(y, x) ? on : 0.0);
    }
  }
  const Shape shape = leading_one ? Shape{1, H, W} : Shape{H, W};
  return Tensor::from_vector(values, shape).to(dtype_of(name));
}

void check_pattern(const PlanarImage& mask) {
  REQUIRE(mask.width == W);
  REQUIRE(mask.height == H);
  int wrong = 0;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) wrong += mask.plane(0)[y * W + x] != (pattern(y, x) ? 1 : 0);
  }
  CHECK(wrong == 0);
}

}  // namespace

TEST_CASE(
    "masks: torch.save files of every dtype and layout load with their dtype, shape and values") {
  TempDir dir("masks");
  REQUIRE(run_python(std::string(FGMOE_DATA_TEST_DIR) + "/torch_masks.py write " + dir.path()) ==
          0);
  std::vector<uint8_t> bytes;
  InterleavedImage scratch;
  for (const std::string& name : kDtypes) {
    for (const std::string layout : {"hw", "1hw"}) {
      CAPTURE(name);
      CAPTURE(layout);
      const std::string path = dir / (name + "_" + layout + ".pth");
      const Tensor t = serialize::load_tensor_pth(path);
      CHECK(t.dtype() == dtype_of(name));
      CHECK(t.shape() == (layout == "1hw" ? Shape{1, H, W} : Shape{H, W}));
      const auto got = t.to(DType::Float64).to_vector<double>();
      const auto want =
          pattern_tensor(name, layout == "1hw").to(DType::Float64).to_vector<double>();
      CHECK(got == want);
      PlanarImage mask;
      load_mask(path, mask, bytes, scratch);
      check_pattern(mask);
    }
  }
  for (const std::string view : {"view_transposed", "view_offset"}) {
    CAPTURE(view);
    PlanarImage mask;
    load_mask(dir / (view + ".pth"), mask, bytes, scratch);
    check_pattern(mask);
  }
  // Float values become foreground where value * 255 >= 1, as the reference's
  // conversion to an 8-bit image keeps them.
  PlanarImage threshold;
  load_mask(dir / "threshold.pth", threshold, bytes, scratch);
  REQUIRE(threshold.width == 4);
  CHECK(threshold.plane(0)[0] == 0);
  CHECK(threshold.plane(0)[1] == 1);
  CHECK(threshold.plane(0)[2] == 1);
  CHECK(threshold.plane(0)[3] == 1);
  // Files that are not a single (H, W) or (1, H, W) tensor are refused with their path.
  PlanarImage bad;
  for (const std::string name : {"dict", "two_channels"}) {
    CAPTURE(name);
    try {
      load_mask(dir / (name + ".pth"), bad, bytes, scratch);
      FAIL("no error for " << name);
    } catch (const MaskError& e) {
      CHECK(std::string(e.what()).find(name + ".pth") != std::string::npos);
    }
  }
  // One stored value repeated (stride 0): read as the whole mask, unless it
  // claims more pixels than an image may have (refused before it is expanded).
  PlanarImage expanded;
  load_mask(dir / "expanded.pth", expanded, bytes, scratch);
  CHECK(expanded.width == W);
  CHECK(expanded.height == H);
  CHECK(std::count(expanded.pixels.begin(), expanded.pixels.end(), 1) == H * W);
  CHECK_THROWS_WITH_AS(load_mask(dir / "expanded_huge.pth", bad, bytes, scratch),
                       doctest::Contains("expanded_huge.pth has shape (1, 20000, 20000): more than"),
                       MaskError);
}

TEST_CASE("masks: fgmoe's torch.save files load in PyTorch with weights_only=True") {
  TempDir dir("masks-out");
  for (const std::string& name : kDtypes) {
    for (const std::string layout : {"hw", "1hw"}) {
      serialize::save_tensor_pth(dir / ("fg_" + name + "_" + layout + ".pth"),
                      pattern_tensor(name, layout == "1hw"));
    }
  }
  CHECK(run_python(std::string(FGMOE_DATA_TEST_DIR) + "/torch_masks.py check " + dir.path()) == 0);
  // And back through fgmoe's reader.
  const Tensor t = serialize::load_tensor_pth(dir / "fg_bfloat16_1hw.pth");
  CHECK(t.dtype() == DType::BFloat16);
  CHECK(t.shape() == Shape{1, H, W});
}

TEST_CASE("masks: broken files and PNG masks") {
  TempDir dir("masks-bad");
  std::vector<uint8_t> bytes;
  InterleavedImage scratch;
  PlanarImage mask;
  serialize::save_tensor_pth(dir / "good.pth", pattern_tensor("uint8", false));
  std::vector<uint8_t> good = read_bytes(dir / "good.pth");
  write_bytes(dir / "truncated.pth",
              std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2));
  write_bytes(dir / "text.pth", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'});
  write_bytes(dir / "empty.pth", std::vector<uint8_t>{});
  for (const std::string name : {"truncated.pth", "text.pth", "empty.pth", "missing.pth"}) {
    CAPTURE(name);
    CHECK_THROWS_AS(load_mask(dir / name, mask, bytes, scratch), MaskError);
  }
  // A PNG mask: nonzero is foreground, whatever the value.
  InterleavedImage png;
  png.reset(W, H, 1);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) png.row(y)[x] = pattern(y, x) ? 255 : 0;
  }
  write_bytes(dir / "mask.png", encode_png(png));
  load_mask(dir / "mask.png", mask, bytes, scratch);
  check_pattern(mask);
  write_bytes(dir / "broken.png",
              std::vector<uint8_t>{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0});
  CHECK_THROWS_AS(load_mask(dir / "broken.png", mask, bytes, scratch), MaskError);
}
