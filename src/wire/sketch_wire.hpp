#pragma once
// The wire form of one sketch (DESIGN §7): one expert, one step, one island rank. What a home
// needs to estimate the expert's weight gradient from n sampled tokens: X [n, d] (expert
// inputs) and dY [n, d] (output gradients, gate weight and importance reweighting folded in).
//
// Layout, little-endian, parts back to back without padding:
//   SketchHeader            48 bytes (below)
//   xs  [n]  fp32           row scales of X   (all 1 for bf16)
//   dys [n]  fp32           row scales of dY  (all 1 for bf16)
//   xq  [n, d] codes        1 byte per value (int8, fp8 e4m3) or 2 (bf16); sketch/sketch_quant.hpp
//   dyq [n, d] codes
// Size: 48 + 8 n + 2 n d b, b = bytes per code (sketch_wire_bytes).
// checksum: sketch_checksum64 over the header (its checksum field set to 0), then the payload.
//
// A home calls sketch_verify before anything else. It never throws and never reads past
// `size`: a sketch is rejected (a SketchStatus other than OK) when it is truncated or too long,
// has another magic or version, a bad checksum, a shape other than expected, an unknown handle,
// a non-finite scale or code, or a step more than max_staleness older than the home's.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sketch/sketch_quant.hpp"  // defines: SketchElem

namespace px {

inline constexpr uint32_t kSketchMagic = 0x4B535850u;  // "PXSK" in file order
inline constexpr uint16_t kSketchVersion = 1;

struct SketchHeader {
  uint32_t magic = kSketchMagic;
  uint16_t version = kSketchVersion;
  uint8_t dtype = SKETCH_INT8;  // SketchElem
  uint8_t flags = 0;            // none defined; must be 0
  uint64_t handle = 0;          // opaque expert handle (sketch/sketch_handle.hpp)
  int64_t step = 0;             // the island's step that produced it
  int32_t source_rank = 0;      // world rank of the island rank that sent it
  int32_t n = 0;                // rows (tokens)
  int32_t d = 0;                // columns (d_model)
  uint32_t reserved = 0;        // must be 0
  uint64_t checksum = 0;
};
static_assert(sizeof(SketchHeader) == 48, "the sketch header is 48 bytes on the wire");

// Who sent what: the header fields a sender chooses.
struct SketchMeta {
  uint64_t handle = 0;
  int64_t step = 0;
  int32_t source_rank = 0;
  SketchElem dtype = SKETCH_INT8;
};

size_t sketch_wire_bytes(SketchElem dtype, int n, int d);

// 64-bit checksum of the header (checksum field taken as 0) followed by `payload` bytes.
uint64_t sketch_checksum64(const SketchHeader& header, const uint8_t* payload, size_t bytes);

// Island side (CPU): codes X [n, d] and dY [n, d] row by row (sketch/sketch_quant.hpp) into `out`
// (resized to sketch_wire_bytes). dY must already carry the gate and reweighting factors.
void sketch_encode(std::vector<uint8_t>& out, const SketchMeta& meta, const float* X,
                   const float* dY, int n, int d);

// Island side (GPU): wraps codes already made on the device (expert e's slice of
// SketchBuffers, copied to the host) with a header and checksum.
void sketch_wrap(std::vector<uint8_t>& out, const SketchMeta& meta, int n, int d,
                 const float* xs, const float* dys, const uint8_t* xq, const uint8_t* dyq);

enum class SketchStatus {
  OK,
  TRUNCATED,       // shorter than a header, or than the header's shape needs
  BAD_MAGIC,
  BAD_VERSION,
  BAD_CHECKSUM,
  BAD_SHAPE,       // d other than expected, n < 0 or above max_rows, unknown dtype/flags, extra bytes
  UNKNOWN_HANDLE,
  NON_FINITE,      // a scale that is negative, NaN, inf or huge; an fp8/bf16 NaN or inf code
  STALE,           // step < home_step - max_staleness
};
inline constexpr int kSketchStatusCount = 9;
const char* sketch_status_name(SketchStatus s);

// What a home expects of an incoming sketch.
struct SketchCheck {
  int d = 0;                  // expected columns
  int max_rows = 0;           // [sketch] tokens
  int64_t home_step = 0;      // the home's current step
  int max_staleness = 0;      // [sketch] max_staleness
  std::function<bool(uint64_t)> known_handle;  // empty: every handle is accepted
};

// A verified sketch, pointing into the caller's bytes.
struct SketchView {
  SketchHeader header;
  const uint8_t* xs = nullptr;   // [n] fp32 (unaligned: read with memcpy)
  const uint8_t* dys = nullptr;
  const uint8_t* xq = nullptr;   // [n, d] codes
  const uint8_t* dyq = nullptr;
};

// Checks in this order: size >= header, magic, version, checksum (over the bytes as they are),
// shape (incl. exact total size), handle, staleness, finiteness. Fills *view on OK.
SketchStatus sketch_verify(const uint8_t* bytes, size_t size, const SketchCheck& check,
                           SketchView* view);

// Decodes a verified sketch into X [n, d] and dY [n, d] (resized).
void sketch_unpack(const SketchView& view, std::vector<float>& X, std::vector<float>& dY);

// Counts of what a home received, by status (OK = accepted).
struct SketchTally {
  std::array<uint64_t, kSketchStatusCount> count{};
  void add(SketchStatus s) { ++count[(int)s]; }
  uint64_t rejected() const;
  std::string summary() const;  // "accepted 12, rejected 2 (bad_checksum 1, stale 1)"
};

}  // namespace px
