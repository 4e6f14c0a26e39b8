#include "data/imaging.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "engine/error.h"

// Bit-exactness with Pillow needs the same floating-point operation sequence:
// this file is compiled with -ffp-contract=off so no multiply-add is fused.

namespace fg::data {

Interpolation parse_interpolation(const std::string& name) {
  if (name == "nearest") return Interpolation::Nearest;
  if (name == "box") return Interpolation::Box;
  if (name == "bilinear") return Interpolation::Bilinear;
  if (name == "hamming") return Interpolation::Hamming;
  if (name == "bicubic") return Interpolation::Bicubic;
  if (name == "lanczos") return Interpolation::Lanczos;
  FG_CHECK(false, "unknown interpolation '", name,
           "' (nearest, box, bilinear, hamming, bicubic or lanczos)");
  return Interpolation::Bicubic;
}

const char* interpolation_name(Interpolation interpolation) {
  switch (interpolation) {
    case Interpolation::Nearest:
      return "nearest";
    case Interpolation::Box:
      return "box";
    case Interpolation::Bilinear:
      return "bilinear";
    case Interpolation::Hamming:
      return "hamming";
    case Interpolation::Bicubic:
      return "bicubic";
    case Interpolation::Lanczos:
      return "lanczos";
  }
  return "?";
}

namespace {

// ---------------------------------------------------------------------------
// Resampling filters (PIL's Resample.c); the bicubic one uses a = -0.5.

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct ResampleFilter {
  double (*function)(double);
  double support;
};

ResampleFilter filter_for(Interpolation interpolation) {
  switch (interpolation) {
    case Interpolation::Box:
      return {box_filter, 0.5};
    case Interpolation::Bilinear:
      return {bilinear_filter, 1.0};
    case Interpolation::Hamming:
      return {hamming_filter, 1.0};
    case Interpolation::Bicubic:
      return {bicubic_filter, 2.0};
    case Interpolation::Lanczos:
      return {lanczos_filter, 3.0};
    case Interpolation::Nearest:
      break;
  }
  FG_CHECK(false, "resampling filter: nearest has no convolution filter");
  return {bicubic_filter, 2.0};
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// PIL's precompute_coeffs + normalize_coeffs_8bpc for outputs [out_begin, out_end):
// bounds holds (first source pixel, tap count) per output, coefficients ksize
// 22-bit fixed-point weights per output. Returns ksize.
int precompute_coefficients(int in_size, float in0, float in1, int out_size, int out_begin,
                            int out_end, const ResampleFilter& filter, std::vector<int32_t>& bounds,
                            std::vector<int32_t>& coefficients) {
  // (in1 - in0) is a float subtraction in PIL, widened afterwards.
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter.support * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  const int count = out_end - out_begin;
  bounds.resize(static_cast<size_t>(count) * 2);
  coefficients.assign(static_cast<size_t>(count) * ksize, 0);
  thread_local std::vector<double> weights;
  weights.resize(ksize);
  for (int xx = out_begin; xx < out_end; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double weight_sum = 0.0;
    const double inverse_filterscale = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double w = filter.function((x + xmin - center + 0.5) * inverse_filterscale);
      weights[x] = w;
      weight_sum += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (weight_sum != 0.0) weights[x] /= weight_sum;
    }
    int32_t* k = &coefficients[static_cast<size_t>(xx - out_begin) * ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = weights[x] * (1 << kPrecisionBits);
      k[x] = weights[x] < 0 ? static_cast<int32_t>(-0.5 + v) : static_cast<int32_t>(0.5 + v);
    }
    bounds[(xx - out_begin) * 2 + 0] = xmin;
    bounds[(xx - out_begin) * 2 + 1] = std::max(xmax, 0);
  }
  return ksize;
}

inline uint8_t clip8_fixed(int32_t accumulator) {
  const int32_t v = accumulator >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// out[i] = clip(sum_t k[t] * rows[t][i]) for i < n, rows `stride` bytes apart:
// the exact fixed-point sum of PIL's passes, vectorized over i (16 at a time,
// accumulators kept in registers across the taps).
void convolve_rows(const uint8_t* first_row, size_t stride, const int32_t* k, int taps, int n,
                   int32_t* accumulator, uint8_t* out) {
  constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
  int i = 0;
#if defined(__AVX2__)
  // Each 22-bit coefficient splits exactly into k = hi * 2^11 + lo with
  // 0 <= lo < 2^11, both 16-bit; pairs of taps then go through vpmaddwd
  // (16 products per instruction) and sum * k = 2^11 * sum * hi + sum * lo.
  if (n >= 16) {
    constexpr int kMaxPairs = 64;
    __m256i hi_pair[kMaxPairs], lo_pair[kMaxPairs];
    const int pairs = (taps + 1) / 2;
    if (pairs <= kMaxPairs) {
      for (int p = 0; p < pairs; ++p) {
        const int32_t k0 = k[2 * p], k1 = 2 * p + 1 < taps ? k[2 * p + 1] : 0;
        const uint32_t h0 = static_cast<uint16_t>(k0 >> 11), h1 = static_cast<uint16_t>(k1 >> 11);
        const uint32_t l0 = static_cast<uint32_t>(k0 & 0x7FF),
                       l1 = static_cast<uint32_t>(k1 & 0x7FF);
        hi_pair[p] = _mm256_set1_epi32(static_cast<int32_t>(h0 | (h1 << 16)));
        lo_pair[p] = _mm256_set1_epi32(static_cast<int32_t>(l0 | (l1 << 16)));
      }
      const __m256i half = _mm256_set1_epi32(kHalf);
      // The last block overlaps the one before it rather than leaving a scalar
      // tail (outputs are independent, so recomputing some is harmless).
      for (; i < n; i = (i + 16 <= n - 16 || i + 16 >= n) ? i + 16 : n - 16) {
        __m256i hi_a = _mm256_setzero_si256(), hi_b = hi_a, lo_a = hi_a, lo_b = hi_a;
        const uint8_t* row = first_row + i;
        for (int p = 0; p < pairs; ++p, row += 2 * stride) {
          const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
          const __m128i r1 = 2 * p + 1 < taps
                                 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + stride))
                                 : _mm_setzero_si128();
          // (row0[j], row1[j]) word pairs for j = 0..7 and 8..15.
          const __m256i first = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(r0, r1));
          const __m256i second = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(r0, r1));
          hi_a = _mm256_add_epi32(hi_a, _mm256_madd_epi16(first, hi_pair[p]));
          lo_a = _mm256_add_epi32(lo_a, _mm256_madd_epi16(first, lo_pair[p]));
          hi_b = _mm256_add_epi32(hi_b, _mm256_madd_epi16(second, hi_pair[p]));
          lo_b = _mm256_add_epi32(lo_b, _mm256_madd_epi16(second, lo_pair[p]));
        }
        __m256i a = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi_a, 11), lo_a), half);
        __m256i b = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi_b, 11), lo_b), half);
        // >> 22, then saturate to [0, 255] (PIL's clip8 table does the same).
        a = _mm256_srai_epi32(a, kPrecisionBits);
        b = _mm256_srai_epi32(b, kPrecisionBits);
        const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
        const __m128i packed =
            _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), packed);
      }
    }
  }
