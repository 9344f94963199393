#pragma once
// An expert home's cadence (DESIGN §5 items 3-4), the one place it is written, for learners
// that home experts (HomeTier) and expert workers alike: as the home's clock reaches `step`,
//   every expert_update_every steps   one optimizer step on the mean gradient (lr of that step);
//   every adapter_every steps         adapter signal: the learners' deltas folded in;
//   every snapshot_every (ternary) or surrogate_every (low-rank) steps   view messages out.
// A clock that jumps (an asynchronous worker) catches up every event it passed, in order.
#include <cstdint>

#include "experts/expert_home.hpp"       // defines: ExpertHome
#include "tiers/delivery.hpp"         // defines: Delivery
#include "tiers/expert_messages.hpp"  // defines: ExpertMessages

namespace px {

class HomeCadence {
 public:
  // start_step: the step the home's state belongs to (0, or a checkpoint's).
  HomeCadence(const Config& cfg, const Topology& topo, ExpertHome& home, ExpertMessages& messages,
              Delivery& delivery, int64_t start_step);
  void advance(int64_t step);

 private:
  double lr_of(int64_t step) const;  // the learners' lr of step `step` (1-based)

  const Config& cfg_;
  ExpertHome& home_;
  ExpertMessages& messages_;
  Delivery& delivery_;
  const double divisor_;  // islands (SPES: 1) x expert_update_every: the mean over islands and steps
  const int update_every_, fold_every_, view_every_;
  const bool adapters_;
  const Tier view_tier_;
  int64_t next_update_, next_fold_, next_view_;
};

}  // namespace px
