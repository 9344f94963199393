// The syncer role: merges pushed outer gradients per (fragment, shard) unit and replies.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "sync/codec.hpp"         // defines: decode
#include "sync/outer_merge.hpp"   // defines: merge_outer, outer_nesterov
#include "sync/outer_sync.hpp"    // defines: Syncer, PushHeader, SyncTag
#include "sync/push_check.hpp"    // defines: push_problem, push_values_problem
#include "parallel/pipeline_split.hpp"  // defines: PipelineSplit

namespace px {

Syncer::Syncer(const Config& cfg, const Topology& topo, Comm& p2p)
    : cfg_(cfg), topo_(topo), p2p_(p2p), island_step_(topo.islands, 0) {
  const int ranks = topo.ranks_per_island, syncers = topo.syncers, fragments = cfg.sync.fragments;
  const int P = cfg.topology.pipeline_stages, D = ranks / P;
  const ParamLayout layout(cfg.model);
  const bool with_experts = cfg.train.mode != TrainMode::PARALLAX;
  for (int s = 0; s < P; ++s) {  // a pipeline stage's learners sync its layers' tensors alone
    const auto held = PipelineSplit(cfg).spans(layout, s, true);
    plans_.emplace_back(layout, fragments, with_experts, P > 1 ? held.data() : nullptr);
  }
  for (int f = 0; f < fragments; ++f)
    for (int r = 0; r < ranks; ++r) {
      const int u = f * ranks + r;
      if (u % syncers != topo.syncer_index) continue;
      Unit& un = units_[u];
      un.f = f;
      un.shard = r;
      un.stage = r / D;
      const size_t n = plans_[un.stage].size(f);
      un.lo = FragmentPlan::shard_begin(n, r % D, D);
      un.hi = FragmentPlan::shard_begin(n, r % D + 1, D);
      un.st.theta.resize(un.hi - un.lo);
      un.st.mom.assign(un.hi - un.lo, 0.f);
      // the islands' common starting point, for my shards only
      plans_[un.stage].initial(layout, (uint64_t)cfg.train.seed, f, un.lo, un.hi, un.st.theta.data());
    }
}

void Syncer::save(ParallelCheckpointWriter& w) {
  for (auto& [u, un] : units_) {
    w.add_borrowed(fmt::format("syncer/unit_{}/theta", u), as_span(un.st.theta));
    w.add_borrowed(fmt::format("syncer/unit_{}/momentum", u), as_span(un.st.mom));
  }
}

void Syncer::load(const StateReader& r) {
  for (auto& [u, un] : units_) {
    un.st.theta = r.read<float>(fmt::format("syncer/unit_{}/theta", u), un.st.theta.size());
    un.st.mom = r.read<float>(fmt::format("syncer/unit_{}/momentum", u), un.st.mom.size());
  }
}

void Syncer::on_push(std::vector<uint8_t>& msg, int source) {
  const auto refuse = [&](const std::string& problem) {
    if (!problem.empty())
      throw std::runtime_error(fmt::format("syncer {}: malformed push from rank {}: {}",
                                           topo_.syncer_index, source, problem));
  };
  refuse(push_problem(msg.data(), msg.size(), source, topo_, plans_, topo_.syncer_index));
  const int islands = topo_.islands, ranks = topo_.ranks_per_island;
  PushHeader h;
  std::memcpy(&h, msg.data(), sizeof(h));
  Unit& un = units_.at(h.fragment * ranks + h.shard);
  const size_t m = un.hi - un.lo;
  {  // its values are checked now, a chunk at a time (the merge decodes them again)
    const WireDtype dt = (WireDtype)h.dtype;
    std::vector<float> chunk(std::min(m, kMergeChunk));
    for (size_t a = 0; a < m; a += kMergeChunk) {
      const size_t n = std::min(kMergeChunk, m - a);
      decode(dt, msg.data() + sizeof(h) + encoded_bytes(dt, a), n, chunk.data());
      refuse(push_values_problem(chunk.data(), n, a));
    }
  }
  un.deltas[h.island].swap(msg);
  un.tokens[h.island] = h.tokens;
  un.steps[h.island] = h.step;
  if (h.step <= un.merged_step) ++late_pushes_;  // its round was merged without it
  island_step_[h.island] = std::max(island_step_[h.island], h.step);
  const int n = present(un);
  if (n < needed()) return;
  if (un.quorum_step < 0) un.quorum_step = h.step;
  if (n == islands || cfg_.sync.grace_steps == 0 || !waiting_.empty()) merge(un);
}

void Syncer::merge_due() {
  const int64_t newest = *std::max_element(island_step_.begin(), island_step_.end());
  for (auto& [u, un] : units_)
    if (un.quorum_step >= 0 && newest >= un.quorum_step + cfg_.sync.grace_steps) merge(un);
}

int Syncer::needed() const {
  return cfg_.train.deterministic || cfg_.sync.quorum == 0 ? topo_.islands : cfg_.sync.quorum;
}

int Syncer::present(const Unit& un) const {
  int n = (int)un.deltas.size();
  for (int i : waiting_) n += un.deltas.count(i) ? 0 : 1;
  return n;
}

void Syncer::merge_pending() {
  for (auto& [u, un] : units_)
    if (!un.deltas.empty()) merge(un);
}

void Syncer::merge_decoded(const Unit& un, const std::vector<double>& w, float* merged) const {
  const bool rda = cfg_.sync.merge == MergeKind::RDA;
  const size_t k = un.deltas.size();
  std::vector<std::vector<float>> dec(k);
  std::vector<const float*> ptrs(k);
  // [a, b): unit-relative; decoding starts at the block (kWireBlock values) that holds a
  auto merge_range = [&](size_t a, size_t b) {
    const size_t a0 = a / kWireBlock * kWireBlock, n0 = b - a0;
    size_t i = 0;
    for (const auto& [island, msg] : un.deltas) {
      PushHeader h;
      std::memcpy(&h, msg.data(), sizeof(h));
      const WireDtype dt = (WireDtype)h.dtype;
      dec[i].resize(n0);
      decode(dt, msg.data() + sizeof(h) + encoded_bytes(dt, a0), n0, dec[i].data());
      ptrs[i] = dec[i].data() + (a - a0);
      ++i;
    }
    merge_outer(plans_[un.stage], un.f, un.lo + a, un.lo + b, ptrs, w, rda, merged + a);
  };
  plans_[un.stage].for_each_tensor(un.f, un.lo, un.hi, [&](size_t a, size_t b, bool) {
    if (rda) return merge_range(a - un.lo, b - un.lo);  // the piece's norm spans it
    for (size_t c = a; c < b; c += kMergeChunk) merge_range(c - un.lo, std::min(b, c + kMergeChunk) - un.lo);
  });
}

void Syncer::merge(Unit& un) {
  const size_t m = un.hi - un.lo;
  // token-weighted over the islands that pushed
  double total = 0;
  for (auto& [i, t] : un.tokens) total += (double)t;
  std::vector<double> w;
  for (auto& [i, dv] : un.deltas) w.push_back(total > 0 ? un.tokens[i] / total : 1.0 / un.deltas.size());
  std::vector<float> merged(m);
  merge_decoded(un, w, merged.data());
  outer_nesterov(un.st.theta.data(), un.st.mom.data(), merged.data(), m, cfg_.sync.outer_lr,
                 cfg_.sync.outer_momentum);
  // one reply per push: to the islands merged now (a late island's push joins the next merge
  // and gets its reply then; every learner posts one receive per push)
  std::vector<int> merged_islands;
  for (auto& [i, dv] : un.deltas) merged_islands.push_back(i);
  for (auto& [i, st] : un.steps) un.merged_step = std::max(un.merged_step, st);
  un.deltas.clear();
  un.tokens.clear();
  un.steps.clear();
  un.quorum_step = -1;
  ++merges_;
  auto reply = std::make_shared<const std::vector<float>>(un.st.theta);
  for (int i : merged_islands) {
    auto o = std::make_unique<OutMsg>();
    o->data = reply;
    o->req = p2p_.isend(o->data->data(), (int)(m * sizeof(float)), topo_.learner_rank(i, un.shard),
                        reply_tag(un.f), Tier::BACKBONE);
    out_.push_back(std::move(o));
  }
  std::erase_if(out_, [](std::unique_ptr<OutMsg>& o) { return Comm::test(o->req); });
}

void Syncer::run(const std::function<void(int64_t)>& on_checkpoint) {
  const int learners = topo_.islands * topo_.ranks_per_island;
  std::vector<uint8_t> buf;
  int done = 0;
  while (done < learners) {
    const MPI_Status st = p2p_.probe(MPI_ANY_SOURCE, MPI_ANY_TAG);
    buf.resize(Comm::status_bytes(st));
    p2p_.recv(buf.data(), (int)buf.size(), st.MPI_SOURCE, st.MPI_TAG);
    if (st.MPI_TAG == TAG_DONE) {
      ++done;
      // a learner pushes nothing after DONE: once every learner is done, the pushes still
      // short of a quorum are merged (their learners wait for the replies)
      if (done == learners) merge_pending();
    } else if (st.MPI_TAG == TAG_STOP) {
      stopping_ = true;
      merge_pending();
    } else if (st.MPI_TAG == TAG_WAIT) {
      int64_t msg[2];
      std::memcpy(msg, buf.data(), sizeof(msg));
      if (msg[1]) waiting_.insert((int)msg[0]);
      else waiting_.erase((int)msg[0]);
      for (auto& [u, un] : units_)
        if (!un.deltas.empty() && present(un) >= needed()) merge(un);
    } else if (st.MPI_TAG == TAG_PUSH) {
      on_push(buf, st.MPI_SOURCE);
      if (stopping_) merge_pending();
      else if (cfg_.sync.grace_steps > 0) merge_due();
    } else if (st.MPI_TAG == TAG_TICK) {
      int64_t msg[2];
      std::memcpy(msg, buf.data(), sizeof(msg));
      island_step_[msg[1]] = std::max(island_step_[msg[1]], msg[0]);
      merge_due();
    } else if (st.MPI_TAG == TAG_CKPT) {
      int64_t step = 0;
      std::memcpy(&step, buf.data(), sizeof(step));
      for (auto& o : out_) Comm::wait(o->req);
      out_.clear();
      on_checkpoint(step);
    }
  }
  for (auto& o : out_) Comm::wait(o->req);
  out_.clear();
}

}  // namespace px
