#pragma once
// One data-parallel rank's model on a device with its own memory (DESIGN §9): the pieces of an
// inner step that DeviceLearner strings together around the group's gradient sum, so that the
// learner's logic (what is reduced, in which tier, the norm, the skip, the sync points) is one
// piece of code for every device. Implementations: GpuStepper (train.device = "cuda",
// backend/gpu_step) and HostStepper (train.device = "staged": the same steps on the CPU, on a
// private copy, so that CI runs this driver).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/layers.hpp"     // defines: RoutedExperts
#include "model/moe_model.hpp"  // defines: MoeModel, Arena
#include "optim/adamw.hpp"      // defines: AdamW
#include "parallel/comm.hpp"    // defines: Comm

namespace px {

class DeviceStepper {
 public:
  virtual ~DeviceStepper() = default;

  // The data-parallel group's token count and the sum of MoE routing statistics over its
  // ranks (MoeModel::set_parallel's contract); global_tokens 0, sum_stats null: alone.
  virtual void set_group(double global_tokens, const std::function<void(double*, int)>* sum_stats) = 0;

  // Where the routed experts run (mode parallax: ParallaxExperts, mode sync with several
  // learners: ExpertParallel, both on the host, which hold the experts' weights and
  // gradients; the device's optimizer then steps the backbone alone); null (the default):
  // from the model's own expert arena.
  virtual void set_routed_experts(RoutedExperts<float>* ex) = 0;

  struct Local {
    double ce = 0;   // this rank's share of the group's mean CE
    double aux = 0;  // the aux loss (the group's)
    std::vector<int64_t> counts;  // this rank's tokens per expert [moe_layers * E]
  };
  // Zeroes the gradients, forward and backward of one batch: this rank's contributions to the
  // gradient of the group's mean loss, on the device.
  virtual Local forward_backward(const int32_t* inputs, const int32_t* targets) = 0;
  // Mean CE of one batch on this rank alone (evaluation).
  virtual double eval(const int32_t* inputs, const int32_t* targets) = 0;
  // The same with the routed experts' outputs left out (data.eval_without_routed).
  virtual double eval_without_routed(const int32_t* inputs, const int32_t* targets) = 0;

  // Arena a's gradients in the host layout (the group's sum staged through the host).
  virtual void grads_to_host(Arena a, float* dst) = 0;
  virtual void grads_from_host(Arena a, const float* src) = 0;
  // A device-side all-reduce over the group dp (NCCL), collective over dp; returns its name,
  // or "" where the device has none (then the sum is staged through the host).
  virtual std::string enable_device_group(Comm& dp) { return ""; }
  // The group's sum of arena a's gradients on the device (after enable_device_group).
  virtual void allreduce_grads_on_device(Arena a) {}

  // After the sum: the squared norm of the gradients this device's optimizer steps.
  virtual double grad_sq_norm() = 0;
  // One optimizer step at lr, clipping to train.grad_clip by grad_norm (the global norm).
  virtual void apply(double lr, double grad_norm) = 0;
  // model.balance = "bias": the router bias from the group's counts.
  virtual void update_router_bias(const std::vector<int64_t>& counts) = 0;

  // The sync points (LearnerModel): arena a's parameters, or the whole state (parameters,
  // moments, step count, router bias), between the device and the host copy; experts false:
  // the expert arena's parameters and moments are left out (they live on the host).
  virtual void params_to_host(Arena a, MoeModel<float>& host) = 0;
  virtual void params_from_host(Arena a, MoeModel<float>& host) = 0;
  virtual void state_to_host(MoeModel<float>& host, AdamW& opt, bool experts) = 0;
  virtual void state_from_host(MoeModel<float>& host, AdamW& opt, bool experts) = 0;

  // The accelerator's name ("" on the CPU).
  virtual std::string name() const { return ""; }
};

}  // namespace px
