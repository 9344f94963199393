#pragma once
// Wire codecs of the backbone (DiLoCo outer) sync, DESIGN §5 item 2 `outer_dtype`: a float vector
// (an outer gradient, or one fragment of the backbone) of any length n is encoded into a byte
// buffer of exactly encoded_bytes(dtype, n) bytes and decoded back.
//
// Rules kept by every codec:
//  - Input must be finite: encode throws std::invalid_argument naming the first non-finite index
//    (the output buffer's contents are then unspecified). Outer gradients are always finite.
//  - The quantized dtypes (INT8, FP4, TERNARY) work on blocks of kWireBlock = 256 consecutive
//    values; every block carries its own fp32 scale and is independent of the others. The last
//    block may be partial (r = n mod 256 values): it is the prefix of a full block's layout,
//    scale then ceil(r * bits / 8) payload bytes; nothing is padded to the full block.
//  - Blocks are laid out back to back: block b starts at byte b * sizeof(Block...).
//  - Little-endian only (static_assert): the wire is the in-memory layout, scales are raw fp32.
//  - Deterministic: no randomness, no dependence on threads; the rounding rules are below and
//    rely only on IEEE arithmetic in the default rounding mode (round to nearest even).
//  - Decoding validates what it can cheaply (a scale must be finite and >= 0, a ternary byte
//    must be <= 242) and throws std::invalid_argument on a malformed payload.
//
// Exact wire sizes (r = n mod 256, B = ceil(n / 256)):
//   FP32     4 n
//   BF16     2 n
//   INT8     n          + 4 B     (per block: 4 + r bytes)
//   FP4      ceil(n/2)  + 4 B     (per block: 4 + ceil(r/2) bytes; 2 values per byte)
//   TERNARY  56 floor(n/256) + (r > 0 ? 4 + ceil(r/5) : 0)
//                                 (per block: 4 + ceil(r/5) bytes; 5 trits per byte)
//
// The codecs, for a block v[0..r) with A = max |v_i| (absmax) and M = sum |v_i| / r (absmean):
//   BF16     the upper 16 bits of the fp32 pattern after round-to-nearest-even; a finite value
//            that would round to infinity saturates to the largest finite bf16 (±0x7F7F)
//            (wire/bf16.hpp: bf16_encode_saturate).
//            |error| <= 2^-8 |v| for normal values (half a bf16 ulp), <= 2^-134 for subnormals.
//   INT8     scale s = A. q_i = round_half_even(v_i * 127 / s) in [-127, 127] (computed in double),
//            decoded v_i = q_i * s / 127. |error| <= s / 254 (half a step), up to fp32 rounding
//            of the decoded value. A zero block has s = 0 and decodes to zeros.
//   FP4      E3M0: a nibble = sign (bit 3) | e (bits 0..2); value = sign * s * 2^(e - 7) for
//            e = 1..7, e = 0 is zero (the sign bit is then 0). Scale s = A, so the grid of |v|/s
//            is {0, 2^-6, 2^-5, ..., 2^-1, 2^0}. Rounding: to the nearest grid point in linear
//            value, ties to the larger magnitude; i.e. with y = |v|/s: y < 2^-7 -> 0, and
//            y >= 0.75 * 2^k moves up to 2^k (k = -5..0). Value 2i of a block goes in the low
//            nibble of byte i, value 2i+1 in the high nibble (0 when r is odd).
//            Bound: |error| <= max(|v| / 3, s * 2^-7). (Between 2^(k-1) and 2^k the worst case
//            is the midpoint 0.75 * 2^k, error 2^(k-2) = |v|/3; below 2^-6 the error is at most
//            2^-7 s.) Up to fp32 rounding of the decoded value (exact unless s * 2^-6 underflows).
//   TERNARY  scale s = M (summed in double, 4 interleaved lanes in a fixed order, then rounded to
//            fp32), q_i = sign(v_i) if |v_i| / s >= 1/2 else 0 (i.e.
//            clamp(round_half_away(v_i / s), -1, 1), the BitNet b1.58 absmean rule), decoded
//            v_i = q_i * s, exactly one of {-s, 0, +s}. Five trits per byte, little digit first:
//            byte = sum_j (q_{5g+j} + 1) * 3^j (<= 242); a partial last group pads with q = 0
//            (wire/trit_pack.hpp, shared with the ternary expert views).
//            Bound: |error| <= max(s / 2, |v| - s).
#include <bit>
#include <cstddef>
#include <cstdint>

#include "config/config.hpp"    // defines: WireDtype
#include "wire/trit_pack.hpp"  // defines: kTritsPerByte (5 trits per byte, the packing rule)

namespace px {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

inline constexpr size_t kWireBlock = 256;  // values per quantization block

// One full block of each quantized dtype: the wire layout, checked by the compiler.
struct BlockInt8 {
  float scale;               // absmax of the block
  int8_t q[kWireBlock];      // round_half_even(v * 127 / scale)
};
static_assert(sizeof(BlockInt8) == 4 + kWireBlock, "INT8 block: fp32 scale + 256 bytes");

struct BlockFp4 {
  float scale;               // absmax of the block
  uint8_t q[kWireBlock / 2]; // E3M0 nibbles, value 2i low, 2i+1 high
};
static_assert(sizeof(BlockFp4) == 4 + kWireBlock / 2, "FP4 block: fp32 scale + 128 bytes");

struct BlockTernary {
  float scale;                                                   // absmean of the block
  uint8_t q[(kWireBlock + kTritsPerByte - 1) / kTritsPerByte];   // 5 trits per byte
};
static_assert(sizeof(BlockTernary) == 4 + 52, "TERNARY block: fp32 scale + 52 bytes");

// Exact number of bytes encode(dtype, x, n, out) writes (formula above).
size_t encoded_bytes(WireDtype dtype, size_t n);

// Encodes x[0..n) into out[0..encoded_bytes(dtype, n)). `out` needs no alignment.
// Throws std::invalid_argument if some x[i] is not finite (the message names i).
void encode(WireDtype dtype, const float* x, size_t n, uint8_t* out);

// Decodes in[0..encoded_bytes(dtype, n)) into out[0..n).
void decode(WireDtype dtype, const uint8_t* in, size_t n, float* out);

// acc[i] = fma(weight, decoded[i], acc[i]) (one rounding), without a temporary: merges several
// islands' payloads. decoded[i] is bit-identical to what decode() writes.
void decode_add(WireDtype dtype, const uint8_t* in, size_t n, float* acc, float weight);

// Uncompressed size over wire size: 4 n / encoded_bytes(dtype, n).
double compression_ratio(WireDtype dtype, size_t n);

}  // namespace px
