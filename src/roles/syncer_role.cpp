// defines: SyncerRole
#include "roles/syncer_role.hpp"

#include "checkpoint/checkpoint_registry.hpp"  // defines: CheckpointRegistry
#include "sync/outer_sync.hpp"                 // defines: Syncer

namespace px {

TrainResult SyncerRole::run() {
  Syncer syncer(ctx_.cfg, ctx_.topo, ctx_.p2p);
  CheckpointRegistry registry;
  registry.add(&syncer);
  if (!ctx_.resume_from.empty())
    registry.load(StateReader(ctx_.resume_from, ctx_.world_rank, ctx_.cfg));
  // the learners tell the syncers when to join their collective checkpoint write
  syncer.run([&](int64_t step) { registry.save(ctx_.world, ctx_.ckpt_dir, ctx_.cfg, step, nullptr); });
  ctx_.log->info("syncer {}: {} merges", ctx_.topo.syncer_index, syncer.merges());
  ctx_.stats.gather_to_root(ctx_.world);
  return {};
}

}  // namespace px
