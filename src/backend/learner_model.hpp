#pragma once
// The learner's model behind one seam (DESIGN §9): the only way roles and tiers touch a
// learner's model, whatever device runs it.
//   - step(): one inner step (forward, backward, gradient all-reduce over the data-parallel
//     group, clipping, optimizer, router bias) on the device;
//   - eval_batch(): mean CE of one batch;
//   - host(): the host copy of the state the tiers and checkpoints read and write (parameter
//     arenas, router bias, AdamW moments). It is current only at the declared sync points:
//       to_host(a)     before host code reads arena a's parameters (outer syncs, averaging);
//       to_device(a)   after host code wrote them;
//       state_to_host() / state_to_device()   all of it (before a checkpoint / after a resume);
//   - parallax(): the routed-experts hook of mode "parallax" (views, masters, sketches).
// Implementations: CpuLearner (the host model is the live model; sync points are no-ops),
// DeviceLearner (a device with its own memory: train.device = "cuda", one GPU per rank, and
// "staged" wherever it runs the config), StagedLearner (train.device = "staged" elsewhere:
// CPU compute on a private copy, so that a missing sync point changes the numbers),
// PipelineLearner (topology.pipeline_stages > 1: this rank's stage of the island's layers).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"            // defines: Config
#include "model/moe_model.hpp"          // defines: MoeModel, Arena
#include "optim/adamw.hpp"              // defines: AdamW
#include "parallel/comm.hpp"            // defines: Comm
#include "parallel/topology.hpp"        // defines: Topology

namespace px {

class ExpertParallel;
class ParallaxExperts;

struct StepStats {
  double loss = 0;  // mean CE over the data-parallel group's batch + aux loss
  double ce = 0, aux = 0, grad_norm = 0;
  std::vector<int64_t> counts;  // tokens per expert over the group's batch [moe_layers * E]
  // The loss or the gradient norm was not finite (the same on every rank of the group): the
  // step changed no parameter, moment or router bias.
  bool skipped = false;
};

class LearnerModel {
 public:
  virtual ~LearnerModel() = default;

  virtual StepStats step(const int32_t* inputs, const int32_t* targets, double lr) = 0;
  // Mean CE of one evaluation batch (the same batch on every rank of the group).
  virtual double eval_batch(const int32_t* inputs, const int32_t* targets) = 0;
  // The same with every routed expert's output left out (the ablation of data.eval_without_routed:
  // how much the trained model relies on its routed experts).
  virtual double eval_batch_without_routed(const int32_t* inputs, const int32_t* targets) = 0;

  // The host copy (see the sync points above).
  virtual MoeModel<float>& host() = 0;
  virtual AdamW& optimizer() = 0;
  virtual void to_host(Arena a) = 0;
  virtual void to_device(Arena a) = 0;
  virtual void state_to_host() = 0;
  virtual void state_to_device() = 0;

  // Mode "parallax": the routed-experts hook (null otherwise). Mode "sync" with several
  // learners: the expert-parallel executor (null otherwise).
  virtual ParallaxExperts* parallax() = 0;
  virtual const ExpertParallel* expert_parallel() const = 0;
  // The accelerator's name ("" on the CPU): the progress line's MFU (train/mfu.hpp).
  virtual std::string device_name() const { return ""; }
  // How a device learner's data-parallel group sums its gradients ("NCCL", "host-staged
  // MPI", ...; "" on the CPU, where they are host memory already).
  virtual std::string grad_exchange() const { return ""; }
};

// A CPU learner whose host copy is the live model: every sync point is a no-op (CpuLearner,
// PipelineLearner).
class HostLearnerModel : public LearnerModel {
 public:
  // eval_batch with every routed expert's output left out (data.eval_without_routed).
  double eval_batch_without_routed(const int32_t* inputs, const int32_t* targets) override {
    host().set_drop_routed(true);
    const double ce = eval_batch(inputs, targets);
    host().set_drop_routed(false);
    return ce;
  }
  void to_host(Arena) override {}
  void to_device(Arena) override {}
  void state_to_host() override {}
  void state_to_device() override {}
};

// Whether a step whose group-wide loss and gradient norm are s's must be skipped (the same
// on every rank of the group): a non-finite loss or norm, or an update that could overflow
// fp32 (plain SGD at a divergent lr: lr x the clipped norm bounds every |lr g_i|; an AdamW
// step is bounded by lr).
inline bool step_must_skip(const StepStats& s, double lr, double grad_clip) {
  const double clipped = grad_clip > 0 ? std::min(s.grad_norm, grad_clip) : s.grad_norm;
  return !std::isfinite(s.loss) || !std::isfinite(s.grad_norm) || !std::isfinite((float)(lr * clipped));
}

// The inner optimizer's settings of cfg.train (every backend).
AdamWConfig adamw_config(const Config& cfg);
// What the learner's model holds (mode parallax: no routed arenas nor routed activations;
// train.recompute: no attention probabilities, and with "experts" one MoE layer's
// routed hidden activations).
inline ModelMemory learner_model_memory(const Config& cfg) {
  const RecomputeKind r = cfg.train.recompute;
  ModelMemory mem;
  mem.routed_arenas = cfg.train.mode != TrainMode::PARALLAX;
  mem.recompute_attention = r == RecomputeKind::ATTENTION || r == RecomputeKind::EXPERTS;
  mem.recompute_experts = r == RecomputeKind::EXPERTS;
  mem.recompute_layers = r == RecomputeKind::LAYERS;  // (the layer's activations, one set)
  return mem;
}

// The learner model of cfg.train.device. dp: the data-parallel group (size 1 is fine).
// expert_parallel: shard routed experts over dp (mode "sync"). topo: needed in mode "parallax".
// island: with topology.pipeline_stages > 1, the island's ranks that are my pipeline (rank =
// stage).
std::unique_ptr<LearnerModel> make_learner_model(const Config& cfg, Comm& dp, bool expert_parallel,
                                                 int micro_batch, const Topology* topo,
                                                 Comm* island = nullptr);

}  // namespace px
