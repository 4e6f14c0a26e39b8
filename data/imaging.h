// 8-bit image primitives with the exact arithmetic of Pillow (PIL), which the
// reference pipeline runs through torchvision and timm: the same coefficients,
// fixed-point rounding, clipping and pass order, so that fgmoe and the
// reference produce the same pixels for the same parameters.
//
// Resizing follows Image.resize (separable convolution, filter support scaled
// when shrinking, 22-bit fixed point, horizontal pass first). Affine warps follow
// Image.transform (bicubic with a = -1 in double precision, 16.16 fixed point
// for nearest). Colour operations follow ImageOps / ImageEnhance.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/image.h"

namespace fg::data {

enum class Interpolation { Nearest, Box, Bilinear, Hamming, Bicubic, Lanczos };

// "nearest", "box", "bilinear", "hamming", "bicubic", "lanczos" (as PIL and timm name them).
Interpolation parse_interpolation(const std::string& name);
const char* interpolation_name(Interpolation interpolation);

struct PixelRect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// A sub-pixel region, PIL's `box` argument of Image.resize.
struct FloatBox {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Reusable buffers so that per-sample work allocates nothing in the steady
// state. Each function documents nothing about their contents between calls.
struct ImagingScratch {
  std::vector<int32_t> coefficients;    // resize: fixed-point filter weights
  std::vector<int32_t> bounds;          // resize: first tap and tap count per output
  std::vector<int32_t> accumulator;     // resize: sums of the scalar tail
  std::vector<uint8_t> transposed;      // resize: source columns as rows
  std::vector<uint8_t> horizontal;      // resize: after the horizontal pass; colour ops: luma, blur
  std::vector<uint8_t> vertical_input;  // resize: the horizontal pass's rows
  PlanarImage image;                    // resize: deinterleaved source; RandAugment: mask output
};

// The source pixels [first, last) that output pixels [out_begin, out_end) of a
// resize of in_size pixels (sub-region [box0, box1)) to out_size pixels read.
std::pair<int, int> resample_source_span(int in_size, float box0, float box1, int out_size,
                                         int out_begin, int out_end, Interpolation interpolation);

// PIL: source.crop(window).resize((out_width, out_height), interpolation, box),
// computing only the output pixels inside out_rect (which is what a later
// center crop keeps; every output pixel is independent of the others).
// source: interleaved 8-bit pixels with `channels` channels (1 or 3), rows
// source_row_bytes apart, source_width x source_height pixels; source[0] is the
// pixel at (origin_x, origin_y) of the coordinate system window is given in (a
// decoder may deliver only part of an image). box is relative to the window.
// out becomes planar, out_rect's size.
void resize_crop(const uint8_t* source, size_t source_row_bytes, int channels, int origin_x,
                 int origin_y, int source_width, int source_height, const PixelRect& window,
                 const FloatBox& box, int out_width, int out_height, const PixelRect& out_rect,
                 Interpolation interpolation, PlanarImage& out, ImagingScratch& scratch);

// Same for a planar source (every plane resized alike).
void resize_crop_planar(const PlanarImage& source, const PixelRect& window, const FloatBox& box,
                        int out_width, int out_height, const PixelRect& out_rect,
                        Interpolation interpolation, PlanarImage& out, ImagingScratch& scratch);

// PIL's affine data: the source position of output pixel centre (x+0.5, y+0.5)
// is (a0*x' + a1*y' + a2, a3*x' + a4*y' + a5).
struct AffineMatrix {
  std::array<double, 6> a{1, 0, 0, 0, 1, 0};
};

// PIL: Image.transform(size, AFFINE, matrix, resample, fillcolor=fill), same
// size as the source. Supports Nearest, Bilinear and Bicubic, as PIL does.
// fill holds one value per channel.
void affine_transform(const PlanarImage& source, const AffineMatrix& matrix,
                      Interpolation interpolation, const uint8_t* fill, PlanarImage& out);

// PIL: Image.rotate(degrees, resample, fillcolor=fill) without expand, including
// its exact-transpose fast paths for 0, 90, 180 and 270 degrees.
void rotate(const PlanarImage& source, double degrees, Interpolation interpolation,
            const uint8_t* fill, PlanarImage& out);
// The matrix Image.rotate builds (degrees counter-clockwise about the centre).
AffineMatrix rotation_matrix(double degrees, int width, int height);

void flip_horizontal(PlanarImage& image);

// ---- colour operations on 3-channel (RGB) or 1-channel images, in place ----
void apply_lut(PlanarImage& image, const uint8_t* lut);         // the same table on every channel
void autocontrast(PlanarImage& image);                          // ImageOps.autocontrast(cutoff=0)
void equalize(PlanarImage& image);                              // ImageOps.equalize
void invert(PlanarImage& image);                                // ImageOps.invert
void solarize(PlanarImage& image, int threshold);               // ImageOps.solarize
void solarize_add(PlanarImage& image, int add, int threshold);  // timm's solarize_add
void posterize(PlanarImage& image, int bits);                   // ImageOps.posterize
// ImageEnhance.{Color, Contrast, Brightness, Sharpness}(image).enhance(factor).
void enhance_color(PlanarImage& image, double factor, ImagingScratch& scratch);
void enhance_contrast(PlanarImage& image, double factor, ImagingScratch& scratch);
void enhance_brightness(PlanarImage& image, double factor);
void enhance_sharpness(PlanarImage& image, double factor, ImagingScratch& scratch);
// Image.convert("L") of an RGB image (ITU-R 601-2 luma, 16-bit fixed point).
void rgb_to_luma(const PlanarImage& rgb, uint8_t* luma);

// torchvision's Resize(int) size: the shorter side becomes `shorter`, the
// longer int(shorter * long / short). Returns (width, height).
std::pair<int, int> resize_shorter_side(int width, int height, int shorter);

// Python's round(x, digits) for the digits PIL uses (correctly rounded through decimal).
double python_round(double x, int digits);
// Python's float modulo (result has the divisor's sign).
double python_fmod(double x, double y);

}  // namespace fg::data
