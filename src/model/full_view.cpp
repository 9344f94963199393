// Full-precision views of routed experts: copies of masters, the wire form (layout and rules in
// full_view.hpp).
#include "model/full_view.hpp"

#include <cmath>
#include <cstring>
#include <string>

namespace px {

namespace {

using wire::malformed;

// The first non-finite value of w[0..n), or n.
size_t first_non_finite(const float* w, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(w[i])) return i;
  return n;
}

FullMatrix matrix_from(const float* W, int in, int out) {
  FullMatrix m;
  m.in = in;
  m.out = out;
  m.w.assign(W, W + (size_t)in * out);
  return m;
}

void append_matrix(std::vector<uint8_t>& buf, const FullMatrix& m) {
  const std::string what = "full_expert_to_wire";
  if (m.w.size() != (size_t)m.in * m.out)
    wire::invalid(what, std::to_string(m.w.size()) + " weights for the shape " + wire::shape_str(m.in, m.out));
  const size_t bad = first_non_finite(m.w.data(), m.w.size());
  if (bad < m.w.size())
    wire::invalid(what, "weight " + std::to_string(bad) + " of a " + wire::shape_str(m.in, m.out) +
                            " matrix is " + std::to_string(m.w[bad]) + " (the wire needs finite weights)");
  const size_t base = buf.size();
  buf.resize(base + full_wire_bytes(m.in, m.out));
  FullWireHeader hd;
  hd.in = m.in;
  hd.out = m.out;
  std::memcpy(buf.data() + base, &hd, sizeof hd);
  std::memcpy(buf.data() + base + sizeof hd, m.w.data(), 4 * m.w.size());
}

// One matrix at data[0..size), followed by others: *used gets its byte count.
FullMatrix decode_matrix(const uint8_t* data, size_t size, const std::string& what, size_t* used) {
  const auto hd = wire::read_header<FullWireHeader>(data, size, what, "header", "full matrix");
  wire::check_reserved(what, hd.reserved);
  wire::check_header_shape(what, hd.in, hd.out);
  const size_t need = full_wire_bytes(hd.in, hd.out);
  wire::check_matrix_size(what, size, need, false, wire::shape_str(hd.in, hd.out));
  FullMatrix m;
  m.in = hd.in;
  m.out = hd.out;
  m.w.resize((size_t)hd.in * hd.out);
  std::memcpy(m.w.data(), data + sizeof hd, 4 * m.w.size());
  const size_t bad = first_non_finite(m.w.data(), m.w.size());
  if (bad < m.w.size())
    malformed(what, "weight " + std::to_string(bad) + " is " + std::to_string(m.w[bad]) + " (must be finite)");
  *used = need;
  return m;
}

}  // namespace

size_t full_wire_bytes(int in, int out) {
  wire::check_shape("full_wire_bytes", in, out);
  return sizeof(FullWireHeader) + 4 * (size_t)in * out;
}

size_t full_expert_wire_bytes(cpu::ExpertAct kind, int d, int h) {
  return sizeof(FullExpertWireHeader) + (size_t)(wire::expert_matrix_count(kind) - 1) * full_wire_bytes(d, h) +
         full_wire_bytes(h, d);
}

size_t FullExpertView::wire_bytes() const { return full_expert_wire_bytes(kind, d, h); }

size_t FullExpertView::memory_bytes() const { return 4 * (w1.w.size() + w3.w.size() + w2.w.size()); }

void FullExpertView::dequantize(float* W1, float* W3, float* W2) const {
  float* const dense[3] = {W1, W3, W2};
  wire::for_each_matrix(*this, [&](int slot, const char*, const FullMatrix& m, int, int) {
    std::memcpy(dense[slot], m.w.data(), 4 * m.w.size());
  });
}

FullExpertView full_view_from_master(const float* W1, const float* W3, const float* W2, int d, int h,
                                     cpu::ExpertAct kind) {
  wire::check_act("full_view_from_master", kind);
  wire::check_shape("full_view_from_master", d, h);
  if (wire::has_w3(kind) && W3 == nullptr) wire::invalid("full_view_from_master", "a swiglu expert needs W3");
  FullExpertView v;
  v.kind = kind;
  v.d = d;
  v.h = h;
  const float* const master[3] = {W1, W3, W2};
  wire::for_each_matrix(v, [&](int slot, const char*, FullMatrix& m, int in, int out) {
    m = matrix_from(master[slot], in, out);
  });
  return v;
}

std::vector<uint8_t> full_expert_to_wire(const FullExpertView& v) {
  wire::check_expert("full_expert_to_wire", v);
  return wire::expert_to_wire<FullExpertWireHeader>(v, append_matrix);
}

FullExpertView full_expert_from_wire(const uint8_t* data, size_t size) {
  const std::string what = "full_expert_from_wire";
  // the whole size follows from kind, d and h: checked before any matrix is decoded
  auto check_size = [&](const FullExpertView& v) {
    const size_t need = v.wire_bytes();
    if (size != need)
      malformed(what, "size " + std::to_string(size) + " bytes, expected " + std::to_string(need) + " for a " +
                          (wire::has_w3(v.kind) ? "swiglu" : "relu2") + " expert with d = " + std::to_string(v.d) +
                          ", h = " + std::to_string(v.h));
  };
  return wire::expert_from_wire<FullExpertWireHeader, FullExpertView>(data, size, what, "full expert",
                                                                      decode_matrix, check_size);
}

}  // namespace px
