// defines: sketch_wire_bytes, sketch_checksum64, sketch_encode, sketch_wrap, sketch_verify,
//          sketch_unpack, sketch_status_name, SketchTally
#include "wire/sketch_wire.hpp"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "config/config.hpp"  // defines: SketchDtype (its order is the wire's dtype byte)

namespace px {

static_assert((int)SketchDtype::INT8 == SKETCH_INT8 && (int)SketchDtype::FP8 == SKETCH_FP8 &&
                  (int)SketchDtype::BF16 == SKETCH_BF16,
              "SketchDtype and SketchElem must agree");

namespace {

constexpr size_t kHeader = sizeof(SketchHeader);
// Scales above this could overflow when multiplied by the largest code (448 for fp8).
constexpr float kMaxScale = FLT_MAX / 512.f;

bool valid_dtype(uint8_t t) { return t <= SKETCH_BF16; }

// Word hash: h = (h ^ w) * P over 8-byte words (zero-padded tail), then the length and a
// splitmix64 finish. Each step is a bijection of h, so any single changed word changes the sum.
struct Hash64 {
  uint64_t h = 0xcbf29ce484222325ull;
  void words(const uint8_t* p, size_t n) {
    size_t full = n / 8 * 8;
    for (size_t i = 0; i < full; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
    }
    if (full < n) {
      uint64_t w = 0;
      std::memcpy(&w, p + full, n - full);
      h = (h ^ w) * 0x100000001b3ull;
    }
  }
  uint64_t finish(size_t total) const { return splitmix64(h ^ (uint64_t)total); }
};

void write_header(std::vector<uint8_t>& out, const SketchMeta& meta, int n, int d) {
  SketchHeader h;
  h.dtype = meta.dtype;
  h.handle = meta.handle;
  h.step = meta.step;
  h.source_rank = meta.source_rank;
  h.n = n;
  h.d = d;
  std::memcpy(out.data(), &h, kHeader);
}

void seal(std::vector<uint8_t>& out) {
  SketchHeader h;
  std::memcpy(&h, out.data(), kHeader);
  h.checksum = sketch_checksum64(h, out.data() + kHeader, out.size() - kHeader);
  std::memcpy(out.data(), &h, kHeader);
}

float load_f32(const uint8_t* p, size_t i) {
  float v;
  std::memcpy(&v, p + 4 * i, 4);
  return v;
}

// Largest |code value| of a row (NaN when a code is NaN or infinite).
float row_code_absmax(const uint8_t* codes, int d, SketchElem t) {
  float m = 0.f;
  for (int i = 0; i < d; ++i) {
    float v = std::fabs(sketch_decode_elem(codes, i, 1.f, t));
    if (!(v <= FLT_MAX)) return NAN;
    m = std::fmax(m, v);
  }
  return m;
}

}  // namespace

size_t sketch_wire_bytes(SketchElem dtype, int n, int d) {
  return kHeader + 8 * (size_t)n + 2 * (size_t)n * d * sketch_elem_bytes(dtype);
}

uint64_t sketch_checksum64(const SketchHeader& header, const uint8_t* payload, size_t bytes) {
  SketchHeader h = header;
  h.checksum = 0;
  Hash64 hash;
  hash.words(reinterpret_cast<const uint8_t*>(&h), kHeader);
  hash.words(payload, bytes);
  return hash.finish(kHeader + bytes);
}

void sketch_encode(std::vector<uint8_t>& out, const SketchMeta& meta, const float* X,
                   const float* dY, int n, int d) {
  const SketchElem t = meta.dtype;
  const size_t row_bytes = (size_t)d * sketch_elem_bytes(t);
  out.assign(sketch_wire_bytes(t, n, d), 0);
  write_header(out, meta, n, d);
  uint8_t* xs = out.data() + kHeader;
  uint8_t* dys = xs + 4 * (size_t)n;
  uint8_t* xq = dys + 4 * (size_t)n;
  uint8_t* dyq = xq + row_bytes * n;
  auto code_row = [&](const float* v, uint8_t* scale_at, uint8_t* codes) {
    float amax = 0.f;
    for (int i = 0; i < d; ++i) amax = std::fmax(amax, std::fabs(v[i]));
    float s = sketch_row_scale(amax, t);
    std::memcpy(scale_at, &s, 4);
    for (int i = 0; i < d; ++i) sketch_encode_elem(v[i], s, t, codes, i);
  };
  for (int r = 0; r < n; ++r) {
    code_row(X + (size_t)r * d, xs + 4 * r, xq + row_bytes * r);
    code_row(dY + (size_t)r * d, dys + 4 * r, dyq + row_bytes * r);
  }
  seal(out);
}

void sketch_wrap(std::vector<uint8_t>& out, const SketchMeta& meta, int n, int d,
                 const float* xs, const float* dys, const uint8_t* xq, const uint8_t* dyq) {
  const size_t codes = (size_t)n * d * sketch_elem_bytes(meta.dtype);
  out.assign(sketch_wire_bytes(meta.dtype, n, d), 0);
  write_header(out, meta, n, d);
  uint8_t* p = out.data() + kHeader;
  std::memcpy(p, xs, 4 * (size_t)n);
  std::memcpy(p + 4 * (size_t)n, dys, 4 * (size_t)n);
  std::memcpy(p + 8 * (size_t)n, xq, codes);
  std::memcpy(p + 8 * (size_t)n + codes, dyq, codes);
  seal(out);
}

SketchStatus sketch_verify(const uint8_t* bytes, size_t size, const SketchCheck& check,
                           SketchView* view) {
  if (size < kHeader) return SketchStatus::TRUNCATED;
  SketchHeader h;
  std::memcpy(&h, bytes, kHeader);
  if (h.magic != kSketchMagic) return SketchStatus::BAD_MAGIC;
  if (h.version != kSketchVersion) return SketchStatus::BAD_VERSION;
  if (sketch_checksum64(h, bytes + kHeader, size - kHeader) != h.checksum)
    return SketchStatus::BAD_CHECKSUM;
  if (!valid_dtype(h.dtype) || h.flags != 0 || h.reserved != 0 || h.d != check.d || h.n < 0 ||
      h.n > check.max_rows)
    return SketchStatus::BAD_SHAPE;
  const SketchElem t = (SketchElem)h.dtype;
  const size_t want = sketch_wire_bytes(t, h.n, h.d);
  if (size < want) return SketchStatus::TRUNCATED;
  if (size > want) return SketchStatus::BAD_SHAPE;
  if (check.known_handle && !check.known_handle(h.handle)) return SketchStatus::UNKNOWN_HANDLE;
  if (h.step < check.home_step - check.max_staleness) return SketchStatus::STALE;

  SketchView v;
  v.header = h;
  v.xs = bytes + kHeader;
  v.dys = v.xs + 4 * (size_t)h.n;
  v.xq = v.dys + 4 * (size_t)h.n;
  const size_t row_bytes = (size_t)h.d * sketch_elem_bytes(t);
  v.dyq = v.xq + row_bytes * h.n;
  for (int r = 0; r < h.n; ++r) {
    for (auto [scales, codes] : {std::pair{v.xs, v.xq}, std::pair{v.dys, v.dyq}}) {
      float s = load_f32(scales, r);
      if (!(s >= 0.f && s <= kMaxScale)) return SketchStatus::NON_FINITE;
      float m = row_code_absmax(codes + row_bytes * r, h.d, t);
      if (!std::isfinite(m * s)) return SketchStatus::NON_FINITE;
    }
  }
  if (view) *view = v;
  return SketchStatus::OK;
}

void sketch_unpack(const SketchView& view, std::vector<float>& X, std::vector<float>& dY) {
  const int n = view.header.n, d = view.header.d;
  const SketchElem t = (SketchElem)view.header.dtype;
  const size_t row_bytes = (size_t)d * sketch_elem_bytes(t);
  X.resize((size_t)n * d);
  dY.resize((size_t)n * d);
  for (int r = 0; r < n; ++r) {
    float sx = load_f32(view.xs, r), sy = load_f32(view.dys, r);
    for (int i = 0; i < d; ++i) {
      X[(size_t)r * d + i] = sketch_decode_elem(view.xq + row_bytes * r, i, sx, t);
      dY[(size_t)r * d + i] = sketch_decode_elem(view.dyq + row_bytes * r, i, sy, t);
    }
  }
}

const char* sketch_status_name(SketchStatus s) {
  static const char* names[kSketchStatusCount] = {
      "ok", "truncated", "bad_magic", "bad_version", "bad_checksum",
      "bad_shape", "unknown_handle", "non_finite", "stale"};
  int i = (int)s;
  return i >= 0 && i < kSketchStatusCount ? names[i] : "?";
}

uint64_t SketchTally::rejected() const {
  uint64_t r = 0;
  for (int i = 1; i < kSketchStatusCount; ++i) r += count[i];
  return r;
}

std::string SketchTally::summary() const {
  std::string s = "accepted " + std::to_string(count[0]) + ", rejected " + std::to_string(rejected());
  std::string parts;
  for (int i = 1; i < kSketchStatusCount; ++i)
    if (count[i])
      parts += (parts.empty() ? "" : ", ") + std::string(sketch_status_name((SketchStatus)i)) +
               " " + std::to_string(count[i]);
  return parts.empty() ? s : s + " (" + parts + ")";
}

}  // namespace px