#endif
  if (i < n) {
    const int rest = n - i;
    for (int j = 0; j < rest; ++j) accumulator[j] = kHalf;
    for (int t = 0; t < taps; ++t) {
      const uint8_t* row = first_row + static_cast<size_t>(t) * stride + i;
      const int32_t kt = k[t];
      for (int j = 0; j < rest; ++j) accumulator[j] += static_cast<int32_t>(row[j]) * kt;
    }
    for (int j = 0; j < rest; ++j) out[i + j] = clip8_fixed(accumulator[j]);
  }
}

// dst (columns x rows, dst_stride apart) = the transpose of src (rows x
// columns, src_stride apart). 16x16 blocks go through SSE2 unpacks.
void transpose_u8(const uint8_t* src, size_t src_stride, int rows, int columns, uint8_t* dst,
                  size_t dst_stride) {
  int r0 = 0;
#if defined(__SSE2__)
  for (; r0 + 16 <= rows; r0 += 16) {
    int c0 = 0;
    for (; c0 + 16 <= columns; c0 += 16) {
      const uint8_t* s = src + static_cast<size_t>(r0) * src_stride + c0;
      __m128i r[16], t[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = _mm_loadu_si128(
            reinterpret_cast<const __m128i*>(s + static_cast<size_t>(i) * src_stride));
      }
      for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
      }
      for (int g = 0; g < 4; ++g) {  // rows 4g .. 4g+3
        r[4 * g + 0] = _mm_unpacklo_epi16(t[4 * g + 0], t[4 * g + 2]);
        r[4 * g + 1] = _mm_unpackhi_epi16(t[4 * g + 0], t[4 * g + 2]);
        r[4 * g + 2] = _mm_unpacklo_epi16(t[4 * g + 1], t[4 * g + 3]);
        r[4 * g + 3] = _mm_unpackhi_epi16(t[4 * g + 1], t[4 * g + 3]);
      }
      for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h+7
        for (int k = 0; k < 4; ++k) {
          t[8 * h + 2 * k] = _mm_unpacklo_epi32(r[8 * h + k], r[8 * h + 4 + k]);
          t[8 * h + 2 * k + 1] = _mm_unpackhi_epi32(r[8 * h + k], r[8 * h + 4 + k]);
        }
      }
      uint8_t* d = dst + static_cast<size_t>(c0) * dst_stride + r0;
      for (int k = 0; k < 8; ++k) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + static_cast<size_t>(2 * k) * dst_stride),
                         _mm_unpacklo_epi64(t[k], t[8 + k]));
        _mm_storeu_si128(
            reinterpret_cast<__m128i*>(d + static_cast<size_t>(2 * k + 1) * dst_stride),
            _mm_unpackhi_epi64(t[k], t[8 + k]));
      }
    }
    for (int r = r0; r < r0 + 16; ++r) {
      for (int c = c0; c < columns; ++c)
        dst[static_cast<size_t>(c) * dst_stride + r] = src[static_cast<size_t>(r) * src_stride + c];
    }
  }
#endif
  for (int r = r0; r < rows; ++r) {
    const uint8_t* s = src + static_cast<size_t>(r) * src_stride;
    for (int c = 0; c < columns; ++c) dst[static_cast<size_t>(c) * dst_stride + r] = s[c];
  }
}

// Splits rows of interleaved RGB into three planes (rows x columns each).
void deinterleave_rgb(const uint8_t* src, size_t src_stride, int rows, int columns,
                      uint8_t* r_plane, uint8_t* g_plane, uint8_t* b_plane) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* s = src + static_cast<size_t>(y) * src_stride;
    uint8_t* r = r_plane + static_cast<size_t>(y) * columns;
    uint8_t* g = g_plane + static_cast<size_t>(y) * columns;
    uint8_t* b = b_plane + static_cast<size_t>(y) * columns;
    int x = 0;
#if defined(__SSSE3__)
    // 16 pixels (48 bytes) per step: each output gathers its bytes from the
    // three input vectors with byte shuffles.
    const __m128i r0 = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i r1 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1);
    const __m128i r2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13);
    const __m128i g0 = _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i g1 = _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1);
    const __m128i g2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14);
    const __m128i b0 = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i b1 = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1);
    const __m128i b2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15);
    for (; x + 16 <= columns; x += 16) {
      const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 3 * x));
      const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 3 * x + 16));
      const __m128i v2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 3 * x + 32));
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(r + x),
          _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(v0, r0), _mm_shuffle_epi8(v1, r1)),
                       _mm_shuffle_epi8(v2, r2)));
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(g + x),
          _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(v0, g0), _mm_shuffle_epi8(v1, g1)),
                       _mm_shuffle_epi8(v2, g2)));
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(b + x),
          _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(v0, b0), _mm_shuffle_epi8(v1, b1)),
                       _mm_shuffle_epi8(v2, b2)));
    }
#endif
    for (; x < columns; ++x) {
      r[x] = s[3 * x];
      g[x] = s[3 * x + 1];
      b[x] = s[3 * x + 2];
    }
  }
}

// PIL's COORD: floor for the range that matters, -1 for anything negative.
inline int coord(double v) { return v < 0.0 ? -1 : static_cast<int>(v); }
inline int floor_int(double v) {
  return v < 0.0 ? static_cast<int>(std::floor(v)) : static_cast<int>(v);
}

// A source for resizing: interleaved or planar 8-bit pixels of which only a
// region may be present (a JPEG window decode).
struct SourceView {
  const uint8_t* data;  // the pixel at (origin_x, origin_y), channel 0
  int origin_x, origin_y;
  int end_x, end_y;     // one past the last pixel held
  size_t row_bytes;     // bytes between rows
  size_t column_step;   // bytes between columns (channels for interleaved, 1 for planar)
  size_t channel_step;  // bytes between channels (1 for interleaved, plane size for planar)
  int channels;
  bool interleaved;
  // Pixel (x, y), channel 0; only ever formed for pixels that exist.
  const uint8_t* at(int x, int y) const {
    return data + static_cast<size_t>(y - origin_y) * row_bytes +
           static_cast<size_t>(x - origin_x) * column_step;
  }
};

// Nearest-neighbour resize as PIL routes it: an affine scale with
// a0 = (box.x1 - box.x0) / out_width, a2 = box.x0, accumulated in double.
void resize_nearest(const SourceView& src, const PixelRect& window, const FloatBox& box,
                    int out_width, int out_height, const PixelRect& out_rect, PlanarImage& out) {
  const double a0 = static_cast<double>(box.x1 - box.x0) / out_width;
  const double a4 = static_cast<double>(box.y1 - box.y0) / out_height;
  const double a2 = box.x0, a5 = box.y0;
  std::vector<int> column_of(out_width, -1);
  double xo = a2 + a0 * 0.5;
  for (int x = 0; x < out_width; ++x) {
    const int xin = coord(xo);
    if (xin >= 0 && xin < window.width) column_of[x] = xin;
    xo += a0;
  }
  FG_CHECK(window.x >= src.origin_x && window.y >= src.origin_y &&
               window.x + window.width <= src.end_x && window.y + window.height <= src.end_y,
           "resize: the source does not hold the window");
  out.reset(out_rect.width, out_rect.height, src.channels);
  std::fill(out.pixels.begin(), out.pixels.end(), 0);
  double yo = a5 + a4 * 0.5;
  for (int y = 0; y < out_height; ++y) {
    const int yi = coord(yo);
    yo += a4;
    if (y < out_rect.y || y >= out_rect.y + out_rect.height) continue;
    if (yi < 0 || yi >= window.height) continue;
    for (int c = 0; c < src.channels; ++c) {
      uint8_t* o = out.plane(c) + static_cast<size_t>(y - out_rect.y) * out_rect.width;
      for (int x = 0; x < out_rect.width; ++x) {
        const int xin = column_of[out_rect.x + x];
        if (xin >= 0) o[x] = src.at(window.x + xin, window.y + yi)[c * src.channel_step];
      }
    }
  }
}

