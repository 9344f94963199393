// defines: parse_sketch_bundle
#include "wire/sketch_bundle.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

namespace px {

SketchBundle parse_sketch_bundle(const uint8_t* data, size_t size, int src) {
  const std::string from = "sketch bundle from rank " + std::to_string(src);
  SketchBundle b;
  if (size < sizeof b.header)
    throw std::runtime_error(from + ": " + std::to_string(size) + " bytes, shorter than its header");
  std::memcpy(&b.header, data, sizeof b.header);
  if (b.header.magic != SketchBundleHeader{}.magic) throw std::runtime_error(from + " has a bad magic");
  const uint32_t n = b.header.count;
  size_t o = sizeof b.header;
  auto truncated = [&](uint32_t i) {
    return std::runtime_error(from + " truncated in sketch " + std::to_string(i) + " of " + std::to_string(n));
  };
  for (uint32_t i = 0; i < n; ++i) {
    if (size - o < 4) throw truncated(i);
    uint32_t len = 0;
    std::memcpy(&len, data + o, 4);
    if (size - o - 4 < len) throw truncated(i);
    b.sketches.emplace_back(data + o + 4, len);
    o += 4 + (size_t)len;
  }
  if (o != size) throw std::runtime_error(from + " has " + std::to_string(size - o) + " trailing bytes");
  return b;
}

}  // namespace px
