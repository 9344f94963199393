#pragma once
// The CUDA device behind a learner (train.device = "cuda"): one GPU per rank (the node-local
// rank's, backend/local_device), the step on it (kernels/cuda_model), the group's gradient
// sum over NCCL where this build has it (PARALLAX_NCCL=0 in the environment: host-staged MPI
// instead). This file's .cpp is the one place that knows whether CUDA was compiled in.
#include <memory>
#include <string>

#include "backend/device_stepper.hpp"  // defines: DeviceStepper
#include "config/config.hpp"           // defines: Config

namespace px {

// Makes this rank's GPU current (the node-local rank's, backend/local_device, modulo the visible
// devices) and returns its index; -1 when none is visible or this build has no CUDA.
int select_local_gpu();

class GpuStepper final : public DeviceStepper {
 public:
  // Throws UserError when this build has no CUDA backend or no GPU is visible.
  static void require();
  // The current GPU's name ("" without CUDA).
  static std::string device_name();
  // Selects this rank's GPU (local rank modulo the visible devices), allocates the model.
  GpuStepper(const Config& cfg, int micro_batch);
  ~GpuStepper() override;

  void set_group(double global_tokens, const std::function<void(double*, int)>* sum_stats) override;
  // (host-staged: each MoE layer's rows to the host executor and back)
  void set_routed_experts(RoutedExperts<float>* ex) override;
  Local forward_backward(const int32_t* inputs, const int32_t* targets) override;
  double eval(const int32_t* inputs, const int32_t* targets) override;
  // Not built on the GPU (the checks refuse data.eval_without_routed with cuda).
  double eval_without_routed(const int32_t* inputs, const int32_t* targets) override;

  void grads_to_host(Arena a, float* dst) override;
  void grads_from_host(Arena a, const float* src) override;
  std::string enable_device_group(Comm& dp) override;
  void allreduce_grads_on_device(Arena a) override;
  double grad_sq_norm() override;
  void apply(double lr, double grad_norm) override;
  // (balance "aux" only on the GPU: no router bias)
  void update_router_bias(const std::vector<int64_t>&) override {}

  void params_to_host(Arena a, MoeModel<float>& host) override;
  void params_from_host(Arena a, MoeModel<float>& host) override;
  void state_to_host(MoeModel<float>& host, AdamW& opt, bool experts) override;
  void state_from_host(MoeModel<float>& host, AdamW& opt, bool experts) override;
  std::string name() const override { return device_name(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace px
