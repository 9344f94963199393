// defines: ExpertTier
#include "sync/expert_tier.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "parallel/expert_placement.hpp"  // defines: experts_homed_at

namespace px {

ExpertTier::ExpertTier(const Config& cfg, const Topology& topo, Comm& p2p)
    : topo_(topo), p2p_(p2p), bundles_from_(topo.world_size, 0), snapshots_from_(topo.world_size, 0),
      deltas_from_(topo.world_size, 0) {
  for (int r = 0; r < topo.world_size; ++r)
    if (!experts_homed_at(topo, r, cfg.model.moe_layers(), cfg.model.n_experts).empty())
      homes_.push_back(r);
}

bool ExpertTier::is_home(int rank) const {
  return std::binary_search(homes_.begin(), homes_.end(), rank);
}

void ExpertTier::send(const std::shared_ptr<std::vector<uint8_t>>& buf, int dest, int tag, Tier t) {
  sends_.push_back({p2p_.isend(buf->data(), (int)buf->size(), dest, tag, t), buf});
}

// Receives the next message of `tag` from `src` (or any source) into buf; returns its source.
int ExpertTier::recv_into(std::vector<uint8_t>& buf, int src, int tag) {
  MPI_Status st = p2p_.probe(src, tag);
  buf.resize(Comm::status_bytes(st));
  p2p_.recv(buf.data(), (int)buf.size(), st.MPI_SOURCE, tag);
  return st.MPI_SOURCE;
}

void ExpertTier::send_sketches(int64_t step, uint32_t flags,
                               std::map<int, std::vector<std::vector<uint8_t>>> outbox) {
  for (int h : homes_) {
    if (h == topo_.world_rank) continue;
    const auto& sk = outbox[h];
    SketchBundleHeader hd;
    hd.count = (uint32_t)sk.size();
    hd.step = step;
    hd.flags = flags;
    size_t bytes = sizeof hd;
    for (const auto& s : sk) bytes += 4 + s.size();
    auto buf = std::make_shared<std::vector<uint8_t>>(bytes);
    std::memcpy(buf->data(), &hd, sizeof hd);
    size_t o = sizeof hd;
    for (const auto& s : sk) {
      const uint32_t n = (uint32_t)s.size();
      std::memcpy(buf->data() + o, &n, 4);
      std::memcpy(buf->data() + o + 4, s.data(), n);
      o += 4 + n;
    }
    send(buf, h, TAG_SKETCH, sk.empty() ? Tier::CONTROL : Tier::SKETCH);
  }
}

void ExpertTier::take_bundle(const std::vector<uint8_t>& buf, int src, ExpertHome& home,
                             int64_t home_step, Drained& d) {
  SketchBundleHeader hd;
  if (buf.size() < sizeof hd) throw std::runtime_error("sketch bundle shorter than its header");
  std::memcpy(&hd, buf.data(), sizeof hd);
  if (hd.magic != SketchBundleHeader{}.magic)
    throw std::runtime_error("sketch bundle from rank " + std::to_string(src) + " has a bad magic");
  d.flags |= hd.flags;
  d.newest_step = std::max(d.newest_step, hd.step);
  ++d.bundles;
  ++bundles_from_[src];
  if (hd.flags & EXPERT_FLAG_STOP) ++stops_[hd.step];
  if (hd.flags & EXPERT_FLAG_CHECKPOINT) ++ckpts_[hd.step];
  size_t o = sizeof hd;
  for (uint32_t i = 0; i < hd.count; ++i) {
    uint32_t n = 0;
    if (o + 4 > buf.size()) throw std::runtime_error("sketch bundle truncated");
    std::memcpy(&n, buf.data() + o, 4);
    if (o + 4 + n > buf.size()) throw std::runtime_error("sketch bundle truncated");
    home.receive(buf.data() + o + 4, n, home_step);  // a bad sketch is counted, not fatal
    o += 4 + n;
  }
}

uint32_t ExpertTier::receive_sketches(int64_t step, ExpertHome& home) {
  Drained d;
  std::vector<uint8_t> buf;
  for (int src = 0; src < topo_.learners(); ++src) {
    if (src == topo_.world_rank) continue;
    recv_into(buf, src, TAG_SKETCH);
    SketchBundleHeader hd;
    if (buf.size() >= sizeof hd) std::memcpy(&hd, buf.data(), sizeof hd);
    if (buf.size() < sizeof hd || hd.step != step)
      throw std::runtime_error("sketch bundle from rank " + std::to_string(src) + " for step " +
                               std::to_string(hd.step) + ", expected step " + std::to_string(step));
    take_bundle(buf, src, home, step, d);
  }
  return d.flags;
}

ExpertTier::Drained ExpertTier::drain_sketches(ExpertHome& home, int64_t home_step, bool one) {
  Drained d;
  std::vector<uint8_t> buf;
  while (one || p2p_.iprobe(MPI_ANY_SOURCE, TAG_SKETCH)) {
    const int src = recv_into(buf, MPI_ANY_SOURCE, TAG_SKETCH);
    take_bundle(buf, src, home, home_step, d);
    if (one) break;
  }
  return d;
}

void ExpertTier::send_snapshot(std::vector<uint8_t> msg, Tier t) {
  auto buf = std::make_shared<std::vector<uint8_t>>(std::move(msg));
  for (int r = 0; r < topo_.learners(); ++r)
    if (r != topo_.world_rank) send(buf, r, TAG_SNAPSHOT, t);
}

void ExpertTier::take_snapshot(std::vector<uint8_t>& buf, int src, ExpertViews& views) {
  const int h = recv_into(buf, src, TAG_SNAPSHOT);
  views.apply(buf.data(), buf.size());
  ++snapshots_from_[h];
}

void ExpertTier::receive_snapshots(ExpertViews& views) {
  std::vector<uint8_t> buf;
  for (int h : homes_)
    if (h != topo_.world_rank) take_snapshot(buf, h, views);
}

void ExpertTier::drain_snapshots(ExpertViews& views) {
  std::vector<uint8_t> buf;
  while (p2p_.iprobe(MPI_ANY_SOURCE, TAG_SNAPSHOT))
    take_snapshot(buf, MPI_ANY_SOURCE, views);
}

void ExpertTier::finish_learner(ExpertHome* home, int64_t home_step, int64_t steps,
                                int64_t snapshots, int64_t deltas, ExpertViews& views) {
  std::vector<uint8_t> buf;
  if (home) {
    Drained d;
    for (int src = 0; src < topo_.learners(); ++src)
      while (src != topo_.world_rank && bundles_from_[src] < steps) {
        recv_into(buf, src, TAG_SKETCH);
        take_bundle(buf, src, *home, home_step, d);
      }
    for (int src = 0; src < topo_.learners(); ++src)
      while (src != topo_.world_rank && deltas_from_[src] < deltas) take_delta(buf, src, *home);
  }
  for (int h : homes_)
    while (h != topo_.world_rank && snapshots_from_[h] < snapshots)
      take_snapshot(buf, h, views);
  wait_sends();
}

void ExpertTier::send_deltas(std::map<int, std::vector<uint8_t>> by_home) {
  for (int h : homes_) {
    if (h == topo_.world_rank) continue;
    auto buf = std::make_shared<std::vector<uint8_t>>(std::move(by_home[h]));
    if (buf->empty()) buf->assign(4, 0);  // no expert of that home: an empty message
    send(buf, h, TAG_ADAPTER, Tier::ADAPTER);
  }
}

void ExpertTier::take_delta(std::vector<uint8_t>& buf, int src, ExpertHome& home) {
  const int from = recv_into(buf, src, TAG_ADAPTER);
  home.fold_deltas(buf.data(), buf.size());
  ++deltas_from_[from];
}

void ExpertTier::receive_deltas(ExpertHome& home) {
  std::vector<uint8_t> buf;
  for (int src = 0; src < topo_.learners(); ++src)
    if (src != topo_.world_rank) take_delta(buf, src, home);
}

int ExpertTier::drain_deltas(ExpertHome& home) {
  std::vector<uint8_t> buf;
  int n = 0;
  for (; p2p_.iprobe(MPI_ANY_SOURCE, TAG_ADAPTER); ++n) take_delta(buf, MPI_ANY_SOURCE, home);
  return n;
}

ExpertTier::Drained ExpertTier::take_next(ExpertHome& home, int64_t home_step) {
  Drained d;
  std::vector<uint8_t> buf;
  const MPI_Status st = p2p_.probe(MPI_ANY_SOURCE, MPI_ANY_TAG);
  if (st.MPI_TAG == TAG_ADAPTER) {
    take_delta(buf, st.MPI_SOURCE, home);
    ++d.deltas;
  } else if (st.MPI_TAG == TAG_SKETCH) {
    const int src = recv_into(buf, st.MPI_SOURCE, TAG_SKETCH);
    take_bundle(buf, src, home, home_step, d);
  } else {
    throw std::runtime_error("expert worker: unexpected message tag " + std::to_string(st.MPI_TAG) +
                             " from rank " + std::to_string(st.MPI_SOURCE));
  }
  return d;
}

void ExpertTier::finish_worker(ExpertHome& home, int64_t deltas) {
  std::vector<uint8_t> buf;
  for (int src = 0; src < topo_.learners(); ++src)
    while (deltas_from_[src] < deltas) take_delta(buf, src, home);
  wait_sends();
}

void ExpertTier::wait_sends() {
  for (auto& p : sends_) Comm::wait(p.req);
  sends_.clear();
}

void ExpertTier::progress() {
  std::erase_if(sends_, [](Pending& p) { return Comm::test(p.req); });
}

}  // namespace px
