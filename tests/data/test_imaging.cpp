// The imaging primitives against PIL itself: same input pixels and parameters,
// the outputs must agree byte for byte.
#include <doctest/doctest.h>

#include <cstdlib>
#include <functional>

#include "data/imaging.h"
#include "helpers.h"

using namespace fg::data;
using namespace fg::data::testing;
using nlohmann::json;

namespace {

struct Case {
  std::string name;
  InterleavedImage input;
  json job;  // oracle job without input/output
  std::function<PlanarImage(const PlanarImage&)> run;
};

int max_difference(const InterleavedImage& a, const std::vector<uint8_t>& b) {
  if (a.pixels.size() != b.size()) return 1000;
  int worst = 0;
  for (size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::abs(a.pixels[i] - b[i]));
  return worst;
}

// Runs every case through fgmoe and the oracle and checks exact agreement.
void check_against_pil(std::vector<Case>& cases) {
  TempDir dir("imaging");
  json jobs = json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string in = dir / ("in" + std::to_string(i) + ".raw");
    write_bytes(in, cases[i].input.pixels);
    json job = cases[i].job;
    job["input"] = in;
    job["width"] = cases[i].input.width;
    job["height"] = cases[i].input.height;
    job["mode"] = cases[i].input.channels == 3 ? "RGB" : "L";
    job["output"] = dir / ("out" + std::to_string(i) + ".raw");
    jobs.push_back(job);
  }
  run_pil_oracle(jobs, dir.path());
  for (size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(cases[i].name);
    const InterleavedImage ours = to_interleaved(cases[i].run(to_planar(cases[i].input)));
    const std::vector<uint8_t> pil = read_bytes(jobs[i]["output"]);
    CHECK(max_difference(ours, pil) == 0);
  }
}

}  // namespace

TEST_CASE("resize: crop + resize equals PIL for every filter, shrinking and enlarging") {
  std::vector<Case> cases;
  const InterleavedImage rgb = random_image(500, 375, 3, 1);
  const InterleavedImage gray = random_image(97, 61, 1, 2);
  struct Geometry {
    PixelRect crop;
    int out_w, out_h;
  };
  const std::vector<Geometry> rgb_geometries = {
      {{0, 0, 500, 375}, 224, 224}, {{37, 12, 301, 288}, 224, 224}, {{100, 50, 150, 120}, 224, 224},
      {{0, 0, 500, 375}, 341, 256}, {{5, 7, 224, 224}, 224, 224},   {{480, 300, 20, 75}, 224, 224},
      {{3, 3, 400, 200}, 640, 99}};
  for (const char* filter : {"bicubic", "bilinear", "lanczos", "box", "hamming", "nearest"}) {
    for (const auto& g : rgb_geometries) {
      Case c;
      c.name = std::string(filter) + " rgb " + std::to_string(g.crop.width) + "x" +
               std::to_string(g.crop.height) + "->" + std::to_string(g.out_w) + "x" +
               std::to_string(g.out_h);
      c.input = rgb;
      c.job = {{"op", "resize"},
               {"crop", {g.crop.x, g.crop.y, g.crop.width, g.crop.height}},
               {"size", {g.out_w, g.out_h}},
               {"filter", filter}};
      const Interpolation interp = parse_interpolation(filter);
      c.run = [g, interp](const PlanarImage& in) {
        PlanarImage out;
        ImagingScratch scratch;
        const InterleavedImage inter = to_interleaved(in);
        resize_crop(
            inter.pixels.data(), inter.row_bytes(), 3, 0, 0, inter.width, inter.height, g.crop,
            FloatBox{0, 0, static_cast<float>(g.crop.width), static_cast<float>(g.crop.height)},
            g.out_w, g.out_h, PixelRect{0, 0, g.out_w, g.out_h}, interp, out, scratch);
        return out;
      };
      cases.push_back(c);
    }
  }
  // A single-channel source through the planar entry point, and a fractional box.
  for (const char* filter : {"bicubic", "nearest"}) {
    Case c;
    c.name = std::string(filter) + " gray with box";
    c.input = gray;
    c.job = {{"op", "resize"},
             {"crop", {0, 0, 97, 61}},
             {"size", {40, 33}},
             {"filter", filter},
             {"box", {3.25, 1.5, 90.75, 60.0}}};
    const Interpolation interp = parse_interpolation(filter);
    c.run = [interp](const PlanarImage& in) {
      PlanarImage out;
      ImagingScratch scratch;
      resize_crop_planar(in, PixelRect{0, 0, 97, 61}, FloatBox{3.25f, 1.5f, 90.75f, 60.0f}, 40, 33,
                         PixelRect{0, 0, 40, 33}, interp, out, scratch);
      return out;
    };
    cases.push_back(c);
  }
  check_against_pil(cases);
}

