#pragma once
// A pipeline stage of an island (topology.pipeline_stages = P > 1, D = ranks_per_island / P
// ranks per stage; DESIGN §3): this rank holds
// layers [s L / P, (s+1) L / P) of the model (the embedding on stage 0, the final norm and head
// on stage P-1), their parameters, gradients and AdamW moments alone, and one set of
// activations per micro-batch in flight. A step runs the batch's train.micro_batches through
// the 1F1B schedule (parallel/pipeline_schedule.hpp): activations go to the next stage and
// their gradients come back point-to-point on the island (counted in tier "island"); then
// the stage's gradients are all-reduced over its data-parallel group (the stage's D ranks of
// the island; mode "sync": of every island), the global gradient norm, the loss and the routing counts are
// summed over the stages, and every stage steps its own AdamW (train.zero = 1: each rank of the
// group its 1/D of the stage's span, ZeRO-1: gradients reduce-scattered, shards all-gathered). The host copy is the live
// model (CPU): every sync point is a no-op. Mode parallax: the stage's MoE layers run their
// routed experts from views (ParallaxExperts, one saved set per slot) and the backward of each
// micro-batch packs its sketches for the experts' homes (expert workers); the model holds no
// routed experts.
#include <array>
#include <functional>
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"  // defines: LearnerModel, StepStats
#include "experts/parallax_experts.hpp"  // defines: ParallaxExperts

namespace px {

class PipelineLearner final : public HostLearnerModel {
 public:
  // island: my pipeline's ranks of the island (rank = stage); dp: the stage's data-parallel
  // group (size 1 is fine); topo: this rank's (mode parallax). Collective over island (it
  // duplicates it for the messages).
  PipelineLearner(const Config& cfg, Comm& island, Comm& dp, int micro_batch, const Topology* topo);

  StepStats step(const int32_t* inputs, const int32_t* targets, double lr) override;
  double eval_batch(const int32_t* inputs, const int32_t* targets) override;

  MoeModel<float>& host() override { return model_; }
  AdamW& optimizer() override { return *opt_; }
  ParallaxExperts* parallax() override { return parallax_.get(); }
  const ExpertParallel* expert_parallel() const override { return nullptr; }

  static constexpr int kSendBuffers = 2;  // a stage's outputs (and input gradients) in flight at a time
  // The model a stage holds (for `parallax plan`).
  static ModelMemory stage_memory(const Config& cfg, int stage);

 private:
  // One micro-batch through this stage: receive its input (stage > 0), forward, send the
  // output (stage < P-1); or receive the output's gradient (stage < P-1), backward, send the
  // input's gradient (stage > 0). `sums` gathers the forward's CE share, aux loss and counts.
  struct Sums {
    double ce = 0, aux = 0;
    std::vector<int64_t> counts;
  };
  void forward_micro(int micro, const int32_t* inputs, const int32_t* targets, Sums& sums);
  void backward_micro(int micro);
  void send(const float* data, int buf, int to, std::vector<MPI_Request>& reqs);
  void wait_sends();
  void set_parallel(bool eval);
  // The spans of the arenas my AdamW steps: the stage's, or (train.zero = 1) my 1/D of them
  // (sets shards_).
  std::array<ArenaWindow, 2> optimizer_windows(bool zero);
  // The step's statistics summed over the data-parallel group and the stages.
  StepStats combine(Sums& sums);

  Comm& dp_;
  Comm pipe_;  // a dup of the island for the stages' messages
  int stage_, stages_, batch_, seq_, micro_, slots_;
  int boundary_bytes_ = 0;  // one micro-batch's [N, d] fp32 activations (or their gradient)
  double grad_clip_;
  MoeModel<float> model_;
  // mode parallax: the routed experts of my stage's MoE layers, from their homes' views
  std::unique_ptr<ParallaxExperts> parallax_;
  std::unique_ptr<AdamW> opt_;
  std::function<void(double*, int)> sum_stats_;
  std::vector<float> recv_grad_;               // [N, d] the next stage's input gradient
  std::vector<std::vector<float>> send_act_, send_grad_;  // [kSendBuffers]: my outputs, input gradients in flight
  std::vector<MPI_Request> act_reqs_, grad_reqs_;  // per send buffer
  std::vector<int> shards_[2];  // ZeRO-1: elements per rank of the group (empty: not sharded)
};

}  // namespace px
