#pragma once
// The learner model of a device with its own memory (DESIGN §9): one DeviceStepper per rank
// (a GPU, or the staged CPU test device) and this driver around it, which runs CpuLearner's
// data-parallel step with the same calls in the same order (so the same bytes per tier):
// forward and backward on the device, the group's gradient sum (island tier: NCCL on the
// device where the stepper has it, else staged through the host: one device -> host copy of
// each arena, MPI all-reduce, one host -> device copy), the counts and CE shares (control),
// the global norm and skip check, the optimizer and router bias on the device. In mode
// parallax and with expert parallelism the routed experts run on the host (the device stages
// each MoE layer's rows to the executor and back): ParallaxExperts (masters, views, sketches;
// their homes step the experts, the norm is the backbone's), ExpertParallel (the all-to-alls
// of CpuLearner; this rank's block of experts lives and trains in the host copy, its squared
// gradient norm summed over the ranks). The host copy
// (model and AdamW) is filled at the declared sync points only: arena-sized copies for
// to_host / to_device (the backbone tier's outer syncs), the whole state around checkpoints.
// Not built here (device_learner_unsupported says which): ZeRO-1, micro-batches, pipelines
// (backend/device_support).
#include <memory>
#include <string>
#include <vector>

#include "backend/device_stepper.hpp"  // defines: DeviceStepper
#include "backend/learner_model.hpp"   // defines: LearnerModel
#include "experts/parallax_experts.hpp"  // defines: ParallaxExperts
#include "parallel/expert_parallel.hpp"  // defines: ExpertParallel

namespace px {

class DeviceLearner final : public LearnerModel {
 public:
  // dp: the data-parallel group (size 1: alone). The stepper's state starts as the host
  // copy's initial parameters (train.seed).
  // topo: needed in mode parallax (the routed experts' executor).
  DeviceLearner(const Config& cfg, Comm& dp, int micro_batch, const Topology* topo,
                std::unique_ptr<DeviceStepper> dev);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr) override;
  double eval_batch(const int32_t* inputs, const int32_t* targets) override {
    return dev_->eval(inputs, targets);
  }
  double eval_batch_without_routed(const int32_t* inputs, const int32_t* targets) override {
    return dev_->eval_without_routed(inputs, targets);
  }

  MoeModel<float>& host() override { return host_; }
  AdamW& optimizer() override { return *host_opt_; }
  void to_host(Arena a) override;
  void to_device(Arena a) override;
  void state_to_host() override { dev_->state_to_host(host_, *host_opt_, !host_experts_); }
  void state_to_device() override { dev_->state_from_host(host_, *host_opt_, !host_experts_); }

  ParallaxExperts* parallax() override { return parallax_.get(); }
  const ExpertParallel* expert_parallel() const override { return expert_parallel_.get(); }
  std::string device_name() const override { return dev_->name(); }
  // How the group's gradients are summed: "NCCL", "host-staged MPI" or "none (one rank)".
  std::string grad_exchange() const override { return exchange_; }

 private:
  void reduce_grads(Arena a);  // the group's sum of arena a's gradients, on the device
  // The routed experts' executor on the host (parallax, expert parallel) and host_opt_.
  void make_host_experts(const Config& cfg, int rows, const Topology* topo);

  Comm& dp_;
  double grad_clip_;
  MoeModel<float> host_;
  std::unique_ptr<AdamW> host_opt_;
  std::unique_ptr<DeviceStepper> dev_;
  // routed experts on the host (host-staged rows): mode parallax, or expert parallel (mode
  // sync with several learners: my block of experts lives and trains in host_, host_opt_)
  bool host_experts_;
  std::unique_ptr<ParallaxExperts> parallax_;
  std::unique_ptr<ExpertParallel> expert_parallel_;
  std::function<void(double*, int)> sum_stats_;
  bool on_device_ = false;      // NCCL: the sum stays on the device
  std::string exchange_;
  std::vector<float> staging_;  // host-staged: one arena's gradients
};

}  // namespace px
