#pragma once
// An expert home in mode "parallax" (DESIGN §1, §5 items 3-4, §7): the fp32 master weights and
// AdamW state of the routed experts homed on this rank (a learner when W = 0, an expert worker
// when W > 0), the sum of their gradient contributions since the last update, and the
// snapshots it sends to the islands.
//
// Gradient contributions, all with the learners' own loss scaling (a learner's gradient is of
// its island's mean loss, split over the island's ranks):
//   - this rank's own tokens (a home learner runs its experts from the masters):
//     add_expert_grad(), exact;
//   - every other learner's tokens: sketches (receive()), an unbiased estimate computed here
//     (none in the SPES-style baseline, experts/expert_signal.hpp: its own tokens only).
// update(lr, divisor) divides the sum by divisor = islands * expert_update_every (the mean over
// islands and steps, as the backbone's island loss is a mean; SPES: 1 * expert_update_every,
// the mean of its own island's loss), clips it by its own norm
// (train.grad_clip; experts are not part of the backbone's norm), takes one AdamW (or SGD) step
// with the backbone's hyper-parameters and clears the sum.
//
// Masters are packed per expert: [W1 d*h | W3 d*h (swiglu only) | W2 h*d].
#include <cstdint>
#include <memory>
#include <vector>

#include "checkpoint/stateful.hpp"         // defines: Stateful, StateReader
#include "config/config.hpp"               // defines: Config
#include "model/expert_source.hpp"         // defines: ExpertSource
#include "model/lowrank_view.hpp"          // defines: LowrankExpertView
#include "model/param_layout.hpp"          // defines: ParamLayout
#include "parallel/expert_placement.hpp"   // defines: ExpertId
#include "experts/home_device.hpp"          // defines: HomeDevice
#include "sketch/sketch_home.hpp"          // defines: SketchHome

namespace px {

// The run's handle key (DESIGN §7), from train.seed.
SketchKey run_sketch_key(const Config& cfg);

class ExpertHome final : public Stateful {
 public:
  // start: the masters' first values (the run's initializer, or an arena).
  ExpertHome(const Config& cfg, const ParamLayout& layout, std::vector<ExpertId> owned,
             const ExpertSource& start);
  ExpertHome(const ExpertHome&) = delete;
  ExpertHome& operator=(const ExpertHome&) = delete;

  const std::vector<ExpertId>& owned() const { return owned_; }
  bool empty() const { return owned_.empty(); }
  size_t per_expert() const { return per_; }

  // Adds this rank's exact gradient of its expert (m, e) (W3 null for relu2); throws
  // std::invalid_argument for an expert not homed here.
  void add_expert_grad(int moe_layer, int expert, const float* dW1, const float* dW3,
                       const float* dW2);
  // A sketch from another learner (verified; rejected ones are counted and change nothing).
  SketchStatus receive(const uint8_t* bytes, size_t size, int64_t home_step) {
    return sketches_.receive(bytes, size, home_step);
  }
  // Runs the queued sketches, then one optimizer step on the mean gradient; clears the sum.
  // With an all-zero gradient (nothing arrived: e.g. a worker under the adapter signal) it
  // takes no step.
  void update(double lr, double divisor);
  // Adapter signal: folds one delta message (ExpertAdapters::take_deltas) into the pending sum
  // (token-weighted); throws std::invalid_argument on a malformed message or a foreign expert.
  void fold_deltas(const uint8_t* bytes, size_t size);
  // masters += (sum_s tokens_s delta_s) / (sum_s tokens_s), per expert; clears the sums.
  void apply_deltas();
  // Points W1, W3 (null for relu2), W2 at the weights expert (m, e) homed here computes with:
  // its master, or under experts.ternary_native the ternary form of its master.
  void forward_weights(int moe_layer, int expert, const float** W1, const float** W3,
                       const float** W2) const;
  // Copies those weights into their slots of an experts arena (inference).
  void write_forward_weights(float* experts_arena) const;
  // The view message of step `step` for the islands (format in experts/expert_views.hpp):
  // view "ternary": the ternary snapshot of every owned master; view "full": a copy of every
  // owned master (fp32); view "lowrank": the rank-update_rank delta of every owned expert's
  // surrogate towards its master, which the home adds to its own copy of the surrogate exactly
  // as the learners will.
  std::vector<uint8_t> view_message(int64_t step);

  const SketchTally& tally() const { return sketches_.tally(); }

  // The masters, packed per expert (tests and inspection).
  std::vector<float>& masters() { return masters_; }
  const std::vector<float>& grad_sum() const { return grads_; }  // pending since the last update
  const std::vector<LowrankExpertView>& surrogates() const { return surrogates_; }  // view "lowrank": the islands' copies
  int steps_taken() const { return steps_; }
  int64_t skipped_updates() const { return skipped_updates_; }  // non-finite gradient sums dropped
  // The run step this home's state belongs to (the learners' step it has caught up with);
  // checkpoints hold it (an expert worker keeps no other record of the run's progress).
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

  // Checkpoint state: masters, pending gradient sum, AdamW moments, surrogates (view
  // "lowrank"), step and update count. Resuming with another topology.expert_workers
  // (r.rehoming()) takes each owned expert from its home in the checkpoint instead.
  void save(ParallelCheckpointWriter& w) override;
  void load(const StateReader& r) override;

 private:
  // Element offsets of expert i's W1, W3, W2 in an experts arena.
  size_t arena_off(int i, int which) const;
  std::vector<HomeExpertSlot> make_slots();
  size_t index_of(int moe_layer, int expert) const;
  void load_own(const StateReader& r);
  // experts.ternary_native: forward_ = the ternary form of every master (after any change).
  void refresh_forward();
  const float* forward_of(size_t i) const {
    return (native_ ? forward_.data() : masters_.data()) + i * per_;
  }
  void load_rehomed(const StateReader& r);

  const Config& cfg_;
  const ParamLayout& layout_;
  std::vector<ExpertId> owned_;
  int d_, h_;
  bool swiglu_, native_;
  size_t per_;
  std::vector<float> masters_, grads_, m_, v_;
  std::vector<float> forward_;  // experts.ternary_native: dequantized ternary masters
  std::vector<LowrankExpertView> surrogates_;  // view "lowrank": what the islands hold
  std::vector<double> delta_sum_;   // adapter signal: sum of tokens x delta, packed like masters
  std::vector<int64_t> delta_tok_;  // per expert
  int steps_ = 0;
  int64_t step_ = 0;
  int64_t skipped_updates_ = 0;
  SketchHome sketches_;
  // experts.home_device: where the masters, gradient sum and moments live and the arithmetic
  // runs ("cpu": in place on the vectors above); for the others the vectors above are its host
  // copy (masters refreshed after every update, everything before a checkpoint, uploaded after
  // a resume)
  std::unique_ptr<HomeDevice> device_;
};

}  // namespace px

