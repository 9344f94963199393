#pragma once
// Counter-based hash RNG shared by the CPU and CUDA backends: a value depends only on
// (seed, counter), never on threads or call order, so every backend draws the same numbers.
#include <cstdint>

#include "util/host_device.hpp"  // defines: PX_HD

namespace px {

// splitmix64 finaliser (Steele, Lea, Flood 2014): a bijection on 64-bit words.
PX_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1] with 53 random bits.
PX_HD inline double uniform01(uint64_t seed, uint64_t counter) {
  return ((splitmix64(seed ^ splitmix64(counter)) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

}  // namespace px
