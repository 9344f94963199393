#pragma once
// The adapter signal of mode "parallax" on an island rank (DESIGN §5 item 3, §6;
// experts.signal = "adapters"): every expert homed elsewhere runs as its view plus a trainable
// rank-r adapter per weight, W = view + A B (A [in, r], B [r, out]; r = experts.adapter_rank),
// trained with AdamW (no weight decay) from the dense weight gradient of the view that the
// expert backward hands over (ParallaxExperts' grad sink). Every adapter_every steps the adapters are sent to the
// experts' homes as deltas A B (rank r <= update_rank) with the tokens they trained on, and
// reset: B = 0, A redrawn, moments cleared. A home folds the token-weighted mean of the deltas
// it received into its master (ExpertHome::fold_delta / apply_deltas).
//
// Delta message (one per home and adapter step; tier "adapter"):
//   u32 count, then per expert: i32 moe_layer, i32 expert, i64 tokens, i32 rank, then for
//   W1, W3 (SwiGLU only), W2 in order: A [in, r] and B [r, out] as fp32.
#include <cstdint>
#include <map>
#include <vector>

#include "checkpoint/stateful.hpp"          // defines: Stateful, StateReader
#include "config/config.hpp"              // defines: Config
#include "parallel/expert_placement.hpp"  // defines: ExpertId
#include "parallel/topology.hpp"          // defines: Topology

namespace px {

class ExpertAdapters final : public Stateful {
 public:
  ExpertAdapters(const Config& cfg, const Topology& topo);

  // W += A B for each weight of adapted expert (m, e) (W3 null for relu2): the view under the
  // adapters becomes the weights the island runs.
  void add_to(int moe_layer, int expert, float* W1, float* W3, float* W2) const;
  // During a backward: the dense weight gradient of adapted expert (m, e) (W3 null for relu2)
  // becomes the adapters' gradients (accumulated until step()).
  void add_weight_grad(int moe_layer, int expert, const float* dW1, const float* dW3,
                       const float* dW2);
  // After the backward: one AdamW step at lr, token counts (counts: [moe_layers * E]).
  void step(const std::vector<int64_t>& counts, double lr);
  // After a skipped step (non-finite loss): the backward's gradients are dropped.
  void drop_gradients();
  // The delta messages by home world rank; resets every adapter (cycle `step` seeds A).
  std::map<int, std::vector<uint8_t>> take_deltas(int64_t step);

  // Checkpoint state: adapters, their AdamW moments, token counts, steps in the cycle.
  void save(ParallelCheckpointWriter& w) override;
  void load(const StateReader& r) override;

 private:
  struct Mat {
    int in, out;
    size_t a, b;      // offsets of A and B in p_
  };
  void reset(int64_t cycle_step);

  const Config& cfg_;
  int rank_;  // experts.adapter_rank
  std::vector<ExpertId> ids_;    // the adapted experts (homed elsewhere)
  std::vector<int> index_;       // [moe_layers * E] -> index into ids_ (-1: homed here)
  std::vector<int> home_;        // their homes
  std::vector<std::vector<Mat>> mats_;  // per adapted expert: W1, (W3), W2
  std::vector<float> params_, grads_, m_, v_;
  std::vector<int64_t> tokens_;
  int steps_ = 0;
};

}  // namespace px
