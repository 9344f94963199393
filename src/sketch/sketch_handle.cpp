// defines: siphash24, sketch_handle, SketchHandleTable
#include "sketch/sketch_handle.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

namespace px {

namespace {

inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

struct SipState {
  uint64_t v0, v1, v2, v3;
  void round() {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
  }
  void absorb(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

}  // namespace

uint64_t siphash24(const SketchKey& key, const void* data, size_t len) {
  SipState s{key.k0 ^ 0x736f6d6570736575ull, key.k1 ^ 0x646f72616e646f6dull,
             key.k0 ^ 0x6c7967656e657261ull, key.k1 ^ 0x7465646279746573ull};
  const uint8_t* p = static_cast<const uint8_t*>(data);
  size_t full = len / 8 * 8;
  for (size_t i = 0; i < full; i += 8) {
    uint64_t m;
    std::memcpy(&m, p + i, 8);  // little-endian host (static_assert in codec.hpp)
    s.absorb(m);
  }
  uint64_t last = (uint64_t)(len & 0xff) << 56;
  for (size_t i = full; i < len; ++i) last |= (uint64_t)p[i] << (8 * (i - full));
  s.absorb(last);
  s.v2 ^= 0xff;
  for (int r = 0; r < 4; ++r) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

uint64_t sketch_handle(const SketchKey& key, int layer, int expert) {
  uint32_t msg[2] = {(uint32_t)layer, (uint32_t)expert};
  return siphash24(key, msg, sizeof msg);
}

uint64_t SketchHandleTable::add(int layer, int expert) {
  uint64_t h = sketch_handle(key_, layer, expert);
  auto [it, fresh] = map_.emplace(h, std::make_pair(layer, expert));
  if (!fresh && it->second != std::make_pair(layer, expert))
    throw std::logic_error("sketch handle collision between (" + std::to_string(layer) + ", " +
                           std::to_string(expert) + ") and (" + std::to_string(it->second.first) +
                           ", " + std::to_string(it->second.second) + ")");
  return h;
}

std::optional<std::pair<int, int>> SketchHandleTable::find(uint64_t handle) const {
  auto it = map_.find(handle);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

}  // namespace px
