// PyTorch's bicubic interpolation weights and source coordinates, shared by
// the CPU and CUDA bicubic resizes so that both compute the same numbers.
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace fg {

// The four cubic convolution weights (A = -0.75) of the taps at -1, 0, 1, 2
// for a fractional position t in [0, 1).
template <class T>
FG_HOST_DEVICE void cubic_coefficients(T t, T* coeffs) {
  const T A = T(-0.75);
  auto near = [A](T x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };
  auto far = [A](T x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };
  coeffs[0] = far(t + 1);
  coeffs[1] = near(t);
  coeffs[2] = near(1 - t);
  coeffs[3] = far(2 - t);
}

// The source coordinate of output index dst along a side of in_size -> out_size.
template <class T>
FG_HOST_DEVICE T source_index(int64_t dst, int64_t in_size, int64_t out_size, bool align_corners) {
  if (align_corners) {
    const T scale =
        out_size > 1 ? static_cast<T>(in_size - 1) / static_cast<T>(out_size - 1) : T(0);
    return scale * static_cast<T>(dst);
  }
  const T scale = static_cast<T>(in_size) / static_cast<T>(out_size);
  return scale * (static_cast<T>(dst) + T(0.5)) - T(0.5);
}

}  // namespace fg
