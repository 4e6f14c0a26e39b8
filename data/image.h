// 8-bit image buffers used inside the data pipeline (never exposed as
// tensors): decoders produce interleaved pixels, the transforms work on
// planes (one contiguous plane per channel) because per-channel loops
// vectorize and the model's input is channel-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fg::data {

struct InterleavedImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height rows of width * channels bytes

  void reset(int w, int h, int c) {
    width = w;
    height = h;
    channels = c;
    pixels.resize(static_cast<size_t>(w) * h * c);
  }
  size_t row_bytes() const { return static_cast<size_t>(width) * channels; }
  uint8_t* row(int y) { return pixels.data() + y * row_bytes(); }
  const uint8_t* row(int y) const { return pixels.data() + y * row_bytes(); }
};

struct PlanarImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // channels planes of height * width bytes

  void reset(int w, int h, int c) {
    width = w;
    height = h;
    channels = c;
    pixels.resize(static_cast<size_t>(w) * h * c);
  }
  size_t plane_size() const { return static_cast<size_t>(width) * height; }
  uint8_t* plane(int c) { return pixels.data() + c * plane_size(); }
  const uint8_t* plane(int c) const { return pixels.data() + c * plane_size(); }
};

}  // namespace fg::data
