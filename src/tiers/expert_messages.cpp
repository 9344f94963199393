// defines: ExpertMessages
#include "tiers/expert_messages.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "parallel/pipeline_split.hpp"    // defines: PipelineSplit

namespace px {

ExpertMessages::ExpertMessages(const Config& cfg, const Topology& topo, Comm& p2p)
    : cfg_(cfg), topo_(topo), p2p_(p2p), bundles_from_(topo.world_size, 0), views_from_(topo.world_size, 0),
      deltas_from_(topo.world_size, 0) {
  for (int r = 0; r < topo.world_size; ++r)
    if (!experts_homed_at(topo, r, cfg.model.moe_layers(), cfg.model.n_experts).empty())
      homes_.push_back(r);
}

void ExpertMessages::send(const std::shared_ptr<std::vector<uint8_t>>& buf, int dest, int tag, Tier t) {
  sends_.push_back({p2p_.isend(buf->data(), (int)buf->size(), dest, tag, t), buf});
}

// Receives the next message of `tag` from `src` (or any source) into buf; returns its source.
int ExpertMessages::recv_into(std::vector<uint8_t>& buf, int src, int tag) {
  MPI_Status st = p2p_.probe(src, tag);
  buf.resize(Comm::status_bytes(st));
  p2p_.recv(buf.data(), (int)buf.size(), st.MPI_SOURCE, tag);
  return st.MPI_SOURCE;
}

void ExpertMessages::send_bundles(int64_t step, uint32_t flags,
                                  std::map<int, std::vector<std::vector<uint8_t>>> outbox) {
  for (int h : homes_) {
    if (h == topo_.world_rank) continue;
    const auto& sketches = outbox[h];
    SketchBundleHeader hd;
    hd.count = (uint32_t)sketches.size();
    hd.step = step;
    hd.flags = flags;
    size_t bytes = sizeof hd;
    for (const auto& s : sketches) bytes += 4 + s.size();
    auto buf = std::make_shared<std::vector<uint8_t>>(bytes);
    std::memcpy(buf->data(), &hd, sizeof hd);
    size_t o = sizeof hd;
    for (const auto& s : sketches) {
      const uint32_t n = (uint32_t)s.size();
      std::memcpy(buf->data() + o, &n, 4);
      std::memcpy(buf->data() + o + 4, s.data(), n);
      o += 4 + n;
    }
    send(buf, h, TAG_SKETCH, sketches.empty() ? Tier::CONTROL : Tier::SKETCH);
  }
}

void ExpertMessages::send_deltas(std::map<int, std::vector<uint8_t>> by_home) {
  for (int h : homes_) {
    if (h == topo_.world_rank) continue;
    auto buf = std::make_shared<std::vector<uint8_t>>(std::move(by_home[h]));
    if (buf->empty()) buf->assign(4, 0);  // no expert of that home: an empty message
    send(buf, h, TAG_ADAPTER, Tier::ADAPTER);
  }
}

void ExpertMessages::send_view(std::vector<uint8_t> msg, Tier t) {
  // pipelined islands: each stage's ranks get the views of the stage's MoE layers alone
  const int P = topo_.pipeline_stages;
  const PipelineSplit split(cfg_);
  std::vector<std::shared_ptr<std::vector<uint8_t>>> part(P);
  for (int s = P - 1; s >= 0; --s)  // (stage 0 last: unpipelined, the message itself)
    part[s] = std::make_shared<std::vector<uint8_t>>(
        P == 1 ? std::move(msg) : view_message_part(msg, split.moe_layers(s)));
  const int D = topo_.stage_ranks();
  for (int r = 0; r < topo_.learners(); ++r)
    if (r != topo_.world_rank) send(part[(r % topo_.ranks_per_island) / D], r, TAG_SNAPSHOT, t);
}

void ExpertMessages::parse_bundle(const std::vector<uint8_t>& buf, int src, ExpertHome& home,
                                  int64_t home_step, Taken& t) {
  const SketchBundle b = parse_sketch_bundle(buf.data(), buf.size(), src);  // the fuzzed parser
  const SketchBundleHeader& hd = b.header;
  t.flags |= hd.flags;
  t.newest_step = std::max(t.newest_step, hd.step);
  ++bundles_from_[src];
  if (hd.flags & EXPERT_FLAG_STOP) ++stops_[hd.step];
  if (hd.flags & EXPERT_FLAG_CHECKPOINT) ++checkpoints_[hd.step];
  for (const auto& sk : b.sketches) home.receive(sk.data(), sk.size(), home_step);  // a bad sketch is counted, not fatal
}

void ExpertMessages::take_bundle(int src, ExpertHome& home, int64_t home_step, Taken& t,
                                 int64_t expected_step) {
  const int from = recv_into(buf_, src, TAG_SKETCH);
  if (expected_step >= 0) {
    SketchBundleHeader hd;
    if (buf_.size() >= sizeof hd) std::memcpy(&hd, buf_.data(), sizeof hd);
    if (buf_.size() < sizeof hd || hd.step != expected_step)
      throw std::runtime_error("sketch bundle from rank " + std::to_string(from) + " for step " +
                               std::to_string(hd.step) + ", expected step " +
                               std::to_string(expected_step));
  }
  parse_bundle(buf_, from, home, home_step, t);
}

void ExpertMessages::take_delta(int src, ExpertHome& home) {
  const int from = recv_into(buf_, src, TAG_ADAPTER);
  home.fold_deltas(buf_.data(), buf_.size());
  ++deltas_from_[from];
}

void ExpertMessages::take_view(int src, ExpertViews& views) {
  const int from = recv_into(buf_, src, TAG_SNAPSHOT);
  views.apply(buf_.data(), buf_.size());
  ++views_from_[from];
}

void ExpertMessages::take_next(ExpertHome& home, int64_t home_step, Taken& t) {
  const MPI_Status st = p2p_.probe(MPI_ANY_SOURCE, MPI_ANY_TAG);
  if (st.MPI_TAG == TAG_ADAPTER)
    take_delta(st.MPI_SOURCE, home);
  else if (st.MPI_TAG == TAG_SKETCH)
    take_bundle(st.MPI_SOURCE, home, home_step, t);
  else
    throw std::runtime_error("expert worker: unexpected message tag " + std::to_string(st.MPI_TAG) +
                             " from rank " + std::to_string(st.MPI_SOURCE));
}

void ExpertMessages::wait_sends() {
  for (auto& p : sends_) Comm::wait(p.req);
  sends_.clear();
}

void ExpertMessages::progress() {
  std::erase_if(sends_, [](Pending& p) { return Comm::test(p.req); });
}

}  // namespace px
