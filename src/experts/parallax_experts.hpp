#pragma once
// The routed experts of an island rank in mode "parallax" (DESIGN §1, §6, §7). Every routed
// expert runs HERE, one expert at a time: the experts this rank homes from their fp32 masters
// (ExpertHome), all others from their views (ExpertViews: ternary codes, low-rank factors or
// full fp32 copies) dequantized (copied) into a scratch buffer, plus the adapters' A B under
// the adapter signal (the model keeps no routed-expert weights or gradients). The backward computes input
// gradients for every expert but weight gradients only for the homed ones (frozen views), and
// for every expert homed elsewhere that received rows it packs a sketch of (X, dY) into the
// outbox of that expert's home (on sketch steps). Weight gradients go to the grad sink (with
// the adapter signal also the dense gradient of every view, which the adapters turn into
// theirs).
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "config/config.hpp"              // defines: Config
#include "model/layers.hpp"               // defines: RoutedExperts
#include "model/moe_model.hpp"            // defines: MoeModel
#include "parallel/pipeline_schedule.hpp" // defines: MoeLayerRange
#include "parallel/topology.hpp"          // defines: Topology
#include "sketch/sketch_handle.hpp"       // defines: SketchKey
#include "experts/expert_home.hpp"           // defines: ExpertHome
#include "experts/expert_views.hpp"          // defines: ExpertViews
#include "experts/expert_adapters.hpp"      // defines: ExpertAdapters

namespace px {

class ParallaxExperts final : public RoutedExperts<float> {
 public:
  // max_rows: N*k of one micro-batch. A pipeline stage (topology.pipeline_stages > 1) runs
  // the MoE layers of its own layers alone, with `slots` micro-batches in flight (each its own
  // saved inputs, routing and activations, MoeModel's slots).
  ParallaxExperts(const Config& cfg, const Topology& topo, MoeModel<float>& model, int max_rows,
                  int slots = 1);
  // The heap its buffers take (for `parallax plan`): per MoE layer held and slot the expert
  // pre-activations and activations of max_rows rows (train.recompute = "experts": one set),
  // three scratch buffers, one expert's weights and gradient.
  static double buffer_bytes(const Config& cfg, int max_rows, int moe_layers, int slots);

  // The step the next backward belongs to (steps completed after it) and whether it sketches.
  void begin_step(int64_t step, bool sketch) {
    step_ = step;
    sketch_ = sketch;
  }
  // Micro-batch i of a step's count (train.micro_batches; before its forward): each
  // micro-batch's backward packs its own sketches of ceil(sketch.tokens / count) rows, sampled
  // with a stream of their own, so that a step still sends about sketch.tokens rows per expert.
  void begin_micro_batch(int i, int count) {
    micro_ = i;
    micro_count_ = count;
  }
  // Where the weight gradients of an expert go (the expert home for my experts, the adapters
  // for views under the adapter signal): called once per expert and backward with its dW1,
  // dW3 (null for relu2), dW2 of this backward alone. The model keeps no expert gradients.
  using GradSink = std::function<void(int moe_layer, int e, const float* dW1, const float* dW3,
                                      const float* dW2)>;
  void set_grad_sink(GradSink sink) { sink_ = std::move(sink); }
  // Where the weights come from (home may be null when this rank homes nothing; adapters null
  // unless the adapter signal). Must be set before the first forward.
  void set_sources(const ExpertHome* home, const ExpertViews* views, const ExpertAdapters* adapters) {
    home_src_ = home;
    views_ = views;
    adapters_src_ = adapters;
  }
  // Sketches packed since the last take, by home world rank (each a full sketch message).
  std::map<int, std::vector<std::vector<uint8_t>>> take_outbox();

  bool homed_here(int moe_layer, int e) const { return home_[(size_t)moe_layer * n_experts_ + e] == my_rank_; }
  int home_of(int moe_layer, int e) const { return home_[(size_t)moe_layer * n_experts_ + e]; }

  void forward(int moe_layer, const float* xp, const int32_t* bounds, float* yp) override;
  void backward(int moe_layer, const float* dyp, float* dxp) override;
  void use_slot(int slot, bool forward) override {
    slot_ = slot;
    if (forward) micro_of_[slot] = micro_;  // (a recomputed forward keeps the slot's micro-batch)
  }
  const MoeLayerRange& held() const { return held_; }  // the MoE layers this rank runs

 private:
  const Config& cfg_;
  MoeModel<float>& model_;
  int my_rank_, n_experts_, d_, h_;
  // the stream of this rank's sketches: its part of the training data (its world rank unless
  // pipelined; every stage of a pipeline reads the same part)
  uint64_t data_part_;
  bool adapters_;  // experts.signal = "adapters": dense weight gradients of the views too
  std::vector<int> home_;  // [moe_layers * E] world rank of each expert's home
  SketchKey key_;
  MoeLayerRange held_;
  int64_t step_ = 0;
  bool sketch_ = false;
  int micro_ = 0, micro_count_ = 1;
  int slot_ = 0;  // the activation slot of the next forward / backward
  std::vector<int> micro_of_;  // per slot: the micro-batch its forward ran (1F1B reorders)
  // per (slot, held layer): the forward's inputs (the model's activations), routing and expert
  // activations (train.recompute = "experts": one set shared by all, recomputed in the backward;
  // "layers": one set, the backward runs after its layer's forward again)
  std::vector<const float*> inputs_;
  std::vector<std::vector<int32_t>> bounds_;
  bool recompute_;
  std::vector<std::vector<float>> pre_w1_, pre_w3_, act_;  // x W1, x W3 (swiglu), activation
  size_t saved(int m) const { return (size_t)slot_ * held_.count() + (m - held_.lo); }
  size_t set_of(int m) const { return act_.size() == 1 ? 0 : saved(m); }  // the activation set of layer m
  std::vector<float> scratch1_, scratch2_, scratch3_, sampled_x_, sampled_dy_, weight_grad_;  // weight_grad_: [3, d*h] one expert's gradient
  std::vector<float> view_weights_;  // [3, d*h]: one view's dequantized weights
  GradSink sink_;
  const ExpertHome* home_src_ = nullptr;
  const ExpertViews* views_ = nullptr;
  const ExpertAdapters* adapters_src_ = nullptr;
  // Points W1, W3, W2 at expert (m, e)'s weights (a master, or a view materialized in view_weights_).
  void weights(int m, int e, const float** W1, const float** W3, const float** W2);
  std::map<int, std::vector<std::vector<uint8_t>>> outbox_;
};

}  // namespace px
