#include "data/decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <exception>

// libjpeg's headers need FILE and size_t declared first.
#include <jerror.h>
#include <jpeglib.h>
#include <stb/stb_image.h>

namespace fg::data {

namespace {

// Formats fgmoe does not decode, named by their magic bytes for the message
// that refuses them (stb_image reads some of them, but its decoders for those
// are the least hardened against corrupt input).
const char* other_format_name(const uint8_t* data, size_t size) {
  auto starts = [&](const char* magic, size_t n, size_t at) {
    return size >= at + n && std::memcmp(data + at, magic, n) == 0;
  };
  if (starts("GIF8", 4, 0)) return "GIF";
  if (starts("BM", 2, 0)) return "BMP";
  if (starts("RIFF", 4, 0) && starts("WEBP", 4, 8)) return "WebP";
  if (starts("II*\0", 4, 0) || starts("MM\0*", 4, 0)) return "TIFF";
  if (starts("8BPS", 4, 0)) return "PSD";
  return nullptr;
}

[[noreturn]] void refuse_format(const uint8_t* data, size_t size) {
  if (const char* name = other_format_name(data, size))
    throw DecodeError(str_cat("a ", name, " image: fgmoe reads JPEG and PNG (convert it, e.g. with PIL)"));
  throw DecodeError("not an image (unknown format)");
}

}  // namespace

ImageFormat sniff_format(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::Jpeg;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::Png;
  if (other_format_name(data, size)) return ImageFormat::Other;
  return ImageFormat::Unknown;
}

const char* format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::Jpeg:
      return "JPEG";
    case ImageFormat::Png:
      return "PNG";
    case ImageFormat::Other:
      return "another image format";
    case ImageFormat::Unknown:
      break;
  }
  return "unknown format";
}

namespace {

bool too_many_pixels(int64_t width, int64_t height) { return width * height > kMaxImagePixels; }

[[noreturn]] void refuse_size(int64_t width, int64_t height) {
  throw DecodeError(str_cat("image too large: ", width, " x ", height, " = ", width * height,
                            " pixels, more than the ", kMaxImagePixels,
                            " fgmoe decodes (PIL's decompression-bomb limit)"));
}

struct JpegErrorManager {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool premature_end;
};

extern "C" void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings about corrupt entropy data are common in real datasets and PIL
// decodes those files, so they pass; running out of data does not (PIL calls
// such a file truncated).
extern "C" void jpeg_note(j_common_ptr cinfo, int level) {
  if (level < 0) {
    auto* errors = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) errors->premature_end = true;
    cinfo->err->num_warnings++;
  }
}

// A complete JPEG ends with the EOI marker (possibly followed by padding).
// Checking for it keeps the verdict on a truncated file independent of which
// window a crop decodes.
bool has_end_marker(const uint8_t* data, size_t size) {
  const size_t window = std::min<size_t>(size, 4096);
  for (size_t i = size - window; i + 1 < size; ++i) {
    if (data[i] == 0xFF && data[i + 1] == 0xD9) return true;
  }
  return false;
}

inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

// PIL: a JPEG in CMYK (Adobe files store it inverted) becomes RGB through
// ImagingConvert's cmyk2rgb.
void cmyk_to_rgb(const uint8_t* cmyk, size_t pixels, bool inverted, uint8_t* rgb) {
  for (size_t i = 0; i < pixels; ++i) {
    int c = cmyk[i * 4 + 0], m = cmyk[i * 4 + 1], y = cmyk[i * 4 + 2], k = cmyk[i * 4 + 3];
    if (inverted) {
      c = 255 - c;
      m = 255 - m;
      y = 255 - y;
      k = 255 - k;
    }
    const int nk = 255 - k;
    auto clip = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); };
    rgb[i * 3 + 0] = clip(nk - muldiv255(c, nk));
    rgb[i * 3 + 1] = clip(nk - muldiv255(m, nk));
    rgb[i * 3 + 2] = clip(nk - muldiv255(y, nk));
  }
}

struct JpegOutcome {
  bool failed = false;
  bool too_large = false;  // the header's size is over kMaxImagePixels (nothing decoded)
  int width = 0, height = 0;
  bool premature_end = false;
  bool cmyk = false;
  bool adobe = false;
  char message[JMSG_LENGTH_MAX] = {0};
};

// Reserves the output (kept out of the setjmp frame: objects with destructors
// must not live there).
uint8_t* reserve_output(InterleavedImage& image, int width, int height, int channels) {
  image.reset(width, height, channels);
  return image.pixels.data();
}

DecodeRequest choose_request(const DecodeRequestChooser* choose, const ImageInfo& info,
                             std::exception_ptr& failure) {
  try {
    return (*choose)(info);
  } catch (...) {
    failure = std::current_exception();
    return DecodeRequest{};
  }
}

