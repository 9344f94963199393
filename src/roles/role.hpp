#pragma once
// One type per kind of rank (DESIGN §3): LearnerRole (trains on its island's data),
// SyncerRole (serves the decoupled outer sync), ExpertWorkerRole (homes routed experts, never
// sees the data). make_role picks the one of this rank's topology.
#include <memory>

#include "roles/run_context.hpp"  // defines: RunContext
#include "train/trainer.hpp"      // defines: TrainResult

namespace px {

class Role {
 public:
  virtual ~Role() = default;
  // Loads this rank's state from a checkpoint (train() runs it on every rank at once, so a
  // damaged part on any rank is one user error everywhere, not a rank left waiting).
  virtual void resume(const std::string& checkpoint) = 0;
  // The whole run of this rank; ends with the collective byte-count gather over the world.
  virtual TrainResult run() = 0;
};

std::unique_ptr<Role> make_role(RunContext& ctx);

// Preemption (SIGUSR1, Slurm's warning): learners agree to checkpoint and stop.
bool stop_requested();
void clear_stop_request();

}  // namespace px