void resize_view(const SourceView& src, const PixelRect& window, const FloatBox& box, int out_width,
                 int out_height, const PixelRect& out_rect, Interpolation interpolation,
                 PlanarImage& out, ImagingScratch& scratch) {
  const ResampleFilter filter = filter_for(interpolation);
  const int channels = src.channels;
  // PIL skips a pass whose mapping is the identity (note its comparison of the
  // box's far edge with the output size).
  const bool need_horizontal =
      out_width != window.width || box.x0 != 0 || box.x1 != static_cast<float>(out_width);
  const bool need_vertical =
      out_height != window.height || box.y0 != 0 || box.y1 != static_cast<float>(out_height);

  // Vertical coefficients first: they decide which source rows the horizontal pass makes.
  std::vector<int32_t> vertical_bounds, vertical_coefficients;
  int vertical_ksize = 0;
  int row_first, row_last;
  if (need_vertical) {
    vertical_ksize = precompute_coefficients(window.height, box.y0, box.y1, out_height, out_rect.y,
                                             out_rect.y + out_rect.height, filter, vertical_bounds,
                                             vertical_coefficients);
    row_first = vertical_bounds[0];
    row_last =
        vertical_bounds[(out_rect.height - 1) * 2] + vertical_bounds[(out_rect.height - 1) * 2 + 1];
  } else {
    row_first = out_rect.y;
    row_last = out_rect.y + out_rect.height;
  }
  const int rows = row_last - row_first;
  const int columns_out = out_rect.width;

  // `rows_by_column[c]`: for each channel, rows x columns_out after the horizontal pass.
  std::vector<uint8_t>& horizontal_rows = scratch.vertical_input;
  horizontal_rows.resize(static_cast<size_t>(channels) * rows * columns_out);
  if (need_horizontal) {
    auto& bounds = scratch.bounds;
    auto& coefficients = scratch.coefficients;
    const int ksize =
        precompute_coefficients(window.width, box.x0, box.x1, out_width, out_rect.x,
                                out_rect.x + out_rect.width, filter, bounds, coefficients);
    const int column_first = bounds[0];
    const int column_last = bounds[(columns_out - 1) * 2] + bounds[(columns_out - 1) * 2 + 1];
    const int columns_in = column_last - column_first;
    // Source columns become rows of a transposed copy, so the convolution runs
    // down contiguous memory for every output column.
    auto& transposed = scratch.transposed;
    transposed.resize(static_cast<size_t>(channels) * columns_in * rows);
    FG_CHECK(window.x + column_first >= src.origin_x && window.y + row_first >= src.origin_y &&
                 window.x + column_last <= src.end_x && window.y + row_last <= src.end_y,
             "resize: the source does not hold the pixels the resize reads");
    const uint8_t* origin = src.at(window.x + column_first, window.y + row_first);
    if (src.interleaved && channels == 3) {
      auto& planes = scratch.image.pixels;  // rows x columns_in per channel
      planes.resize(static_cast<size_t>(3) * rows * columns_in);
      const size_t plane = static_cast<size_t>(rows) * columns_in;
      deinterleave_rgb(origin, src.row_bytes, rows, columns_in, planes.data(),
                       planes.data() + plane, planes.data() + 2 * plane);
      for (int c = 0; c < 3; ++c) {
        transpose_u8(planes.data() + c * plane, columns_in, rows, columns_in,
                     transposed.data() + c * plane, rows);
      }
    } else {
      // One channel (interleaved or planar), or planar channels.
      for (int c = 0; c < channels; ++c) {
        transpose_u8(origin + c * src.channel_step, src.row_bytes, rows, columns_in,
                     transposed.data() + static_cast<size_t>(c) * columns_in * rows, rows);
      }
    }
    auto& horizontal = scratch.horizontal;  // per channel: columns_out x rows
    horizontal.resize(static_cast<size_t>(channels) * columns_out * rows);
    scratch.accumulator.resize(rows);
    for (int c = 0; c < channels; ++c) {
      const uint8_t* t = transposed.data() + static_cast<size_t>(c) * columns_in * rows;
      uint8_t* h = horizontal.data() + static_cast<size_t>(c) * columns_out * rows;
      for (int xx = 0; xx < columns_out; ++xx) {
        const int xmin = bounds[xx * 2] - column_first;
        const int taps = bounds[xx * 2 + 1];
        convolve_rows(t + static_cast<size_t>(xmin) * rows, rows,
                      &coefficients[static_cast<size_t>(xx) * ksize], taps, rows,
                      scratch.accumulator.data(), h + static_cast<size_t>(xx) * rows);
      }
      transpose_u8(h, rows, columns_out, rows,
                   horizontal_rows.data() + static_cast<size_t>(c) * rows * columns_out,
                   columns_out);
    }
  } else {
    // Identity horizontally: the output columns are source columns.
    FG_CHECK(window.x + out_rect.x >= src.origin_x && window.y + row_first >= src.origin_y &&
                 window.x + out_rect.x + columns_out <= src.end_x &&
                 window.y + row_last <= src.end_y,
             "resize: the source does not hold the pixels the resize reads");
    for (int c = 0; c < channels; ++c) {
      uint8_t* dst = horizontal_rows.data() + static_cast<size_t>(c) * rows * columns_out;
      for (int r = 0; r < rows; ++r) {
        const uint8_t* s =
            src.at(window.x + out_rect.x, window.y + row_first + r) + c * src.channel_step;
        uint8_t* d = dst + static_cast<size_t>(r) * columns_out;
        if (src.column_step == 1) {
          std::memcpy(d, s, columns_out);
        } else {
          for (int x = 0; x < columns_out; ++x) d[x] = s[x * src.column_step];
        }
      }
    }
  }

  out.reset(out_rect.width, out_rect.height, channels);
  if (!need_vertical) {
    std::memcpy(out.pixels.data(), horizontal_rows.data(), out.pixels.size());
    return;
  }
  scratch.accumulator.resize(columns_out);
  for (int c = 0; c < channels; ++c) {
    const uint8_t* in = horizontal_rows.data() + static_cast<size_t>(c) * rows * columns_out;
    uint8_t* o = out.plane(c);
    for (int yy = 0; yy < out_rect.height; ++yy) {
      const int ymin = vertical_bounds[yy * 2] - row_first;
      const int taps = vertical_bounds[yy * 2 + 1];
      convolve_rows(in + static_cast<size_t>(ymin) * columns_out, columns_out,
                    &vertical_coefficients[static_cast<size_t>(yy) * vertical_ksize], taps,
                    columns_out, scratch.accumulator.data(),
                    o + static_cast<size_t>(yy) * columns_out);
    }
  }
}

