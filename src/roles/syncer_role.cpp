// defines: SyncerRole
#include "roles/syncer_role.hpp"
#include "roles/memory_peaks.hpp"  // defines: gather_memory_peaks

namespace px {

SyncerRole::SyncerRole(RunContext& ctx) : ctx_(ctx), syncer_(ctx.cfg, ctx.topo, ctx.p2p) {
  registry_.add(&syncer_);
}

void SyncerRole::resume(const std::string& checkpoint) {
  registry_.load(StateReader(checkpoint, ctx_.world_rank, ctx_.cfg));
}

TrainResult SyncerRole::run() {
  // the learners tell the syncers when to join their collective checkpoint write
  syncer_.run([&](int64_t step) { registry_.save(ctx_.world, ctx_.ckpt_dir, ctx_.cfg, step, nullptr); });
  ctx_.log->info("syncer {}: {} merges, {} late pushes (merged into the next merge)",
                 ctx_.topo.syncer_index, syncer_.merges(), syncer_.late_pushes());
  ctx_.stats.gather_to_root(ctx_.world);
  gather_memory_peaks(ctx_.world_comm);
  return {};
}

}  // namespace px
