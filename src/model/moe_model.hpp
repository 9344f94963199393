#pragma once
// The MoE language model (DESIGN §2): parameters, gradients and activations in arenas sized
// once from the config and the batch shape; hand-written forward and backward.
// T = float for training, double for the finite-difference gradient tests.
#include <cstdint>
#include <functional>
#include <vector>

#include "model/activations.hpp"   // defines: LayerActs
#include "model/layers.hpp"        // defines: Scratch
#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {

// What a model holds besides the backbone's arenas.
struct ModelMemory {
  // false: no routed-expert weights, gradients nor routed-row activations (their executor,
  // set_parallel, holds them: mode parallax's homes and views), so a parallax learner never
  // holds every expert.
  bool routed_arenas = true;
  // true: one layer's attention probabilities [B, H, T, T], shared by every layer; each
  // layer's backward recomputes its own from q and k (train.recompute = "attention").
  bool recompute_attention = false;
  // true: one MoE layer's routed hidden activations (x W1, x W3, act), shared by every layer;
  // each layer's backward recomputes its own from its expert inputs (train.recompute =
  // "experts"; the executor of mode parallax does the same with its own buffers).
  bool recompute_experts = false;
};

template <class T>
class MoeModel {
 public:
  // batch, seq: the largest batch shape forward() will be called with.
  MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem = {});

  // The run's initial parameters (model/param_init.hpp) of the arenas it holds; router bias 0.
  void init_params(uint64_t seed);

  // Runs the model on inputs [B, Tn] (B <= batch, Tn <= seq). With targets, returns the
  // training loss (mean cross-entropy + aux loss) and keeps what backward() needs;
  // without, returns 0 and only fills logits().
  double forward(const int32_t* inputs, const int32_t* targets, int B, int Tn);
  double forward(const int32_t* inputs, const int32_t* targets) {
    return forward(inputs, targets, batch_, seq_);
  }
  // Gradients of the last forward's loss, ADDED into grads (call zero_grad() first).
  void backward();
  void zero_grad();

  // The last forward's cross-entropy: the mean over the local batch, or, with set_parallel,
  // this rank's share (local sum / global_tokens; summing it over ranks gives the mean).
  double last_ce() const { return last_ce_; }
  double last_aux() const { return last_aux_; }
  const T* logits() const { return logits_; }  // [B*Tn, V] of the last forward

  // null for the experts without routed arenas
  T* params(Arena a) {
    return a == Arena::BACKBONE ? backbone_.data() : experts_.empty() ? nullptr : experts_.data();
  }
  T* grads(Arena a) {
    return a == Arena::BACKBONE ? gbackbone_.data() : gexperts_.empty() ? nullptr : gexperts_.data();
  }
  const ParamLayout& layout() const { return layout_; }
  const ModelConfig& config() const { return cfg_; }

  // Tokens routed to each expert by the last forward: [moe_layers * E].
  std::vector<int64_t> expert_counts() const;
  // Aux-loss-free balancing state (balance = "bias"): [moe_layers * E], selection only.
  std::vector<T>& router_bias() { return router_bias_; }
  // After an optimizer step: bias_e += gamma * sign(mean load - load_e), per MoE layer,
  // from the loads of the whole batch (expert_counts() summed over its ranks).
  void update_router_bias(const std::vector<int64_t>& counts);

  // Data/expert parallel runs: the loss averages over global_tokens (0: the local batch);
  // sum_stats sums MoE routing statistics over the ranks of that batch; experts (may be null)
  // runs the routed experts elsewhere. The pointed-to objects must outlive the model's use.
  // Evaluation ablation: forwards leave the routed experts' outputs out (the router, the
  // shared experts and the backbone as trained). Never for training steps.
  void set_drop_routed(bool drop) { drop_routed_ = drop; }
  // The backward computes the gradient of scale x the loss (gradient accumulation over M
  // micro-batches: 1 / M, so that their sum is the gradient of the mean loss).
  void set_loss_scale(double scale) { loss_scale_ = scale; }
  void set_parallel(double global_tokens, const std::function<void(double*, int)>* sum_stats,
                    RoutedExperts<T>* experts) {
    global_tokens_ = global_tokens;
    sum_stats_ = sum_stats;
    experts_exec_ = experts;
  }

  size_t activation_bytes() const { return acts_.size() * sizeof(T) + iacts_.size() * 4; }
  // The same figure without building a model (for `parallax plan`).
  static size_t activation_bytes(const ModelConfig& cfg, int batch, int seq, ModelMemory mem = {});

 private:
  struct SizesOnly {};
  MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem, SizesOnly);  // sizes only
  template <class A, class I>
  void plan_activations(A& fa, I& ia);
  MoeDims moe_dims(int N) const;
  MoeContext<T> moe_context(int moe_layer) const;

  ModelConfig cfg_;
  ModelMemory mem_;
  ParamLayout layout_;
  int batch_, seq_;
  int cur_B_ = 0, cur_T_ = 0;
  const int32_t* targets_ = nullptr;
  std::vector<int32_t> inputs_copy_, targets_copy_;
  std::vector<T> backbone_, experts_, gbackbone_, gexperts_;
  size_t act_elems_ = 0, iact_elems_ = 0;
  std::vector<T> acts_;
  std::vector<int32_t> iacts_;
  std::vector<T> router_bias_;
  std::vector<LayerActs<T>> layer_acts_;
  T* xf_ = nullptr;      // [N, d] final normed
  T* rstdf_ = nullptr;   // [N]
  T* resid_out_ = nullptr;  // [N, d] output of the last layer
  T* logits_ = nullptr;  // [N, V]
  T* dlogits_ = nullptr; // [N, V]
  T* dres_[2] = {nullptr, nullptr};  // [N, d] residual-stream gradients (ping-pong)
  T* dmid_ = nullptr;    // [N, d]
  T* dffn_ = nullptr;    // [N, d]
  Scratch<T> scratch_{};
  double last_ce_ = 0, last_aux_ = 0;
  double global_tokens_ = 0;
  double loss_scale_ = 1;
  const std::function<void(double*, int)>* sum_stats_ = nullptr;
  RoutedExperts<T>* experts_exec_ = nullptr;
  bool drop_routed_ = false;
};

}  // namespace px