void check_resize_arguments(const PixelRect& window, int out_width, int out_height,
                            const PixelRect& out_rect) {
  FG_CHECK(window.width > 0 && window.height > 0, "resize: empty source window");
  FG_CHECK(out_width > 0 && out_height > 0, "resize: empty output");
  FG_CHECK(out_rect.x >= 0 && out_rect.y >= 0 && out_rect.width > 0 && out_rect.height > 0 &&
               out_rect.x + out_rect.width <= out_width &&
               out_rect.y + out_rect.height <= out_height,
           "resize: output region outside the output");
}

}  // namespace

std::pair<int, int> resample_source_span(int in_size, float box0, float box1, int out_size,
                                         int out_begin, int out_end, Interpolation interpolation) {
  if (interpolation == Interpolation::Nearest) {
    const double a0 = static_cast<double>(box1 - box0) / out_size;
    double xo = box0 + a0 * 0.5;
    int first = in_size, last = 0;
    for (int x = 0; x < out_end; ++x) {
      const int xin = coord(xo);
      if (x >= out_begin && xin >= 0 && xin < in_size) {
        first = std::min(first, xin);
        last = std::max(last, xin + 1);
      }
      xo += a0;
    }
    return {first, std::max(first, last)};
  }
  std::vector<int32_t> bounds, coefficients;
  precompute_coefficients(in_size, box0, box1, out_size, out_begin, out_end,
                          filter_for(interpolation), bounds, coefficients);
  const int n = out_end - out_begin;
  return {bounds[0], bounds[(n - 1) * 2] + bounds[(n - 1) * 2 + 1]};
}

void resize_crop(const uint8_t* source, size_t source_row_bytes, int channels, int origin_x,
                 int origin_y, int source_width, int source_height, const PixelRect& window,
                 const FloatBox& box, int out_width, int out_height, const PixelRect& out_rect,
                 Interpolation interpolation, PlanarImage& out, ImagingScratch& scratch) {
  check_resize_arguments(window, out_width, out_height, out_rect);
  SourceView view{source,
                  origin_x,
                  origin_y,
                  origin_x + source_width,
                  origin_y + source_height,
                  source_row_bytes,
                  static_cast<size_t>(channels),
                  1,
                  channels,
                  true};
  if (interpolation == Interpolation::Nearest) {
    resize_nearest(view, window, box, out_width, out_height, out_rect, out);
    return;
  }
  resize_view(view, window, box, out_width, out_height, out_rect, interpolation, out, scratch);
}

void resize_crop_planar(const PlanarImage& source, const PixelRect& window, const FloatBox& box,
                        int out_width, int out_height, const PixelRect& out_rect,
                        Interpolation interpolation, PlanarImage& out, ImagingScratch& scratch) {
  check_resize_arguments(window, out_width, out_height, out_rect);
  FG_CHECK(&source != &out, "resize: source and output must differ");
  SourceView view{source.plane(0),
                  0,
                  0,
                  source.width,
                  source.height,
                  static_cast<size_t>(source.width),
                  1,
                  source.plane_size(),
                  source.channels,
                  false};
  if (interpolation == Interpolation::Nearest) {
    resize_nearest(view, window, box, out_width, out_height, out_rect, out);
    return;
  }
  resize_view(view, window, box, out_width, out_height, out_rect, interpolation, out, scratch);
}

// ---------------------------------------------------------------------------
// Affine transforms (PIL's Geometry.c).

namespace {

// PIL's transform-time bicubic: a = -1 in Horner form, evaluated in double.
inline double bicubic_point(double v1, double v2, double v3, double v4, double d) {
  const double p1 = v2;
  const double p2 = -v1 + v3;
  const double p3 = 2 * (v1 - v2) + v3 - v4;
  const double p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

inline uint8_t clip_bicubic(double v) {
  if (v <= 0.0) return 0;
  if (v >= 255.0) return 255;
  return static_cast<uint8_t>(v);
}

inline int clamp_index(int v, int size) { return v < 0 ? 0 : (v < size ? v : size - 1); }

inline bool is_integer(double v) { return std::floor(v) == v && std::fabs(v) < 1e9; }

void fill_planes(PlanarImage& out, const uint8_t* fill) {
  for (int c = 0; c < out.channels; ++c) {
    std::memset(out.plane(c), fill ? fill[c] : 0, out.plane_size());
  }
}

#if defined(__AVX2__)
// bicubic_point on 4 lanes, in the same order of operations.
inline __m256d bicubic_point4(__m256d v1, __m256d v2, __m256d v3, __m256d v4, __m256d d) {
  const __m256d p2 = _mm256_sub_pd(v3, v1);
  const __m256d p3 = _mm256_sub_pd(
      _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), _mm256_sub_pd(v1, v2)), v3), v4);
  const __m256d p4 = _mm256_add_pd(_mm256_sub_pd(_mm256_sub_pd(v2, v1), v3), v4);
  __m256d v = _mm256_add_pd(p3, _mm256_mul_pd(d, p4));
  v = _mm256_add_pd(p2, _mm256_mul_pd(d, v));
  return _mm256_add_pd(v2, _mm256_mul_pd(d, v));
}

// clip_bicubic on 4 lanes; the 4 bytes as one word.
inline int32_t clip_bicubic4(__m256d v) {
  v = _mm256_max_pd(_mm256_setzero_pd(), _mm256_min_pd(_mm256_set1_pd(255.0), v));
  const __m128i ints = _mm256_cvttpd_epi32(v);
  return _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packus_epi32(ints, ints), _mm_setzero_si128()));
}

// Lane k holds the k-th byte of each 32-bit lane of `words`, as doubles.
inline __m256d byte_lane(__m128i words, int k) {
  return _mm256_cvtepi32_pd(_mm_and_si128(_mm_srli_epi32(words, 8 * k), _mm_set1_epi32(0xFF)));
}
#endif

