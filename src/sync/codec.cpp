// Wire codecs of the backbone sync: see codec.hpp for the layouts and the rounding rules.
// Each quantized dtype is a pair of per-block functions (encode one block of r <= 256 values
// into a Block struct, decode one Block through a sink); the drivers below walk the blocks and
// copy only the bytes a (possibly partial) block occupies on the wire.
#include "sync/codec.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "wire/bf16.hpp"       // defines: bf16_encode_saturate, bf16_decode
#include "wire/trit_pack.hpp"  // defines: trit_byte, kTritTable, trit_bytes

namespace px {

namespace {

constexpr size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Payload bytes (after the 4-byte scale) of a block of r values.
constexpr size_t int8_payload(size_t r) { return r; }
constexpr size_t fp4_payload(size_t r) { return ceil_div(r, 2); }
constexpr size_t ternary_payload(size_t r) { return trit_bytes(r); }

const char* dtype_name(WireDtype d) { return to_string(d).data(); }

[[noreturn]] void throw_non_finite(WireDtype d, const float* x, size_t i) {
  throw std::invalid_argument(std::string("px::encode(") + dtype_name(d) + "): non-finite value " +
                              std::to_string(x[i]) + " at index " + std::to_string(i) +
                              " (outer gradients must be finite)");
}

// Throws if some x[i], i in [0, n), is not finite; `base` is the index of x[0] in the caller's
// vector. Branch-free over the exponent bits so that it vectorises.
void check_finite(WireDtype d, const float* x, size_t n, size_t base, const float* x0) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u = std::bit_cast<uint32_t>(x[i]);
    bad |= static_cast<uint32_t>((u & 0x7F800000u) == 0x7F800000u);
  }
  if (bad)
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) throw_non_finite(d, x0, base + i);
}

[[noreturn]] void throw_malformed(WireDtype d, size_t block, const std::string& why) {
  throw std::invalid_argument(std::string("px::decode(") + dtype_name(d) + "): malformed payload in block " +
                              std::to_string(block) + ": " + why);
}

float read_scale(WireDtype d, float s, size_t block) {
  if (!(std::isfinite(s) && s >= 0.0f)) throw_malformed(d, block, "scale " + std::to_string(s));
  return s;
}

// max |v_i| (exact, so the lane split below does not change it).
float absmax(const float* v, size_t r) {
  float m[8] = {};
  size_t i = 0;
  for (; i + 8 <= r; i += 8)
    for (size_t l = 0; l < 8; ++l) {
      float a = std::fabs(v[i + l]);
      m[l] = a > m[l] ? a : m[l];
    }
  for (; i < r; ++i) m[0] = std::max(m[0], std::fabs(v[i]));
  return *std::max_element(m, m + 8);
}

// ---- BF16: round to nearest even, saturating at the largest finite bf16 (wire/bf16.hpp).

// ---- INT8: scale = absmax, q = round_half_even(v * 127 / scale).
void int8_encode_block(const float* v, size_t r, BlockInt8& b) {
  float s = absmax(v, r);
  b.scale = s;
  if (s == 0.0f) {
    std::memset(b.q, 0, r);
    return;
  }
  const double inv = 127.0 / static_cast<double>(s);
  for (size_t i = 0; i < r; ++i) {
    double q = std::nearbyint(static_cast<double>(v[i]) * inv);  // default mode: ties to even
    q = std::min(127.0, std::max(-127.0, q));
    b.q[i] = static_cast<int8_t>(q);
  }
}
template <class Sink>
void int8_decode_block(const BlockInt8& b, size_t r, size_t block, Sink&& sink) {
  const double step = static_cast<double>(read_scale(WireDtype::INT8, b.scale, block)) / 127.0;
  for (size_t i = 0; i < r; ++i) sink(i, static_cast<float>(static_cast<double>(b.q[i]) * step));
}

