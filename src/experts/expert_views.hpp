#pragma once
// What a learner holds of the experts homed elsewhere in mode "parallax" (DESIGN §6), and how
// the homes' view messages refresh it (experts.view):
//   "ternary": the 2-bit codes and scales of each such expert's last ternary snapshot; a
//              message replaces them (every snapshot_every steps, tier "snapshot").
//   "lowrank": the factors U V (rank surrogate_rank) of each such expert; a message carries
//              rank-update_rank deltas that learner and home add with the same re-compressing
//              rule (lowrank_expert_add), so both hold bit-identical surrogates (every
//              surrogate_every steps, tier "surrogate").
//   "full":    an fp32 copy of each such expert's master as of its home's last snapshot; a
//              message replaces it (every snapshot_every steps, tier "snapshot"; the SPES-style
//              baseline with signal "none", experts/expert_signal.hpp).
// Ternary and low-rank views are compact; the island's expert executor dequantizes (copies,
// for full views) one expert at a time.
// At start every rank builds the views from the same initial weights (no message). A stage of
// a pipelined island (topology.pipeline_stages > 1) holds the views of its own MoE layers alone.
//
// View message: u32 count, then per expert i32 moe_layer, i32 expert, u32 bytes and a ternary
// expert (ternary_expert_to_wire), a low-rank expert delta (lowrank_expert_to_wire) or a full
// expert (full_expert_to_wire).
#include <cstdint>
#include <vector>

#include "checkpoint/stateful.hpp"        // defines: Stateful, StateReader
#include "config/config.hpp"          // defines: Config
#include "model/expert_source.hpp"    // defines: ExpertSource
#include "model/full_view.hpp"        // defines: FullExpertView
#include "model/lowrank_view.hpp"     // defines: LowrankExpertView
#include "model/param_layout.hpp"     // defines: ParamLayout
#include "model/ternary_view.hpp"     // defines: TernaryExpertView
#include "parallel/expert_placement.hpp"  // defines: ExpertId
#include "parallel/pipeline_schedule.hpp"  // defines: MoeLayerRange
#include "parallel/topology.hpp"      // defines: Topology

namespace px {

// Seed of the randomized fit of expert (m, e)'s surrogate at `step` (0: the initial fit).
uint64_t view_seed(const Config& cfg, int moe_layer, int expert, int64_t step);

// Flat factors (U then V of each matrix, expert by expert) of a list of surrogates, and back
// (the shapes are those of the list).
std::vector<float> lowrank_factors(const std::vector<LowrankExpertView>& views);
void set_lowrank_factors(std::vector<LowrankExpertView>& views, const std::vector<float>& f);

// The part of view message `msg` for the MoE layers `layers` (a stage's: same format, the
// experts in the same order; a message of no expert when it has none of them).
std::vector<uint8_t> view_message_part(const std::vector<uint8_t>& msg, MoeLayerRange layers);

class ExpertViews final : public Stateful {
 public:
  // Builds the view of every expert of my stage's MoE layers not homed at topo.world_rank from
  // its (initial) weights in start (every rank has the same ones), one expert at a time.
  ExpertViews(const Config& cfg, const Topology& topo, const ExpertSource& start);
  // Applies a home's view message. Throws std::invalid_argument on a malformed message, naming
  // what is wrong (nothing is changed then for the experts after the bad one).
  void apply(const uint8_t* bytes, size_t size);
  // A view held here: an expert of my stage's MoE layers homed elsewhere.
  bool remote(int moe_layer, int expert) const { return slot(moe_layer, expert) >= 0; }
  // The dense weights of remote expert (m, e): W1, W3 [d, h] (W3 null for relu2), W2 [h, d].
  void dequantize(int moe_layer, int expert, float* W1, float* W3, float* W2) const;
  // Views "ternary" and "full": remote expert (m, e) becomes the view of these master weights
  // (re-homing).
  void set_from_master(int moe_layer, int expert, const float* W1, const float* W3, const float* W2);
  // The cadence of view messages (snapshot_every or surrogate_every).
  int every() const;
  size_t bytes() const;  // memory the views take (codes, scales, factors, full weights)

  // Checkpoint state: per remote expert i32 moe_layer, i32 expert, i32 bytes, then its
  // expert wire form (ternary, low-rank or full) padded to 4-byte words. Re-homing
  // (r.rehoming()): the experts this rank homed in the checkpoint and no longer does get
  // views of those masters.
  void save(ParallelCheckpointWriter& w) override;
  void load(const StateReader& r) override;

 private:
  std::vector<int32_t> state() const;
  int set_state(const std::vector<int32_t>& words);  // how many remote experts it set
  void views_of_old_masters(const StateReader& r);
  int slot(int m, int e) const { return slot_[(size_t)m * cfg_.model.n_experts + e]; }

  // The wire form of remote expert s, and remote expert s from a wire form.
  std::vector<uint8_t> wire_of(size_t s) const;
  void set_from_wire(size_t s, const uint8_t* p, size_t len);

  const Config& cfg_;
  ViewKind kind_;
  MoeLayerRange held_;  // my stage's MoE layers
  std::vector<int> slot_;  // [moe_layers * E]: index into the views of kind_, -1 for my own experts
                           // and those of other stages' layers
  std::vector<ExpertId> ids_;  // the remote experts, by slot
  std::vector<TernaryExpertView> ternary_views_;
  std::vector<LowrankExpertView> lowrank_views_;
  std::vector<FullExpertView> full_views_;
};

}  // namespace px
