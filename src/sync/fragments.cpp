// FragmentPlan: which parameter tensors belong to which backbone fragment.
#include "sync/fragments.hpp"

#include <algorithm>
#include <cstring>

namespace px {

namespace {
// "layers.7.attn.wq" -> 7; -1 for tensors outside the layers.
int layer_of(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return -1;
  return std::stoi(name.substr(7));
}
}  // namespace

FragmentPlan::FragmentPlan(const ParamLayout& layout, int F, bool with_experts)
    : frags_(F), sizes_(F, 0) {
  for (const ParamSpec& s : layout.specs) {
    if (!with_experts && s.arena == Arena::EXPERTS) continue;
    const int l = layer_of(s.name);
    const int f = l >= 0 ? l % F : (s.name == "embed" ? 0 : F - 1);
    frags_[f].push_back({s.arena, s.offset, s.size, sizes_[f], s.name == "embed"});
    sizes_[f] += s.size;
  }
}

void FragmentPlan::gather(int f, size_t lo, size_t hi, const float* const arenas[2],
                          float* out) const {
  for (const FragmentPiece& p : frags_[f]) {
    const size_t a = std::max(lo, p.flat), b = std::min(hi, p.flat + p.size);
    if (a < b)
      std::memcpy(out + (a - lo), arenas[(int)p.arena] + p.offset + (a - p.flat),
                  sizeof(float) * (b - a));
  }
}

void FragmentPlan::scatter(int f, size_t lo, size_t hi, const float* in,
                           float* const arenas[2]) const {
  for (const FragmentPiece& p : frags_[f]) {
    const size_t a = std::max(lo, p.flat), b = std::min(hi, p.flat + p.size);
    if (a < b)
      std::memcpy(arenas[(int)p.arena] + p.offset + (a - p.flat), in + (a - lo),
                  sizeof(float) * (b - a));
  }
}

}  // namespace px