// All libjpeg work happens here, between setjmp and longjmp; only plain data
// lives in this frame. With header_only, the image's size is written there and
// nothing is decoded (choose, choose_failure, out and cmyk_buffer are unused).
void decode_jpeg_core(const uint8_t* data, size_t size, const DecodeRequestChooser* choose,
                      std::exception_ptr* choose_failure, DecodedImage* out,
                      InterleavedImage* cmyk_buffer, JpegOutcome* outcome,
                      ImageInfo* header_only = nullptr) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_fail;
  errors.manager.emit_message = jpeg_note;
  errors.premature_end = false;
  jpeg_create_decompress(&cinfo);
  if (setjmp(errors.jump)) {
    outcome->failed = true;
    std::memcpy(outcome->message, errors.message, sizeof errors.message);
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  ImageInfo info{static_cast<int>(cinfo.image_width), static_cast<int>(cinfo.image_height),
                 ImageFormat::Jpeg};
  if (header_only) {
    *header_only = info;
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  if (too_many_pixels(info.width, info.height)) {
    outcome->too_large = true;
    outcome->width = info.width;
    outcome->height = info.height;
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  const DecodeRequest request = choose_request(choose, info, *choose_failure);
  if (*choose_failure) {
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  const int denominator = request.scale_denominator;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(denominator);
  outcome->cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = outcome->cmyk ? JCS_CMYK : JCS_EXT_RGB;
  jpeg_start_decompress(&cinfo);
  outcome->adobe = cinfo.saw_Adobe_marker;
  const int scaled_width = static_cast<int>(cinfo.output_width);
  const int scaled_height = static_cast<int>(cinfo.output_height);

  int x0 = 0, x1 = scaled_width, y0 = 0, y1 = scaled_height;
  if (request.width > 0 && request.height > 0) {
    // The window in scaled pixels, widened by two pixels on each side:
    // libjpeg's fancy upsampling reads chroma neighbours, and on the first or
    // last row or column of a decoded window it replicates instead, so those
    // pixels differ from a full decode. (The tests compare windows with the
    // full decode; one pixel is the least that passes.)
    constexpr int kMargin = 2;
    x0 = std::max(0, request.x / denominator - kMargin);
    y0 = std::max(0, request.y / denominator - kMargin);
    x1 = std::min(scaled_width,
                  (request.x + request.width + denominator - 1) / denominator + kMargin);
    y1 = std::min(scaled_height,
                  (request.y + request.height + denominator - 1) / denominator + kMargin);
  }
  JDIMENSION crop_x = static_cast<JDIMENSION>(x0);
  JDIMENSION crop_width = static_cast<JDIMENSION>(x1 - x0);
  if (crop_width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &crop_x, &crop_width);
  if (y0 > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(y0));
  const int channels = outcome->cmyk ? 4 : 3;
  InterleavedImage& target = outcome->cmyk ? *cmyk_buffer : out->rgb;
  uint8_t* pixels = reserve_output(target, static_cast<int>(cinfo.output_width), y1 - y0, channels);
  const size_t row_bytes = static_cast<size_t>(cinfo.output_width) * channels;
  while (static_cast<int>(cinfo.output_scanline) < y1) {
    JSAMPROW rows[8];
    int count = 0;
    while (count < 8 && static_cast<int>(cinfo.output_scanline) + count < y1) {
      rows[count] =
          pixels +
          static_cast<size_t>(static_cast<int>(cinfo.output_scanline) + count - y0) * row_bytes;
      ++count;
    }
    jpeg_read_scanlines(&cinfo, rows, static_cast<JDIMENSION>(count));
  }
  if (static_cast<int>(cinfo.output_scanline) < scaled_height) {
    jpeg_abort_decompress(&cinfo);
  } else {
    jpeg_finish_decompress(&cinfo);
  }
  outcome->premature_end = errors.premature_end;
  out->origin_x = static_cast<int>(crop_x);
  out->origin_y = y0;
  out->scaled_width = scaled_width;
  out->scaled_height = scaled_height;
  out->scale_denominator = denominator;
  jpeg_destroy_decompress(&cinfo);
}

void decode_jpeg(const uint8_t* data, size_t size, const DecodeRequestChooser& choose,
                 DecodedImage& out) {
  if (!has_end_marker(data, size)) throw DecodeError("truncated JPEG (no end-of-image marker)");
  thread_local InterleavedImage cmyk_buffer;
  JpegOutcome outcome;
  std::exception_ptr choose_failure;
  decode_jpeg_core(data, size, &choose, &choose_failure, &out, &cmyk_buffer, &outcome);
  if (choose_failure) std::rethrow_exception(choose_failure);
  if (outcome.failed) throw DecodeError(std::string("corrupt JPEG: ") + outcome.message);
  if (outcome.too_large) refuse_size(outcome.width, outcome.height);
  if (outcome.premature_end) throw DecodeError("truncated JPEG (premature end of data)");
  if (outcome.cmyk) {
    out.rgb.reset(cmyk_buffer.width, cmyk_buffer.height, 3);
    cmyk_to_rgb(cmyk_buffer.pixels.data(),
                static_cast<size_t>(cmyk_buffer.width) * cmyk_buffer.height, outcome.adobe,
                out.rgb.pixels.data());
  }
}

void decode_with_stb(const uint8_t* data, size_t size, ImageFormat format,
                     const DecodeRequestChooser& choose, DecodedImage& out) {
  FG_CHECK(size < (size_t{1} << 31), "image file too large for stb_image");
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, static_cast<int>(size), &w, &h, &comp)) {
    throw DecodeError(std::string("unreadable image: ") + stbi_failure_reason());
  }
  if (too_many_pixels(w, h)) refuse_size(w, h);
  // The chooser sees the size; stb decodes the whole image whatever it asks.
  choose(ImageInfo{w, h, format});
  stbi_uc* pixels = stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &comp, 3);
  if (!pixels) throw DecodeError(std::string("corrupt image: ") + stbi_failure_reason());
  out.rgb.reset(w, h, 3);
  std::memcpy(out.rgb.pixels.data(), pixels, out.rgb.pixels.size());
  stbi_image_free(pixels);
  out.origin_x = out.origin_y = 0;
  out.scaled_width = w;
  out.scaled_height = h;
  out.scale_denominator = 1;
}

}  // namespace

