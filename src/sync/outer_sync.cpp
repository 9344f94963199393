// DiLoCo outer syncs on a learner (all-reduce and syncer variants).
#include "sync/outer_sync.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "sync/codec.hpp"         // defines: encoded_bytes, decode
#include "sync/outer_merge.hpp"   // defines: merge_outer, outer_nesterov

namespace px {

namespace {
// The arena elements the model holds (a pipeline stage: its layers' alone).
std::array<ArenaSpan, 2> held_spans(const MoeModel<float>& m) {
  return {m.span(Arena::BACKBONE), m.span(Arena::EXPERTS)};
}
}  // namespace

OuterSync::OuterSync(const Config& cfg, const Topology& topo, LearnerModel& model, Comm& peers,
                     Comm& island, Comm& p2p)
    : cfg_(cfg), topo_(topo), model_(model), peers_(peers), island_(island), p2p_(p2p),
      plan_(model.host().layout(), cfg.sync.fragments, cfg.train.mode != TrainMode::PARALLAX,
            held_spans(model.host()).data()),
      fragments_(cfg.sync.fragments), every_(cfg.sync.backbone_every),
      island_ranks_(topo.stage_ranks()), local_rank_(topo.local_rank % topo.stage_ranks()) {
  for (int a = 0; a < 2; ++a) {
    // mode parallax syncs the backbone only: no routed-expert arena, no outer state for it
    const bool skip = a == 1 && cfg.train.mode == TrainMode::PARALLAX;
    arenas_[a] = skip ? nullptr : model.host().params((Arena)a);
  }
  for (int f = 0; f < fragments_; ++f) {
    const size_t n = plan_.size(f);
    const size_t lo = FragmentPlan::shard_begin(n, local_rank_, island_ranks_),
                 hi = FragmentPlan::shard_begin(n, local_rank_ + 1, island_ranks_);
    global_.emplace_back(hi - lo);
    plan_.gather(f, lo, hi, arenas_, global_.back().data());  // the islands' common start
    momentum_.emplace_back(hi - lo, 0.f);
    ef_.emplace_back(hi - lo);
  }
  pending_.resize(fragments_);
  last_tokens_.assign(fragments_, 0);
}

namespace {
struct Shard {
  size_t lo, hi;
  size_t m() const { return hi - lo; }
};
Shard shard_of(const FragmentPlan& p, int f, int r, int ranks) {
  const size_t n = p.size(f);
  return {FragmentPlan::shard_begin(n, r, ranks), FragmentPlan::shard_begin(n, r + 1, ranks)};
}
}  // namespace

void OuterSync::after_step(int64_t step, int64_t tokens) {
  const bool syncer = cfg_.sync.backbone_sync == BackboneSyncKind::SYNCER;
  if (syncer && !cfg_.train.deterministic) poll_replies(false);
  tick(step);
  for (int f = 0; f < fragments_; ++f) {
    if (!FragmentPlan::due(f, step, every_, fragments_)) continue;
    if (plan_.size(f) == 0) continue;  // (a pipeline stage may hold none of a fragment's layers)
    if (!syncer) {
      sync_allreduce(f);
    } else {
      push(f, step, tokens);
      if (cfg_.train.deterministic) poll_replies(true);
    }
  }
}

void OuterSync::params_to_host() {
  model_.to_host(Arena::BACKBONE);
  if (arenas_[1]) model_.to_host(Arena::EXPERTS);
}

void OuterSync::params_to_device() {
  model_.to_device(Arena::BACKBONE);
  if (arenas_[1]) model_.to_device(Arena::EXPERTS);
}

double OuterSync::scratch_bytes(const Config& cfg, double n, int island_ranks, int islands) {
  const double m = std::ceil(n / island_ranks), nb = (double)encoded_bytes(cfg.sync.outer_dtype, (size_t)m);
  // apply_reply: x, and when the island has several ranks one round of the fragment's all-gather
  // (a 1/D of every rank's shard)
  const double apply = 4 * m + (island_ranks > 1 ? 4.0 * island_ranks * std::ceil(m / island_ranks) : 0);
  if (cfg.sync.backbone_sync == BackboneSyncKind::SYNCER)  // push: x, delta; send + reply stay
    return std::max(8 * m, apply) + sizeof(PushHeader) + nb + 4 * m;
  // sync_allreduce: x, merged, delta; then the codec's buffers and decoded shards
  const bool coded = cfg.sync.outer_dtype != WireDtype::FP32 || cfg.sync.merge == MergeKind::RDA;
  const double codec = coded ? nb * (1 + islands) + 4 * m * islands : 0;
  return 12 * m + std::max(codec, apply);
}

void OuterSync::sync_allreduce(int f) {
  params_to_host();
  const Shard s = shard_of(plan_, f, local_rank_, island_ranks_);
  const size_t m = s.m();
  std::vector<float>& g = global_[f];
  std::vector<float> x(m), merged(m);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  std::vector<float> delta(m);
  for (size_t i = 0; i < m; ++i) delta[i] = g[i] - x[i];
  const int islands = peers_.size();
  const WireDtype dt = cfg_.sync.outer_dtype;
  const bool rda = cfg_.sync.merge == MergeKind::RDA;
  if (dt == WireDtype::FP32 && !rda) {
    peers_.allreduce_sum(delta.data(), (int64_t)m, Tier::BACKBONE);
    for (size_t i = 0; i < m; ++i) merged[i] = delta[i] / (float)islands;
  } else {
    const size_t nb = encoded_bytes(dt, m);
    std::vector<uint8_t> mine(nb), all(nb * islands);
    ef_[f].encode(dt, delta.data(), mine.data());
    peers_.allgatherv(mine.data(), (int)nb, all.data(), std::vector<int>(islands, (int)nb),
                      Tier::BACKBONE);
    std::vector<std::vector<float>> dec(islands, std::vector<float>(m));
    std::vector<const float*> ptrs(islands);
    for (int i = 0; i < islands; ++i) {
      decode(dt, all.data() + nb * i, m, dec[i].data());
      ptrs[i] = dec[i].data();
    }
    merge_outer(plan_, f, s.lo, s.hi, ptrs, std::vector<double>(islands, 1.0 / islands), rda, merged.data());
  }
  outer_nesterov(g.data(), momentum_[f].data(), merged.data(), m, cfg_.sync.outer_lr,
                 cfg_.sync.outer_momentum);
  apply_reply(f, g.data(), true);
}

void OuterSync::apply_reply(int f, const float* global, bool host_current) {
  if (!host_current) params_to_host();
  const Shard s = shard_of(plan_, f, local_rank_, island_ranks_);
  const size_t m = s.m();
  const double alpha = cfg_.sync.backbone_sync == BackboneSyncKind::SYNCER ? cfg_.sync.mix_alpha : 1.0;
  std::vector<float> x(m);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  for (size_t i = 0; i < m; ++i) x[i] = (float)(alpha * global[i] + (1.0 - alpha) * x[i]);
  plan_.scatter(f, s.lo, s.hi, x.data(), arenas_);
  if (global != global_[f].data()) std::copy(global, global + m, global_[f].begin());
  if (island_ranks_ == 1) return params_to_device();
  gather_fragment(f, x);
  params_to_device();
}

void OuterSync::gather_fragment(int f, const std::vector<float>& mine) {
  // every island rank gets the whole fragment (the shards of the other local ranks), in D
  // rounds: in round k each rank sends the k-th 1/D of its shard, so that no rank holds more
  // than about a shard of the others' values at a time (the same bytes as one all-gather)
  const int D = island_ranks_;
  std::vector<Shard> shards;
  size_t largest = 0;
  for (int r = 0; r < D; ++r) {
    shards.push_back(shard_of(plan_, f, r, D));
    largest = std::max(largest, shards.back().m());
  }
  const size_t c = (largest + D - 1) / D;  // elements per rank and round
  std::vector<float> round(c * D);
  std::vector<int> bytes(D);
  for (int k = 0; k < D; ++k) {
    auto piece = [&](int r) {  // rank r's elements [k c, k c + n) of its shard
      const size_t lo = std::min(shards[r].m(), k * c);
      return std::pair<size_t, size_t>{lo, std::min(shards[r].m(), lo + c) - lo};
    };
    for (int r = 0; r < D; ++r) bytes[r] = (int)(piece(r).second * sizeof(float));
    const auto [my_lo, my_n] = piece(local_rank_);
    island_.allgatherv(mine.data() + my_lo, (int)(my_n * sizeof(float)), round.data(), bytes, Tier::ISLAND);
    size_t at = 0;  // (the received pieces, packed in rank order)
    for (int r = 0; r < D; ++r) {
      const auto [lo, n] = piece(r);
      if (n > 0) plan_.scatter(f, shards[r].lo + lo, shards[r].lo + lo + n, round.data() + at, arenas_);
      at += n;
    }
  }
}

void OuterSync::push(int f, int64_t step, int64_t tokens) {
  Pending& p = pending_[f];
  if (p.active) poll_replies(true);  // at most one outstanding push per fragment
  params_to_host();
  const Shard s = shard_of(plan_, f, local_rank_, island_ranks_);
  const size_t m = s.m();
  std::vector<float> x(m), delta(global_[f]);
  plan_.gather(f, s.lo, s.hi, arenas_, x.data());
  for (size_t i = 0; i < m; ++i) delta[i] -= x[i];
  const WireDtype dt = cfg_.sync.outer_dtype;
  const size_t nb = encoded_bytes(dt, m);
  // (shard: my local rank, which names my pipeline stage too; its values: my shard of the stage's)
  PushHeader h{step, tokens - last_tokens_[f], (int64_t)m, topo_.island, f, topo_.local_rank, (int32_t)dt};
  last_tokens_[f] = tokens;
  p.send.resize(sizeof(h) + nb);
  std::memcpy(p.send.data(), &h, sizeof(h));
  ef_[f].encode(dt, delta.data(), p.send.data() + sizeof(h));
  const int unit = f * topo_.ranks_per_island + topo_.local_rank;
  const int dest = topo_.syncer_rank(unit % topo_.syncers);
  p.sreq = p2p_.isend(p.send.data(), (int)p.send.size(), dest, TAG_PUSH, Tier::BACKBONE);
  p.reply.resize(m);
  p.rreq = p2p_.irecv(p.reply.data(), (int)(m * sizeof(float)), dest, reply_tag(f));
  p.syncer = dest;
  p.active = true;
}

void OuterSync::poll_replies(bool wait) {
  // the island applies a fragment's reply together (its all-gather is collective)
  std::vector<int64_t> arrived(fragments_, 0);
  for (int f = 0; f < fragments_; ++f) {
    Pending& p = pending_[f];
    if (!p.active) continue;
    if (wait) {
      Comm::wait(p.rreq, "MPI_Wait for a backbone reply", p.syncer);
      arrived[f] = 1;
    } else {
      arrived[f] = Comm::test(p.rreq) ? 1 : 0;
      if (arrived[f]) p.rreq = MPI_REQUEST_NULL;
    }
  }
  if (island_ranks_ > 1 && !wait) island_.allreduce_sum(arrived.data(), fragments_, Tier::CONTROL);
  for (int f = 0; f < fragments_; ++f) {
    Pending& p = pending_[f];
    if (!p.active || arrived[f] < (wait ? 1 : island_ranks_)) continue;
    if (p.rreq != MPI_REQUEST_NULL) Comm::wait(p.rreq, "MPI_Wait for a backbone reply", p.syncer);
    Comm::wait(p.sreq, "MPI_Wait for a backbone push to be received", p.syncer);
    apply_reply(f, p.reply.data(), false);
    p.active = false;
  }
}

void OuterSync::restore(int64_t step, int64_t tokens) {
  if (step <= 0) return;
  for (int f = 0; f < fragments_; ++f) {
    int64_t last = step;
    while (last > 0 && !FragmentPlan::due(f, last, every_, fragments_)) --last;
    last_tokens_[f] = tokens / step * last;
  }
}

void OuterSync::tick(int64_t step) {
  if (cfg_.sync.backbone_sync != BackboneSyncKind::SYNCER || cfg_.sync.grace_steps == 0 ||
      topo_.local_rank != 0)
    return;
  const int64_t msg[2] = {step, topo_.island};
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = p2p_.isend(msg, sizeof(msg), topo_.syncer_rank(s), TAG_TICK, Tier::CONTROL);
    Comm::wait(rq);
  }
}

