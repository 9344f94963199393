#pragma once
// The CUDA learner model (train.device = "cuda"): the whole step on one GPU (GpuStepper:
// kernels/cuda_model), the host model and AdamW as the copy that sync points fill.
// For now one rank alone (check_supported): no data-parallel group, no routed-experts hook;
// the sync points copy the whole state (fragment-sized copies come with GPUs in every mode).
#include <memory>

#include "backend/gpu_step.hpp"       // defines: GpuStepper
#include "backend/learner_model.hpp"  // defines: LearnerModel

namespace px {

class CudaLearner final : public LearnerModel {
 public:
  CudaLearner(const Config& cfg, int micro_batch);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr) override;
  double eval_batch(const int32_t* inputs, const int32_t* targets) override;
  // Not built on the GPU (check_supported refuses data.eval_without_routed with cuda).
  double eval_batch_without_routed(const int32_t* inputs, const int32_t* targets) override;

  MoeModel<float>& host() override { return model_; }
  AdamW& optimizer() override { return *opt_; }
  void to_host(Arena) override { state_to_host(); }
  void to_device(Arena) override { state_to_device(); }
  void state_to_host() override { gpu_->download(model_, *opt_); }
  void state_to_device() override { gpu_->upload(model_, *opt_); }

  ParallaxExperts* parallax() override { return nullptr; }
  const ExpertParallel* expert_parallel() const override { return nullptr; }
  std::string device_name() const override { return GpuStepper::device_name(); }

 private:
  const Config& cfg_;
  MoeModel<float> model_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<GpuStepper> gpu_;
};

}  // namespace px
