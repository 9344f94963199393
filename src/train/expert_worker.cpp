// defines: run_expert_worker
#include "train/expert_worker.hpp"

#include <algorithm>

#include "optim/lr_schedule.hpp"          // defines: lr_at
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "sync/expert_home.hpp"           // defines: ExpertHome
#include "sync/expert_tier.hpp"           // defines: ExpertTier
#include "train/train_state.hpp"          // defines: add_home_state, commit_checkpoint

namespace px {

void run_expert_worker(const Config& cfg, const Topology& topo, Comm& p2p, MPI_Comm world,
                       const std::string& ckpt_dir, const std::string& resume_from,
                       spdlog::logger& log) {
  MoeModel<float> init(cfg.model, 1, 2);  // the run's common starting point
  init.init_params((uint64_t)cfg.train.seed);
  ExpertHome home(cfg, init.layout(),
                  experts_homed_at(topo, topo.world_rank, cfg.model.moe_layers(), cfg.model.n_experts),
                  init.params(Arena::EXPERTS));
  ExpertTier tier(cfg, topo, p2p);
  int64_t step = 0;
  if (!resume_from.empty())
    step = rehoming(resume_from, cfg) ? load_home_state_rehomed(resume_from, home, cfg.model)
                                      : load_home_state(resume_from, topo.world_rank, home);
  const bool lowrank = cfg.experts.view == ViewKind::LOWRANK;
  const int U = cfg.experts.expert_update_every,
            snap = lowrank ? cfg.experts.surrogate_every : cfg.experts.snapshot_every;
  const Tier view_tier = lowrank ? Tier::SURROGATE : Tier::SNAPSHOT;
  const int64_t steps = cfg.train.steps;
  log.info("expert worker {}: homes {} experts, from step {}", topo.worker_index,
           home.owned().size(), step);
  auto lr_of = [&](int64_t s) {  // the learners' lr of step s (1-based)
    return lr_at((int)(s - 1), (int)steps, (int)cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr);
  };
  auto checkpoint = [&](int64_t s) {
    ParallelCheckpointWriter w;
    add_home_state(w, home, s);
    commit_checkpoint(world, w, ckpt_dir, cfg, s, nullptr, cfg.checkpoint.keep);
  };
  if (cfg.train.deterministic) {
    while (step < steps) {
      ++step;
      const uint32_t flags = tier.receive_sketches(step, home);
      if (step % U == 0) home.update(lr_of(step), (double)topo.islands * U);
      if (cfg.experts.signal == ExpertSignalKind::ADAPTERS && step % cfg.experts.adapter_every == 0) {
        tier.receive_deltas(home);
        home.apply_deltas();
      }
      if (step % snap == 0) tier.send_snapshot(home.view_message(step), view_tier);
      tier.wait_sends();
      if (flags & EXPERT_FLAG_CHECKPOINT) checkpoint(step);
      if (flags & EXPERT_FLAG_STOP) break;
    }
  } else {
    // what has arrived: the worker's clock is the newest step any learner has reported; it
    // updates and snapshots when the clock passes a multiple of the cadence, checkpoints when
    // every learner's bundle of a checkpoint step is in, and stops when every learner has said
    // so (each learner's STOP bundle is its last: MPI keeps the order of one sender's messages)
    const int NL = topo.learners();
    const bool adapt = cfg.experts.signal == ExpertSignalKind::ADAPTERS;
    const int ae = cfg.experts.adapter_every;
    const int64_t start = step;
    int64_t next_update = (step / U + 1) * U, next_snap = (step / snap + 1) * snap,
            next_fold = (step / ae + 1) * ae;
    for (;;) {
      const ExpertTier::Drained d = tier.take_next(home, step);  // a bundle or a delta message
      step = std::max(step, d.newest_step);
      for (; next_update <= step; next_update += U) home.update(lr_of(next_update), (double)topo.islands * U);
      if (adapt)
        for (; next_fold <= step; next_fold += ae) home.apply_deltas();
      for (; next_snap <= step; next_snap += snap)
        tier.send_snapshot(home.view_message(next_snap), view_tier);
      tier.progress();
      auto& ck = tier.flagged(EXPERT_FLAG_CHECKPOINT);
      for (auto it = ck.begin(); it != ck.end();)
        if (it->second == NL) {
          checkpoint(it->first);
          it = ck.erase(it);
        } else {
          ++it;
        }
      int stopped = 0;
      for (auto& [s, n] : tier.flagged(EXPERT_FLAG_STOP)) stopped += n;
      if (stopped == NL) break;
    }
    // every learner's delta messages of the run (sent after its bundles), then fold them
    tier.finish_worker(home, adapt ? step / ae - start / ae : 0);
    if (adapt) home.apply_deltas();
  }
  log.info("expert worker {}: {} updates, sketches {}", topo.worker_index, home.steps_taken(),
           home.tally().summary());
}

}  // namespace px
