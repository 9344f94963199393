#pragma once
// A tier (DESIGN §5): everything on a learner that syncs on a cadence. The learner loop calls
// every tier in order around each inner step; each tier owns its cadence, its messages and
// its checkpoint state (Stateful). The tiers of a run (make_tiers, in this order):
//   island       the hierarchical island tier (sync.island_every > 1): parameter averaging
//                inside the island (the per-step gradient all-reduce is part of the step);
//   backbone     DiLoCo outer syncs, by all-reduce over the peers or through the syncers;
//   signal       mode parallax, the expert signal towards the homes: sketches | adapters;
//   home         mode parallax, a learner that homes experts: takes the signal, updates,
//                folds deltas and sends view messages (HomeCadence, shared with workers);
//   views        mode parallax: the view messages (snapshots | surrogates) from the homes.
#include <cstdint>

#include "backend/learner_model.hpp"  // defines: StepStats
#include "checkpoint/stateful.hpp"    // defines: Stateful

namespace px {

// What the learner loop knows after inner step `step` (1-based: steps completed).
struct StepEvent {
  int64_t step = 0;
  double lr = 0;                 // the step's learning rate
  const StepStats* stats = nullptr;
  int64_t island_tokens = 0;     // tokens my island has trained on since the run's start
  bool checkpoint_due = false;   // a checkpoint follows this step (agreed by every learner)
  bool last = false;             // the run stops after this step (agreed by every learner)
};

class SyncTier : public Stateful {
 public:
  // Before the step that completes step `step` (1-based).
  virtual void before_step(int64_t step) { (void)step; }
  virtual void after_step(const StepEvent& e) = 0;
  // Before a checkpoint of `step` is written (collective over the learners).
  virtual void before_checkpoint(int64_t step) { (void)step; }
  // After every component loaded a checkpoint of progress step `step`.
  virtual void resumed(int64_t step, int64_t island_tokens) { (void)step, (void)island_tokens; }
  // At the end of the run (steps start_step+1 .. end_step ran in this process).
  virtual void finish(int64_t start_step, int64_t end_step) { (void)start_step, (void)end_step; }

  // Most tiers keep no state across steps.
  void save(ParallelCheckpointWriter&) override {}
  void load(const StateReader&) override {}
};

}  // namespace px
