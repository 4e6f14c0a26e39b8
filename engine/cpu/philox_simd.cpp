#include "engine/cpu/philox_simd.h"

#include "engine/philox.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fg::cpu {

#if defined(__AVX2__)

void philox4x32_8(uint64_t first, uint64_t offset, uint64_t seed, uint32_t out[32]) {
  // Lane l holds block first + l: the counter's low word, and its high word plus
  // the carry when the low word wraps.
  const uint32_t low = static_cast<uint32_t>(first), high = static_cast<uint32_t>(first >> 32);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i base = _mm256_set1_epi32(static_cast<int>(low));
  __m256i c0 = _mm256_add_epi32(base, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  // Unsigned low + l < low where it wrapped: compare with the sign bits flipped (-1 there).
  const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(c0, sign));
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(high)), wrapped);
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  __m256i k0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed)));
  __m256i k1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed >> 32)));
  const __m256i w0 = _mm256_set1_epi32(static_cast<int>(0x9E3779B9u));
  const __m256i w1 = _mm256_set1_epi32(static_cast<int>(0xBB67AE85u));
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    // 32x32 -> 64-bit products: even lanes directly, odd lanes shifted down.
    const __m256i e0 = _mm256_mul_epu32(c0, m0), o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
    const __m256i e1 = _mm256_mul_epu32(c2, m1), o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
    const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
    c1 = lo1;
    c3 = lo0;
    k0 = _mm256_add_epi32(k0, w0);
    k1 = _mm256_add_epi32(k1, w1);
  }
  // Word-major (c0..c3, lanes 0..7) to block-major (block l: words 0..3).
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i b04 = _mm256_unpacklo_epi64(t0, t2), b15 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i b26 = _mm256_unpacklo_epi64(t1, t3), b37 = _mm256_unpackhi_epi64(t1, t3);
  auto* dst = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(dst + 0, _mm256_permute2x128_si256(b04, b15, 0x20));
  _mm256_storeu_si256(dst + 1, _mm256_permute2x128_si256(b26, b37, 0x20));
  _mm256_storeu_si256(dst + 2, _mm256_permute2x128_si256(b04, b15, 0x31));
  _mm256_storeu_si256(dst + 3, _mm256_permute2x128_si256(b26, b37, 0x31));
}

#else

void philox4x32_8(uint64_t first, uint64_t offset, uint64_t seed, uint32_t out[32]) {
  for (int l = 0; l < 8; ++l) {
    const Philox4 r = philox4x32(first + static_cast<uint64_t>(l), offset, seed);
    for (int w = 0; w < 4; ++w) out[4 * l + w] = r.v[w];
  }
}

#endif

}  // namespace fg::cpu
