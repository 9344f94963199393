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
  // true: no layer keeps its attention probabilities [B, H, T, T]: the attention holds one
  // head's at a time and each layer's backward recomputes them from q and k (train.recompute =
  // "attention"; "layers" does the same).
  bool recompute_attention = false;
  // true: one MoE layer's routed hidden activations (x W1, x W3, act), shared by every layer;
  // each layer's backward recomputes its own from its expert inputs (train.recompute =
  // "experts"; the executor of mode parallax does the same with its own buffers).
  bool recompute_experts = false;
  // true: each layer keeps only its input per slot; one set of a layer's activations is shared
  // by every layer and slot, and each layer's backward first recomputes its forward from its
  // input (train.recompute = "layers"; the layer's routing is recomputed too, and its routed
  // experts' executor runs the layer's experts again).
  bool recompute_layers = false;
  // A pipeline stage (topology.pipeline_stages): only layers [layer_begin, layer_end) (-1: to
  // the last), with the embedding on the first stage and the final norm and head on the last;
  // the arenas hold those layers' elements alone (params(a)[0] is element span(a).lo).
  int layer_begin = 0, layer_end = -1;
  // Sets of the activations a backward reads (a stage keeps one per micro-batch in flight).
  int slots = 1;
};

// An arena addressed by the layout's element offsets while holding only span.lo onwards.
template <class T>
struct ArenaView {
  T* data = nullptr;
  size_t lo = 0;
  T* operator+(size_t offset) const { return data + (offset - lo); }
  explicit operator bool() const { return data != nullptr; }
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

  // A pipeline stage's part of the model on a full micro-batch [batch, seq], in activation
  // slot `slot`. forward_stage: the first stage embeds inputs, the others read stage_input(slot)
  // (the previous stage's output, written there by the caller); the last stage returns its CE
  // share + its layers' aux loss (needs targets), the others their aux loss and leave
  // stage_output(slot). backward_stage: the gradients of slot's forward ADDED into grads from
  // d_output (the next stage's input_grad(); null on the last stage); input_grad() is then the
  // gradient of stage_input(slot) (unused on the first stage), valid until the next backward.
  double forward_stage(const int32_t* inputs, const int32_t* targets, int slot);
  void backward_stage(int slot, const T* d_output);
  T* stage_input(int slot) { return slots_[slot].layers[lb_].x; }
  // (valid until the next forward_stage: a stage before the last keeps one output buffer)
  const T* stage_output(int slot) const { return slots_[slot].resid_out; }
  const T* input_grad() const { return dinput_; }
  bool first_stage() const { return lb_ == 0; }
  bool last_stage() const { return le_ == cfg_.n_layers; }
  // The elements of arena a this model holds (the whole arena unless a stage; empty for the
  // experts without routed arenas), and their number.
  ArenaSpan span(Arena a) const { return span_[(int)a]; }
  size_t arena_size(Arena a) const {
    return a == Arena::BACKBONE ? backbone_.size() : experts_.size();
  }

  // The last forward's cross-entropy: the mean over the local batch, or, with set_parallel,
  // this rank's share (local sum / global_tokens; summing it over ranks gives the mean).
  double last_ce() const { return last_ce_; }
  double last_aux() const { return last_aux_; }
  const T* logits() const { return cur_->logits; }  // [B*Tn, V] of the last forward

  // null for the experts without routed arenas
  T* params(Arena a) {
    return a == Arena::BACKBONE ? backbone_.data() : experts_.empty() ? nullptr : experts_.data();
  }
  T* grads(Arena a) {
    return a == Arena::BACKBONE ? gbackbone_.data() : gexperts_.empty() ? nullptr : gexperts_.data();
  }
  const ParamLayout& layout() const { return layout_; }
  const ModelConfig& config() const { return cfg_; }

