#pragma once
// When the expert tiers of mode "parallax" wait for what (train.deterministic): one policy
// object over ExpertMessages, used alike by learners (signal, home and view tiers) and by
// expert workers.
//   Lockstep (deterministic = true): every home takes exactly one bundle per learner and step
//     and, on fold steps, one delta message per learner; every learner takes one view message
//     per home and view step; sends complete before the next step. Bit-reproducible.
//   Async (deterministic = false): nobody waits; homes and learners take what has arrived, and
//     at the end of a run the rest, whose counts are known because every learner runs the
//     same steps. An expert worker's clock is the newest step any learner has reported.
#include <cstdint>
#include <memory>

#include "tiers/expert_messages.hpp"  // defines: ExpertMessages

namespace px {

class Delivery {
 public:
  explicit Delivery(ExpertMessages& messages) : messages_(messages) {}
  virtual ~Delivery() = default;

  // Home: the bundles of learner step `step` (their sketches checked against it).
  virtual void take_bundles(int64_t step, ExpertHome& home) = 0;
  // Home, on a fold step: the learners' delta messages.
  virtual void take_deltas(ExpertHome& home) = 0;
  // Learner: the homes' view messages (`due`: this is a view step).
  virtual void take_views(bool due, ExpertViews& views) = 0;
  // End of a step's exchange.
  virtual void end_of_step() = 0;
  // Expert worker: advances its clock from `clock`, taking the learners' messages; returns it.
  virtual int64_t next_clock(ExpertHome& home, int64_t clock) = 0;

  // End of a run: what is still in flight to a home (`steps` bundles and `deltas` delta
  // messages per learner in this process), to a learner's views (`views` messages per home),
  // then this rank's own sends.
  virtual void finish_home(ExpertHome& home, int64_t steps, int64_t deltas) = 0;
  virtual void finish_views(ExpertViews& views, int64_t views_expected) = 0;
  void finish_sends() { messages_.wait_sends(); }

 protected:
  ExpertMessages& messages_;
};

std::unique_ptr<Delivery> make_delivery(const Config& cfg, ExpertMessages& messages);

}  // namespace px
