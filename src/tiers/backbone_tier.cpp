// defines: BackboneTier
#include "tiers/backbone_tier.hpp"

namespace px {

BackboneTier::BackboneTier(const Config& cfg, const Topology& topo, LearnerModel& model,
                           Comm& learners, Comm& peers, Comm& island, Comm& p2p)
    : topo_(topo), learners_(learners), p2p_(p2p), outer_(cfg, topo, model, peers, island, p2p) {}

void BackboneTier::before_checkpoint(int64_t step) {
  if (topo_.syncers == 0) return;
  learners_.barrier();
  if (topo_.local_rank != 0 || topo_.island != 0) return;
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = p2p_.isend(&step, sizeof(step), topo_.syncer_rank(s), TAG_CKPT, Tier::CONTROL);
    Comm::wait(rq);
  }
}

}  // namespace px
