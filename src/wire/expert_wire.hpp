#pragma once
// The framing shared by the wire forms of an expert's view (model/ternary_view.hpp: ternary
// views; model/lowrank_view.hpp: low-rank views and deltas): one 16-byte expert header, then
// the expert's matrices W1 [d, h], W3 [d, h] (swiglu only), W2 [h, d] back to back, each in its
// base's own matrix form (own header + payload). Little-endian, nothing aligned (memcpy).
//
//   ExpertWireHeader<Magic, Version>   16 bytes: magic, version (uint16), act (0 swiglu,
//                                      1 relu2), reserved 0, d, h (int32 >= 1)
//
// Here: the header, its checks, the per-matrix loops of encoding and decoding (shapes against
// d and h, no trailing bytes) and the error messages, which name the caller (`what`) and say
// what is wrong and where: "px::<what>: malformed buffer: <why>" for a bad buffer,
// "px::<what>: <why>" for a bad argument, both std::invalid_argument.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"  // defines: ExpertAct

namespace px {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

// The largest |weight| a view may stand for: trained weights are orders of magnitude below it,
// so a view past it is a corrupted or poisoned message (or diverged masters), refused by both
// encoding and decoding; the products of views within it and bounded activations stay finite.
inline constexpr float kViewWeightBound = 1e8f;

// The header of one expert; each base has its own magic (and version).
template <uint32_t Magic, uint16_t Version>
struct ExpertWireHeader {
  uint32_t magic = Magic;
  uint16_t version = Version;
  uint8_t act = 0;       // cpu::ExpertAct: 0 swiglu (W1, W3, W2), 1 relu2 (W1, W2)
  uint8_t reserved = 0;  // must be 0
  int32_t d = 0;         // model width
  int32_t h = 0;         // expert hidden width
};
static_assert(sizeof(ExpertWireHeader<0, 0>) == 16, "the expert header is 16 bytes on the wire");

namespace wire {

[[noreturn]] void malformed(const std::string& what, const std::string& why);  // a bad buffer
[[noreturn]] void invalid(const std::string& what, const std::string& why);    // a bad argument
std::string shape_str(int in, int out);                                        // "[in, out]"
std::string weight_bound_str();                                                // "1e+08"
// in, out >= 1, else invalid(what, "shape [in, out] (in and out must be >= 1)").
void check_shape(const std::string& what, int in, int out);
// swiglu or relu2, else invalid(what, "unknown expert activation <kind>").
void check_act(const std::string& what, cpu::ExpertAct kind);

inline bool has_w3(cpu::ExpertAct kind) { return kind == cpu::EXPERT_ACT_SWIGLU; }
inline int expert_matrix_count(cpu::ExpertAct kind) { return has_w3(kind) ? 3 : 2; }

// ---- a matrix's header ------------------------------------------------------------------------

// Reads the header H at data[0..size) and checks its magic and version (both bases' headers
// start with them): "N bytes, shorter than the 16-byte <header_name>", "bad magic (not a
// <kind_name>)", "version V (expected W)".
template <class H>
H read_header(const uint8_t* data, size_t size, const std::string& what, const char* header_name,
              const char* kind_name) {
  H hd;
  if (size < sizeof hd)
    malformed(what, std::to_string(size) + " bytes, shorter than the " + std::to_string(sizeof hd) + "-byte " +
                        header_name);
  std::memcpy(&hd, data, sizeof hd);
  const H expected{};
  if (hd.magic != expected.magic) malformed(what, std::string("bad magic (not a ") + kind_name + ")");
  if (hd.version != expected.version)
    malformed(what, "version " + std::to_string(hd.version) + " (expected " + std::to_string(expected.version) + ")");
  return hd;
}

// The reserved field of a header is 0.
void check_reserved(const std::string& what, unsigned reserved);
// A matrix header's shape: in, out >= 1.
void check_header_shape(const std::string& what, int in, int out);
// A matrix of `need` bytes at data[0..size): exactly `size` bytes when alone (used == null),
// at least when it is followed by others (then *used = need, by the caller on success).
// `shape` describes it for the message ("[in, out]" or "[in, out] at rank r").
void check_matrix_size(const std::string& what, size_t size, size_t need, bool alone, const std::string& shape);

// ---- one expert ---------------------------------------------------------------------------------

// Visits an expert's matrices in wire order: f(slot, name, matrix, in, out) with slot 0, 1, 2 for
// W1, W3, W2 (W3 only for swiglu) and the shape each must have, [d, h] or [h, d].
template <class View, class F>
void for_each_matrix(View& v, F&& f) {
  f(0, "W1", v.w1, v.d, v.h);
  if (has_w3(v.kind)) f(1, "W3", v.w3, v.d, v.h);
  f(2, "W2", v.w2, v.h, v.d);
}

// The matrix of slot 0, 1, 2 (W1, W3, W2).
template <class View>
auto& matrix_at(View& v, int slot) {
  return slot == 0 ? v.w1 : (slot == 1 ? v.w3 : v.w2);
}

// A well-formed expert to encode: a known activation, d, h >= 1, every matrix of its shape
// ("<name> is [a, b], expected [c, d]").
template <class View>
void check_expert(const std::string& what, const View& v) {
  check_act(what, v.kind);
  check_shape(what, v.d, v.h);
  for_each_matrix(v, [&](int, const char* name, const auto& m, int in, int out) {
    if (m.in != in || m.out != out)
      invalid(what, std::string(name) + " is " + shape_str(m.in, m.out) + ", expected " + shape_str(in, out));
  });
}

// The wire form of an (already checked) expert: header H, then append(buf, matrix) for each
// matrix in wire order.
template <class H, class View, class Append>
std::vector<uint8_t> expert_to_wire(const View& v, Append&& append) {
  std::vector<uint8_t> buf(sizeof(H));
  buf.reserve(v.wire_bytes());
  H hd;
  hd.act = (uint8_t)v.kind;
  hd.d = v.d;
  hd.h = v.h;
  std::memcpy(buf.data(), &hd, sizeof hd);
  for_each_matrix(v, [&](int, const char*, const auto& m, int, int) { append(buf, m); });
  return buf;
}

// Decodes an expert of header H from data[0..size): checks the header (magic and version as
// read_header, "activation kind A (0 swiglu, 1 relu2)", reserved, "d = D, h = H (must be >= 1)"),
// calls check_size(v) on the view with kind, d and h set (a base that knows the whole size from
// them checks it there), then decodes each matrix with
// decode(bytes, size_left, "<what>: <name>", &used), checks its shape, and refuses trailing
// bytes ("N trailing bytes"). kind_name names the format in the bad-magic message.
template <class H, class View, class Decode, class CheckSize>
View expert_from_wire(const uint8_t* data, size_t size, const std::string& what, const char* kind_name,
                      Decode&& decode, CheckSize&& check_size) {
  const H hd = read_header<H>(data, size, what, "expert header", kind_name);
  if (hd.act > 1) malformed(what, "activation kind " + std::to_string(hd.act) + " (0 swiglu, 1 relu2)");
  check_reserved(what, hd.reserved);
  if (hd.d < 1 || hd.h < 1)
    malformed(what, "d = " + std::to_string(hd.d) + ", h = " + std::to_string(hd.h) + " (must be >= 1)");
  View v;
  v.kind = (cpu::ExpertAct)hd.act;
  v.d = hd.d;
  v.h = hd.h;
  check_size(v);
  size_t pos = sizeof hd;
  for_each_matrix(v, [&](int, const char* name, auto& m, int in, int out) {
    size_t used = 0;
    m = decode(data + pos, size - pos, what + ": " + name, &used);
    if (m.in != in || m.out != out)
      malformed(what, std::string(name) + " is " + shape_str(m.in, m.out) + ", expected " + shape_str(in, out));
    pos += used;
  });
  if (pos != size) malformed(what, std::to_string(size - pos) + " trailing bytes");
  return v;
}

}  // namespace wire
}  // namespace px
