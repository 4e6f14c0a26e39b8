// Decoding against libjpeg-turbo's own TurboJPEG output and PIL's, window and
// DCT-scaled decodes, and the odd files a real dataset holds.
#include <doctest/doctest.h>
#include <turbojpeg.h>

#include <random>

#include "data/decode.h"
#include "helpers.h"

using namespace fg::data;
using namespace fg::data::testing;
using nlohmann::json;

namespace {

DecodedImage decode(const std::vector<uint8_t>& bytes, const DecodeRequest& request = {}) {
  DecodedImage out;
  decode_image(bytes.data(), bytes.size(), request, out);
  return out;
}

// TurboJPEG's decode at scaling factor 1/denominator.
InterleavedImage turbojpeg_scaled(const std::vector<uint8_t>& jpeg, int denominator) {
  tjhandle handle = tjInitDecompress();
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  REQUIRE(tjDecompressHeader3(handle, jpeg.data(), jpeg.size(), &width, &height, &subsampling,
                              &colorspace) == 0);
  const int w = (width + denominator - 1) / denominator;
  const int h = (height + denominator - 1) / denominator;
  InterleavedImage out;
  out.reset(w, h, 3);
  REQUIRE(tjDecompress2(handle, jpeg.data(), jpeg.size(), out.pixels.data(), w, 0, h, TJPF_RGB,
                        0) == 0);
  tjDestroy(handle);
  return out;
}

// Mismatching bytes between the decoded window and the same region of `full`.
int64_t window_mismatches(const DecodedImage& d, const InterleavedImage& full, int x, int y, int w,
                          int h) {
  int64_t bad = 0;
  for (int yy = y; yy < y + h; ++yy) {
    for (int xx = x; xx < x + w; ++xx) {
      for (int c = 0; c < 3; ++c) {
        const uint8_t a = d.rgb.row(yy - d.origin_y)[(xx - d.origin_x) * 3 + c];
        bad += a != full.row(yy)[xx * 3 + c];
      }
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("jpeg: full decode equals TurboJPEG's for every subsampling, progressive and gray") {
  const InterleavedImage img = random_image(301, 207, 3, 11);
  for (int subsampling : {444, 422, 420}) {
    for (bool progressive : {false, true}) {
      CAPTURE(subsampling);
      CAPTURE(progressive);
      const auto jpeg = encode_jpeg(img, {90, progressive, false, subsampling});
      const DecodedImage d = decode(jpeg);
      const InterleavedImage reference = turbojpeg_decode_rgb(jpeg);
      REQUIRE(d.rgb.width == 301);
      REQUIRE(d.rgb.height == 207);
      CHECK(d.origin_x == 0);
      CHECK(d.origin_y == 0);
      CHECK(d.rgb.pixels == reference.pixels);
    }
  }
  const auto gray_jpeg = encode_jpeg(img, {90, false, true, 420});
  const DecodedImage gray = decode(gray_jpeg);
  const InterleavedImage reference = turbojpeg_decode_rgb(gray_jpeg);
  CHECK(gray.rgb.pixels == reference.pixels);
  // Gray becomes RGB with equal channels.
  bool equal_channels = true;
  for (size_t i = 0; i < gray.rgb.pixels.size(); i += 3) {
    equal_channels &= gray.rgb.pixels[i] == gray.rgb.pixels[i + 1] &&
                      gray.rgb.pixels[i] == gray.rgb.pixels[i + 2];
  }
  CHECK(equal_channels);
}

TEST_CASE("jpeg: a window decode holds exactly the full decode's pixels of that window") {
  std::mt19937 rng(5);
  for (int subsampling : {444, 422, 420}) {
    for (bool progressive : {false, true}) {
      const InterleavedImage img = random_image(500, 375, 3, 12 + subsampling);
      const auto jpeg = encode_jpeg(img, {90, progressive, false, subsampling});
      const InterleavedImage full = turbojpeg_decode_rgb(jpeg);
      for (int trial = 0; trial < 25; ++trial) {
        const int w = 1 + static_cast<int>(rng() % 500);
        const int h = 1 + static_cast<int>(rng() % 375);
        const int x = static_cast<int>(rng() % (500 - w + 1));
        const int y = static_cast<int>(rng() % (375 - h + 1));
        CAPTURE(subsampling);
        CAPTURE(progressive);
        CAPTURE(x);
        CAPTURE(y);
        CAPTURE(w);
        CAPTURE(h);
        DecodeRequest request;
        request.x = x;
        request.y = y;
        request.width = w;
        request.height = h;
        const DecodedImage d = decode(jpeg, request);
        REQUIRE(d.origin_x <= x);
        REQUIRE(d.origin_y <= y);
        REQUIRE(d.origin_x + d.rgb.width >= x + w);
        REQUIRE(d.origin_y + d.rgb.height >= y + h);
        CHECK(window_mismatches(d, full, x, y, w, h) == 0);
        // Small windows must not decode the whole image.
        if (w < 200 && h < 150) CHECK(static_cast<int64_t>(d.rgb.width) * d.rgb.height < 500 * 375);
      }
    }
  }
}

TEST_CASE("jpeg: DCT-scaled decodes equal TurboJPEG's scaled decodes, whole and windowed") {
  const InterleavedImage img = random_image(640, 480, 3, 13);
  const auto jpeg = encode_jpeg(img, {90, false, false, 420});
  for (int denominator : {2, 4, 8}) {
    CAPTURE(denominator);
    const InterleavedImage reference = turbojpeg_scaled(jpeg, denominator);
    DecodeRequest whole;
    whole.scale_denominator = denominator;
    const DecodedImage d = decode(jpeg, whole);
    CHECK(d.scale_denominator == denominator);
    CHECK(d.scaled_width == reference.width);
    CHECK(d.scaled_height == reference.height);
    CHECK(d.rgb.pixels == reference.pixels);
    DecodeRequest window = whole;
    window.x = 200;
    window.y = 160;
    window.width = 256;
    window.height = 200;
    const DecodedImage part = decode(jpeg, window);
    CHECK(window_mismatches(part, reference, 200 / denominator, 160 / denominator,
                            256 / denominator, 200 / denominator) == 0);
  }
}

TEST_CASE("decode: PIL reads the same pixels (JPEG, CMYK JPEG, PNG, PNG under a .JPEG name)") {
  TempDir dir("decode");
  const InterleavedImage img = random_image(123, 77, 3, 14);
  const std::string raw = dir / "img.raw";
  write_bytes(raw, img.pixels);
  json jobs = json::array();
  // Files written by PIL: a CMYK JPEG (Adobe marker, inverted values) and a palette-free PNG.
  jobs.push_back({{"op", "encode"},
                  {"input", raw},
                  {"width", 123},
                  {"height", 77},
                  {"mode", "RGB"},
                  {"convert", "CMYK"},
                  {"path", dir / "cmyk.jpg"},
                  {"options", {{"quality", 92}}}});
  jobs.push_back({{"op", "encode"},
                  {"input", raw},
                  {"width", 123},
                  {"height", 77},
                  {"mode", "RGB"},
                  {"path", dir / "pil.png"},
                  {"options", json::object()}});
  jobs.push_back({{"op", "encode"},
                  {"input", raw},
                  {"width", 123},
                  {"height", 77},
                  {"mode", "RGB"},
                  {"convert", "L"},
                  {"path", dir / "gray.jpg"},
                  {"options", {{"quality", 90}}}});
  jobs.push_back({{"op", "encode"},
                  {"input", raw},
                  {"width", 123},
                  {"height", 77},
                  {"mode", "RGB"},
                  {"path", dir / "progressive.jpg"},
                  {"options", {{"quality", 85}, {"progressive", true}}}});
  write_bytes(dir / "ours.jpg", encode_jpeg(img, {90, false, false, 420}));
  write_bytes(dir / "png_named.JPEG", encode_png(img));
  run_pil_oracle(jobs, dir.path());
  json decodes = json::array();
  const std::vector<std::string> files = {"cmyk.jpg",        "pil.png",  "gray.jpg",
                                          "progressive.jpg", "ours.jpg", "png_named.JPEG"};
  for (const auto& f : files) {
    decodes.push_back({{"op", "decode"}, {"input", dir / f}, {"output", dir / (f + ".out")}});
  }
  run_pil_oracle(decodes, dir.path());
  for (const auto& f : files) {
    CAPTURE(f);
    const std::vector<uint8_t> bytes = read_bytes(dir / f);
    const DecodedImage d = decode(bytes);
    CHECK(d.rgb.width == 123);
    CHECK(d.rgb.height == 77);
    CHECK(d.rgb.pixels == read_bytes(dir / (f + ".out")));
  }
  CHECK(sniff_format(read_bytes(dir / "png_named.JPEG").data(), 16) == ImageFormat::Png);
  const auto info =
      probe_image(read_bytes(dir / "cmyk.jpg").data(), read_bytes(dir / "cmyk.jpg").size());
  CHECK(info.width == 123);
  CHECK(info.height == 77);
  CHECK(info.format == ImageFormat::Jpeg);
}

TEST_CASE("decode: truncated, corrupt and non-image files throw DecodeError") {
  const InterleavedImage img = random_image(200, 150, 3, 15);
  const auto jpeg = encode_jpeg(img);
  for (size_t keep : {jpeg.size() - 2, jpeg.size() / 2, size_t{600}, size_t{3}}) {
    CAPTURE(keep);
    const std::vector<uint8_t> cut(jpeg.begin(), jpeg.begin() + static_cast<ptrdiff_t>(keep));
    CHECK_THROWS_AS(decode(cut), DecodeError);
    // Whatever window is asked for: the verdict does not depend on the crop.
    DecodeRequest top;
    top.x = 0;
    top.y = 0;
    top.width = 16;
    top.height = 16;
    CHECK_THROWS_AS(decode(cut, top), DecodeError);
  }
  std::vector<uint8_t> garbage(5000);
  std::mt19937 rng(1);
  for (auto& b : garbage) b = static_cast<uint8_t>(rng());
  CHECK_THROWS_AS(decode(garbage), DecodeError);
  CHECK_THROWS_AS(decode(std::vector<uint8_t>{}), DecodeError);
  const auto png = encode_png(img);
  const std::vector<uint8_t> cut_png(png.begin(),
                                     png.begin() + static_cast<ptrdiff_t>(png.size() / 2));
  CHECK_THROWS_AS(decode(cut_png), DecodeError);
}

namespace {

// The bytes with a JPEG's frame size (SOF0) or a PNG's (IHDR) rewritten: what a
// corrupt or hostile header claims, with the small image's data behind it.
std::vector<uint8_t> with_jpeg_size(std::vector<uint8_t> jpeg, int width, int height) {
  for (size_t i = 2; i + 9 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) {
      jpeg[i + 5] = static_cast<uint8_t>(height >> 8);
      jpeg[i + 6] = static_cast<uint8_t>(height);
      jpeg[i + 7] = static_cast<uint8_t>(width >> 8);
      jpeg[i + 8] = static_cast<uint8_t>(width);
      return jpeg;
    }
  }
  FAIL("no SOF0 marker");
  return jpeg;
}

std::vector<uint8_t> with_png_size(std::vector<uint8_t> png, uint32_t width, uint32_t height) {
  REQUIRE(png.size() > 24);
  for (int k = 0; k < 4; ++k) {
    png[16 + k] = static_cast<uint8_t>(width >> (24 - 8 * k));
    png[20 + k] = static_cast<uint8_t>(height >> (24 - 8 * k));
  }
  return png;
}

std::string decode_message(const std::vector<uint8_t>& bytes, const DecodeRequest& request) {
  try {
    decode(bytes, request);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "decoded";
}

}  // namespace

TEST_CASE("decode: an image over PIL's decompression-bomb limit is refused before it is allocated") {
  CHECK(kMaxImagePixels == 178956970);  // PIL: 2 * Image.MAX_IMAGE_PIXELS
  const InterleavedImage img = random_image(16, 16, 3, 5);
  DecodeRequest window;
  window.width = 16;
  window.height = 16;
  // 13377 x 13378 is just over the limit, 13377 x 13377 just under.
  for (const DecodeRequest& request : {DecodeRequest{}, window}) {
    const std::string over = decode_message(with_jpeg_size(encode_jpeg(img), 65500, 65500), request);
    CHECK_MESSAGE(over.find("image too large: 65500 x 65500 = 4290250000 pixels") != std::string::npos, over);
    const std::string just_over = decode_message(with_jpeg_size(encode_jpeg(img), 13377, 13378), request);
    CHECK_MESSAGE(just_over.find("too large") != std::string::npos, just_over);
  }
  // Under the limit the header is believed: a window decodes (the rows past the
  // small image's data come out as libjpeg fills them, as PIL's do).
  const std::string under = decode_message(with_jpeg_size(encode_jpeg(img), 13377, 13377), window);
  CHECK_MESSAGE(under == "decoded", under);

  const auto huge_png = with_png_size(encode_png(img), 23, 8847377);
  const std::string png_message = decode_message(huge_png, DecodeRequest{});
  CHECK_MESSAGE(png_message.find("image too large: 23 x 8847377") != std::string::npos, png_message);
  InterleavedImage gray;
  CHECK_THROWS_WITH_AS(decode_gray(huge_png.data(), huge_png.size(), gray),
                       doctest::Contains("image too large"), DecodeError);
  const auto huge_jpeg = with_jpeg_size(encode_jpeg(img), 20000, 20000);
  CHECK_THROWS_WITH_AS(decode_gray(huge_jpeg.data(), huge_jpeg.size(), gray),
                       doctest::Contains("image too large"), DecodeError);
  // The header can still be read (the loader's size probe).
  CHECK(probe_image(huge_png.data(), huge_png.size()).height == 8847377);
}

TEST_CASE("decode: a JPEG whose Huffman data aborts stb_image is refused as a mask and as an image") {
  // Found by fuzzing (tools/fuzz.sh image): Debian's stb_image, built with
  // assertions, aborted the fuzzing process in its Huffman decoder on this file
  // (after other inputs: alone it returns an error, so the outcome depends on
  // what the heap held before). PIL refuses the file ("broken data stream").
  // JPEG masks now decode through libjpeg-turbo, whose error names the JPEG.
  const std::vector<uint8_t> bytes = read_bytes(std::string(FGMOE_DATA_TEST_DIR) + "/files/corrupt_huffman.jpg");
  REQUIRE(sniff_format(bytes.data(), bytes.size()) == ImageFormat::Jpeg);
  InterleavedImage gray;
  std::string verdict = "decoded";
  try {
    decode_gray(bytes.data(), bytes.size(), gray);
  } catch (const DecodeError& e) {
    verdict = e.what();
  }
  CHECK_MESSAGE(verdict.find("JPEG") != std::string::npos, verdict);
  CHECK_THROWS_AS(decode(bytes), DecodeError);
}

TEST_CASE("decode: a JPEG mask's gray values are the luma of its libjpeg-turbo decode") {
  const InterleavedImage img = random_image(37, 21, 3, 9);
  const auto jpeg = encode_jpeg(img);
  const DecodedImage rgb = decode(jpeg);
  InterleavedImage gray;
  decode_gray(jpeg.data(), jpeg.size(), gray);
  REQUIRE(gray.width == 37);
  REQUIRE(gray.height == 21);
  REQUIRE(gray.channels == 1);
  int mismatches = 0;
  for (size_t i = 0; i < gray.pixels.size(); ++i) {
    const uint8_t* p = rgb.rgb.pixels.data() + 3 * i;
    mismatches += gray.pixels[i] != ((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8);
  }
  CHECK(mismatches == 0);
}

TEST_CASE("decode: formats other than JPEG and PNG are refused by name, before any decoder runs") {
  using namespace std::string_literals;  // the headers hold zero bytes
  const std::string gif = "GIF89a\x02\x00\x02\x00\x80\x00\x00"s;
  const std::string bmp = "BM\x46\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"s;
  const std::string webp = "RIFF\x24\x00\x00\x00WEBPVP8 "s;
  const std::string tiff = "II*\0\x08\x00\x00\x00"s;
  for (const auto& [bytes, name] : std::vector<std::pair<std::string, std::string>>{
           {gif, "GIF"}, {bmp, "BMP"}, {webp, "WebP"}, {tiff, "TIFF"}}) {
    CAPTURE(name);
    const std::vector<uint8_t> data(bytes.begin(), bytes.end());
    CHECK(sniff_format(data.data(), data.size()) == ImageFormat::Other);
    const std::string expected = "a " + name + " image: fgmoe reads JPEG and PNG";
    CHECK_THROWS_WITH_AS(decode(data), doctest::Contains(expected.c_str()), DecodeError);
    CHECK_THROWS_WITH_AS(probe_image(data.data(), data.size()), doctest::Contains(expected.c_str()), DecodeError);
    InterleavedImage gray;
    CHECK_THROWS_WITH_AS(decode_gray(data.data(), data.size(), gray), doctest::Contains(expected.c_str()),
                         DecodeError);
  }
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  CHECK_THROWS_WITH_AS(decode(text), doctest::Contains("not an image (unknown format)"), DecodeError);
}
