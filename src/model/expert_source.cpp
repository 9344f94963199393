// defines: ExpertSource
#include "model/expert_source.hpp"

#include "model/expert_slices.hpp"  // defines: expert_offset
#include "model/param_init.hpp"     // defines: init_arena_range

namespace px {

ExpertSource ExpertSource::arena(const ModelConfig& mc, const ParamLayout& layout, const float* experts_arena) {
  ExpertSource s(mc, layout);
  s.arena_ = experts_arena;
  return s;
}

ExpertSource ExpertSource::initial(const ModelConfig& mc, const ParamLayout& layout, uint64_t seed) {
  ExpertSource s(mc, layout);
  s.seed_ = seed;
  return s;
}

void ExpertSource::get(int m, int e, const float** W1, const float** W3, const float** W2) const {
  const bool glu = mc_.expert_act == ExpertActKind::SWIGLU;
  const size_t wsz = (size_t)mc_.d_model * mc_.expert_hidden;
  const float* w[3] = {nullptr, nullptr, nullptr};
  if (!arena_) one_.resize(3 * wsz);
  for (int which = 0; which < 3; ++which) {
    if (which == 1 && !glu) continue;
    const size_t off = expert_offset(mc_, layout_, m, e, which);
    if (arena_) {
      w[which] = arena_ + off;
    } else {
      float* dst = one_.data() + which * wsz;
      init_arena_range(layout_, Arena::EXPERTS, seed_, off, off + wsz, dst);
      w[which] = dst;
    }
  }
  *W1 = w[0];
  *W3 = w[1];
  *W2 = w[2];
}

}  // namespace px
