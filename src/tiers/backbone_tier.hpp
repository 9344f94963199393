#pragma once
// The backbone tier (DESIGN §5 item 2) on a learner: DiLoCo outer syncs of the fragments
// (OuterSync: all-reduce over the peers, or pushes to the syncers and their replies), the
// checkpoint hand-shake with the syncers, and the outer state in checkpoints.
#include <memory>

#include "sync/outer_sync.hpp"   // defines: OuterSync
#include "tiers/sync_tier.hpp"   // defines: SyncTier

namespace px {

class BackboneTier final : public SyncTier {
 public:
  BackboneTier(const Config& cfg, const Topology& topo, LearnerModel& model, Comm& learners,
               Comm& peers, Comm& island, Comm& p2p);
  void after_step(const StepEvent& e) override { outer_.after_step(e.step, e.island_tokens); }
  // With syncers: every learner has its replies (the syncers' state is at `step`), then one
  // learner tells each syncer to join the checkpoint.
  void before_checkpoint(int64_t step) override;
  void resumed(int64_t step, int64_t island_tokens) override { outer_.restore(step, island_tokens); }
  void finish(int64_t, int64_t) override { outer_.finish(); }
  void save(ParallelCheckpointWriter& w) override { outer_.save(w); }
  void load(const StateReader& r) override { outer_.load(r); }

 private:
  const Topology& topo_;
  Comm &learners_, &p2p_;
  OuterSync outer_;
};

}  // namespace px
