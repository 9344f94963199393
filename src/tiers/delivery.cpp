// defines: LockstepDelivery, AsyncDelivery, make_delivery
#include "tiers/delivery.hpp"

#include <algorithm>

namespace px {

namespace {

class LockstepDelivery final : public Delivery {
 public:
  using Delivery::Delivery;

  void take_bundles(int64_t step, ExpertHome& home) override {
    ExpertMessages::Taken t;
    for (int src = 0; src < topo().learners(); ++src)
      if (src != topo().world_rank) messages_.take_bundle(src, home, step, t, step);
  }
  void take_deltas(ExpertHome& home) override {
    for (int src = 0; src < topo().learners(); ++src)
      if (src != topo().world_rank) messages_.take_delta(src, home);
  }
  void take_views(bool due, ExpertViews& views) override {
    if (!due) return;
    for (int h : messages_.homes())
      if (h != topo().world_rank) messages_.take_view(h, views);
  }
  void end_of_step() override { messages_.wait_sends(); }
  int64_t next_clock(ExpertHome& home, int64_t clock) override {
    take_bundles(clock + 1, home);
    return clock + 1;
  }
  // nothing is in flight after a lockstep step
  void finish_home(ExpertHome&, int64_t, int64_t) override {}
  void finish_views(ExpertViews&, int64_t) override {}

 private:
  const Topology& topo() const { return messages_.topology(); }
};

class AsyncDelivery final : public Delivery {
 public:
  using Delivery::Delivery;

  void take_bundles(int64_t step, ExpertHome& home) override {
    ExpertMessages::Taken t;
    while (messages_.arrived(TAG_SKETCH)) messages_.take_bundle(MPI_ANY_SOURCE, home, step, t);
  }
  void take_deltas(ExpertHome& home) override {
    while (messages_.arrived(TAG_ADAPTER)) messages_.take_delta(MPI_ANY_SOURCE, home);
  }
  void take_views(bool, ExpertViews& views) override {
    while (messages_.arrived(TAG_SNAPSHOT)) messages_.take_view(MPI_ANY_SOURCE, views);
  }
  void end_of_step() override { messages_.progress(); }
  int64_t next_clock(ExpertHome& home, int64_t clock) override {
    ExpertMessages::Taken t;  // a bundle or a delta message
    messages_.take_next(home, clock, t);
    return std::max(clock, t.newest_step);
  }
  void finish_home(ExpertHome& home, int64_t steps, int64_t deltas) override {
    ExpertMessages::Taken t;
    const Topology& topo = messages_.topology();
    for (int src = 0; src < topo.learners(); ++src)
      while (src != topo.world_rank && messages_.bundles_from(src) < steps)
        messages_.take_bundle(src, home, home.step(), t);
    for (int src = 0; src < topo.learners(); ++src)
      while (src != topo.world_rank && messages_.deltas_from(src) < deltas)
        messages_.take_delta(src, home);
  }
  void finish_views(ExpertViews& views, int64_t views_expected) override {
    for (int h : messages_.homes())
      while (h != messages_.topology().world_rank && messages_.views_from(h) < views_expected)
        messages_.take_view(h, views);
  }
};

}  // namespace

std::unique_ptr<Delivery> make_delivery(const Config& cfg, ExpertMessages& messages) {
  if (cfg.train.deterministic) return std::make_unique<LockstepDelivery>(messages);
  return std::make_unique<AsyncDelivery>(messages);
}

}  // namespace px
