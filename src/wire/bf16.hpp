#pragma once
// bf16 on the wire: ONE rounding rule (round to nearest even on the fp32 bit pattern, keep the
// upper 16 bits) for the CPU and the CUDA kernels (PX_HD), used by
//  - the sketch element codes (sketch/sketch_quant.hpp, also compiled into kernels/sketch_pack.cu):
//    bf16_encode_rne, NaN in -> quiet NaN out, finite values past the largest bf16 -> inf;
//  - the backbone codec BF16 (sync/codec.cpp): bf16_encode_saturate, finite values that would
//    round to inf saturate to the largest finite bf16 (+-0x7F7F). Its inputs are finite (the
//    codec checks first); for NaN / inf inputs it keeps the bits the codec always produced
//    (inf -> +-0x7F7F, NaN -> the raw rounded pattern), so the two rules differ only there.
// Both are bf16_round_bits plus their own edge rule. Decoding is exact: the bits shifted back.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "util/host_device.hpp"  // defines: PX_HD

namespace px {

PX_HD inline uint32_t f32_bits(float v) {
  uint32_t b;
  memcpy(&b, &v, 4);
  return b;
}
PX_HD inline float bits_f32(uint32_t b) {
  float v;
  memcpy(&v, &b, 4);
  return v;
}

// The upper 16 bits of fp32 pattern b after round-to-nearest-even at bit 16 (modulo 2^32: no
// special case for NaN or for values that round past the largest finite bf16).
PX_HD inline uint16_t bf16_round_bits(uint32_t b) { return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16); }

// Sketch rule: NaN -> quiet NaN (payload kept, quiet bit set), otherwise round to nearest even
// (a finite value past the largest bf16 becomes +-inf).
PX_HD inline uint16_t bf16_encode_rne(float v) {
  const uint32_t b = f32_bits(v);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x40u);  // quiet NaN
  return bf16_round_bits(b);
}

// Backbone codec rule: round to nearest even, saturating at the largest finite bf16 (+-0x7F7F)
// where the rounding reaches the infinity pattern.
PX_HD inline uint16_t bf16_encode_saturate(float v) {
  uint16_t h = bf16_round_bits(f32_bits(v));
  if ((h & 0x7FFFu) == 0x7F80u) h = (uint16_t)((h & 0x8000u) | 0x7F7Fu);  // finite -> inf: saturate
  return h;
}

PX_HD inline float bf16_decode(uint16_t h) { return bits_f32((uint32_t)h << 16); }

// Host arrays of n values (the host-staged GPU paths: routed rows, sketch rows to a GPU home).
inline void bf16_encode_rne_n(const float* x, size_t n, uint16_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_encode_rne(x[i]);
}
inline void bf16_decode_n(const uint16_t* h, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_decode(h[i]);
}

}  // namespace px
