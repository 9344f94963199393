#pragma once
// What experts.signal and experts.view mean together in mode parallax (docs/parallax.md), the
// one place the learners' tiers, the homes' cadence and the planner ask:
//   signal "sketches" | "adapters"   every island's tokens reach every home (sketches or adapter
//                                    deltas); views refreshed every view cadence; the home's
//                                    gradient sum is divided by islands x expert_update_every;
//   signal "none", view "full"       the SPES-style baseline: each home trains its experts from
//                                    its own island's tokens only (its exact local gradient;
//                                    divided by expert_update_every alone: the mean of its
//                                    island's loss); every other expert is a full-precision copy,
//                                    frozen between syncs, refreshed every snapshot_every steps;
//   signal "none", other views       the frozen-experts baseline: no expert trains, no view
//                                    message is sent (the initial views stay).
#include "config/config.hpp"  // defines: Config, ExpertsConfig

namespace px {

// The SPES-style baseline: signal "none" with view "full".
inline bool spes_baseline(const ExpertsConfig& x) {
  return x.signal == ExpertSignalKind::NONE && x.view == ViewKind::FULL;
}

// The frozen-experts baseline: no routed expert ever trains and no view message is sent.
inline bool experts_frozen(const ExpertsConfig& x) {
  return x.signal == ExpertSignalKind::NONE && x.view != ViewKind::FULL;
}

// How many islands' gradients a home's sum holds per step: every island's, or (SPES) its own.
inline int islands_per_home_grad(const Config& c) {
  return spes_baseline(c.experts) ? 1 : c.topology.islands;
}

}  // namespace px
