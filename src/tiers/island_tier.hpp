#pragma once
// The hierarchical island tier (DESIGN §5 item 1, sync.island_every = K > 1): the island's
// ranks train on their own and average their parameters (both arenas) every K steps, a
// DiLoCo inner tier with outer lr 1 and no momentum. (With K = 1 the island is one
// data-parallel group: its per-step gradient all-reduce is part of LearnerModel::step.)
#include "backend/learner_model.hpp"  // defines: LearnerModel
#include "parallel/comm.hpp"          // defines: Comm
#include "tiers/sync_tier.hpp"        // defines: SyncTier

namespace px {

class IslandTier final : public SyncTier {
 public:
  IslandTier(LearnerModel& model, Comm& island, int every)
      : model_(model), island_(island), every_(every) {}
  void after_step(const StepEvent& e) override;

 private:
  LearnerModel& model_;
  Comm& island_;
  int every_;
};

}  // namespace px