TEST_CASE("resize: an output sub-rectangle equals the same pixels of the full resize") {
  const InterleavedImage rgb = random_image(333, 250, 3, 3);
  ImagingScratch scratch;
  PlanarImage full, part;
  const PixelRect window{0, 0, 333, 250};
  const FloatBox box{0, 0, 333, 250};
  resize_crop(rgb.pixels.data(), rgb.row_bytes(), 3, 0, 0, 333, 250, window, box, 341, 256,
              PixelRect{0, 0, 341, 256}, Interpolation::Bicubic, full, scratch);
  const PixelRect rect{58, 16, 224, 224};
  resize_crop(rgb.pixels.data(), rgb.row_bytes(), 3, 0, 0, 333, 250, window, box, 341, 256, rect,
              Interpolation::Bicubic, part, scratch);
  int mismatches = 0;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 224; ++y) {
      for (int x = 0; x < 224; ++x) {
        mismatches += full.plane(c)[(y + rect.y) * 341 + x + rect.x] != part.plane(c)[y * 224 + x];
      }
    }
  }
  CHECK(mismatches == 0);
  // A source that holds only part of the image (as a window decode delivers it) gives the same.
  const auto xs =
      resample_source_span(333, 0, 333, 341, rect.x, rect.x + 224, Interpolation::Bicubic);
  const auto ys =
      resample_source_span(250, 0, 250, 256, rect.y, rect.y + 224, Interpolation::Bicubic);
  InterleavedImage sub;
  sub.reset(xs.second - xs.first, ys.second - ys.first, 3);
  for (int y = 0; y < sub.height; ++y) {
    std::copy_n(rgb.row(y + ys.first) + xs.first * 3, sub.row_bytes(), sub.row(y));
  }
  PlanarImage from_sub;
  resize_crop(sub.pixels.data(), sub.row_bytes(), 3, xs.first, ys.first, sub.width, sub.height,
              window, box, 341, 256, rect, Interpolation::Bicubic, from_sub, scratch);
  CHECK(from_sub.pixels == part.pixels);
  // One pixel less than the span must be refused, not read out of bounds.
  CHECK_THROWS(resize_crop(sub.pixels.data() + 3, sub.row_bytes(), 3, xs.first + 1, ys.first,
                           sub.width - 1, sub.height, window, box, 341, 256, rect,
                           Interpolation::Bicubic, from_sub, scratch));
}

TEST_CASE("affine: shear, translate and rotate equal PIL's transform and rotate") {
  std::vector<Case> cases;
  const InterleavedImage rgb = random_image(224, 224, 3, 4);
  const InterleavedImage rect_rgb = random_image(160, 96, 3, 5);
  InterleavedImage mask = random_image(224, 224, 1, 6);
  for (auto& v : mask.pixels) v = v > 128 ? 255 : 0;
  const std::vector<std::array<double, 6>> matrices = {
      {1, 0.27, 0, 0, 1, 0},         {1, -0.3, 0, 0, 1, 0},   {1, 0, 0, 0.13, 1, 0},
      {1, 0, 0, -0.22, 1, 0},        {1, 0, 40.32, 0, 1, 0},  {1, 0, -95.76, 0, 1, 0},
      {1, 0, 0, 0, 1, 17.5},         {1, 0, 0, 0, 1, -60.48}, {1, 0, 7, 0, 1, 0},
      {0.9, 0.1, 3.3, -0.2, 1.1, -4}};
  for (const char* filter : {"bicubic", "bilinear", "nearest"}) {
    for (const auto& m : matrices) {
      for (const InterleavedImage* img :
           std::vector<const InterleavedImage*>{&rgb, &rect_rgb, &mask}) {
        Case c;
        c.name = std::string("affine ") + filter + " " + std::to_string(m[1]) + "," +
                 std::to_string(m[2]) + "," + std::to_string(m[3]) + "," + std::to_string(m[5]) +
                 " channels " + std::to_string(img->channels);
        c.input = *img;
        const bool is_mask = img->channels == 1;
        c.job = {{"op", "affine"}, {"data", m}, {"filter", filter}};
        if (!is_mask) c.job["fill"] = {124, 116, 104};
        const Interpolation interp = parse_interpolation(filter);
        c.run = [m, interp, is_mask](const PlanarImage& in) {
          PlanarImage out;
          const uint8_t fill[3] = {124, 116, 104};
          const uint8_t zero[3] = {0, 0, 0};
          affine_transform(in, AffineMatrix{m}, interp, is_mask ? zero : fill, out);
          return out;
        };
        cases.push_back(c);
      }
    }
  }
  for (const char* filter : {"bicubic", "bilinear", "nearest"}) {
    for (double degrees : {-30.0, -27.123, -5.5, 0.0, 0.75, 12.0, 29.7, 90.0, 180.0, 270.0}) {
      for (const InterleavedImage* img :
           std::vector<const InterleavedImage*>{&rgb, &rect_rgb, &mask}) {
        Case c;
        c.name = std::string("rotate ") + filter + " " + std::to_string(degrees) + " channels " +
                 std::to_string(img->channels);
        c.input = *img;
        const bool is_mask = img->channels == 1;
        c.job = {{"op", "rotate"}, {"degrees", degrees}, {"filter", filter}};
        if (!is_mask) c.job["fill"] = {124, 116, 104};
        const Interpolation interp = parse_interpolation(filter);
        c.run = [degrees, interp, is_mask](const PlanarImage& in) {
          PlanarImage out;
          const uint8_t fill[3] = {124, 116, 104};
          const uint8_t zero[3] = {0, 0, 0};
          rotate(in, degrees, interp, is_mask ? zero : fill, out);
          return out;
        };
        cases.push_back(c);
      }
    }
  }
  check_against_pil(cases);
}