  // Tokens routed to each expert by the last forward: [moe_layers * E] (0 for the layers of
  // other stages).
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
  // The activations one forward saves for its backward (one set per slot).
  struct SlotActs {
    std::vector<LayerActs<T>> layers;  // [n_layers]; null outside the stage
    T* resid_out = nullptr;  // [N, d] output of the stage's last layer
    T* xf = nullptr;         // [N, d] final normed (last stage)
    T* rstdf = nullptr;      // [N]
    T* logits = nullptr;     // [N, V]
    T* dlogits = nullptr;    // [N, V]
    std::vector<int32_t> inputs;  // the embedded tokens (first stage)
    int B = 0, Tn = 0;
  };
  template <class A, class I>
  void plan_activations(A& fa, I& ia);
  template <class A, class I>
  void plan_slot(SlotActs& s, FfnActs<T> shared_routed, A& fa, I& ia);
  // One layer's activations (but its input x), of a dense or a MoE layer.
  template <class A, class I>
  LayerActs<T> plan_layer(bool moe, FfnActs<T> shared_routed, A& fa, I& ia);
  // Attention probabilities recomputed in the backward (train.recompute other than "none").
  bool recompute_probs() const { return mem_.recompute_attention || mem_.recompute_layers; }
  MoeDims moe_dims(int N) const;
  MoeContext<T> moe_context(int moe_layer) const;
  // forward_stage / backward_stage of the current slot's shape, and their pieces
  double run_forward(const int32_t* inputs, const int32_t* targets);
  void run_backward(const T* d_output);
  void embed_forward(const int32_t* inputs);
  void layers_forward();
  // Layer l's forward from acts.x into acts and next (moe_l: its MoE index; returns its aux loss).
  double layer_forward(int l, LayerActs<T>& acts, T* next, int moe_l);
  double head_forward(const int32_t* targets);
  T* head_backward();  // returns the gradient of resid_out
  T* layers_backward(T* dcur);  // returns the gradient of the first layer's input
  void embed_backward(const T* dx);
  ArenaView<const T> bb() const { return {backbone_.data(), span_[0].lo}; }
  ArenaView<T> gb() { return {gbackbone_.data(), span_[0].lo}; }
  ArenaView<const T> ex() const { return {experts_.empty() ? nullptr : experts_.data(), span_[1].lo}; }
  ArenaView<T> ge() { return {gexperts_.empty() ? nullptr : gexperts_.data(), span_[1].lo}; }

  ModelConfig cfg_;
  ModelMemory mem_;
  ParamLayout layout_;
  int batch_, seq_;
  int lb_, le_;           // the stage's layers [lb_, le_)
  ArenaSpan span_[2];     // the arena elements held
  std::vector<T> backbone_, experts_, gbackbone_, gexperts_;
  size_t act_elems_ = 0, iact_elems_ = 0;
  std::vector<T> acts_;
  std::vector<int32_t> iacts_;
  std::vector<T> router_bias_;
  std::vector<SlotActs> slots_;
  SlotActs* cur_ = nullptr;  // the slot of the last forward
  T* dres_[2] = {nullptr, nullptr};  // [N, d] residual-stream gradients (ping-pong)
  T* dmid_ = nullptr;    // [N, d]
  T* dffn_ = nullptr;    // [N, d]
  T* recompute_out_ = nullptr;  // [N, d] a recomputed layer's output (recompute_layers)
  T* stage_out_ = nullptr;      // [N, d] the output of a stage before the last (every slot's)
  LayerActs<T> shared_layer_[2]{};  // recompute_layers: the shared activations of a dense / MoE layer
  const T* dinput_ = nullptr;  // the last backward's input gradient
  Scratch<T> scratch_{};
  double last_ce_ = 0, last_aux_ = 0;
  double global_tokens_ = 0;
  double loss_scale_ = 1;
  const std::function<void(double*, int)>* sum_stats_ = nullptr;
  RoutedExperts<T>* experts_exec_ = nullptr;
  bool drop_routed_ = false;
};

}  // namespace px