// One output line (per channel) of a warp that keeps the other axis on pixel
// centres: out[c][e] = PIL's cubic sample of line[c] at
// pos = ((scale * (e + 0.5)) + line_term) + offset, or fill[c] where pos falls
// outside [0, n). The evaluation order is PIL's, so the AVX2 path (4 pixels per
// step, taken when they read 4 neighbouring windows) gives the same bytes as
// the scalar one. Positions are shared by the channels.
void cubic_lines(const uint8_t* const* line, int channels, int n, double scale, double line_term,
                 double offset, const uint8_t* fill, uint8_t* const* out) {
  auto scalar = [&](int e) {
    const double pos = scale * (e + 0.5) + line_term + offset;
    if (pos < 0.0 || pos >= n) {
      for (int c = 0; c < channels; ++c) out[c][e] = fill[c];
      return;
    }
    const double xs = pos - 0.5;
    int xi = floor_int(xs);
    const double d = xs - xi;
    --xi;
    const int x0 = clamp_index(xi, n), x1 = clamp_index(xi + 1, n);
    const int x2 = clamp_index(xi + 2, n), x3 = clamp_index(xi + 3, n);
    for (int c = 0; c < channels; ++c) {
      const uint8_t* l = line[c];
      out[c][e] = clip_bicubic(bicubic_point(l[x0], l[x1], l[x2], l[x3], d));
    }
  };
  int e = 0;
#if defined(__AVX2__)
  const __m256d vscale = _mm256_set1_pd(scale), vterm = _mm256_set1_pd(line_term);
  const __m256d voffset = _mm256_set1_pd(offset), half = _mm256_set1_pd(0.5);
  const __m256d zero = _mm256_setzero_pd(), vn = _mm256_set1_pd(n);
  const __m128i steps = _mm_setr_epi32(0, 1, 2, 3);
  auto load4 = [](const uint8_t* p) {
    int32_t word;
    std::memcpy(&word, p, 4);
    return _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(word)));
  };
  int32_t fill_word[4] = {0, 0, 0, 0};
  for (int c = 0; c < channels && c < 4; ++c)
    fill_word[c] = static_cast<int32_t>(0x01010101u * fill[c]);
  __m256d centre = _mm256_add_pd(_mm256_setr_pd(0, 1, 2, 3), half);
  const __m256d four = _mm256_set1_pd(4.0);
  for (; e + 4 <= n; e += 4, centre = _mm256_add_pd(centre, four)) {
    const __m256d pos = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(vscale, centre), vterm), voffset);
    const int inside = _mm256_movemask_pd(
        _mm256_and_pd(_mm256_cmp_pd(pos, zero, _CMP_GE_OQ), _mm256_cmp_pd(pos, vn, _CMP_LT_OQ)));
    if (inside == 0) {  // translated out of the image: fill
      for (int c = 0; c < channels; ++c) std::memcpy(out[c] + e, &fill_word[c], 4);
      continue;
    }
    const __m256d xs = _mm256_sub_pd(pos, half);
    const __m256d fl = _mm256_floor_pd(xs);
    const __m128i xi = _mm256_cvttpd_epi32(fl);
    const int first = _mm_cvtsi128_si32(xi);
    // Four neighbouring windows, all inside the line: one load per tap.
    const bool contiguous = inside == 0xF && first >= 1 && first + 6 <= n &&
                            _mm_movemask_epi8(_mm_cmpeq_epi32(
                                xi, _mm_add_epi32(_mm_set1_epi32(first), steps))) == 0xFFFF;
    if (!contiguous) {
      for (int k = 0; k < 4; ++k) scalar(e + k);
      continue;
    }
    const __m256d d = _mm256_sub_pd(xs, fl);
    for (int c = 0; c < channels; ++c) {
      const uint8_t* p = line[c] + first - 1;
      const int32_t word =
          clip_bicubic4(bicubic_point4(load4(p), load4(p + 1), load4(p + 2), load4(p + 3), d));
      std::memcpy(out[c] + e, &word, 4);
    }
  }
#endif
  for (; e < n; ++e) scalar(e);
}