TEST_CASE("colour ops: ImageOps and ImageEnhance values") {
  std::vector<Case> cases;
  InterleavedImage rgb = random_image(224, 224, 3, 7);
  // A low-contrast image exercises autocontrast's stretch and equalize's edge cases.
  InterleavedImage flat = random_image(64, 48, 3, 8);
  for (auto& v : flat.pixels) v = static_cast<uint8_t>(100 + v / 16);
  InterleavedImage two_level = random_image(31, 17, 3, 9);
  for (auto& v : two_level.pixels) v = v > 128 ? 200 : 7;
  auto add = [&](const std::string& name, const InterleavedImage& img, json job,
                 std::function<void(PlanarImage&)> op) {
    Case c;
    c.name = name + " " + std::to_string(img.width);
    c.input = img;
    c.job = job;
    c.run = [op](const PlanarImage& in) {
      PlanarImage out = in;
      op(out);
      return out;
    };
    cases.push_back(c);
  };
  for (const InterleavedImage* img :
       std::vector<const InterleavedImage*>{&rgb, &flat, &two_level}) {
    add("autocontrast", *img, {{"op", "autocontrast"}}, [](PlanarImage& p) { autocontrast(p); });
    add("equalize", *img, {{"op", "equalize"}}, [](PlanarImage& p) { equalize(p); });
    add("invert", *img, {{"op", "invert"}}, [](PlanarImage& p) { invert(p); });
    for (int t : {0, 26, 128, 230, 256}) {
      add("solarize " + std::to_string(t), *img, {{"op", "solarize"}, {"threshold", t}},
          [t](PlanarImage& p) { solarize(p, t); });
    }
    for (int a : {0, 33, 99, 110}) {
      add("solarize_add " + std::to_string(a), *img,
          {{"op", "solarize_add"}, {"add", a}, {"threshold", 128}},
          [a](PlanarImage& p) { solarize_add(p, a, 128); });
    }
    for (int b : {0, 1, 2, 3, 4, 7}) {
      add("posterize " + std::to_string(b), *img, {{"op", "posterize"}, {"bits", b}},
          [b](PlanarImage& p) { posterize(p, b); });
    }
    for (double f : {0.0, 0.1, 0.37, 0.5, 1.0, 1.43, 1.9, 2.7}) {
      add("color " + std::to_string(f), *img, {{"op", "color"}, {"factor", f}},
          [f](PlanarImage& p) {
            ImagingScratch s;
            enhance_color(p, f, s);
          });
      add("contrast " + std::to_string(f), *img, {{"op", "contrast"}, {"factor", f}},
          [f](PlanarImage& p) {
            ImagingScratch s;
            enhance_contrast(p, f, s);
          });
      add("brightness " + std::to_string(f), *img, {{"op", "brightness"}, {"factor", f}},
          [f](PlanarImage& p) { enhance_brightness(p, f); });
      add("sharpness " + std::to_string(f), *img, {{"op", "sharpness"}, {"factor", f}},
          [f](PlanarImage& p) {
            ImagingScratch s;
            enhance_sharpness(p, f, s);
          });
    }
  }
  check_against_pil(cases);
}
