// defines: ExpertSignalTier, AdapterSignal, HomeTier, ViewTier
#include "tiers/expert_tiers.hpp"

namespace px {

namespace {
// Views (and adapter folds) due between two steps: multiples of `every` in (start, end].
int64_t multiples_between(int64_t start, int64_t end, int every) { return end / every - start / every; }
}  // namespace

void ExpertSignalTier::after_step(const StepEvent& e) {
  const uint32_t flags = (e.checkpoint_due ? EXPERT_FLAG_CHECKPOINT : 0u) |
                         (e.last ? EXPERT_FLAG_STOP : 0u);
  messages_.send_bundles(e.step, flags, experts_.take_outbox());
  after_bundles(e);
}

void AdapterSignal::after_bundles(const StepEvent& e) {
  if (e.stats->skipped) adapters_.drop_gradients();
  else adapters_.step(e.stats->counts, e.lr);
  if (e.step % every_ == 0) messages_.send_deltas(adapters_.take_deltas(e.step));
}

HomeTier::HomeTier(const Config& cfg, const Topology& topo, std::unique_ptr<ExpertHome> home,
                   ExpertMessages& messages, Delivery& delivery)
    : cfg_(cfg), topo_(topo), home_(std::move(home)), messages_(messages), delivery_(delivery),
      cadence_(std::make_unique<HomeCadence>(cfg, topo, *home_, messages, delivery, 0)) {}

void HomeTier::resumed(int64_t step, int64_t) {
  home_->set_step(step);
  cadence_ = std::make_unique<HomeCadence>(cfg_, topo_, *home_, messages_, delivery_, step);
}

void HomeTier::after_step(const StepEvent& e) {
  delivery_.take_bundles(e.step, *home_);
  cadence_->advance(e.step);
}

void HomeTier::finish(int64_t start_step, int64_t end_step) {
  const bool adapters = cfg_.experts.signal == ExpertSignalKind::ADAPTERS;
  delivery_.finish_home(*home_, end_step - start_step,
                        adapters ? multiples_between(start_step, end_step, cfg_.experts.adapter_every) : 0);
}

void ViewTier::after_step(const StepEvent& e) {
  delivery_.take_views(!frozen_ && e.step % views_->every() == 0, *views_);
  delivery_.end_of_step();
}

void ViewTier::finish(int64_t start_step, int64_t end_step) {
  delivery_.finish_views(*views_, frozen_ ? 0 : multiples_between(start_step, end_step, views_->every()));
  delivery_.finish_sends();
}

}  // namespace px
