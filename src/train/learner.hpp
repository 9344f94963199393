#pragma once
// One learner rank's inner training step, in every mode (DESIGN §4): forward and backward on
// its micro-batch, gradient all-reduce over its data-parallel group (all learners in mode
// "sync", its island in "diloco" and "parallax"), global-norm clipping and the inner optimizer.
// In mode "sync" with several learners the routed experts are expert-parallel; in mode
// "parallax" they run from masters / views (ParallaxExperts), their gradients are neither
// reduced nor stepped here (the ExpertHome does that) and clipping sees the backbone only.
#include <memory>
#include <vector>

#include "config/config.hpp"              // defines: Config
#include "model/moe_model.hpp"            // defines: MoeModel
#include "optim/adamw.hpp"                // defines: AdamW
#include "parallel/comm.hpp"              // defines: Comm
#include "parallel/expert_parallel.hpp"   // defines: ExpertParallel
#include "parallel/topology.hpp"          // defines: Topology
#include "train/gpu_step.hpp"             // defines: GpuStepper
#include "train/parallax_experts.hpp"     // defines: ParallaxExperts

namespace px {

struct StepStats {
  double loss = 0;  // mean CE over the data-parallel group's batch + aux loss
  double ce = 0, aux = 0, grad_norm = 0;
  std::vector<int64_t> counts;  // tokens per expert over the group's batch [moe_layers * E]
};

class Learner {
 public:
  // dp: the data-parallel group (size 1 is fine). expert_parallel: shard routed experts over
  // dp (mode "sync"). topo: required in mode "parallax" (expert homes).
  Learner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
          const Topology* topo = nullptr);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr);
  // Mean CE of one evaluation batch (the same batch on every rank of the group).
  double eval_batch(const int32_t* inputs, const int32_t* targets);

  // train.device = "cuda": the GPU holds the live state; these copy it to / from the host
  // model and optimizer (before a checkpoint / after a resume). No-ops on the CPU.
  void sync_to_host();
  void sync_to_device();

  MoeModel<float>& model() { return model_; }
  AdamW& opt() { return *opt_; }
  const ExpertParallel* expert_parallel() const { return ep_.get(); }
  ParallaxExperts* parallax() { return px_.get(); }

 private:
  // The model's parallel hooks: the routed-expert executor (expert parallel or parallax) and,
  // for training with several data-parallel ranks, the group's token count and statistics.
  void set_parallel(bool eval);

  const Config& cfg_;
  Comm& dp_;
  int B_, T_;
  MoeModel<float> model_;
  std::unique_ptr<ExpertParallel> ep_;
  std::unique_ptr<ParallaxExperts> px_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<GpuStepper> gpu_;
  std::function<void(double*, int)> sum_stats_;
};

}  // namespace px
