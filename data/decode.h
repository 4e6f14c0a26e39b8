// Image decoding: JPEG through libjpeg-turbo (with DCT-domain downscaling and
// decoding of a window only, both of which skip work the transforms would
// throw away), PNG through stb_image. Other formats (GIF, BMP, WebP, TIFF,
// PSD) are refused by name. The format is recognized from the bytes, never
// from the file name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/error.h"

namespace fg::data {

// A file that cannot be decoded (corrupt, truncated, unknown format).
class DecodeError : public Error {
 public:
  explicit DecodeError(const std::string& message) : Error(message) {}
};

enum class ImageFormat { Unknown, Jpeg, Png, Other };

ImageFormat sniff_format(const uint8_t* data, size_t size);
const char* format_name(ImageFormat format);

struct ImageInfo {
  int width = 0;
  int height = 0;
  ImageFormat format = ImageFormat::Unknown;
};

// Reads the dimensions from the header. Throws DecodeError.
ImageInfo probe_image(const uint8_t* data, size_t size);

// The most pixels an image may have to be decoded: PIL's decompression-bomb
// limit (twice Image.MAX_IMAGE_PIXELS), past which PIL refuses to open a file.
// A corrupt or hostile header can claim 65500 x 65500 pixels in a few bytes;
// the decoders refuse such an image with a DecodeError before allocating.
constexpr int64_t kMaxImagePixels = 2 * (int64_t{1024} * 1024 * 1024 / 4 / 3);

struct DecodeRequest {
  // 1, 2, 4 or 8: decode a JPEG at 1/scale_denominator of its size (other
  // formats ignore it and decode at full size).
  int scale_denominator = 1;
  // When width > 0: only this window (in full-resolution pixels) is needed;
  // a JPEG decodes a slightly larger, block-aligned window around it.
  int x = 0, y = 0, width = 0, height = 0;
};

struct DecodedImage {
  InterleavedImage rgb;  // 3 channels
  // The decoded pixels cover [origin_x, origin_x + rgb.width) x [origin_y, ...)
  // of the image scaled to scaled_width x scaled_height.
  int origin_x = 0;
  int origin_y = 0;
  int scaled_width = 0;
  int scaled_height = 0;
  int scale_denominator = 1;  // scaled size = ceil(full size / scale_denominator)
};

// Decodes to RGB (grayscale replicated, CMYK converted as PIL does). Throws
// DecodeError naming the problem; callers add the path.
void decode_image(const uint8_t* data, size_t size, const DecodeRequest& request,
                  DecodedImage& out);

// Same, with the request chosen from the image's size once the header is read
// (the header is parsed once, not twice).
using DecodeRequestChooser = std::function<DecodeRequest(const ImageInfo&)>;
void decode_image(const uint8_t* data, size_t size, const DecodeRequestChooser& choose,
                  DecodedImage& out);

// Decodes a single-channel image (mask PNGs): colour is converted to luma.
void decode_gray(const uint8_t* data, size_t size, InterleavedImage& out);

// Reads a whole file into bytes (reusing the vector's capacity). Throws fg::Error.
void read_file(const std::string& path, std::vector<uint8_t>& bytes);

}  // namespace fg::data
