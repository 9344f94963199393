// defines: ExpertWorkerRole
#include "roles/expert_worker_role.hpp"
#include "roles/memory_peaks.hpp"  // defines: gather_memory_peaks

#include "checkpoint/checkpoint_registry.hpp"  // defines: CheckpointRegistry
#include "model/expert_source.hpp"             // defines: ExpertSource
#include "parallel/expert_placement.hpp"       // defines: experts_homed_at
#include "experts/expert_home.hpp"                // defines: ExpertHome
#include "tiers/delivery.hpp"                  // defines: make_delivery
#include "tiers/home_cadence.hpp"              // defines: HomeCadence

namespace px {

ExpertWorkerRole::ExpertWorkerRole(RunContext& ctx) : ctx_(ctx), layout_(ctx.cfg.model) {
  const Config& cfg = ctx.cfg;
  // the masters start from the run's initial experts, computed one at a time
  home_ = std::make_unique<ExpertHome>(
      cfg, layout_,
      experts_homed_at(ctx.topo, ctx.topo.world_rank, cfg.model.moe_layers(), cfg.model.n_experts),
      ExpertSource::initial(cfg.model, layout_, (uint64_t)cfg.train.seed));
  registry_.add(home_.get());
}

void ExpertWorkerRole::resume(const std::string& checkpoint) {
  registry_.load(StateReader(checkpoint, ctx_.topo.world_rank, ctx_.cfg));
}

TrainResult ExpertWorkerRole::run() {
  const Config& cfg = ctx_.cfg;
  const Topology& topo = ctx_.topo;
  ExpertHome& home = *home_;
  ExpertMessages messages(cfg, topo, ctx_.p2p);
  auto delivery = make_delivery(cfg, messages);
  const int64_t start = home.step();
  HomeCadence cadence(cfg, topo, home, messages, *delivery, start);
  ctx_.log->info("expert worker {}: homes {} experts, from step {}", topo.worker_index,
                 home.owned().size(), start);
  auto& checkpoints = messages.flagged(EXPERT_FLAG_CHECKPOINT);
  auto& stops = messages.flagged(EXPERT_FLAG_STOP);
  const int learners = topo.learners();
  for (int64_t clock = start;;) {
    clock = delivery->next_clock(home, clock);
    cadence.advance(clock);
    delivery->end_of_step();
    for (auto it = checkpoints.begin(); it != checkpoints.end();) {
      if (it->second < learners) {
        ++it;
        continue;
      }
      home.set_step(it->first);  // the step the learners checkpoint
      registry_.save(ctx_.world, ctx_.ckpt_dir, cfg, it->first, nullptr);
      home.set_step(clock);
      it = checkpoints.erase(it);
    }
    int stopped = 0;
    for (auto& [step, n] : stops) stopped += n;
    if (stopped == learners) break;
  }
  // every learner's delta messages of the run (sent after its bundles), then fold them
  const bool adapters = cfg.experts.signal == ExpertSignalKind::ADAPTERS;
  const int fold_every = cfg.experts.adapter_every;
  delivery->finish_home(home, 0, adapters ? home.step() / fold_every - start / fold_every : 0);
  delivery->finish_sends();
  if (adapters && !cfg.train.deterministic) home.apply_deltas();
  ctx_.log->info("expert worker {}: {} updates, sketches {}", topo.worker_index, home.steps_taken(),
                 home.tally().summary());
  ctx_.stats.gather_to_root(ctx_.world);
  gather_memory_peaks(ctx_.world_comm);
  return {};
}

}  // namespace px
