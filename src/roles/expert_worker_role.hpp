#pragma once
// An expert worker rank (DESIGN §1, §3; mode "parallax" with topology.expert_workers > 0):
// the home of its routed experts (ExpertHome), run on the home cadence the learners' homes use
// (HomeCadence), its clock driven by the learners' bundles (Delivery::next_clock); it
// checkpoints when every learner's bundle of a checkpoint step is in and stops when every
// learner has said so (each learner's STOP bundle is its last: MPI keeps the order of one
// sender's messages). It never sees the data.
#include <memory>

#include "checkpoint/checkpoint_registry.hpp"  // defines: CheckpointRegistry
#include "experts/expert_home.hpp"             // defines: ExpertHome
#include "model/param_layout.hpp"              // defines: ParamLayout
#include "roles/role.hpp"                      // defines: Role

namespace px {

class ExpertWorkerRole final : public Role {
 public:
  explicit ExpertWorkerRole(RunContext& ctx);
  void resume(const std::string& checkpoint) override;
  TrainResult run() override;

 private:
  RunContext& ctx_;
  ParamLayout layout_;  // (the home keeps a reference)
  std::unique_ptr<ExpertHome> home_;
  CheckpointRegistry registry_;
};

}  // namespace px
