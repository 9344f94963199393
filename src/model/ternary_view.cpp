// Ternary views of routed experts: packing from masters, the wire form, dequantization
// (layout and rules in ternary_view.hpp).
#include "model/ternary_view.hpp"
#include "model/expert_slices.hpp"  // defines: expert_offset, expert_act_of

#include <cstring>
#include <string>

#include "wire/expert_wire.hpp"  // defines: ExpertWireHeader, wire::expert_to_wire, wire::expert_from_wire
#include "wire/trit_pack.hpp"    // defines: TritWriter, kTritTable, trit_bytes

namespace px {

namespace {

using wire::malformed;

// A unit's scale is every |weight| it dequantizes to: finite, >= 0 and within kViewWeightBound.
bool scale_ok(float s) { return s >= 0.f && s <= kViewWeightBound; }

// 2-bit code of a trit q: 0 -> 0, +1 -> 1, -1 -> 2.
constexpr uint32_t code_of(int q) { return q > 0 ? 1u : (q < 0 ? 2u : 0u); }

// Decodes one matrix at data[0..size); with `used`, the matrix may be followed by others and
// *used gets its byte count. `what` names the caller for messages (e.g.
// "ternary_expert_from_wire: W2").
TernaryMatrix decode_matrix(const uint8_t* data, size_t size, const std::string& what, size_t* used) {
  const auto hd = wire::read_header<TernaryWireHeader>(data, size, what, "header", "ternary matrix");
  wire::check_reserved(what, hd.reserved);
  wire::check_header_shape(what, hd.in, hd.out);
  const size_t n = (size_t)hd.in * (size_t)hd.out;
  const size_t need = ternary_wire_bytes(hd.in, hd.out);
  wire::check_matrix_size(what, size, need, used == nullptr, wire::shape_str(hd.in, hd.out));

  TernaryMatrix m;
  m.in = hd.in;
  m.out = hd.out;
  m.scale.resize(m.out);
  const uint8_t* p = data + sizeof hd;
  std::memcpy(m.scale.data(), p, 4 * (size_t)m.out);
  for (int j = 0; j < m.out; ++j)
    if (!scale_ok(m.scale[j]))
      malformed(what, "scale of output unit " + std::to_string(j) + " is " + std::to_string(m.scale[j]) +
                          " (must be finite, >= 0 and at most " + wire::weight_bound_str() + ")");
  p += 4 * (size_t)m.out;

  const int words = m.words();
  m.codes.assign((size_t)m.out * words, 0u);
  const size_t bytes = trit_bytes(n);
  for (size_t g = 0; g < bytes; ++g) {
    const uint8_t byte = p[g];
    if (byte > kMaxTritByte)
      malformed(what, "trit byte " + std::to_string(g) + " is " + std::to_string(byte) + " (> 242)");
    const auto& q = kTritTable[byte];
    for (size_t r = 0; r < kTritsPerByte; ++r) {
      const size_t k = g * kTritsPerByte + r;
      if (k >= n) {
        if (q[r] != 0) malformed(what, "padding trit " + std::to_string(r) + " of the last byte is not 0");
        continue;
      }
      const int j = (int)(k / m.in), i = (int)(k % m.in);
      if (q[r] != 0 && m.scale[j] == 0.f)
        malformed(what, "output unit " + std::to_string(j) + " has scale 0 but non-zero codes");
      m.codes[(size_t)j * words + i / 16] |= code_of(q[r]) << (2 * (i % 16));
    }
  }
  if (used) *used = need;
  return m;
}

void check_matrix(const char* what, const TernaryMatrix& m) {
  wire::check_shape(what, m.in, m.out);
  if (m.scale.size() != (size_t)m.out || m.codes.size() != (size_t)m.out * m.words())
    wire::invalid(what, "scale/codes sizes " + std::to_string(m.scale.size()) + "/" + std::to_string(m.codes.size()) +
                            " do not match the shape " + wire::shape_str(m.in, m.out));
  for (int j = 0; j < m.out; ++j)
    if (!scale_ok(m.scale[j]))
      wire::invalid(what, "scale of output unit " + std::to_string(j) + " is " + std::to_string(m.scale[j]) +
                              " (diverged master weights?); the wire needs scales >= 0 and at most " +
                              wire::weight_bound_str());
}

}  // namespace

// ---- one matrix -------------------------------------------------------------------------------

TernaryMatrix ternary_from_dense(const float* W, int in, int out) {
  wire::check_shape("ternary_from_dense", in, out);
  TernaryMatrix m;
  m.in = in;
  m.out = out;
  m.scale.resize(out);
  m.codes.resize((size_t)out * m.words());
  cpu::ternary_pack(m.codes.data(), m.scale.data(), W, in, out);
  return m;
}

TernaryMatrix ternary_from_dense(const double* W, int in, int out) {
  wire::check_shape("ternary_from_dense", in, out);
  std::vector<float> w((size_t)in * out);
  for (size_t k = 0; k < w.size(); ++k) w[k] = (float)W[k];
  return ternary_from_dense(w.data(), in, out);
}

template <class T>
void ternary_to_dense(T* W, const TernaryMatrix& m) {
  cpu::ternary_unpack<T>(W, m.codes.data(), m.scale.data(), m.in, m.out);
}

size_t ternary_wire_bytes(int in, int out) {
  wire::check_shape("ternary_wire_bytes", in, out);
  return sizeof(TernaryWireHeader) + 4 * (size_t)out + trit_bytes((size_t)in * out);
}

void ternary_append_wire(std::vector<uint8_t>& buf, const TernaryMatrix& m) {
  check_matrix("ternary_to_wire", m);
  const size_t base = buf.size();
  buf.resize(base + ternary_wire_bytes(m.in, m.out));
  uint8_t* p = buf.data() + base;
  TernaryWireHeader hd;
  hd.in = m.in;
  hd.out = m.out;
  std::memcpy(p, &hd, sizeof hd);
  p += sizeof hd;
  std::memcpy(p, m.scale.data(), 4 * (size_t)m.out);
  p += 4 * (size_t)m.out;
  // trits in output-unit-major order k = j * in + i (wire/trit_pack.hpp)
  const int words = m.words();
  TritWriter trits(p);
  for (int j = 0; j < m.out; ++j) {
    const uint32_t* c = m.codes.data() + (size_t)j * words;
    const bool zero = m.scale[j] == 0.f;  // keep the wire canonical: scale 0 -> codes 0
    for (int i = 0; i < m.in; ++i) trits.put(zero ? 0 : cpu::ternary_decode(c[i / 16], i % 16));
  }
  trits.finish();
}

std::vector<uint8_t> ternary_to_wire(const TernaryMatrix& m) {
  std::vector<uint8_t> buf;
  ternary_append_wire(buf, m);
  return buf;
}

TernaryMatrix ternary_from_wire(const uint8_t* data, size_t size) {
  return decode_matrix(data, size, "ternary_from_wire", nullptr);
}

// ---- one expert -------------------------------------------------------------------------------

size_t ternary_expert_wire_bytes(cpu::ExpertAct kind, int d, int h) {
  return sizeof(TernaryExpertWireHeader) + (size_t)(wire::expert_matrix_count(kind) - 1) * ternary_wire_bytes(d, h) +
         ternary_wire_bytes(h, d);
}

size_t TernaryExpertView::wire_bytes() const { return ternary_expert_wire_bytes(kind, d, h); }

template <class T>
void TernaryExpertView::dequantize(T* W1, T* W3, T* W2) const {
  T* const dense[3] = {W1, W3, W2};
  wire::for_each_matrix(*this, [&](int slot, const char*, const TernaryMatrix& m, int, int) {
    ternary_to_dense(dense[slot], m);
  });
}

template <class T>
TernaryExpertView ternary_view_from_master(const T* W1, const T* W3, const T* W2, int d, int h,
                                           cpu::ExpertAct kind) {
  wire::check_act("ternary_view_from_master", kind);
  if (wire::has_w3(kind) && W3 == nullptr) wire::invalid("ternary_view_from_master", "a swiglu expert needs W3");
  TernaryExpertView v;
  v.kind = kind;
  v.d = d;
  v.h = h;
  const T* const master[3] = {W1, W3, W2};
  wire::for_each_matrix(v, [&](int slot, const char*, TernaryMatrix& m, int in, int out) {
    m = ternary_from_dense(master[slot], in, out);
  });
  return v;
}

template <class T>
TernaryExpertView ternary_view_from_master(const ModelConfig& cfg, const ParamLayout& layout,
                                           const T* experts, int layer, int e) {
  if (layer < 0 || layer >= cfg.n_layers || !cfg.is_moe(layer) || e < 0 || e >= cfg.n_experts)
    wire::invalid("ternary_view_from_master",
                  "no routed expert " + std::to_string(e) + " in layer " + std::to_string(layer));
  const int m = layer - cfg.dense_layers;  // index among the MoE layers
  const bool glu = cfg.expert_act == ExpertActKind::SWIGLU;
  return ternary_view_from_master(experts + expert_offset(cfg, layout, m, e, 0),
                                  glu ? experts + expert_offset(cfg, layout, m, e, 1) : nullptr,
                                  experts + expert_offset(cfg, layout, m, e, 2), cfg.d_model,
                                  cfg.expert_hidden, expert_act_of(cfg));
}

std::vector<uint8_t> ternary_expert_to_wire(const TernaryExpertView& v) {
  wire::check_expert("ternary_expert_to_wire", v);
  return wire::expert_to_wire<TernaryExpertWireHeader>(v, ternary_append_wire);
}

TernaryExpertView ternary_expert_from_wire(const uint8_t* data, size_t size) {
  const std::string what = "ternary_expert_from_wire";
  // the whole size follows from kind, d and h: checked before any matrix is decoded
  auto check_size = [&](const TernaryExpertView& v) {
    const size_t need = v.wire_bytes();
    if (size != need)
      malformed(what, "size " + std::to_string(size) + " bytes, expected " + std::to_string(need) + " for a " +
                          (wire::has_w3(v.kind) ? "swiglu" : "relu2") + " expert with d = " + std::to_string(v.d) +
                          ", h = " + std::to_string(v.h));
  };
  return wire::expert_from_wire<TernaryExpertWireHeader, TernaryExpertView>(data, size, what, "ternary expert",
                                                                            decode_matrix, check_size);
}

template void ternary_to_dense<float>(float*, const TernaryMatrix&);
template void ternary_to_dense<double>(double*, const TernaryMatrix&);
template void TernaryExpertView::dequantize<float>(float*, float*, float*) const;
template void TernaryExpertView::dequantize<double>(double*, double*, double*) const;
template TernaryExpertView ternary_view_from_master<float>(const float*, const float*, const float*, int, int,
                                                           cpu::ExpertAct);
template TernaryExpertView ternary_view_from_master<double>(const double*, const double*, const double*, int,
                                                            int, cpu::ExpertAct);
template TernaryExpertView ternary_view_from_master<float>(const ModelConfig&, const ParamLayout&, const float*,
                                                           int, int);
template TernaryExpertView ternary_view_from_master<double>(const ModelConfig&, const ParamLayout&,
                                                            const double*, int, int);

}  // namespace px
