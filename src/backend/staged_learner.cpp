// defines: StagedLearner
#include "backend/staged_learner.hpp"

#include "backend/state_copy.hpp"  // defines: copy_arena, copy_state

namespace px {

StagedLearner::StagedLearner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
                             const Topology* topo)
    : device_(cfg, dp, expert_parallel, micro_batch, topo),
      host_(cfg.model, micro_batch, cfg.model.seq_len, learner_model_memory(cfg)), host_opt_(device_.optimizer()) {
  host_.init_params((uint64_t)cfg.train.seed);  // the same initial state as the device
}

void StagedLearner::to_host(Arena a) { copy_arena(device_.host(), host_, a); }

void StagedLearner::to_device(Arena a) { copy_arena(host_, device_.host(), a); }

void StagedLearner::state_to_host() {
  copy_state(device_.host(), device_.optimizer(), host_, host_opt_);
}

void StagedLearner::state_to_device() {
  copy_state(host_, host_opt_, device_.host(), device_.optimizer());
}

}  // namespace px
