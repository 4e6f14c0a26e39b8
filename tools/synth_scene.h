// Synthetic scenes for fgmoe-synth and the data benchmark: one foreground
// object per image whose shape, texture and colour identify its class, over a
// cluttered background, with the object's exact mask. Optionally the
// background carries class-correlated statistics (a spurious cue).
// Everything is a pure function of the seed and the image's identity.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace fg::synth {

struct SceneSpec {
  int width = 256;
  int height = 256;
  int64_t label = 0;                 // the class (decides shape, texture and colour)
  bool spurious_background = false;  // background statistics tied to the class
  uint64_t seed = 0;                 // the image's own randomness
  double noise = 0.06;               // sensor-like grain (amplitude, 1 = full range)
  double detail = 0.0;  // fractal luminance texture over everything (photo-like detail)
};

// Renders the scene: rgb (interleaved, 3 channels) and mask (width x height,
// 1 where the object is, 0 elsewhere).
void render_scene(const SceneSpec& spec, data::InterleavedImage& rgb, std::vector<uint8_t>& mask);

// A short description of a class's object, e.g. "red striped star".
std::string describe_class(int64_t label);

// JPEG bytes of an RGB image (libjpeg-turbo, 4:2:0).
std::vector<uint8_t> encode_jpeg(const data::InterleavedImage& rgb, int quality);

}  // namespace fg::synth
