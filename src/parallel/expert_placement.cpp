// defines: expert_home, experts_homed_at
#include "parallel/expert_placement.hpp"

#include <stdexcept>
#include <string>

namespace px {

int expert_home(const Topology& topo, int moe_layer, int expert, int n_experts) {
  if (moe_layer < 0 || expert < 0 || expert >= n_experts)
    throw std::invalid_argument("expert_home: expert (" + std::to_string(moe_layer) + ", " +
                                std::to_string(expert) + ") outside " +
                                std::to_string(n_experts) + " experts per layer");
  const long g = (long)moe_layer * n_experts + expert;
  if (topo.expert_workers > 0) return topo.worker_rank((int)(g % topo.expert_workers));
  const int I = topo.islands, R = topo.ranks_per_island;
  const int island = expert % I;
  // Position of (m, e) among the island's experts in (m, e) order: the island homes
  // per_layer = #{e' < E : e' mod I == island} experts of every layer.
  const int per_layer = (n_experts - island + I - 1) / I;
  const long pos = (long)moe_layer * per_layer + expert / I;
  return topo.learner_rank(island, (int)(pos % R));
}

std::vector<ExpertId> experts_homed_at(const Topology& topo, int rank, int moe_layers,
                                       int n_experts) {
  std::vector<ExpertId> out;
  for (int m = 0; m < moe_layers; ++m)
    for (int e = 0; e < n_experts; ++e)
      if (expert_home(topo, m, e, n_experts) == rank) out.push_back({m, e});
  return out;
}

}  // namespace px
