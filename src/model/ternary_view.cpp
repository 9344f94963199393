// Ternary views of routed experts: packing from masters, the wire form, dequantization
// (layout and rules in ternary_view.hpp).
#include "model/ternary_view.hpp"
#include "model/expert_slices.hpp"  // defines: expert_offset, expert_act_of

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace px {

namespace {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

// The five trits (q in {-1, 0, 1}) of each valid byte 0..242, little digit first.
constexpr auto kTrits = [] {
  std::array<std::array<int8_t, kTritsPerWireByte>, 243> t{};
  for (int byte = 0; byte < 243; ++byte) {
    int b = byte;
    for (size_t r = 0; r < kTritsPerWireByte; ++r, b /= 3) t[byte][r] = static_cast<int8_t>(b % 3 - 1);
  }
  return t;
}();
// 2-bit code of a trit q: 0 -> 0, +1 -> 1, -1 -> 2.
constexpr uint32_t code_of(int q) { return q > 0 ? 1u : (q < 0 ? 2u : 0u); }

[[noreturn]] void malformed(const std::string& what, const std::string& why) {
  throw std::invalid_argument("px::" + what + ": malformed buffer: " + why);
}

size_t trit_bytes(size_t n) { return (n + kTritsPerWireByte - 1) / kTritsPerWireByte; }

void check_shape(const char* what, int in, int out) {
  if (in < 1 || out < 1)
    throw std::invalid_argument(std::string("px::") + what + ": shape [" + std::to_string(in) + ", " +
                                std::to_string(out) + "] (in and out must be >= 1)");
}

// Decodes one matrix at data[0..size); returns its byte count. `what` names the caller for
// messages (e.g. "ternary_expert_from_wire: W2").
TernaryMatrix decode_matrix(const uint8_t* data, size_t size, const std::string& what, size_t* used) {
  TernaryWireHeader hd;
  if (size < sizeof hd)
    malformed(what, std::to_string(size) + " bytes, shorter than the 16-byte header");
  std::memcpy(&hd, data, sizeof hd);
  if (hd.magic != kTernaryMagic) malformed(what, "bad magic (not a ternary matrix)");
  if (hd.version != kTernaryWireVersion)
    malformed(what, "version " + std::to_string(hd.version) + " (expected " + std::to_string(kTernaryWireVersion) + ")");
  if (hd.reserved != 0) malformed(what, "reserved field " + std::to_string(hd.reserved) + " (must be 0)");
  if (hd.in < 1 || hd.out < 1)
    malformed(what, "shape [" + std::to_string(hd.in) + ", " + std::to_string(hd.out) + "] (in, out must be >= 1)");
  const size_t n = (size_t)hd.in * (size_t)hd.out;
  const size_t need = ternary_wire_bytes(hd.in, hd.out);
  if (used == nullptr ? size != need : size < need)
    malformed(what, "size " + std::to_string(size) + " bytes, expected " + std::to_string(need) + " for [" +
                        std::to_string(hd.in) + ", " + std::to_string(hd.out) + "]");

  TernaryMatrix m;
  m.in = hd.in;
  m.out = hd.out;
  m.scale.resize(m.out);
  const uint8_t* p = data + sizeof hd;
  std::memcpy(m.scale.data(), p, 4 * (size_t)m.out);
  for (int j = 0; j < m.out; ++j)
    if (!(std::isfinite(m.scale[j]) && m.scale[j] >= 0.f))
      malformed(what, "scale of output unit " + std::to_string(j) + " is " + std::to_string(m.scale[j]) +
                          " (must be finite and >= 0)");
  p += 4 * (size_t)m.out;

  const int words = m.words();
  m.codes.assign((size_t)m.out * words, 0u);
  const size_t bytes = trit_bytes(n);
  for (size_t g = 0; g < bytes; ++g) {
    const uint8_t byte = p[g];
    if (byte > 242) malformed(what, "trit byte " + std::to_string(g) + " is " + std::to_string(byte) + " (> 242)");
    const auto& q = kTrits[byte];
    for (size_t r = 0; r < kTritsPerWireByte; ++r) {
      const size_t k = g * kTritsPerWireByte + r;
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
  check_shape(what, m.in, m.out);
  if (m.scale.size() != (size_t)m.out || m.codes.size() != (size_t)m.out * m.words())
    throw std::invalid_argument(std::string("px::") + what + ": scale/codes sizes " +
                                std::to_string(m.scale.size()) + "/" + std::to_string(m.codes.size()) +
                                " do not match the shape [" + std::to_string(m.in) + ", " + std::to_string(m.out) + "]");
  for (int j = 0; j < m.out; ++j)
    if (!(std::isfinite(m.scale[j]) && m.scale[j] >= 0.f))
      throw std::invalid_argument(std::string("px::") + what + ": scale of output unit " + std::to_string(j) +
                                  " is " + std::to_string(m.scale[j]) +
                                  " (non-finite master weights?); the wire needs finite scales >= 0");
}

int n_matrices(cpu::ExpertAct kind) { return kind == cpu::EXPERT_ACT_SWIGLU ? 3 : 2; }

}  // namespace

// ---- one matrix -------------------------------------------------------------------------------

TernaryMatrix ternary_from_dense(const float* W, int in, int out) {
  check_shape("ternary_from_dense", in, out);
  TernaryMatrix m;
  m.in = in;
  m.out = out;
  m.scale.resize(out);
  m.codes.resize((size_t)out * m.words());
  cpu::ternary_pack(m.codes.data(), m.scale.data(), W, in, out);
  return m;
}

TernaryMatrix ternary_from_dense(const double* W, int in, int out) {
  check_shape("ternary_from_dense", in, out);
  std::vector<float> w((size_t)in * out);
  for (size_t k = 0; k < w.size(); ++k) w[k] = (float)W[k];
  return ternary_from_dense(w.data(), in, out);
}

template <class T>
void ternary_to_dense(T* W, const TernaryMatrix& m) {
  cpu::ternary_unpack<T>(W, m.codes.data(), m.scale.data(), m.in, m.out);
}

size_t ternary_wire_bytes(int in, int out) {
  check_shape("ternary_wire_bytes", in, out);
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
  // trits in output-unit-major order k = j * in + i, 5 per byte, little digit first
  const int words = m.words();
  uint8_t byte = 0, pow3 = 1;
  size_t r = 0;
  for (int j = 0; j < m.out; ++j) {
    const uint32_t* c = m.codes.data() + (size_t)j * words;
    const bool zero = m.scale[j] == 0.f;  // keep the wire canonical: scale 0 -> codes 0
    for (int i = 0; i < m.in; ++i) {
      const int q = zero ? 0 : cpu::ternary_decode(c[i / 16], i % 16);
      byte = (uint8_t)(byte + (q + 1) * pow3);
      pow3 = (uint8_t)(pow3 * 3);
      if (++r == kTritsPerWireByte) {
        *p++ = byte;
        byte = 0, pow3 = 1, r = 0;
      }
    }
  }
  if (r) {  // pad the last byte with q = 0 (digit 1)
    for (; r < kTritsPerWireByte; ++r, pow3 = (uint8_t)(pow3 * 3)) byte = (uint8_t)(byte + pow3);
    *p++ = byte;
  }
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
  return sizeof(TernaryExpertWireHeader) + (size_t)(n_matrices(kind) - 1) * ternary_wire_bytes(d, h) +
         ternary_wire_bytes(h, d);
}

size_t TernaryExpertView::wire_bytes() const { return ternary_expert_wire_bytes(kind, d, h); }

template <class T>
void TernaryExpertView::dequantize(T* W1, T* W3, T* W2) const {
  ternary_to_dense(W1, w1);
  if (kind == cpu::EXPERT_ACT_SWIGLU) ternary_to_dense(W3, w3);
  ternary_to_dense(W2, w2);
}

template <class T>
TernaryExpertView ternary_view_from_master(const T* W1, const T* W3, const T* W2, int d, int h,
                                           cpu::ExpertAct kind) {
  if (kind != cpu::EXPERT_ACT_SWIGLU && kind != cpu::EXPERT_ACT_RELU2)
    throw std::invalid_argument("px::ternary_view_from_master: unknown expert activation " + std::to_string((int)kind));
  if (kind == cpu::EXPERT_ACT_SWIGLU && W3 == nullptr)
    throw std::invalid_argument("px::ternary_view_from_master: a swiglu expert needs W3");
  TernaryExpertView v;
  v.kind = kind;
  v.d = d;
  v.h = h;
  v.w1 = ternary_from_dense(W1, d, h);
  if (kind == cpu::EXPERT_ACT_SWIGLU) v.w3 = ternary_from_dense(W3, d, h);
  v.w2 = ternary_from_dense(W2, h, d);
  return v;
}

template <class T>
TernaryExpertView ternary_view_from_master(const ModelConfig& cfg, const ParamLayout& layout,
                                           const T* experts, int layer, int e) {
  if (layer < 0 || layer >= cfg.n_layers || !cfg.is_moe(layer) || e < 0 || e >= cfg.n_experts)
    throw std::invalid_argument("px::ternary_view_from_master: no routed expert " + std::to_string(e) +
                                " in layer " + std::to_string(layer));
  const int m = layer - cfg.dense_layers;  // index among the MoE layers
  const bool glu = cfg.expert_act == ExpertActKind::SWIGLU;
  return ternary_view_from_master(experts + expert_offset(cfg, layout, m, e, 0),
                                  glu ? experts + expert_offset(cfg, layout, m, e, 1) : nullptr,
                                  experts + expert_offset(cfg, layout, m, e, 2), cfg.d_model,
                                  cfg.expert_hidden, expert_act_of(cfg));
}

std::vector<uint8_t> ternary_expert_to_wire(const TernaryExpertView& v) {
  if (v.kind != cpu::EXPERT_ACT_SWIGLU && v.kind != cpu::EXPERT_ACT_RELU2)
    throw std::invalid_argument("px::ternary_expert_to_wire: unknown expert activation " + std::to_string((int)v.kind));
  auto shape_is = [&](const char* name, const TernaryMatrix& m, int in, int out) {
    if (m.in != in || m.out != out)
      throw std::invalid_argument(std::string("px::ternary_expert_to_wire: ") + name + " is [" + std::to_string(m.in) +
                                  ", " + std::to_string(m.out) + "], expected [" + std::to_string(in) + ", " +
                                  std::to_string(out) + "]");
  };
  check_shape("ternary_expert_to_wire", v.d, v.h);
  shape_is("W1", v.w1, v.d, v.h);
  if (v.kind == cpu::EXPERT_ACT_SWIGLU) shape_is("W3", v.w3, v.d, v.h);
  shape_is("W2", v.w2, v.h, v.d);
  std::vector<uint8_t> buf(sizeof(TernaryExpertWireHeader));
  buf.reserve(v.wire_bytes());
  TernaryExpertWireHeader hd;
  hd.act = (uint8_t)v.kind;
  hd.d = v.d;
  hd.h = v.h;
  std::memcpy(buf.data(), &hd, sizeof hd);
  ternary_append_wire(buf, v.w1);
  if (v.kind == cpu::EXPERT_ACT_SWIGLU) ternary_append_wire(buf, v.w3);
  ternary_append_wire(buf, v.w2);
  return buf;
}

TernaryExpertView ternary_expert_from_wire(const uint8_t* data, size_t size) {
  const std::string what = "ternary_expert_from_wire";
  TernaryExpertWireHeader hd;
  if (size < sizeof hd)
    malformed(what, std::to_string(size) + " bytes, shorter than the 16-byte expert header");
  std::memcpy(&hd, data, sizeof hd);
  if (hd.magic != kTernaryExpertMagic) malformed(what, "bad magic (not a ternary expert)");
  if (hd.version != kTernaryWireVersion)
    malformed(what, "version " + std::to_string(hd.version) + " (expected " + std::to_string(kTernaryWireVersion) + ")");
  if (hd.act > 1) malformed(what, "activation kind " + std::to_string(hd.act) + " (0 swiglu, 1 relu2)");
  if (hd.reserved != 0) malformed(what, "reserved field " + std::to_string(hd.reserved) + " (must be 0)");
  if (hd.d < 1 || hd.h < 1)
    malformed(what, "d = " + std::to_string(hd.d) + ", h = " + std::to_string(hd.h) + " (must be >= 1)");
  TernaryExpertView v;
  v.kind = (cpu::ExpertAct)hd.act;
  v.d = hd.d;
  v.h = hd.h;
  const size_t need = v.wire_bytes();
  if (size != need)
    malformed(what, "size " + std::to_string(size) + " bytes, expected " + std::to_string(need) + " for a " +
                        (v.kind == cpu::EXPERT_ACT_SWIGLU ? "swiglu" : "relu2") + " expert with d = " +
                        std::to_string(v.d) + ", h = " + std::to_string(v.h));
  size_t pos = sizeof hd;
  auto next = [&](const char* name, int in, int out) {
    size_t used = 0;
    TernaryMatrix m = decode_matrix(data + pos, size - pos, what + ": " + name, &used);
    if (m.in != in || m.out != out)
      malformed(what, std::string(name) + " is [" + std::to_string(m.in) + ", " + std::to_string(m.out) +
                          "], expected [" + std::to_string(in) + ", " + std::to_string(out) + "]");
    pos += used;
    return m;
  };
  v.w1 = next("W1", v.d, v.h);
  if (v.kind == cpu::EXPERT_ACT_SWIGLU) v.w3 = next("W3", v.d, v.h);
  v.w2 = next("W2", v.h, v.d);
  if (pos != size) malformed(what, std::to_string(size - pos) + " trailing bytes");
  return v;
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