void OuterSync::finish() {
  if (cfg_.sync.backbone_sync != BackboneSyncKind::SYNCER) return;
  // DONE first (no more pushes from this rank): a syncer merges the last pushes that are short
  // of a quorum once every learner is done; then the replies to this rank's pushes
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = p2p_.isend(nullptr, 0, topo_.syncer_rank(s), TAG_DONE, Tier::CONTROL);
    Comm::wait(rq);
  }
  poll_replies(true);
}

void OuterSync::save(ParallelCheckpointWriter& w) {
  for (int f = 0; f < fragments_; ++f) {
    w.add_borrowed(fmt::format("outer/global/{}", f), as_span(global_[f]));
    w.add_borrowed(fmt::format("outer/momentum/{}", f), as_span(momentum_[f]));
    w.add_borrowed(fmt::format("outer/ef/{}", f), as_span(ef_[f].residual()));
  }
}

void OuterSync::load(const StateReader& r) {
  for (int f = 0; f < fragments_; ++f) {
    r.read_into<float>(fmt::format("outer/global/{}", f), std::span<float>(global_[f]));
    r.read_into<float>(fmt::format("outer/momentum/{}", f), std::span<float>(momentum_[f]));
    r.read_into<float>(fmt::format("outer/ef/{}", f), std::span<float>(ef_[f].residual()));
  }
}

}  // namespace px