// ---- FP4 (E3M0): scale = absmax, nearest of {0, 2^-6 .. 2^0} in linear value, ties up.
uint8_t fp4_nibble(float v, double inv) {
  double y = std::fabs(static_cast<double>(v)) * inv;
  uint8_t e = static_cast<uint8_t>((y >= 0x1p-7) + (y >= 0.75 * 0x1p-5) + (y >= 0.75 * 0x1p-4) +
                                   (y >= 0.75 * 0x1p-3) + (y >= 0.75 * 0x1p-2) + (y >= 0.75 * 0x1p-1) +
                                   (y >= 0.75));
  uint8_t sign = static_cast<uint8_t>(((v < 0.0f) & (e != 0)) << 3);  // no -0 on the wire
  return static_cast<uint8_t>(sign | e);
}
void fp4_encode_block(const float* v, size_t r, BlockFp4& b) {
  float s = absmax(v, r);
  b.scale = s;
  if (s == 0.0f) {
    std::memset(b.q, 0, fp4_payload(r));
    return;
  }
  const double inv = 1.0 / static_cast<double>(s);
  uint8_t nib[kWireBlock];
  for (size_t i = 0; i < r; ++i) nib[i] = fp4_nibble(v[i], inv);
  if (r % 2) nib[r] = 0;  // odd count: high nibble 0
  for (size_t i = 0; i < fp4_payload(r); ++i) b.q[i] = static_cast<uint8_t>(nib[2 * i] | (nib[2 * i + 1] << 4));
}
// Multiplier of the scale for each nibble: sign * 2^(e-7), 0 for e = 0.
constexpr std::array<float, 16> kFp4Table = [] {
  std::array<float, 16> t{};
  for (int nib = 0; nib < 16; ++nib) {
    int e = nib & 7;
    float m = 0.0f;
    if (e > 0) {
      m = 1.0f;
      for (int k = e; k < 7; ++k) m *= 0.5f;
    }
    t[nib] = (nib & 8) ? -m : m;
  }
  return t;
}();
template <class Sink>
void fp4_decode_block(const BlockFp4& b, size_t r, size_t block, Sink&& sink) {
  const float s = read_scale(WireDtype::FP4, b.scale, block);
  for (size_t i = 0; i < r; ++i) {
    uint8_t byte = b.q[i / 2];
    uint8_t nib = (i & 1) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0xF);
    sink(i, s * kFp4Table[nib]);
  }
}

// ---- TERNARY: scale = absmean, q = sign(v) if |v| / scale >= 1/2, 5 trits per byte.
void ternary_encode_block(const float* v, size_t r, BlockTernary& b) {
  // sum |v_i| in double, 4 lanes (i mod 4) added in a fixed order: deterministic.
  double lane[4] = {};
  size_t i = 0;
  for (; i + 4 <= r; i += 4)
    for (size_t l = 0; l < 4; ++l) lane[l] += std::fabs(static_cast<double>(v[i + l]));
  for (; i < r; ++i) lane[0] += std::fabs(static_cast<double>(v[i]));
  const double sum = (lane[0] + lane[1]) + (lane[2] + lane[3]);
  const float s = static_cast<float>(sum / static_cast<double>(r));
  b.scale = s;
  const double inv = s > 0.0f ? 1.0 / static_cast<double>(s) : 0.0;  // s = 0: every q = 0
  // digits q + 1, padded with 1 (q = 0) up to a whole group of 5
  uint8_t digit[sizeof(b.q) * kTritsPerByte];
  for (size_t k = 0; k < r; ++k) {
    const double y = static_cast<double>(v[k]) * inv;
    digit[k] = static_cast<uint8_t>(1 + (y >= 0.5) - (y <= -0.5));
  }
  const size_t groups = ternary_payload(r);
  for (size_t k = r; k < groups * kTritsPerByte; ++k) digit[k] = 1;
  for (size_t g = 0; g < groups; ++g) b.q[g] = trit_byte(digit + g * kTritsPerByte);
}
template <class Sink>
void ternary_decode_block(const BlockTernary& b, size_t r, size_t block, Sink&& sink) {
  const float s = read_scale(WireDtype::TERNARY, b.scale, block);
  const size_t groups = ternary_payload(r);
  for (size_t g = 0; g < groups; ++g) {
    uint8_t byte = b.q[g];
    if (byte > kMaxTritByte) throw_malformed(WireDtype::TERNARY, block, "trit byte " + std::to_string(byte) + " > 242");
    const auto& trits = kTritTable[byte];
    for (size_t j = 0; j < kTritsPerByte; ++j) {
      size_t i = g * kTritsPerByte + j;
      if (i < r) sink(i, static_cast<float>(trits[j]) * s);
    }
  }
}

