#pragma once
// The expert tiers of a learner in mode "parallax" (DESIGN §5 items 3-4), over one
// ExpertMessages and one Delivery policy:
//   signal  after every step, ONE bundle to every home (the sketches of its experts, if any;
//           the learners' checkpoint / stop decision for expert workers). Two kinds:
//             SketchSignal   sketches packed by the backward every sketch_every steps;
//             AdapterSignal  rank-r adapters on the views, stepped after every step; every
//                            adapter_every steps their deltas go home and they reset.
//   home    a learner that homes experts: the learners' bundles of this step, then its
//           HomeCadence (updates, delta folds, view messages out).
//   views   the homes' view messages (snapshots | surrogates) into this rank's ExpertViews;
//           the last expert tier: it ends the step's exchange (Delivery::end_of_step).
#include <cstdint>
#include <memory>

#include "tiers/delivery.hpp"         // defines: Delivery
#include "tiers/expert_messages.hpp"  // defines: ExpertMessages
#include "tiers/home_cadence.hpp"     // defines: HomeCadence
#include "tiers/sync_tier.hpp"        // defines: SyncTier
#include "experts/expert_adapters.hpp"  // defines: ExpertAdapters
#include "experts/parallax_experts.hpp" // defines: ParallaxExperts

namespace px {

class ExpertSignalTier : public SyncTier {
 public:
  ExpertSignalTier(ParallaxExperts& experts, ExpertMessages& messages)
      : experts_(experts), messages_(messages) {}
  void before_step(int64_t step) override { experts_.begin_step(step, sketches_due(step)); }
  void after_step(const StepEvent& e) override;

 protected:
  virtual bool sketches_due(int64_t step) const = 0;
  virtual void after_bundles(const StepEvent& e) { (void)e; }

  ParallaxExperts& experts_;
  ExpertMessages& messages_;
};

class SketchSignal final : public ExpertSignalTier {
 public:
  SketchSignal(ParallaxExperts& experts, ExpertMessages& messages, int every)
      : ExpertSignalTier(experts, messages), every_(every) {}

 private:
  bool sketches_due(int64_t step) const override { return step % every_ == 0; }
  int every_;
};

// signal "none" (the frozen-experts baseline, or with view "full" the SPES-style baseline,
// experts/expert_signal.hpp): bundles carry the learners' decisions only.
class NoSignal final : public ExpertSignalTier {
 public:
  using ExpertSignalTier::ExpertSignalTier;

 private:
  bool sketches_due(int64_t) const override { return false; }
};

class AdapterSignal final : public ExpertSignalTier {
 public:
  AdapterSignal(const Config& cfg, const Topology& topo, ParallaxExperts& experts,
                ExpertMessages& messages)
      : ExpertSignalTier(experts, messages), adapters_(cfg, topo), every_(cfg.experts.adapter_every) {}
  ExpertAdapters& adapters() { return adapters_; }
  void save(ParallelCheckpointWriter& w) override { adapters_.save(w); }
  void load(const StateReader& r) override { adapters_.load(r); }

 private:
  bool sketches_due(int64_t) const override { return false; }
  void after_bundles(const StepEvent& e) override;
  ExpertAdapters adapters_;
  int every_;
};

class HomeTier final : public SyncTier {
 public:
  HomeTier(const Config& cfg, const Topology& topo, std::unique_ptr<ExpertHome> home,
           ExpertMessages& messages, Delivery& delivery);
  ExpertHome& home() { return *home_; }
  void after_step(const StepEvent& e) override;
  void resumed(int64_t step, int64_t island_tokens) override;
  void finish(int64_t start_step, int64_t end_step) override;
  void save(ParallelCheckpointWriter& w) override { home_->save(w); }
  void load(const StateReader& r) override { home_->load(r); }

 private:
  const Config& cfg_;
  const Topology& topo_;
  std::unique_ptr<ExpertHome> home_;
  ExpertMessages& messages_;
  Delivery& delivery_;
  std::unique_ptr<HomeCadence> cadence_;
};

class ViewTier final : public SyncTier {
 public:
  // frozen: the frozen-experts baseline, no view message ever comes (the initial views stay)
  ViewTier(std::unique_ptr<ExpertViews> views, Delivery& delivery, bool frozen)
      : views_(std::move(views)), delivery_(delivery), frozen_(frozen) {}
  ExpertViews& views() { return *views_; }
  void after_step(const StepEvent& e) override;
  void finish(int64_t start_step, int64_t end_step) override;
  void save(ParallelCheckpointWriter& w) override { views_->save(w); }
  void load(const StateReader& r) override { views_->load(r); }

 private:
  std::unique_ptr<ExpertViews> views_;
  Delivery& delivery_;
  bool frozen_;
};

}  // namespace px