void affine_bicubic(const PlanarImage& src, const AffineMatrix& m, const uint8_t* fill,
                    PlanarImage& out) {
  const auto& a = m.a;
  const int w = src.width, h = src.height;
  // Shears and translations keep one axis on pixel centres; PIL's arithmetic
  // then reduces exactly to a 1-D cubic (d = 0 makes the other pass return its
  // centre sample), evaluated line by line.
  const bool rows_stay = a[3] == 0.0 && a[4] == 1.0 && is_integer(a[5]);
  const bool columns_stay = a[0] == 1.0 && a[1] == 0.0 && is_integer(a[2]);
  FG_CHECK(src.channels <= 4, "affine_transform: at most 4 channels");
  uint8_t fills[4] = {0, 0, 0, 0};
  for (int c = 0; c < src.channels && fill; ++c) fills[c] = fill[c];
  if (rows_stay) {
    for (int y = 0; y < h; ++y) {
      const double yc = y + 0.5;
      const double yin = 0.0 + yc + a[5];
      if (yin < 0.0 || yin >= h) {  // the whole row is fill
        for (int c = 0; c < src.channels; ++c) {
          std::memset(out.plane(c) + static_cast<size_t>(y) * w, fill ? fill[c] : 0, w);
        }
        continue;
      }
      const int row = y + static_cast<int>(a[5]);
      const uint8_t* lines[4];
      uint8_t* outs[4];
      for (int c = 0; c < src.channels; ++c) {
        lines[c] = src.plane(c) + static_cast<size_t>(row) * w;
        outs[c] = out.plane(c) + static_cast<size_t>(y) * w;
      }
      cubic_lines(lines, src.channels, w, a[0], a[1] * yc, a[2], fills, outs);
    }
    return;
  }
  if (columns_stay) {
    // Columns become rows of a transposed copy, so the same line kernel applies.
    thread_local std::vector<uint8_t> transposed_in, transposed_out;
    const size_t plane = static_cast<size_t>(w) * h;
    transposed_in.resize(plane * src.channels);
    transposed_out.resize(plane * src.channels);
    for (int c = 0; c < src.channels; ++c) {
      transpose_u8(src.plane(c), w, h, w, transposed_in.data() + c * plane, h);
    }
    for (int x = 0; x < w; ++x) {
      const double xc = x + 0.5;
      const double xin = xc + 0.0 + a[2];
      const uint8_t* lines[4];
      uint8_t* outs[4];
      for (int c = 0; c < src.channels; ++c) {
        outs[c] = transposed_out.data() + c * plane + static_cast<size_t>(x) * h;
        lines[c] = transposed_in.data() + c * plane +
                   static_cast<size_t>(std::clamp(x + static_cast<int>(a[2]), 0, w - 1)) * h;
      }
      if (xin < 0.0 || xin >= w) {
        for (int c = 0; c < src.channels; ++c) std::memset(outs[c], fills[c], h);
        continue;
      }
      cubic_lines(lines, src.channels, h, a[4], a[3] * xc, a[5], fills, outs);
    }
    for (int c = 0; c < src.channels; ++c) {
      transpose_u8(transposed_out.data() + c * plane, h, w, h, out.plane(c), w);
    }
    return;
  }
  fill_planes(out, fill);
  // The general case (rotations): bicubic_filter8's arithmetic, with the
  // neighbourhood located once per pixel for all channels.
  auto pixel = [&](int x, int y) {
    const double xc = x + 0.5, yc = y + 0.5;
    double xin = a[0] * xc + a[1] * yc + a[2];
    double yin = a[3] * xc + a[4] * yc + a[5];
    if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) return;  // keeps the fill
    xin -= 0.5;
    yin -= 0.5;
    int xi = floor_int(xin), yi = floor_int(yin);
    const double dx = xin - xi, dy = yin - yi;
    --xi;
    --yi;
    const int x0 = clamp_index(xi, w), x1 = clamp_index(xi + 1, w);
    const int x2 = clamp_index(xi + 2, w), x3 = clamp_index(xi + 3, w);
    const size_t r0 = static_cast<size_t>(clamp_index(yi, h)) * w;
    const size_t r1 = static_cast<size_t>(clamp_index(yi + 1, h)) * w;
    const size_t r2 = static_cast<size_t>(clamp_index(yi + 2, h)) * w;
    const size_t r3 = static_cast<size_t>(clamp_index(yi + 3, h)) * w;
    const size_t o = static_cast<size_t>(y) * w + x;
    for (int c = 0; c < src.channels; ++c) {
      const uint8_t* in = src.plane(c);
      const double v1 = bicubic_point(in[r0 + x0], in[r0 + x1], in[r0 + x2], in[r0 + x3], dx);
      const double v2 = bicubic_point(in[r1 + x0], in[r1 + x1], in[r1 + x2], in[r1 + x3], dx);
      const double v3 = bicubic_point(in[r2 + x0], in[r2 + x1], in[r2 + x2], in[r2 + x3], dx);
      const double v4 = bicubic_point(in[r3 + x0], in[r3 + x1], in[r3 + x2], in[r3 + x3], dx);
      out.plane(c)[o] = clip_bicubic(bicubic_point(v1, v2, v3, v4, dy));
    }
  };
  for (int y = 0; y < h; ++y) {
    int x = 0;
#if defined(__AVX2__)
    // Four output pixels per step. Each needs 4 consecutive bytes from each of
    // 4 rows; one 32-bit gather per row fetches them for all four pixels.
    const double yc = y + 0.5;
    const __m256d half = _mm256_set1_pd(0.5), zero = _mm256_setzero_pd();
    const __m256d vw = _mm256_set1_pd(w), vh = _mm256_set1_pd(h);
    const __m256d a0 = _mm256_set1_pd(a[0]), a3 = _mm256_set1_pd(a[3]);
    const __m256d x_term = _mm256_set1_pd(a[1] * yc), y_term = _mm256_set1_pd(a[4] * yc);
    const __m256d a2 = _mm256_set1_pd(a[2]), a5 = _mm256_set1_pd(a[5]);
    for (; x + 4 <= w; x += 4) {
      const __m256d xc = _mm256_add_pd(_mm256_setr_pd(x, x + 1, x + 2, x + 3), half);
      const __m256d xin = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(a0, xc), x_term), a2);
      const __m256d yin = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(a3, xc), y_term), a5);
      const int inside = _mm256_movemask_pd(_mm256_and_pd(
          _mm256_and_pd(_mm256_cmp_pd(xin, zero, _CMP_GE_OQ), _mm256_cmp_pd(xin, vw, _CMP_LT_OQ)),
          _mm256_and_pd(_mm256_cmp_pd(yin, zero, _CMP_GE_OQ), _mm256_cmp_pd(yin, vh, _CMP_LT_OQ))));
      if (inside == 0) continue;
      const __m256d xs = _mm256_sub_pd(xin, half), ys = _mm256_sub_pd(yin, half);
      const __m256d fx = _mm256_floor_pd(xs), fy = _mm256_floor_pd(ys);
      const __m128i xi = _mm_sub_epi32(_mm256_cvttpd_epi32(fx), _mm_set1_epi32(1));
      const __m128i yi = _mm_sub_epi32(_mm256_cvttpd_epi32(fy), _mm_set1_epi32(1));
      // Pixels near the left/right border need clamped columns: the scalar path.
      const bool columns_inside =
          _mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi32(xi, _mm_setzero_si128()),
                                         _mm_cmpgt_epi32(xi, _mm_set1_epi32(w - 4)))) == 0;
      if (inside != 0xF || !columns_inside) {
        for (int k = 0; k < 4; ++k) pixel(x + k, y);
        continue;
      }
      const __m256d dx = _mm256_sub_pd(xs, fx), dy = _mm256_sub_pd(ys, fy);
      __m128i offsets[4];
      for (int k = 0; k < 4; ++k) {
        const __m128i row =
            _mm_min_epi32(_mm_max_epi32(_mm_add_epi32(yi, _mm_set1_epi32(k)), _mm_setzero_si128()),
                          _mm_set1_epi32(h - 1));
        offsets[k] = _mm_add_epi32(_mm_mullo_epi32(row, _mm_set1_epi32(w)), xi);
      }
      const size_t o = static_cast<size_t>(y) * w + x;
      for (int c = 0; c < src.channels; ++c) {
        const int* base = reinterpret_cast<const int*>(src.plane(c));
        __m256d v[4];
        for (int k = 0; k < 4; ++k) {
          const __m128i words = _mm_i32gather_epi32(base, offsets[k], 1);
          v[k] = bicubic_point4(byte_lane(words, 0), byte_lane(words, 1), byte_lane(words, 2),
                                byte_lane(words, 3), dx);
        }
        const int32_t word = clip_bicubic4(bicubic_point4(v[0], v[1], v[2], v[3], dy));
        std::memcpy(out.plane(c) + o, &word, 4);
      }
    }
#endif
    for (; x < w; ++x) pixel(x, y);
  }
}

void affine_bilinear(const PlanarImage& src, const AffineMatrix& m, PlanarImage& out) {
  const auto& a = m.a;
  const int w = src.width, h = src.height;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const double xc = x + 0.5, yc = y + 0.5;
      double xin = a[0] * xc + a[1] * yc + a[2];
      double yin = a[3] * xc + a[4] * yc + a[5];
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) continue;
      xin -= 0.5;
      yin -= 0.5;
      const int xi = floor_int(xin), yi = floor_int(yin);
      const double dx = xin - xi, dy = yin - yi;
      const int x0 = clamp_index(xi, w), x1 = clamp_index(xi + 1, w);
      for (int c = 0; c < src.channels; ++c) {
        const uint8_t* plane = src.plane(c);
        const uint8_t* in = plane + static_cast<size_t>(clamp_index(yi, h)) * w;
        double v1 = in[x0] + (in[x1] - in[x0]) * dx;
        double v2 = v1;
        if (yi + 1 >= 0 && yi + 1 < h) {
          const uint8_t* in2 = plane + static_cast<size_t>(yi + 1) * w;
          v2 = in2[x0] + (in2[x1] - in2[x0]) * dx;
        }
        v1 = v1 + (v2 - v1) * dy;
        out.plane(c)[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>(v1);
      }
    }
  }
}

