#pragma once
// A learner's own checkpoint state: its model's host copy (parameters, AdamW moments and step
// count, router bias; the expert range it holds in mode "sync"; brought to the host and back
// to the device through the model's sync points) and the run's progress.
#include <cstdint>

#include "backend/learner_model.hpp"  // defines: LearnerModel
#include "checkpoint/stateful.hpp"    // defines: Stateful

namespace px {

struct Progress {
  int64_t step = 0;           // steps completed
  int64_t data_cursor = 0;    // TokenLoader position
  int64_t tokens = 0;         // tokens trained on by all islands so far
  int64_t island_tokens = 0;  // tokens trained on by my island (outer-merge weights)
};

class LearnerState final : public Stateful {
 public:
  LearnerState(LearnerModel& model, Progress& progress) : model_(model), progress_(progress) {}
  void save(ParallelCheckpointWriter& w) override;
  void load(const StateReader& r) override;

 private:
  LearnerModel& model_;
  Progress& progress_;
};

}  // namespace px
