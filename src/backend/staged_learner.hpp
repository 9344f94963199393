#pragma once
// A test backend (train.device = "staged" where DeviceLearner does not run the config: ZeRO-1,
// micro-batches; backend/device_support) that behaves like a device with its own memory:
// a CpuLearner computes every step on its private "device" state, and the host copy that
// tiers and checkpoints see is a separate model and optimizer, copied from / to the device
// only at LearnerModel's declared sync points. A tier or role that reads the host copy
// without to_host(), or writes it without to_device(), changes the run's numbers; the tests
// run every mode on "cpu" and "staged" and require bit-identical losses. Twice the memory.
#include <memory>

#include "backend/cpu_learner.hpp"    // defines: CpuLearner
#include "backend/learner_model.hpp"  // defines: LearnerModel

namespace px {

class StagedLearner final : public LearnerModel {
 public:
  StagedLearner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
                const Topology* topo);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr) override {
    return device_.step(inputs, targets, lr);
  }
  double eval_batch(const int32_t* inputs, const int32_t* targets) override {
    return device_.eval_batch(inputs, targets);
  }

  double eval_batch_without_routed(const int32_t* inputs, const int32_t* targets) override {
    return device_.eval_batch_without_routed(inputs, targets);
  }

  MoeModel<float>& host() override { return host_; }
  AdamW& optimizer() override { return host_opt_; }
  void to_host(Arena a) override;
  void to_device(Arena a) override;
  void state_to_host() override;
  void state_to_device() override;

  ParallaxExperts* parallax() override { return device_.parallax(); }
  const ExpertParallel* expert_parallel() const override { return device_.expert_parallel(); }

 private:
  CpuLearner device_;
  MoeModel<float> host_;
  AdamW host_opt_;
};

}  // namespace px