// PIL's nearest affine engines: a pure scale uses double accumulation, anything
// else 16.16 fixed point when the coordinates fit, double otherwise.
void affine_nearest(const PlanarImage& src, const AffineMatrix& m, PlanarImage& out) {
  const auto& a = m.a;
  const int w = src.width, h = src.height;
  if (a[1] == 0 && a[3] == 0) {
    std::vector<int> column_of(w, -1);
    double xo = a[2] + a[0] * 0.5;
    for (int x = 0; x < w; ++x) {
      const int xin = coord(xo);
      if (xin >= 0 && xin < w) column_of[x] = xin;
      xo += a[0];
    }
    double yo = a[5] + a[4] * 0.5;
    for (int y = 0; y < h; ++y) {
      const int yi = coord(yo);
      yo += a[4];
      if (yi < 0 || yi >= h) continue;
      for (int c = 0; c < src.channels; ++c) {
        const uint8_t* in = src.plane(c) + static_cast<size_t>(yi) * w;
        uint8_t* o = out.plane(c) + static_cast<size_t>(y) * w;
        for (int x = 0; x < w; ++x) {
          if (column_of[x] >= 0) o[x] = in[column_of[x]];
        }
      }
    }
    return;
  }
  auto fits_fixed = [&](int x, int y) {
    return std::fabs(x * a[0] + y * a[1] + a[2]) < 32768.0 &&
           std::fabs(x * a[3] + y * a[4] + a[5]) < 32768.0;
  };
  if (fits_fixed(0, 0) && fits_fixed(w, h) && fits_fixed(0, h) && fits_fixed(w, 0)) {
    auto fix = [](double v) { return floor_int(v * 65536.0 + 0.5); };
    const int a0 = fix(a[0]), a1 = fix(a[1]), a3 = fix(a[3]), a4 = fix(a[4]);
    int a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
    int a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
    for (int y = 0; y < h; ++y) {
      int xx = a2, yy = a5;
      for (int x = 0; x < w; ++x) {
        const int xin = xx >> 16;
        if (xin >= 0 && xin < w) {
          const int yin = yy >> 16;
          if (yin >= 0 && yin < h) {
            for (int c = 0; c < src.channels; ++c) {
              out.plane(c)[static_cast<size_t>(y) * w + x] =
                  src.plane(c)[static_cast<size_t>(yin) * w + xin];
            }
          }
        }
        xx += a0;
        yy += a3;
      }
      a2 += a1;
      a5 += a4;
    }
    return;
  }
  double xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
  double yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
  for (int y = 0; y < h; ++y) {
    double xx = xo, yy = yo;
    for (int x = 0; x < w; ++x) {
      const int xin = coord(xx);
      if (xin >= 0 && xin < w) {
        const int yin = coord(yy);
        if (yin >= 0 && yin < h) {
          for (int c = 0; c < src.channels; ++c) {
            out.plane(c)[static_cast<size_t>(y) * w + x] =
                src.plane(c)[static_cast<size_t>(yin) * w + xin];
          }
        }
      }
      xx += a[0];
      yy += a[3];
    }
    xo += a[1];
    yo += a[4];
  }
}

}  // namespace

void affine_transform(const PlanarImage& source, const AffineMatrix& matrix,
                      Interpolation interpolation, const uint8_t* fill, PlanarImage& out) {
  FG_CHECK(&source != &out, "affine_transform: source and output must differ");
  out.reset(source.width, source.height, source.channels);
  if (interpolation != Interpolation::Bicubic) fill_planes(out, fill);
  switch (interpolation) {
    case Interpolation::Nearest:
      affine_nearest(source, matrix, out);
      break;
    case Interpolation::Bilinear:
      affine_bilinear(source, matrix, out);
      break;
    case Interpolation::Bicubic:
      affine_bicubic(source, matrix, fill, out);
      break;
    default:
      FG_CHECK(false, "affine transforms support nearest, bilinear and bicubic (as PIL), not ",
               interpolation_name(interpolation));
  }
}

std::pair<int, int> resize_shorter_side(int width, int height, int shorter) {
  const bool wide = width > height;
  const int new_long = static_cast<int>(static_cast<double>(shorter) * (wide ? width : height) /
                                        (wide ? height : width));
  return wide ? std::pair<int, int>{new_long, shorter} : std::pair<int, int>{shorter, new_long};
}

double python_round(double x, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, x);
  return std::strtod(text, nullptr);
}

double python_fmod(double x, double y) {
  double mod = std::fmod(x, y);
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) mod += y;
  } else {
    mod = std::copysign(0.0, y);
  }
  return mod;
}

AffineMatrix rotation_matrix(double degrees, int width, int height) {
  const double angle_mod = python_fmod(degrees, 360.0);
  const double angle = -(angle_mod * (M_PI / 180.0));
  AffineMatrix m;
  auto& a = m.a;
  a[0] = python_round(std::cos(angle), 15);
  a[1] = python_round(std::sin(angle), 15);
  a[2] = 0.0;
  a[3] = python_round(-std::sin(angle), 15);
  a[4] = python_round(std::cos(angle), 15);
  a[5] = 0.0;
  const double cx = width / 2.0, cy = height / 2.0;
  const double tx = -cx - 0, ty = -cy - 0;
  const double m2 = a[0] * tx + a[1] * ty + a[2];
  const double m5 = a[3] * tx + a[4] * ty + a[5];
  a[2] = m2 + cx;
  a[5] = m5 + cy;
  return m;
}

void rotate(const PlanarImage& source, double degrees, Interpolation interpolation,
            const uint8_t* fill, PlanarImage& out) {
  FG_CHECK(&source != &out, "rotate: source and output must differ");
  const double angle = python_fmod(degrees, 360.0);
  const int w = source.width, h = source.height;
  if (angle == 0) {
    out = source;
    return;
  }
  if (angle == 180 || ((angle == 90 || angle == 270) && w == h)) {
    out.reset(w, h, source.channels);
    for (int c = 0; c < source.channels; ++c) {
      const uint8_t* in = source.plane(c);
      uint8_t* o = out.plane(c);
      for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
          const uint8_t v = in[static_cast<size_t>(y) * w + x];
          if (angle == 180) {
            o[static_cast<size_t>(h - 1 - y) * w + (w - 1 - x)] = v;
          } else if (angle == 90) {  // counter-clockwise
            o[static_cast<size_t>(w - 1 - x) * w + y] = v;
          } else {
            o[static_cast<size_t>(x) * w + (h - 1 - y)] = v;
          }
        }
      }
    }
    return;
  }
  affine_transform(source, rotation_matrix(degrees, w, h), interpolation, fill, out);
}

void flip_horizontal(PlanarImage& image) {
  for (int c = 0; c < image.channels; ++c) {
    for (int y = 0; y < image.height; ++y) {
      uint8_t* row = image.plane(c) + static_cast<size_t>(y) * image.width;
      std::reverse(row, row + image.width);
    }
  }
}

// ---------------------------------------------------------------------------
// Colour operations.

void apply_lut(PlanarImage& image, const uint8_t* lut) {
  for (uint8_t& v : image.pixels) v = lut[v];
}

namespace {

void histogram(const uint8_t* data, size_t n, int64_t* counts) {
  std::fill(counts, counts + 256, 0);
  for (size_t i = 0; i < n; ++i) ++counts[data[i]];
}

void apply_plane_lut(uint8_t* data, size_t n, const uint8_t* lut) {
  for (size_t i = 0; i < n; ++i) data[i] = lut[data[i]];
}

// Image.blend(degenerate, image, alpha) with alpha rounded to float as PIL's C
// side receives it; writes into image.
void blend_into(uint8_t* image, const uint8_t* degenerate, size_t n, double factor) {
  const float alpha = static_cast<float>(factor);
  if (alpha == 0.0f) {
    std::memcpy(image, degenerate, n);
    return;
  }
  if (alpha == 1.0f) return;
  if (alpha >= 0 && alpha <= 1.0f) {
    for (size_t i = 0; i < n; ++i) {
      const int d = degenerate[i];
      image[i] =
          static_cast<uint8_t>(static_cast<float>(d) + alpha * static_cast<float>(image[i] - d));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const int d = degenerate[i];
      const float t =
          static_cast<float>(d) + alpha * static_cast<float>(static_cast<int>(image[i]) - d);
      image[i] = t <= 0.0f ? 0 : (t >= 255.0f ? 255 : static_cast<uint8_t>(t));
    }
  }
}

void blend_constant_into(uint8_t* image, uint8_t degenerate, size_t n, double factor) {
  const float alpha = static_cast<float>(factor);
  if (alpha == 0.0f) {
    std::memset(image, degenerate, n);
    return;
  }
  if (alpha == 1.0f) return;
  const int d = degenerate;
  if (alpha >= 0 && alpha <= 1.0f) {
    for (size_t i = 0; i < n; ++i) {
      image[i] =
          static_cast<uint8_t>(static_cast<float>(d) + alpha * static_cast<float>(image[i] - d));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const float t = static_cast<float>(d) + alpha * static_cast<float>(image[i] - d);
      image[i] = t <= 0.0f ? 0 : (t >= 255.0f ? 255 : static_cast<uint8_t>(t));
    }
  }
}

}  // namespace

