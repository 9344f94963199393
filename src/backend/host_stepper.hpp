#pragma once
// The staged test device (train.device = "staged" wherever DeviceLearner runs the config): a
// DeviceStepper whose "device memory" is a private CPU model and AdamW, computing exactly what
// CpuLearner computes, so that the device driver (DeviceLearner: the GPU's) and every tier's
// sync points run in CI and must give the CPU backend's numbers bit for bit.
#include <memory>
#include <string>

#include "backend/device_stepper.hpp"  // defines: DeviceStepper
#include "config/config.hpp"           // defines: Config

namespace px {

class HostStepper final : public DeviceStepper {
 public:
  HostStepper(const Config& cfg, int micro_batch);

  void set_group(double global_tokens, const std::function<void(double*, int)>* sum_stats) override;
  void set_routed_experts(RoutedExperts<float>* ex) override;
  Local forward_backward(const int32_t* inputs, const int32_t* targets) override;
  double eval(const int32_t* inputs, const int32_t* targets) override;
  double eval_without_routed(const int32_t* inputs, const int32_t* targets) override;

  void grads_to_host(Arena a, float* dst) override;
  void grads_from_host(Arena a, const float* src) override;
  // PARALLAX_STAGED_DEVICE_GROUP=1 in the environment: a "device-side" all-reduce (MPI over the
  // private gradients, as NCCL over the GPU's), so that CI runs DeviceLearner's NCCL branch and
  // its byte counting; otherwise none (host-staged).
  std::string enable_device_group(Comm& dp) override;
  void allreduce_grads_on_device(Arena a) override;
  double grad_sq_norm() override;
  void apply(double lr, double grad_norm) override;
  void update_router_bias(const std::vector<int64_t>& counts) override {
    model_.update_router_bias(counts);
  }

  void params_to_host(Arena a, MoeModel<float>& host) override;
  void params_from_host(Arena a, MoeModel<float>& host) override;
  void state_to_host(MoeModel<float>& host, AdamW& opt, bool experts) override;
  void state_from_host(MoeModel<float>& host, AdamW& opt, bool experts) override;

 private:
  MoeModel<float> model_;
  AdamW opt_;
  double global_tokens_ = 0;
  const std::function<void(double*, int)>* sum_stats_ = nullptr;
  RoutedExperts<float>* experts_ = nullptr;
  CommStats uncounted_;  // (the device group's bytes are counted by DeviceLearner, as NCCL's)
  std::unique_ptr<Comm> device_comm_;
};

}  // namespace px
