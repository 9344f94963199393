// defines: ExpertTier
#include "sync/expert_tier.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "parallel/expert_placement.hpp"  // defines: experts_homed_at

namespace px {

ExpertTier::ExpertTier(const Config& cfg, const Topology& topo, Comm& p2p) : topo_(topo), p2p_(p2p) {
  for (int r = 0; r < topo.world_size; ++r)
    if (!experts_homed_at(topo, r, cfg.model.moe_layers(), cfg.model.n_experts).empty())
      homes_.push_back(r);
}

bool ExpertTier::is_home(int rank) const {
  return std::binary_search(homes_.begin(), homes_.end(), rank);
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
    std::vector<uint8_t> buf(bytes);
    std::memcpy(buf.data(), &hd, sizeof hd);
    size_t o = sizeof hd;
    for (const auto& s : sk) {
      const uint32_t n = (uint32_t)s.size();
      std::memcpy(buf.data() + o, &n, 4);
      std::memcpy(buf.data() + o + 4, s.data(), n);
      o += 4 + n;
    }
    reqs_.push_back(p2p_.isend(buf.data(), (int)buf.size(), h, TAG_SKETCH, Tier::SKETCH));
    bufs_.push_back(std::move(buf));
  }
}

uint32_t ExpertTier::receive_sketches(int64_t step, ExpertHome& home) {
  uint32_t flags = 0;
  std::vector<uint8_t> buf;
  for (int src = 0; src < topo_.learners(); ++src) {
    if (src == topo_.world_rank) continue;
    MPI_Status st = p2p_.probe(src, TAG_SKETCH);
    buf.resize(Comm::status_bytes(st));
    p2p_.recv(buf.data(), (int)buf.size(), src, TAG_SKETCH);
    SketchBundleHeader hd;
    if (buf.size() < sizeof hd) throw std::runtime_error("sketch bundle shorter than its header");
    std::memcpy(&hd, buf.data(), sizeof hd);
    if (hd.magic != SketchBundleHeader{}.magic || hd.step != step)
      throw std::runtime_error("sketch bundle from rank " + std::to_string(src) + " for step " +
                               std::to_string(hd.step) + ", expected step " + std::to_string(step));
    flags |= hd.flags;
    size_t o = sizeof hd;
    for (uint32_t i = 0; i < hd.count; ++i) {
      uint32_t n = 0;
      if (o + 4 > buf.size()) throw std::runtime_error("sketch bundle truncated");
      std::memcpy(&n, buf.data() + o, 4);
      if (o + 4 + n > buf.size()) throw std::runtime_error("sketch bundle truncated");
      home.receive(buf.data() + o + 4, n, step);  // a bad sketch is counted, not fatal
      o += 4 + n;
    }
  }
  return flags;
}

void ExpertTier::send_snapshot(std::vector<uint8_t> msg) {
  std::vector<uint8_t>& buf = bufs_.emplace_back(std::move(msg));
  for (int r = 0; r < topo_.learners(); ++r)
    if (r != topo_.world_rank)
      reqs_.push_back(p2p_.isend(buf.data(), (int)buf.size(), r, TAG_SNAPSHOT, Tier::SNAPSHOT));
}

void ExpertTier::receive_snapshots(const ModelConfig& mc, const ParamLayout& layout,
                                   float* experts_arena) {
  std::vector<uint8_t> buf;
  for (int h : homes_) {
    if (h == topo_.world_rank) continue;
    MPI_Status st = p2p_.probe(h, TAG_SNAPSHOT);
    buf.resize(Comm::status_bytes(st));
    p2p_.recv(buf.data(), (int)buf.size(), h, TAG_SNAPSHOT);
    apply_snapshot(buf.data(), buf.size(), mc, layout, experts_arena);
  }
}

void ExpertTier::wait_sends() {
  Comm::wait_all(reqs_);
  reqs_.clear();
  bufs_.clear();
}

}  // namespace px
