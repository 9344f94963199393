// defines: run_expert_worker
#include "train/expert_worker.hpp"

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
  int64_t step = resume_from.empty() ? 0 : load_home_state(resume_from, topo.world_rank, home);
  const int U = cfg.experts.expert_update_every, snap = cfg.experts.snapshot_every;
  const int64_t steps = cfg.train.steps;
  log.info("expert worker {}: homes {} experts, from step {}", topo.worker_index,
           home.owned().size(), step);
  while (step < steps) {
    const double lr =
        lr_at((int)step, (int)steps, (int)cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr);
    ++step;
    const uint32_t flags = tier.receive_sketches(step, home);
    if (step % U == 0) home.update(lr, (double)topo.islands * U);
    if (step % snap == 0) tier.send_snapshot(home.snapshot());
    tier.wait_sends();
    if (flags & EXPERT_FLAG_CHECKPOINT) {
      ParallelCheckpointWriter w;
      add_home_state(w, home, step);
      commit_checkpoint(world, w, ckpt_dir, cfg, step, nullptr, cfg.checkpoint.keep);
    }
    if (flags & EXPERT_FLAG_STOP) break;
  }
  log.info("expert worker {}: {} updates, sketches {}", topo.worker_index, home.steps_taken(),
           home.tally().summary());
}

}  // namespace px
