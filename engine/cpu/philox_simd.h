// Eight consecutive Philox4x32-10 blocks at once on the CPU: the same words as
// philox4x32 (engine/philox.h), for the dropout masks and random fills.
#pragma once

#include <cstdint>

namespace fg::cpu {

// out[4 * l + w] = philox4x32(first + l, offset, seed).v[w] for l in [0, 8).
// AVX2 when the build targets it (eight blocks in the lanes of four vectors),
// the scalar function otherwise.
void philox4x32_8(uint64_t first, uint64_t offset, uint64_t seed, uint32_t out[32]);

}  // namespace fg::cpu
