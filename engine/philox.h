// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
// Shared by the CPU and CUDA backends so that the same (seed, offset) gives the
// same numbers on both. Element i of a draw uses counter (i / 4, offset) and
// the seed as key, and takes word i % 4 of the block.
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace fg {

struct Philox4 {
  uint32_t v[4];
};

FG_HOST_DEVICE Philox4 philox4x32(uint64_t block, uint64_t offset, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// A Philox word as a uniform in [0, 1) with 24 random bits.
FG_HOST_DEVICE float philox_word_uniform(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// The same in (0, 1] (a logarithm's argument, as Box-Muller's first uniform).
FG_HOST_DEVICE float philox_word_uniform_nonzero(uint32_t word) {
  return static_cast<float>((word >> 8) + 1u) * (1.0f / 16777216.0f);
}

// The offset a kernel draws with: `offset` as the op reserved it, plus, inside
// a captured CUDA graph, the shift the replay wrote at `base` (the distance
// its generator moved since the capture; engine/cuda_graph.h). base is null
// outside graphs.
FG_HOST_DEVICE uint64_t philox_offset_at(uint64_t offset, const uint64_t* base) {
  return base ? offset + *base : offset;
}

// Whether dropout with probability p keeps the element `word` was drawn for
// (every dropout of fgmoe, on every device, decides this way).
FG_HOST_DEVICE bool philox_keeps(uint32_t word, float p) { return philox_word_uniform(word) >= p; }

// Uniform in [0, 1) with 24 random bits.
FG_HOST_DEVICE float philox_uniform(uint64_t i, uint64_t offset, uint64_t seed) {
  const Philox4 r = philox4x32(i >> 2, offset, seed);
  return philox_word_uniform(r.v[i & 3]);
}

// Standard normal by Box-Muller over the word pair (0,1) or (2,3) of element i's block.
FG_HOST_DEVICE float philox_normal(uint64_t i, uint64_t offset, uint64_t seed) {
  const Philox4 r = philox4x32(i >> 2, offset, seed);
  const unsigned pair = static_cast<unsigned>(i & 2);
  // u1 in (0, 1] so the log is finite.
  const float u1 = philox_word_uniform_nonzero(r.v[pair]);
  const float u2 = philox_word_uniform(r.v[pair + 1]);
#if defined(__CUDA_ARCH__)
  const float radius = sqrtf(-2.0f * logf(u1));
  float s, c;
  sincospif(2.0f * u2, &s, &c);
#else
  const float radius = __builtin_sqrtf(-2.0f * __builtin_logf(u1));
  const float angle = 6.283185307179586f * u2;
  const float s = __builtin_sinf(angle), c = __builtin_cosf(angle);
#endif
  return (i & 1) ? radius * s : radius * c;
}

}  // namespace fg
