// defines: make_learner_tiers
#include "roles/learner_tiers.hpp"

#include "experts/expert_signal.hpp"      // defines: experts_frozen
#include "model/expert_source.hpp"        // defines: ExpertSource
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "tiers/backbone_tier.hpp"        // defines: BackboneTier
#include "tiers/expert_tiers.hpp"         // defines: SketchSignal, AdapterSignal, HomeTier, ViewTier
#include "tiers/island_tier.hpp"          // defines: IslandTier

namespace px {

namespace {

// Mode parallax: the island runs my experts from the masters, the others from their views
// (+ adapters); my experts' gradients go to my home, the views' to the adapters.
void add_expert_tiers(const Config& cfg, const Topology& topo, LearnerModel& model, Comm& p2p,
                      LearnerTiers& out) {
  ParallaxExperts& experts = *model.parallax();
  MoeModel<float>& host = model.host();
  out.messages = std::make_unique<ExpertMessages>(cfg, topo, p2p);
  out.delivery = make_delivery(cfg, *out.messages);
  ExpertAdapters* adapters = nullptr;
  if (cfg.experts.signal == ExpertSignalKind::ADAPTERS) {
    auto signal = std::make_unique<AdapterSignal>(cfg, topo, experts, *out.messages);
    adapters = &signal->adapters();
    out.tiers.push_back(std::move(signal));
  } else if (cfg.experts.signal == ExpertSignalKind::NONE) {
    out.tiers.push_back(std::make_unique<NoSignal>(experts, *out.messages));
  } else {
    out.tiers.push_back(std::make_unique<SketchSignal>(experts, *out.messages, cfg.experts.sketch_every));
  }
  // the run's initial experts, one at a time (the model holds no routed experts: the homes and
  // views do; a resume overwrites them)
  const ExpertSource start = ExpertSource::initial(cfg.model, host.layout(), (uint64_t)cfg.train.seed);
  auto mine = experts_homed_at(topo, topo.world_rank, cfg.model.moe_layers(), cfg.model.n_experts);
  if (!mine.empty()) {
    auto home = std::make_unique<ExpertHome>(cfg, host.layout(), std::move(mine), start);
    out.home = home.get();
    out.tiers.push_back(std::make_unique<HomeTier>(cfg, topo, std::move(home), *out.messages, *out.delivery));
  }
  // every expert homed elsewhere becomes its compact view
  auto views = std::make_unique<ExpertViews>(cfg, topo, start);
  experts.set_sources(out.home, views.get(), adapters);
  ExpertHome* home = out.home;
  const bool frozen = experts_frozen(cfg.experts);  // (signal none with view full: SPES, homes train)
  experts.set_grad_sink([&experts, home, adapters, frozen](int m, int e, const float* g1,
                                                           const float* g3, const float* g2) {
    if (frozen) return;  // the frozen-experts baseline: no expert ever trains
    if (experts.homed_here(m, e)) home->add_expert_grad(m, e, g1, g3, g2);
    else if (adapters) adapters->add_weight_grad(m, e, g1, g3, g2);
  });
  out.tiers.push_back(std::make_unique<ViewTier>(std::move(views), *out.delivery, frozen));
}

}  // namespace

LearnerTiers make_learner_tiers(const Config& cfg, const Topology& topo, LearnerModel& model,
                                LearnerComms& comms, Comm& p2p) {
  LearnerTiers out;
  if (cfg.sync.island_every > 1 && topo.ranks_per_island > 1)
    out.tiers.push_back(std::make_unique<IslandTier>(model, comms.island, cfg.sync.island_every));
  if (cfg.train.mode != TrainMode::SYNC)
    out.tiers.push_back(std::make_unique<BackboneTier>(
        cfg, topo, model, comms.learners, comms.peers,
        topo.pipeline_stages > 1 ? comms.stage : comms.island, p2p));  // (a stage's ranks' island)
  if (cfg.train.mode == TrainMode::PARALLAX) add_expert_tiers(cfg, topo, model, p2p, out);
  return out;
}

}  // namespace px