void autocontrast(PlanarImage& image) {
  int64_t h[256];
  uint8_t lut[256];
  for (int c = 0; c < image.channels; ++c) {
    histogram(image.plane(c), image.plane_size(), h);
    int lo = 0, hi = 255;
    for (lo = 0; lo < 255 && !h[lo]; ++lo) {
    }
    for (hi = 255; hi > 0 && !h[hi]; --hi) {
    }
    if (hi <= lo) continue;  // identity
    const double scale = 255.0 / (hi - lo);
    const double offset = -lo * scale;
    for (int ix = 0; ix < 256; ++ix) {
      int v = static_cast<int>(ix * scale + offset);
      lut[ix] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
    apply_plane_lut(image.plane(c), image.plane_size(), lut);
  }
}

void equalize(PlanarImage& image) {
  int64_t h[256];
  uint8_t lut[256];
  for (int c = 0; c < image.channels; ++c) {
    histogram(image.plane(c), image.plane_size(), h);
    int64_t total = 0, last_nonzero = 0, nonzero_bins = 0;
    for (int i = 0; i < 256; ++i) {
      if (h[i]) {
        total += h[i];
        last_nonzero = h[i];
        ++nonzero_bins;
      }
    }
    if (nonzero_bins <= 1) continue;
    const int64_t step = (total - last_nonzero) / 255;
    if (step == 0) continue;
    int64_t n = step / 2;
    for (int i = 0; i < 256; ++i) {
      const int64_t v = n / step;
      lut[i] = static_cast<uint8_t>(v > 255 ? 255 : v);
      n += h[i];
    }
    apply_plane_lut(image.plane(c), image.plane_size(), lut);
  }
}

void invert(PlanarImage& image) {
  for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(255 - v);
}

void solarize(PlanarImage& image, int threshold) {
  uint8_t lut[256];
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i < threshold ? i : 255 - i);
  apply_lut(image, lut);
}

void solarize_add(PlanarImage& image, int add, int threshold) {
  uint8_t lut[256];
  for (int i = 0; i < 256; ++i) {
    lut[i] = static_cast<uint8_t>(i < threshold ? std::min(255, i + add) : i);
  }
  apply_lut(image, lut);
}

void posterize(PlanarImage& image, int bits) {
  if (bits >= 8) return;
  const int mask = ~((1 << (8 - bits)) - 1);
  uint8_t lut[256];
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i & mask);
  apply_lut(image, lut);
}

void rgb_to_luma(const PlanarImage& rgb, uint8_t* luma) {
  FG_CHECK(rgb.channels == 3, "rgb_to_luma: needs 3 channels");
  const uint8_t* r = rgb.plane(0);
  const uint8_t* g = rgb.plane(1);
  const uint8_t* b = rgb.plane(2);
  const size_t n = rgb.plane_size();
  for (size_t i = 0; i < n; ++i) {
    luma[i] = static_cast<uint8_t>((r[i] * 19595 + g[i] * 38470 + b[i] * 7471 + 0x8000) >> 16);
  }
}

void enhance_color(PlanarImage& image, double factor, ImagingScratch& scratch) {
  if (image.channels != 3) return;  // a grey image has no colour to change
  auto& luma = scratch.horizontal;
  luma.resize(image.plane_size());
  rgb_to_luma(image, luma.data());
  for (int c = 0; c < 3; ++c) blend_into(image.plane(c), luma.data(), image.plane_size(), factor);
}

void enhance_contrast(PlanarImage& image, double factor, ImagingScratch& scratch) {
  const uint8_t* luma_data;
  auto& luma = scratch.horizontal;
  if (image.channels == 3) {
    luma.resize(image.plane_size());
    rgb_to_luma(image, luma.data());
    luma_data = luma.data();
  } else {
    luma_data = image.plane(0);
  }
  int64_t h[256];
  histogram(luma_data, image.plane_size(), h);
  double weighted = 0, count = 0;
  for (int i = 0; i < 256; ++i) {
    weighted += static_cast<double>(i) * h[i];
    count += h[i];
  }
  const int mean = static_cast<int>(weighted / count + 0.5);
  for (int c = 0; c < image.channels; ++c) {
    blend_constant_into(image.plane(c), static_cast<uint8_t>(mean), image.plane_size(), factor);
  }
}

void enhance_brightness(PlanarImage& image, double factor) {
  for (int c = 0; c < image.channels; ++c) {
    blend_constant_into(image.plane(c), 0, image.plane_size(), factor);
  }
}

void enhance_sharpness(PlanarImage& image, double factor, ImagingScratch& scratch) {
  // ImageFilter.SMOOTH: 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 in float, the
  // image border copied unchanged, rounded by a +0.5 offset and truncated.
  const float k_edge = 1.0f / 13.0f;
  const float k_centre = 5.0f / 13.0f;
  const int w = image.width, h = image.height;
  auto& smooth = scratch.horizontal;
  smooth.resize(image.plane_size());
  for (int c = 0; c < image.channels; ++c) {
    const uint8_t* in = image.plane(c);
    std::memcpy(smooth.data(), in, image.plane_size());
    if (w >= 3 && h >= 3) {
      for (int y = 1; y < h - 1; ++y) {
        const uint8_t* above = in + static_cast<size_t>(y - 1) * w;
        const uint8_t* row = in + static_cast<size_t>(y) * w;
        const uint8_t* below = in + static_cast<size_t>(y + 1) * w;
        uint8_t* o = smooth.data() + static_cast<size_t>(y) * w;
        for (int x = 1; x < w - 1; ++x) {
          float ss = 0.5f;
          ss += static_cast<float>(below[x - 1]) * k_edge + static_cast<float>(below[x]) * k_edge +
                static_cast<float>(below[x + 1]) * k_edge;
          ss += static_cast<float>(row[x - 1]) * k_edge + static_cast<float>(row[x]) * k_centre +
                static_cast<float>(row[x + 1]) * k_edge;
          ss += static_cast<float>(above[x - 1]) * k_edge + static_cast<float>(above[x]) * k_edge +
                static_cast<float>(above[x + 1]) * k_edge;
          o[x] = ss <= 0.0f ? 0 : (ss >= 255.0f ? 255 : static_cast<uint8_t>(ss));
        }
      }
    }
    blend_into(image.plane(c), smooth.data(), image.plane_size(), factor);
  }
}

}  // namespace fg::data
