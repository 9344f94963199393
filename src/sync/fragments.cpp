// FragmentPlan: which parameter tensors belong to which backbone fragment.
#include "sync/fragments.hpp"

#include <algorithm>
#include <cstring>

#include "model/param_init.hpp"  // defines: init_arena_range

namespace px {

namespace {
// "layers.7.attn.wq" -> 7; -1 for tensors outside the layers.
int layer_of(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return -1;
  return std::stoi(name.substr(7));
}
}  // namespace

FragmentPlan::FragmentPlan(const ParamLayout& layout, int fragments, bool with_experts,
                           const ArenaSpan* held)
    : frags_(fragments), sizes_(fragments, 0) {
  for (const ParamSpec& spec : layout.specs) {
    if (!with_experts && spec.arena == Arena::EXPERTS) continue;
    size_t lo = 0;
    if (held) {  // tensors lie wholly inside a stage's span or wholly outside
      const ArenaSpan& span = held[(int)spec.arena];
      if (spec.offset < span.lo || spec.offset + spec.size > span.hi) continue;
      lo = span.lo;
    }
    const int layer = layer_of(spec.name);
    const int f = layer >= 0 ? layer % fragments : (spec.name == "embed" ? 0 : fragments - 1);
    frags_[f].push_back({spec.arena, spec.offset - lo, spec.offset, spec.size, sizes_[f],
                         spec.name == "embed"});
    sizes_[f] += spec.size;
  }
}

void FragmentPlan::gather(int f, size_t lo, size_t hi, const float* const arenas[2],
                          float* out) const {
  for (const FragmentPiece& piece : frags_[f]) {
    const size_t begin = std::max(lo, piece.flat), end = std::min(hi, piece.flat + piece.size);
    if (begin < end)
      std::memcpy(out + (begin - lo), arenas[(int)piece.arena] + piece.offset + (begin - piece.flat),
                  sizeof(float) * (end - begin));
  }
}

void FragmentPlan::initial(const ParamLayout& layout, uint64_t seed, int f, size_t lo, size_t hi,
                           float* out) const {
  for (const FragmentPiece& piece : frags_[f]) {
    const size_t begin = std::max(lo, piece.flat), end = std::min(hi, piece.flat + piece.size);
    if (begin < end) {
      const size_t a0 = piece.origin + (begin - piece.flat);
      init_arena_range(layout, piece.arena, seed, a0, a0 + (end - begin), out + (begin - lo));
    }
  }
}

void FragmentPlan::scatter(int f, size_t lo, size_t hi, const float* in,
                           float* const arenas[2]) const {
  for (const FragmentPiece& piece : frags_[f]) {
    const size_t begin = std::max(lo, piece.flat), end = std::min(hi, piece.flat + piece.size);
    if (begin < end && arenas[(int)piece.arena])
      std::memcpy(arenas[(int)piece.arena] + piece.offset + (begin - piece.flat), in + (begin - lo),
                  sizeof(float) * (end - begin));
  }
}

}  // namespace px
