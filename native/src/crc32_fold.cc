// CRC-32 by folding (see crc32_fold.h). The method is the one Intel describes for PCLMULQDQ ("Fast
// CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction", 2009): 128-bit lanes of the
// message are folded forward by multiplying with x^k mod P for the fold distance, then the last
// 128 bits are reduced to 32 (Barrett reduction). The constants are those values for zlib's
// bit-reflected polynomial 0xEDB88320, shifted left by one as the reflected domain needs.
#include "crc32_fold.h"

#include <zlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace famfs_native {
namespace {

#if defined(__x86_64__)
// x^(4*128+32) and x^(4*128-32) mod P: fold a lane forward by 512 bits.
constexpr long long kFold512Lo = 0x154442bd4LL, kFold512Hi = 0x1c6e41596LL;
// x^(128+32) and x^(128-32) mod P: fold forward by 128 bits.
constexpr long long kFold128Lo = 0x1751997d0LL, kFold128Hi = 0x0ccaa009eLL;
// x^64 mod P: 64 bits to 32 + 64.
constexpr long long kFold64 = 0x163cd6124LL;
// P itself and floor(x^64 / P): Barrett reduction.
constexpr long long kPoly = 0x1db710641LL, kBarrettMu = 0x1f7011641LL;

__attribute__((target("pclmul,sse4.1"))) inline __m128i Fold(__m128i x, __m128i k, __m128i data) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), data);
}

__attribute__((target("pclmul,sse4.1"))) inline __m128i Load(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// The raw (not inverted) CRC register after `len` bytes; len >= 64 and a multiple of 16.
__attribute__((target("pclmul,sse4.1"))) uint32_t FoldRaw(uint32_t crc, const uint8_t* p, size_t len) {
  const __m128i k512 = _mm_set_epi64x(kFold512Hi, kFold512Lo);
  const __m128i k128 = _mm_set_epi64x(kFold128Hi, kFold128Lo);
  const __m128i k64 = _mm_set_epi64x(0, kFold64);
  const __m128i barrett = _mm_set_epi64x(kBarrettMu, kPoly);
  const __m128i low32 = _mm_set_epi32(0, 0, 0, -1);
  __m128i x1 = _mm_xor_si128(Load(p), _mm_cvtsi32_si128(static_cast<int>(crc)));
  __m128i x2 = Load(p + 16), x3 = Load(p + 32), x4 = Load(p + 48);
  p += 64;
  len -= 64;
  for (; len >= 64; p += 64, len -= 64) {
    x1 = Fold(x1, k512, Load(p));
    x2 = Fold(x2, k512, Load(p + 16));
    x3 = Fold(x3, k512, Load(p + 32));
    x4 = Fold(x4, k512, Load(p + 48));
  }
  x1 = Fold(x1, k128, x2);
  x1 = Fold(x1, k128, x3);
  x1 = Fold(x1, k128, x4);
  for (; len >= 16; p += 16, len -= 16) x1 = Fold(x1, k128, Load(p));
  // 128 bits to 64, then to 32 + 64.
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k128, 0x10));
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k64, 0x00), _mm_srli_si128(x1, 4));
  // Barrett: subtract (x mod 2^32 * mu mod 2^32) * P.
  __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), barrett, 0x10), low32);
  x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, barrett, 0x00));
  return static_cast<uint32_t>(_mm_extract_epi32(x1, 1));
}

bool HaveClmul() {
  static const bool have = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  }();
  return have;
}
#endif

// One byte at a time (the tail a fold leaves, at most 15 bytes): the reflected table.
struct ByteTable {
  uint32_t t[256];
  ByteTable() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
      t[i] = c;
    }
  }
};

uint32_t Bytes(uint32_t crc, const uint8_t* p, size_t n) {
  static const ByteTable table;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = table.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

}  // namespace

uint32_t Crc32(uint32_t crc, const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  if (n >= 64 && HaveClmul()) {
    const size_t m = n & ~static_cast<size_t>(15);
    crc = ~FoldRaw(~crc, p, m);
    p += m;
    n -= m;
  }
#endif
  if (n < 64) return Bytes(crc, p, n);
  return static_cast<uint32_t>(crc32(crc, p, static_cast<uInt>(n)));
}

}  // namespace famfs_native
