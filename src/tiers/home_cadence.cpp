// defines: HomeCadence
#include "tiers/home_cadence.hpp"

#include <limits>

#include "experts/expert_signal.hpp"  // defines: experts_frozen, islands_per_home_grad
#include "optim/lr_schedule.hpp"  // defines: lr_at

namespace px {

namespace {
int64_t next_multiple(int64_t step, int every) { return (step / every + 1) * every; }
}  // namespace

HomeCadence::HomeCadence(const Config& cfg, const Topology& topo, ExpertHome& home,
                         ExpertMessages& messages, Delivery& delivery, int64_t start_step)
    : cfg_(cfg), home_(home), messages_(messages), delivery_(delivery),
      divisor_((double)islands_per_home_grad(cfg) * cfg.experts.expert_update_every),
      update_every_(cfg.experts.expert_update_every), fold_every_(cfg.experts.adapter_every),
      view_every_(cfg.experts.view == ViewKind::LOWRANK ? cfg.experts.surrogate_every
                                                        : cfg.experts.snapshot_every),
      adapters_(cfg.experts.signal == ExpertSignalKind::ADAPTERS),
      view_tier_(cfg.experts.view == ViewKind::LOWRANK ? Tier::SURROGATE : Tier::SNAPSHOT),
      next_update_(next_multiple(start_step, update_every_)),
      next_fold_(next_multiple(start_step, fold_every_)),
      next_view_(experts_frozen(cfg.experts)
                     ? std::numeric_limits<int64_t>::max()  // frozen experts: the first views stay
                     : next_multiple(start_step, view_every_)) {}

double HomeCadence::lr_of(int64_t step) const {
  const auto& t = cfg_.train;
  return lr_of_step(step, t.steps, t.warmup_steps, t.lr, t.min_lr);
}

void HomeCadence::advance(int64_t step) {
  home_.set_step(step);
  for (; next_update_ <= step; next_update_ += update_every_) home_.update(lr_of(next_update_), divisor_);
  if (adapters_)
    for (; next_fold_ <= step; next_fold_ += fold_every_) {
      delivery_.take_deltas(home_);
      home_.apply_deltas();
    }
  for (; next_view_ <= step; next_view_ += view_every_)
    messages_.send_view(home_.view_message(next_view_), view_tier_);
}

}  // namespace px