ImageInfo probe_image(const uint8_t* data, size_t size) {
  const ImageFormat format = sniff_format(data, size);
  if (format == ImageFormat::Unknown) throw DecodeError("not an image (unknown format)");
  if (format == ImageFormat::Jpeg) {
    JpegOutcome outcome;
    ImageInfo info;
    decode_jpeg_core(data, size, nullptr, nullptr, nullptr, nullptr, &outcome, &info);
    if (outcome.failed) throw DecodeError(std::string("corrupt JPEG: ") + outcome.message);
    return info;
  }
  if (format != ImageFormat::Png) refuse_format(data, size);
  FG_CHECK(size < (size_t{1} << 31), "image file too large for stb_image");
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, static_cast<int>(size), &w, &h, &comp)) {
    throw DecodeError(std::string("unreadable image header: ") + stbi_failure_reason());
  }
  return ImageInfo{w, h, format};
}

void decode_image(const uint8_t* data, size_t size, const DecodeRequestChooser& choose,
                  DecodedImage& out) {
  const ImageFormat format = sniff_format(data, size);
  switch (format) {
    case ImageFormat::Jpeg:
      decode_jpeg(data, size, choose, out);
      return;
    case ImageFormat::Png:
      decode_with_stb(data, size, format, choose, out);
      return;
    case ImageFormat::Other:
    case ImageFormat::Unknown:
      break;
  }
  refuse_format(data, size);
}

void decode_image(const uint8_t* data, size_t size, const DecodeRequest& request,
                  DecodedImage& out) {
  decode_image(
      data, size, [&](const ImageInfo&) { return request; }, out);
}

void decode_gray(const uint8_t* data, size_t size, InterleavedImage& out) {
  FG_CHECK(size < (size_t{1} << 31), "image file too large for stb_image");
  const ImageFormat format = sniff_format(data, size);
  if (format != ImageFormat::Jpeg && format != ImageFormat::Png) refuse_format(data, size);
  if (format == ImageFormat::Jpeg) {
    // Through libjpeg-turbo, as every JPEG: Debian's stb_image asserts (aborting
    // the process) on some corrupt Huffman data. Luma as stb_image computes it.
    DecodedImage rgb;  // not kept: JPEG masks are rare, and this one may be large
    decode_jpeg(data, size, [](const ImageInfo&) { return DecodeRequest{}; }, rgb);
    out.reset(rgb.rgb.width, rgb.rgb.height, 1);
    const uint8_t* in = rgb.rgb.pixels.data();
    for (size_t i = 0; i < out.pixels.size(); ++i, in += 3)
      out.pixels[i] = static_cast<uint8_t>((in[0] * 77 + in[1] * 150 + in[2] * 29) >> 8);
    return;
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, static_cast<int>(size), &w, &h, &comp)) {
    throw DecodeError(std::string("unreadable image: ") + stbi_failure_reason());
  }
  if (too_many_pixels(w, h)) refuse_size(w, h);
  stbi_uc* pixels = stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &comp, 1);
  if (!pixels) throw DecodeError(std::string("corrupt image: ") + stbi_failure_reason());
  out.reset(w, h, 1);
  std::memcpy(out.pixels.data(), pixels, out.pixels.size());
  stbi_image_free(pixels);
}

void read_file(const std::string& path, std::vector<uint8_t>& bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FG_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    FG_CHECK(false, "cannot stat ", path, ": ", std::strerror(e));
  }
  bytes.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      FG_CHECK(false, "cannot read ", path, ": ",
               n == 0 ? "unexpected end of file" : std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace fg::data
