#pragma once
// What a learner holds of the experts homed elsewhere in mode "parallax" (DESIGN §6), and how
// the homes' view messages refresh it (experts.view):
//   "ternary": the arena holds each such expert's dequantized ternary snapshot; a message
//              replaces it (every snapshot_every steps, tier "snapshot").
//   "lowrank": this object keeps the factors U V (rank surrogate_rank) of each such expert and
//              the arena holds U V; a message carries rank-update_rank deltas that learner and
//              home add with the same re-compressing rule (lowrank_expert_add), so both hold
//              bit-identical surrogates (every surrogate_every steps, tier "surrogate").
// At start every rank builds the views from the same initial weights (no message).
//
// View message: u32 count, then per expert i32 moe_layer, i32 expert, u32 bytes and a ternary
// expert (ternary_expert_to_wire) or a low-rank expert delta (lowrank_expert_to_wire).
#include <cstdint>
#include <vector>

#include "config/config.hpp"          // defines: Config
#include "model/lowrank_view.hpp"     // defines: LowrankExpertView
#include "model/param_layout.hpp"     // defines: ParamLayout
#include "parallel/topology.hpp"      // defines: Topology

namespace px {

// Seed of the randomized fit of expert (m, e)'s surrogate at `step` (0: the initial fit).
uint64_t view_seed(const Config& cfg, int moe_layer, int expert, int64_t step);

// Flat factors (U then V of each matrix, expert by expert) of a list of surrogates, and back
// (the shapes are those of the list).
std::vector<float> lowrank_factors(const std::vector<LowrankExpertView>& views);
void set_lowrank_factors(std::vector<LowrankExpertView>& views, const std::vector<float>& f);

class ExpertViews {
 public:
  // Builds the view of every expert not homed at topo.world_rank from the arena's (initial)
  // weights and writes it, dequantized, into the arena.
  ExpertViews(const Config& cfg, const ParamLayout& layout, const Topology& topo,
              float* experts_arena);
  // Applies a home's view message to this rank's views and writes them into experts_arena.
  // Throws std::invalid_argument on a malformed message, naming what is wrong.
  void apply(const uint8_t* bytes, size_t size, float* experts_arena);
  // After resuming with another topology.expert_workers (view "ternary"): the experts this rank
  // homed under `old` (old.world_rank = this rank) and no longer does hold their masters in the
  // arena; they become their views.
  void rehome(const Topology& old, float* experts_arena);
  // The tier and cadence of view messages.
  bool lowrank() const { return lowrank_; }
  int every() const;

  // State for checkpoints (view "lowrank": the surrogates' factors; empty for ternary).
  std::vector<float> factors() const { return lowrank_factors(lr_); }
  void set_factors(const std::vector<float>& f) { set_lowrank_factors(lr_, f); }

 private:
  const Config& cfg_;
  const ParamLayout& layout_;
  bool lowrank_;
  std::vector<int> slot_;  // [moe_layers * E]: index into lr_ (lowrank), -1 for my own experts
  std::vector<LowrankExpertView> lr_;
};

}  // namespace px
