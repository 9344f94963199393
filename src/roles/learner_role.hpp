#pragma once
// A learner rank (DESIGN §3-§5): trains on its island's part of the data. Each step: the next
// batch, the model's step (LearnerModel), the agreed stop decision, every tier's after_step,
// then the interval's metrics, evaluation and checkpoint when due.
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"           // defines: LearnerModel
#include "checkpoint/checkpoint_registry.hpp"  // defines: CheckpointRegistry
#include "checkpoint/learner_state.hpp"        // defines: LearnerState, Progress
#include "data/token_shards.hpp"               // defines: TokenLoader
#include "roles/learner_metrics.hpp"           // defines: LearnerMetrics
#include "roles/learner_tiers.hpp"             // defines: LearnerTiers, LearnerComms
#include "roles/role.hpp"                      // defines: Role
#include "roles/stop_agreement.hpp"            // defines: StopAgreement

namespace px {

class LearnerRole final : public Role {
 public:
  explicit LearnerRole(RunContext& ctx);
  void resume(const std::string& checkpoint) override;
  TrainResult run() override;

 private:
  void announce() const;
  // After step `step`: the loss as the mean over islands, whether to stop (agreed by every
  // learner: StopAgreement), whether a checkpoint follows.
  StepEvent end_step(StepStats& stats, int64_t step, double lr);
  void mean_over_islands(StepStats& stats);
  void evaluate(int64_t step);
  void checkpoint(int64_t step);
  [[noreturn]] void report_divergence() const;

  RunContext& ctx_;
  const Config& cfg_;
  LearnerComms comms_;
  std::unique_ptr<LearnerModel> model_;
  LearnerTiers tiers_;
  StopAgreement stop_;
  Progress progress_;
  LearnerState state_;
  CheckpointRegistry registry_;
  TokenLoader loader_, val_loader_;
  std::unique_ptr<LearnerMetrics> metrics_;
  std::vector<int32_t> inputs_, targets_;
  TrainResult res_;
  int64_t skipped_in_row_ = 0;  // consecutive skipped steps (non-finite loss or gradient norm)
  bool diverged_ = false;       // agreed by every learner
  bool rehomed_ = false;        // resumed with another topology.expert_workers
};

}  // namespace px
