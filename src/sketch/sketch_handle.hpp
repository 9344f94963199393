#pragma once
// Opaque expert handles (DESIGN §7): a sketch names its expert by a keyed hash of (layer,
// expert), so an expert worker that holds no key cannot tell which layer it trains. The hash is
// SipHash-2-4 (Aumasson & Bernstein 2012), a pseudo-random function under a 128-bit key: without
// the key, handles of different experts look unrelated (a plain mixer such as splitmix64 is
// invertible and would leak XOR relations between handles).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>

namespace px {

struct SketchKey {
  uint64_t k0 = 0, k1 = 0;  // the 16 key bytes, little-endian halves
};

// SipHash-2-4 of len bytes under key.
uint64_t siphash24(const SketchKey& key, const void* data, size_t len);

// The handle of (layer, expert): SipHash of the 8 bytes layer (u32 LE) | expert (u32 LE).
uint64_t sketch_handle(const SketchKey& key, int layer, int expert);

// A home's table from handles back to the (layer, expert) it serves.
class SketchHandleTable {
 public:
  explicit SketchHandleTable(SketchKey key) : key_(key) {}
  // Registers (layer, expert); throws std::logic_error on a handle collision (never seen in
  // practice: 2^-64 per pair).
  uint64_t add(int layer, int expert);
  std::optional<std::pair<int, int>> find(uint64_t handle) const;
  size_t size() const { return map_.size(); }

 private:
  SketchKey key_;
  std::unordered_map<uint64_t, std::pair<int, int>> map_;
};

}  // namespace px
