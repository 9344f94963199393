// init_arena_range: Box-Muller normals from two counter-based uniforms per element.
#include "model/param_init.hpp"

#include <algorithm>
#include <cmath>

#include "util/hash_rng.hpp"  // defines: splitmix64, uniform01

namespace px {

namespace {
// A standard normal for element i of the stream `key` (the cosine half of Box-Muller).
inline double standard_normal(uint64_t key, uint64_t i) {
  const double u1 = uniform01(key, 2 * i), u2 = uniform01(key, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
}  // namespace

template <class T>
void init_arena_range(const ParamLayout& layout, Arena a, uint64_t seed, size_t lo, size_t hi, T* out) {
  const uint64_t key = splitmix64(seed ^ (0x706172616d73ull + (uint64_t)a));  // "params"
  for (const ParamSpec& s : layout.specs) {
    if (s.arena != a) continue;
    const size_t begin = std::max(lo, s.offset), end = std::min(hi, s.offset + s.size);
    if (begin >= end) continue;
    T* dst = out + (begin - lo);
    if (s.init_std == 0) {
      std::fill(dst, dst + (end - begin), (T)1);
      continue;
    }
    const double sd = s.init_std;
#pragma omp parallel for schedule(static)
    for (int64_t i = (int64_t)begin; i < (int64_t)end; ++i)
      dst[i - (int64_t)begin] = (T)(sd * standard_normal(key, (uint64_t)i));
  }
}

template void init_arena_range<float>(const ParamLayout&, Arena, uint64_t, size_t, size_t, float*);
template void init_arena_range<double>(const ParamLayout&, Arena, uint64_t, size_t, size_t, double*);

}  // namespace px
