#pragma once
// The staged test device (train.device = "staged" wherever DeviceLearner runs the config): a
// DeviceStepper whose "device memory" is a private CPU model and AdamW, computing exactly what
// CpuLearner computes, so that the device driver (DeviceLearner: the GPU's) and every tier's
// sync points run in CI and must give the CPU backend's numbers bit for bit.
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
};

}  // namespace px
