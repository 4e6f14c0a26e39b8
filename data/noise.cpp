// Normal noise for RandomErasing. Built with -ffast-math (see CMakeLists.txt)
// so that the Box-Muller transform's log, sin and cos vectorize through glibc's
// vector math library: the noise's last bits are no contract, its
// distribution and its dependence on (seed, offset) only are.
#include <cmath>
#include <vector>

#include "data/transforms.h"
#include "engine/philox.h"

namespace fg::data {

void fill_normal(float* out, size_t n, uint64_t seed, uint64_t offset) {
  const size_t pairs = (n + 1) / 2;
  thread_local std::vector<float> u1, u2, radius, angle;
  u1.resize(pairs);
  u2.resize(pairs);
  radius.resize(pairs);
  angle.resize(pairs);
  // Two (u1, u2) pairs per Philox block; u1 in (0, 1] keeps the log finite.
  for (size_t block = 0; 2 * block < pairs; ++block) {
    const Philox4 r = philox4x32(block, offset, seed);
    for (size_t k = 0; k < 2 && 2 * block + k < pairs; ++k) {
      u1[2 * block + k] = static_cast<float>((r.v[2 * k] >> 8) + 1u) * (1.0f / 16777216.0f);
      u2[2 * block + k] = static_cast<float>(r.v[2 * k + 1] >> 8) * (1.0f / 16777216.0f);
    }
  }
  for (size_t k = 0; k < pairs; ++k) {
    radius[k] = std::sqrt(-2.0f * std::log(u1[k]));
    angle[k] = 6.2831853071795865f * u2[k];
  }
  // Cosines fill the first half of the pairs' slots, sines the second.
  const size_t half = n / 2;
  for (size_t k = 0; k < half; ++k) out[2 * k] = radius[k] * std::cos(angle[k]);
  for (size_t k = 0; k < half; ++k) out[2 * k + 1] = radius[k] * std::sin(angle[k]);
  if (n % 2) out[n - 1] = radius[pairs - 1] * std::cos(angle[pairs - 1]);
}

}  // namespace fg::data