// ---- block drivers: a (possibly partial) block occupies 4 + payload(r) bytes.
template <class Block, class EncodeBlock>
void encode_blocks(WireDtype d, const float* x, size_t n, uint8_t* out, size_t (*payload)(size_t), EncodeBlock enc) {
  Block b;
  for (size_t start = 0, blk = 0; start < n; start += kWireBlock, ++blk) {
    const size_t r = std::min(kWireBlock, n - start);
    check_finite(d, x + start, r, start, x);
    enc(x + start, r, b);
    std::memcpy(out + blk * sizeof(Block), &b, sizeof(float) + payload(r));
  }
}
template <class Block, class DecodeBlock, class Sink>
void decode_blocks(const uint8_t* in, size_t n, size_t (*payload)(size_t), DecodeBlock dec, Sink&& sink) {
  Block b;
  for (size_t start = 0, blk = 0; start < n; start += kWireBlock, ++blk) {
    const size_t r = std::min(kWireBlock, n - start);
    std::memcpy(&b, in + blk * sizeof(Block), sizeof(float) + payload(r));
    dec(b, r, blk, [&](size_t i, float v) { sink(start + i, v); });
  }
}

// Decodes every value through sink(i, value).
template <class Sink>
void decode_with(WireDtype d, const uint8_t* in, size_t n, Sink&& sink) {
  switch (d) {
    case WireDtype::FP32:
      for (size_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, in + 4 * i, 4);
        sink(i, v);
      }
      return;
    case WireDtype::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        sink(i, bf16_decode(h));
      }
      return;
    case WireDtype::INT8:
      decode_blocks<BlockInt8>(in, n, int8_payload,
                               [](const BlockInt8& b, size_t r, size_t blk, auto&& s) { int8_decode_block(b, r, blk, s); }, sink);
      return;
    case WireDtype::FP4:
      decode_blocks<BlockFp4>(in, n, fp4_payload,
                              [](const BlockFp4& b, size_t r, size_t blk, auto&& s) { fp4_decode_block(b, r, blk, s); }, sink);
      return;
    case WireDtype::TERNARY:
      decode_blocks<BlockTernary>(in, n, ternary_payload,
                                  [](const BlockTernary& b, size_t r, size_t blk, auto&& s) { ternary_decode_block(b, r, blk, s); },
                                  sink);
      return;
  }
  throw std::invalid_argument("px::decode: unknown WireDtype " + std::to_string(static_cast<int>(d)));
}

}  // namespace

size_t encoded_bytes(WireDtype d, size_t n) {
  const size_t full = n / kWireBlock, r = n % kWireBlock;
  switch (d) {
    case WireDtype::FP32: return 4 * n;
    case WireDtype::BF16: return 2 * n;
    case WireDtype::INT8: return full * sizeof(BlockInt8) + (r ? sizeof(float) + int8_payload(r) : 0);
    case WireDtype::FP4: return full * sizeof(BlockFp4) + (r ? sizeof(float) + fp4_payload(r) : 0);
    case WireDtype::TERNARY: return full * sizeof(BlockTernary) + (r ? sizeof(float) + ternary_payload(r) : 0);
  }
  throw std::invalid_argument("px::encoded_bytes: unknown WireDtype " + std::to_string(static_cast<int>(d)));
}

double compression_ratio(WireDtype d, size_t n) {
  return static_cast<double>(4 * n) / static_cast<double>(encoded_bytes(d, n));
}

void encode(WireDtype d, const float* x, size_t n, uint8_t* out) {
  switch (d) {
    case WireDtype::FP32:
      check_finite(d, x, n, 0, x);
      std::memcpy(out, x, 4 * n);
      return;
    case WireDtype::BF16:
      for (size_t start = 0; start < n; start += kWireBlock) {
        const size_t r = std::min(kWireBlock, n - start);
        check_finite(d, x + start, r, start, x);
        for (size_t i = start; i < start + r; ++i) {
          uint16_t h = bf16_encode_saturate(x[i]);
          std::memcpy(out + 2 * i, &h, 2);
        }
      }
      return;
    case WireDtype::INT8: encode_blocks<BlockInt8>(d, x, n, out, int8_payload, int8_encode_block); return;
    case WireDtype::FP4: encode_blocks<BlockFp4>(d, x, n, out, fp4_payload, fp4_encode_block); return;
    case WireDtype::TERNARY: encode_blocks<BlockTernary>(d, x, n, out, ternary_payload, ternary_encode_block); return;
  }
  throw std::invalid_argument("px::encode: unknown WireDtype " + std::to_string(static_cast<int>(d)));
}

void decode(WireDtype d, const uint8_t* in, size_t n, float* out) {
  if (d == WireDtype::FP32) {
    std::memcpy(out, in, 4 * n);
    return;
  }
  decode_with(d, in, n, [out](size_t i, float v) { out[i] = v; });
}

void decode_add(WireDtype d, const uint8_t* in, size_t n, float* acc, float weight) {
  decode_with(d, in, n, [acc, weight](size_t i, float v) { acc[i] = std::fma(weight, v, acc[i]); });
}

}  // namespace px
