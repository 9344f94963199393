#pragma once
// Full-precision views of routed experts (experts.view = "full", the SPES-style baseline of
// mode parallax): an island's copy of an expert homed elsewhere is its home's fp32 master as of
// the last snapshot, bit for bit (no compression, no error; the cost is 4 bytes per weight in
// memory and on the wire).
//
// On the wire and at rest: little-endian, parts back to back, no padding, nothing aligned (read
// with memcpy):
//
//   one matrix W [in, out]                                    full_wire_bytes(in, out)
//     FullWireHeader  16 bytes: magic "PXF1", version 1, reserved 0, in, out (int32 >= 1)
//     W [in, out]     fp32, row-major (the layout of every weight here), finite
//     total = 16 + 4 * in * out
//
//   one expert (framing: wire/expert_wire.hpp)                full_expert_wire_bytes(kind, d, h)
//     FullExpertWireHeader 16 bytes: magic "PXFE", version 1, act (0 swiglu, 1 relu2),
//                     reserved 0, d, h (int32 >= 1)
//     W1 [d, h] matrix, then W3 [d, h] (swiglu only), then W2 [h, d], each as above
//     total = 16 + (swiglu ? 3 : 2) * (16 + 4 d h)
//
// Decoding checks everything and throws std::invalid_argument naming what is wrong and where: a
// size other than the header implies (truncated or trailing bytes), bad magic / version /
// reserved / act, in/out/d/h < 1, a non-finite weight (named by its matrix and index), or an
// expert's matrix whose shape disagrees with its d and h. Encoding refuses non-finite weights
// too. The wire form is canonical (values copied bit for bit): to_wire(from_wire(b)) == b.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"   // defines: ExpertAct
#include "wire/expert_wire.hpp"  // defines: ExpertWireHeader

namespace px {

inline constexpr uint32_t kFullMagic = 0x31465850u;        // "PXF1" in file order
inline constexpr uint32_t kFullExpertMagic = 0x45465850u;  // "PXFE" in file order
inline constexpr uint16_t kFullWireVersion = 1;

struct FullWireHeader {
  uint32_t magic = kFullMagic;
  uint16_t version = kFullWireVersion;
  uint16_t reserved = 0;  // must be 0
  int32_t in = 0;
  int32_t out = 0;
};
static_assert(sizeof(FullWireHeader) == 16, "the full matrix header is 16 bytes on the wire");

using FullExpertWireHeader = ExpertWireHeader<kFullExpertMagic, kFullWireVersion>;

// One weight matrix W [in, out], fp32.
struct FullMatrix {
  int in = 0, out = 0;
  std::vector<float> w;  // [in, out]
};

// The full-precision view of one expert: W1, W3 [d, h] (W3 empty for relu2) and W2 [h, d].
struct FullExpertView {
  cpu::ExpertAct kind = cpu::EXPERT_ACT_SWIGLU;
  int d = 0, h = 0;
  FullMatrix w1, w3, w2;

  size_t wire_bytes() const;  // full_expert_wire_bytes(kind, d, h)
  size_t memory_bytes() const;  // 4 bytes per weight
  // Copies the weights out: W1, W3 [d, h] (W3 ignored, may be null, for relu2), W2 [h, d].
  void dequantize(float* W1, float* W3, float* W2) const;
};

size_t full_wire_bytes(int in, int out);  // 16 + 4 in out
size_t full_expert_wire_bytes(cpu::ExpertAct kind, int d, int h);

// A copy of an expert's master weights W1, W3 [d, h] (W3 unused for relu2, may be null), W2 [h, d].
FullExpertView full_view_from_master(const float* W1, const float* W3, const float* W2, int d, int h,
                                     cpu::ExpertAct kind);

std::vector<uint8_t> full_expert_to_wire(const FullExpertView& v);
FullExpertView full_expert_from_wire(const uint8_t* data, size_t size);

}  // namespace px
