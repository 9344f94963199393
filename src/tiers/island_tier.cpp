// defines: IslandTier
#include "tiers/island_tier.hpp"

namespace px {

void IslandTier::after_step(const StepEvent& e) {
  if (e.step % every_ != 0) return;
  MoeModel<float>& host = model_.host();
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    float* params = host.params(a);
    const size_t n = host.arena_size(a);
    model_.to_host(a);
    island_.allreduce_sum(params, (int64_t)n, Tier::ISLAND);
    const float inv = 1.f / (float)island_.size();
    for (size_t i = 0; i < n; ++i) params[i] *= inv;
    model_.to_device(a);
  }
}

}  // namespace px
