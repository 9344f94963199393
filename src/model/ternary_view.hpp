#pragma once
// Ternary views of routed experts (DESIGN §6): what an island holds of an expert it does not
// own, what a home sends when it snapshots its masters, and what a new worker onboards from.
//
// In memory, a TernaryMatrix is exactly what the kernels use (px::cpu::ternary_* and
// px::cuda::ternary_*; rules in ops/cpu/cpu_ops.hpp): one fp32 absmean scale per output unit and
// 2-bit codes, output-unit major, 16 per uint32 (GPU-ready when in % 16 == 0).
//
// On the wire and at rest, codes take 5 trits per byte (1.6 bits/weight; wire/trit_pack.hpp).
// Little-endian, parts back to back, no padding, nothing aligned (read with memcpy):
//
//   one matrix W [in, out]                                    ternary_wire_bytes(in, out)
//     TernaryWireHeader   16 bytes: magic "PXT3", version 1, reserved 0, in, out (int32 >= 1)
//     scales  [out]       fp32, >= 0 and <= kViewWeightBound    4 * out bytes
//     trits               ceil(in * out / 5) bytes: trit k = j * in + i (output-unit major, the
//                         order of the packed codes) is digit k % 5 of byte k / 5, little digit
//                         first: byte = sum_{r<5} (q_{5g+r} + 1) * 3^r <= 242, q in {-1, 0, 1}
//                         (wire/trit_pack.hpp, the digit rule of the TERNARY outer-sync codec,
//                         sync/codec.hpp); the last byte's unused digits are q = 0 (digit 1).
//     total = 16 + 4 * out + ceil(in * out / 5)
//
//   one expert (framing: wire/expert_wire.hpp)                ternary_expert_wire_bytes(kind, d, h)
//     TernaryExpertWireHeader 16 bytes: magic "PXTE", version 1, act (0 swiglu, 1 relu2),
//                         reserved 0, d, h (int32 >= 1)
//     W1 [d, h] matrix, then W3 [d, h] (swiglu only), then W2 [h, d], each as above
//     total = 16 + (swiglu ? 2 : 1) * (16 + 4 h + ceil(d h / 5)) + (16 + 4 d + ceil(d h / 5))
//
// Decoding checks everything and throws std::invalid_argument naming what is wrong and where:
// a size other than the header implies (truncated or trailing bytes), bad magic / version /
// reserved / act, in/out/d/h < 1, a trit byte > 242, a non-zero padding digit, a
// non-finite or negative scale or one above kViewWeightBound (wire/expert_wire.hpp; encoding
// refuses it too), a unit with scale 0 but non-zero codes (pack never writes one:
// the wire form is canonical, so to_wire(from_wire(b)) == b for every accepted b), or an
// expert's matrix whose shape disagrees with its d and h. No checksum: snapshots travel over
// MPI, which delivers bytes intact; a corrupted file is caught only as far as these checks go.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout
#include "ops/cpu/cpu_ops.hpp"     // defines: ExpertAct, ternary_words
#include "wire/expert_wire.hpp"    // defines: ExpertWireHeader

namespace px {

inline constexpr uint32_t kTernaryMagic = 0x33545850u;        // "PXT3" in file order
inline constexpr uint32_t kTernaryExpertMagic = 0x45545850u;  // "PXTE" in file order
inline constexpr uint16_t kTernaryWireVersion = 1;

struct TernaryWireHeader {
  uint32_t magic = kTernaryMagic;
  uint16_t version = kTernaryWireVersion;
  uint16_t reserved = 0;  // must be 0
  int32_t in = 0;         // rows of W [in, out]
  int32_t out = 0;        // columns: output units, one scale each
};
static_assert(sizeof(TernaryWireHeader) == 16, "the ternary matrix header is 16 bytes on the wire");

// magic "PXTE", version, act, reserved, d, h (wire/expert_wire.hpp, shared with the low-rank views)
using TernaryExpertWireHeader = ExpertWireHeader<kTernaryExpertMagic, kTernaryWireVersion>;

// One weight matrix W [in, out] as a ternary view.
struct TernaryMatrix {
  int in = 0, out = 0;
  std::vector<float> scale;     // [out]
  std::vector<uint32_t> codes;  // [out, ternary_words(in)], 2-bit codes (cpu_ops.hpp)

  int words() const { return cpu::ternary_words(in); }
  // t_ij in {-1, 0, 1}.
  int trit(int i, int j) const {
    return cpu::ternary_decode(codes[(size_t)j * words() + i / 16], i % 16);
  }
  size_t numel() const { return (size_t)in * out; }
};

// Packs W [in, out] (fp32; double is rounded to fp32 first, as the GPU's fp32 masters are) with
// px::cpu::ternary_pack. in, out >= 1.
TernaryMatrix ternary_from_dense(const float* W, int in, int out);
TernaryMatrix ternary_from_dense(const double* W, int in, int out);
// W [in, out] = t * s.
template <class T>
void ternary_to_dense(T* W, const TernaryMatrix& m);

size_t ternary_wire_bytes(int in, int out);  // 16 + 4 out + ceil(in out / 5)
std::vector<uint8_t> ternary_to_wire(const TernaryMatrix& m);
// Appends m's wire form to `out`.
void ternary_append_wire(std::vector<uint8_t>& out, const TernaryMatrix& m);
TernaryMatrix ternary_from_wire(const uint8_t* data, size_t size);

// The ternary view of one expert: W1, W3 [d, h] (W3 empty for relu2) and W2 [h, d].
struct TernaryExpertView {
  cpu::ExpertAct kind = cpu::EXPERT_ACT_SWIGLU;
  int d = 0, h = 0;
  TernaryMatrix w1, w3, w2;

  size_t wire_bytes() const;  // ternary_expert_wire_bytes(kind, d, h)
  // Dense weights for px::cpu::expert_ffn_forward / _backward (E = 1): W1, W3 [d, h], W2 [h, d];
  // W3 is ignored (may be null) for relu2.
  template <class T>
  void dequantize(T* W1, T* W3, T* W2) const;
};

size_t ternary_expert_wire_bytes(cpu::ExpertAct kind, int d, int h);

// From an expert's master weights W1, W3 [d, h] (W3 unused for relu2, may be null), W2 [h, d].
template <class T>
TernaryExpertView ternary_view_from_master(const T* W1, const T* W3, const T* W2, int d, int h,
                                           cpu::ExpertAct kind);
// Routed expert e of model layer `layer` (an MoE layer), from the experts arena of a model
// built with cfg (MoeModel<T>::params(Arena::EXPERTS)).
template <class T>
TernaryExpertView ternary_view_from_master(const ModelConfig& cfg, const ParamLayout& layout,
                                           const T* experts, int layer, int e);

std::vector<uint8_t> ternary_expert_to_wire(const TernaryExpertView& v);
TernaryExpertView ternary_expert_from_wire(const uint8_t* data, size_t size);

}  // namespace px
