// A (B, H, L, D) attention operand for the kernel tests of this folder,
// stored as the kernels read it.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda_emu.h"
#include "engine/cuda/attention_params.cuh"
#include "engine/cuda/device_utils.cuh"
#include "engine/tensor.h"

namespace fg_emu_test {

using fg::cuda::convert;

// A (B, H, L, D) operand of element type T stored as the heads of a
// (B, L, H, D + pad) buffer (row stride H * (D + pad), as MultiheadAttention's
// head views are strided), its values also kept as doubles in (B, H, L, D)
// order. The padding holds NaN, which the kernels must neither read into a
// result nor overwrite.
template <class T>
struct Operand {
  int64_t b = 0, h = 0, l = 0, d = 0, pad = 0;
  std::vector<T> storage;
  std::vector<double> values;
  fg::cuda::HeadLayout layout;

  Operand(int64_t b_, int64_t h_, int64_t l_, int64_t d_, int64_t pad_)
      : b(b_), h(h_), l(l_), d(d_), pad(pad_) {
    const int64_t row = h * (d + pad);
    layout = fg::cuda::HeadLayout{l * row, d + pad, row};
    storage.assign(static_cast<size_t>(b * l * row), convert<T>(NAN));
    values.assign(static_cast<size_t>(b * h * l * d), 0.0);
  }
  size_t at(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return static_cast<size_t>(bi * layout.batch + hi * layout.head + li * layout.row + di);
  }
  size_t flat(int64_t bi, int64_t hi, int64_t li, int64_t di) const {
    return static_cast<size_t>(((bi * h + hi) * l + li) * d + di);
  }
  template <class F>
  void each(F f) const {
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t li = 0; li < l; ++li)
          for (int64_t di = 0; di < d; ++di) f(at(bi, hi, li, di), flat(bi, hi, li, di));
  }
  void fill(std::mt19937_64& rng) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    each([&](size_t s, size_t f) {
      storage[s] = convert<T>(dist(rng));
      values[f] = convert<double>(storage[s]);
    });
  }
  void clear() {
    each([&](size_t s, size_t) { storage[s] = convert<T>(NAN); });
  }
  std::vector<double> read() const {
    std::vector<double> out(values.size());
    each([&](size_t s, size_t f) { out[f] = convert<double>(storage[s]); });
    return out;
  }
  bool padding_untouched() const {
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t li = 0; li < l; ++li)
        for (int64_t hi = 0; hi < h; ++hi)
          for (int64_t di = d; di < d + pad; ++di)
            if (!std::isnan(convert<float>(storage[at(bi, hi, li, di)]))) return false;
    return true;
  }
  fg::Tensor tensor() const { return fg::Tensor::from_vector(values, {b, h, l, d}); }
};

}  // namespace fg_emu_test
