// DiLoCo outer syncs on a learner (all-reduce and syncer variants).
#include "sync/outer_sync.hpp"

#include <cstring>

#include "sync/codec.hpp"         // defines: encoded_bytes, decode
#include "sync/outer_merge.hpp"   // defines: merge_outer, outer_nesterov

namespace px {

OuterSync::OuterSync(const Config& cfg, const Topology& topo, MoeModel<float>& model, Comm& peers,
                     Comm& island, Comm& p2p)
    : cfg_(cfg), topo_(topo), model_(model), peers_(peers), island_(island), p2p_(p2p),
      plan_(model.layout(), cfg.sync.fragments, cfg.train.mode != TrainMode::PARALLAX), F_(cfg.sync.fragments),
      H_(cfg.sync.backbone_every), R_(topo.ranks_per_island), r_(topo.local_rank) {
  for (int a = 0; a < 2; ++a) {
    arenas_[a] = model.params((Arena)a);
    // mode parallax syncs the backbone only: no outer state for the experts arena
    const size_t n = (a == 1 && cfg.train.mode == TrainMode::PARALLAX) ? 0 : model.layout().size((Arena)a);
    theta_g_[a].assign(arenas_[a], arenas_[a] + n);
    mom_[a].assign(n, 0.f);
  }
  for (int f = 0; f < F_; ++f) {
    const size_t n = plan_.size(f);
    ef_.emplace_back(FragmentPlan::shard_begin(n, r_ + 1, R_) - FragmentPlan::shard_begin(n, r_, R_));
  }
  pending_.resize(F_);
  last_tokens_.assign(F_, 0);
}

namespace {
struct Shard {
  size_t lo, hi;
  size_t m() const { return hi - lo; }
};
Shard shard_of(const FragmentPlan& p, int f, int r, int R) {
  const size_t n = p.size(f);
  return {FragmentPlan::shard_begin(n, r, R), FragmentPlan::shard_begin(n, r + 1, R)};
}
}  // namespace

void OuterSync::after_step(int64_t step, int64_t tokens) {
  const bool syncer = cfg_.sync.backbone_sync == BackboneSyncKind::SYNCER;
  if (syncer && !cfg_.train.deterministic) poll_replies(false);
  tick(step);
  for (int f = 0; f < F_; ++f) {
    if (!FragmentPlan::due(f, step, H_, F_)) continue;
    ++syncs_;
    if (!syncer) {
      sync_allreduce(f);
    } else {
      push(f, step, tokens);
      if (cfg_.train.deterministic) poll_replies(true);
    }
  }
}

void OuterSync::sync_allreduce(int f) {
  const Shard s = shard_of(plan_, f, r_, R_);
  const size_t m = s.m();
  float* const tg[2] = {theta_g_[0].data(), theta_g_[1].data()};
  float* const mo[2] = {mom_[0].data(), mom_[1].data()};
  std::vector<float> x(m), g(m), mom(m), merged(m);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  plan_.gather(f, s.lo, s.hi, tg, g.data());
  plan_.gather(f, s.lo, s.hi, mo, mom.data());
  std::vector<float> delta(m);
  for (size_t i = 0; i < m; ++i) delta[i] = g[i] - x[i];
  const int I = peers_.size();
  const WireDtype dt = cfg_.sync.outer_dtype;
  const bool rda = cfg_.sync.merge == MergeKind::RDA;
  if (dt == WireDtype::FP32 && !rda) {
    peers_.allreduce_sum(delta.data(), (int64_t)m, Tier::BACKBONE);
    for (size_t i = 0; i < m; ++i) merged[i] = delta[i] / (float)I;
  } else {
    const size_t nb = encoded_bytes(dt, m);
    std::vector<uint8_t> mine(nb), all(nb * I);
    ef_[f].encode(dt, delta.data(), mine.data());
    peers_.allgatherv(mine.data(), (int)nb, all.data(), std::vector<int>(I, (int)nb),
                      Tier::BACKBONE);
    std::vector<std::vector<float>> dec(I, std::vector<float>(m));
    std::vector<const float*> ptrs(I);
    for (int i = 0; i < I; ++i) {
      decode(dt, all.data() + nb * i, m, dec[i].data());
      ptrs[i] = dec[i].data();
    }
    merge_outer(plan_, f, s.lo, s.hi, ptrs, std::vector<double>(I, 1.0 / I), rda, merged.data());
  }
  outer_nesterov(g.data(), mom.data(), merged.data(), m, cfg_.sync.outer_lr,
                 cfg_.sync.outer_momentum);
  plan_.scatter(f, s.lo, s.hi, mom.data(), mo);
  apply_reply(f, g.data());
}

void OuterSync::apply_reply(int f, const float* global) {
  const Shard s = shard_of(plan_, f, r_, R_);
  const size_t m = s.m();
  const double alpha = cfg_.sync.backbone_sync == BackboneSyncKind::SYNCER ? cfg_.sync.mix_alpha : 1.0;
  float* const tg[2] = {theta_g_[0].data(), theta_g_[1].data()};
  std::vector<float> x(m);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  for (size_t i = 0; i < m; ++i) x[i] = (float)(alpha * global[i] + (1.0 - alpha) * x[i]);
  plan_.scatter(f, s.lo, s.hi, x.data(), arenas_);
  plan_.scatter(f, s.lo, s.hi, global, tg);
  if (R_ == 1) return;
  // every island rank gets the whole fragment (the shards of the other local ranks)
  const size_t n = plan_.size(f);
  std::vector<int> bytes(R_);
  for (int r = 0; r < R_; ++r) bytes[r] = (int)(shard_of(plan_, f, r, R_).m() * sizeof(float));
  std::vector<float> full(n);
  island_.allgatherv(x.data(), (int)(m * sizeof(float)), full.data(), bytes, Tier::ISLAND);
  plan_.scatter(f, 0, n, full.data(), arenas_);
  if (alpha != 1.0)
    island_.allgatherv(global, (int)(m * sizeof(float)), full.data(), bytes, Tier::ISLAND);
  plan_.scatter(f, 0, n, full.data(), tg);
}

void OuterSync::push(int f, int64_t step, int64_t tokens) {
  Pending& p = pending_[f];
  if (p.active) poll_replies(true);  // at most one outstanding push per fragment
  const Shard s = shard_of(plan_, f, r_, R_);
  const size_t m = s.m();
  float* const tg[2] = {theta_g_[0].data(), theta_g_[1].data()};
  std::vector<float> x(m), delta(m);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  plan_.gather(f, s.lo, s.hi, tg, delta.data());
  for (size_t i = 0; i < m; ++i) delta[i] -= x[i];
  const WireDtype dt = cfg_.sync.outer_dtype;
  const size_t nb = encoded_bytes(dt, m);
  PushHeader h{step, tokens - last_tokens_[f], (int64_t)m, topo_.island, f, r_, (int32_t)dt};
  last_tokens_[f] = tokens;
  p.send.resize(sizeof(h) + nb);
  std::memcpy(p.send.data(), &h, sizeof(h));
  ef_[f].encode(dt, delta.data(), p.send.data() + sizeof(h));
  const int unit = f * R_ + r_;
  const int dest = topo_.syncer_rank(unit % topo_.syncers);
  p.sreq = p2p_.isend(p.send.data(), (int)p.send.size(), dest, TAG_PUSH, Tier::BACKBONE);
  p.reply.resize(m);
  p.rreq = p2p_.irecv(p.reply.data(), (int)(m * sizeof(float)), dest, TAG_REPLY + f);
  p.active = true;
}

void OuterSync::poll_replies(bool wait) {
  // the island applies a fragment's reply together (its all-gather is collective)
  std::vector<int64_t> arrived(F_, 0);
  for (int f = 0; f < F_; ++f) {
    Pending& p = pending_[f];
    if (!p.active) continue;
    if (wait) {
      Comm::wait(p.rreq);
      arrived[f] = 1;
    } else {
      arrived[f] = Comm::test(p.rreq) ? 1 : 0;
      if (arrived[f]) p.rreq = MPI_REQUEST_NULL;
    }
  }
  if (R_ > 1 && !wait) island_.allreduce_sum(arrived.data(), F_, Tier::CONTROL);
  for (int f = 0; f < F_; ++f) {
    Pending& p = pending_[f];
    if (!p.active || arrived[f] < (wait ? 1 : R_)) continue;
    if (p.rreq != MPI_REQUEST_NULL) Comm::wait(p.rreq);
    Comm::wait(p.sreq);
    apply_reply(f, p.reply.data());
    p.active = false;
  }
}

void OuterSync::restore(int64_t step, int64_t tokens) {
  if (step <= 0) return;
  for (int f = 0; f < F_; ++f) {
    int64_t last = step;
    while (last > 0 && !FragmentPlan::due(f, last, H_, F_)) --last;
    last_tokens_[f] = tokens / step * last;
  }
}

void OuterSync::tick(int64_t step) {
  if (cfg_.sync.backbone_sync != BackboneSyncKind::SYNCER || cfg_.sync.grace_steps == 0 ||
      r_ != 0)
    return;
  const int64_t msg[2] = {step, topo_.island};
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = p2p_.isend(msg, sizeof(msg), topo_.syncer_rank(s), TAG_TICK, Tier::CONTROL);
    Comm::wait(rq);
  }
}

void OuterSync::finish() {
  if (cfg_.sync.backbone_sync != BackboneSyncKind::SYNCER) return;
  poll_replies(true);
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = p2p_.isend(nullptr, 0, topo_.syncer_rank(s), TAG_DONE, Tier::CONTROL);
    Comm::wait(rq);
  }
}

}  // namespace px
