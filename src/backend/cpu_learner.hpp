#pragma once
// The CPU learner model (DESIGN §4, §9): one learner rank's inner step in every mode:
// forward and backward on its micro-batch, gradient all-reduce over its data-parallel group
// (all learners in mode "sync", its island in "diloco" and "parallax"), global-norm clipping
// and the inner optimizer. In mode "sync" with several learners the routed experts are
// expert-parallel; in mode "parallax" they run from masters / views (ParallaxExperts), their
// gradients are neither reduced nor stepped here (the ExpertHome does that) and clipping
// sees the backbone only. With train.zero = 1 every all-reduced arena is sharded over the
// group instead (ZeRO-1): gradients reduce-scattered, each rank's AdamW steps its 1/D of the
// arena with moments for it alone, the updated shards all-gathered.
// The host copy is the live model: every sync point is a no-op.
#include <functional>
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"      // defines: LearnerModel, StepStats
#include "parallel/expert_parallel.hpp"   // defines: ExpertParallel
#include "experts/parallax_experts.hpp"     // defines: ParallaxExperts

namespace px {

class CpuLearner final : public HostLearnerModel {
 public:
  CpuLearner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
             const Topology* topo = nullptr);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr) override;
  double eval_batch(const int32_t* inputs, const int32_t* targets) override;

  MoeModel<float>& host() override { return model_; }
  AdamW& optimizer() override { return *opt_; }

  ParallaxExperts* parallax() override { return parallax_.get(); }
  const ExpertParallel* expert_parallel() const override { return expert_parallel_.get(); }

 private:
  // The model's parallel hooks: the routed-expert executor (expert parallel or parallax) and,
  // for training with several data-parallel ranks, the group's token count and statistics.
  void set_parallel(bool eval);
  // Zeroes the gradients, then forward and backward of every micro-batch of the batch (in, tg):
  // the gradients of the mean loss. Returns this rank's share of the mean CE; counts: tokens
  // per expert over the micro-batches; aux: the micro-batches' mean aux loss.
  double accumulate(const int32_t* in, const int32_t* tg, std::vector<int64_t>& counts, double& aux);
  // The group's sum of arena a's gradients: all-reduced, or (ZeRO-1) my shard reduce-scattered.
  void reduce_grads(Arena a, float* grads);
  // ZeRO-1: the windows of the arenas this rank's optimizer steps (sets shards_).
  std::array<ArenaWindow, 2> zero_windows(const Config& cfg, bool experts_reduced);

  Comm& dp_;
  int batch_, seq_;  // batch_: sequences per micro-batch
  int micro_;        // micro-batches per step
  double grad_clip_;  // train.grad_clip
  MoeModel<float> model_;
  std::unique_ptr<ExpertParallel> expert_parallel_;
  std::unique_ptr<ParallaxExperts> parallax_;
  std::unique_ptr<AdamW> opt_;
  std::function<void(double*, int)> sum_stats_;
  std::vector<int> shards_[2];  // ZeRO-1: elements per rank of each sharded arena (empty: whole)
};

}  // namespace px
