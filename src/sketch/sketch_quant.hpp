#pragma once
// Element codes of a sketch (DESIGN §7), ONE definition for the CPU and the CUDA backends, so
// that a sketch packed on a GPU decodes bit-identically on a CPU home. Every row (one token's
// x or dy) is coded on its own:
//   int8 : scale s = absmax / 127 (fp32), q = clamp(rint(v / s), -127, 127), v' = q * s.
//   fp8  : OCP e4m3 (sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; codes
//          0x7F / 0xFF are NaN; largest finite 448; subnormal step 2^-9):
//          scale s = absmax / 448, q = e4m3(v / s) rounded to nearest even and saturated to
//          +-448 (what cuda_fp8.h calls __NV_SATFINITE), v' = e4m3_value(q) * s.
//   bf16 : s = 1 (sent, and applied like the others); q = the upper 16 bits of v after
//          round-to-nearest-even, NaN -> quiet NaN (wire/bf16.hpp: bf16_encode_rne).
// A row of zeros has s = 0 and codes 0. The rounding uses only IEEE fp32 division (correctly
// rounded on both backends: no fast-math in this project) and integer arithmetic.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "util/hash_rng.hpp"     // defines: splitmix64
#include "util/host_device.hpp"  // defines: PX_HD
#include "wire/bf16.hpp"         // defines: bf16_encode_rne, bf16_decode, f32_bits, bits_f32

namespace px {

// The header's dtype byte; the order matches px::SketchDtype (config.hpp) and is on the wire.
enum SketchElem : uint8_t { SKETCH_INT8 = 0, SKETCH_FP8 = 1, SKETCH_BF16 = 2 };

PX_HD inline int sketch_elem_bytes(SketchElem t) { return t == SKETCH_BF16 ? 2 : 1; }

// ---- e4m3 ---------------------------------------------------------------------------------
inline constexpr float kE4m3Max = 448.f;

PX_HD inline uint8_t fp8_e4m3_encode(float v) {
  uint32_t b = f32_bits(v);
  uint8_t sign = (uint8_t)((b >> 24) & 0x80u);
  uint32_t ab = b & 0x7FFFFFFFu;
  if (ab > 0x7F800000u) return 0x7F;            // NaN in, NaN out
  if (ab >= 0x43E00000u) return sign | 0x7E;     // |v| >= 448 (inf included): saturate
  if (ab < 0x3C800000u) {                        // |v| < 2^-6: subnormal grid k * 2^-9
    float a = bits_f32(ab) * 512.f;              // exact (power-of-two scaling)
    uint32_t k = (uint32_t)a;                    // floor(a) in 0..7
    float frac = a - (float)k;                   // exact
    if (frac > 0.5f || (frac == 0.5f && (k & 1u))) ++k;  // nearest even; k = 8 is 2^-6 (code 8)
    return sign | (uint8_t)k;
  }
  // Normal: exponent e = -6..8, keep 3 of the 23 mantissa bits, round to nearest even; a carry
  // out of the mantissa moves into the exponent (the code is exponent-major).
  uint32_t e = (ab >> 23) - 127 + 7;             // biased e4m3 exponent 1..15
  uint32_t m = ab & 0x7FFFFFu;
  uint32_t q = m >> 20, rem = m & 0xFFFFFu;
  if (rem > 0x80000u || (rem == 0x80000u && (q & 1u))) ++q;
  uint32_t code = (e << 3) + q;
  if (code > 0x7Eu) code = 0x7Eu;                // rounding up past 448: saturate
  return sign | (uint8_t)code;
}

PX_HD inline float fp8_e4m3_decode(uint8_t c) {
  uint32_t e = (c >> 3) & 15u, m = c & 7u;
  float mag;
  if (e == 0) mag = (float)m * (1.f / 512.f);
  else if (e == 15 && m == 7) mag = bits_f32(0x7FC00000u);
  else mag = bits_f32(((e + 120u) << 23) | (m << 20));
  return (c & 0x80) ? -mag : mag;
}

// ---- one row ------------------------------------------------------------------------------
// The row scale from the row's absmax (1 for bf16, which is sent unscaled).
PX_HD inline float sketch_row_scale(float absmax, SketchElem t) {
  return t == SKETCH_INT8 ? absmax / 127.f : t == SKETCH_FP8 ? absmax / kE4m3Max : 1.f;
}

// Writes element i of a row with scale s into the row's code bytes.
PX_HD inline void sketch_encode_elem(float v, float s, SketchElem t, uint8_t* row_codes, int i) {
  if (t == SKETCH_INT8) {
    float r = s > 0.f ? rintf(v / s) : 0.f;
    r = r < -127.f ? -127.f : (r > 127.f ? 127.f : r);
    row_codes[i] = (uint8_t)(int8_t)r;
  } else if (t == SKETCH_FP8) {
    row_codes[i] = s > 0.f ? fp8_e4m3_encode(v / s) : (uint8_t)0;
  } else {
    uint16_t h = bf16_encode_rne(v);
    memcpy(row_codes + 2 * i, &h, 2);
  }
}

PX_HD inline float sketch_decode_elem(const uint8_t* row_codes, int i, float s, SketchElem t) {
  if (t == SKETCH_INT8) return (float)(int8_t)row_codes[i] * s;
  if (t == SKETCH_FP8) return fp8_e4m3_decode(row_codes[i]) * s;
  uint16_t h;
  memcpy(&h, row_codes + 2 * i, 2);
  return bf16_decode(h) * s;
}

// The sampling stream of (seed, step, expert): sample s draws u_s = uniform01(stream, s).
PX_HD inline uint64_t sketch_stream(uint64_t seed, int step, int e) {
  return splitmix64(seed ^ splitmix64(((uint64_t)(uint32_t)step << 32) | (uint32_t)e));
}

}  // namespace px
