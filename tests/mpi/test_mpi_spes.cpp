// The SPES-style baseline of mode parallax over MPI (experts.view = "full", experts.signal =
// "none"; docs/parallax.md): each island trains only the experts it homes, from its own
// tokens; every other expert is an fp32 copy, frozen between snapshots, refreshed from its home
// every snapshot_every steps. Real ranks: 3 islands of 1 rank (homes on the learners). Also full
// views under the sketch and adapter signals.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>

#include "checkpoint/resume.hpp"          // defines: load_model_params
#include "checkpoint/stateful.hpp"        // defines: StateReader
#include "experts/expert_views.hpp"       // defines: ExpertViews
#include "io/checkpoint_parallel.hpp"     // defines: read_rank_array
#include "model/expert_slices.hpp"        // defines: expert_offset
#include "model/full_view.hpp"            // defines: full_expert_wire_bytes
#include "model/moe_model.hpp"            // defines: MoeModel
#include "parallel/comm.hpp"              // defines: Tier
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at, expert_home

#include "mpi_train_util.hpp"  // defines: world_rank, shared_dir, tiny, run, expect_bit_identical_resume, checkpoint_path

using namespace px;
using namespace px::test;

namespace {

constexpr int kIslands = 3;

Config spes(std::vector<std::string> ov) {
  ov.insert(ov.begin(), {"train.mode=\"parallax\"", "topology.islands=3", "experts.view=\"full\"",
                         "experts.signal=\"none\""});
  return tiny(ov);
}

Topology topology_of(int rank) { return Topology::make(kIslands, 1, 0, 0, rank, kIslands); }

// Expert (m, e)'s weights W1 | W3 | W2 in an experts arena (swiglu).
std::vector<float> expert_of(const Config& cfg, const ParamLayout& L, const float* arena, int m, int e) {
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  std::vector<float> w(3 * wsz);
  for (int k = 0; k < 3; ++k)
    std::memcpy(w.data() + k * wsz, arena + expert_offset(cfg.model, L, m, e, k), 4 * wsz);
  return w;
}

// What rank `rank` holds at a checkpoint (or, with path "", at the start): every expert it
// does not home (its full view) and every expert's master (from its home), by (m, e).
struct Held {
  std::vector<std::vector<float>> view, master;  // [m * E + e]; view empty for my own experts
};

Held held_at(const Config& cfg, const std::string& path, int rank) {
  const ModelConfig& mc = cfg.model;
  MoeModel<float> model(mc, 1, 2);
  model.init_params((uint64_t)cfg.train.seed);
  const Topology topo = topology_of(rank);
  ExpertViews views(cfg, topo, ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  if (!path.empty()) {
    views.load(StateReader(path, rank, cfg));
    load_model_params(path, model);  // every expert from its home's master
  }
  Held h;
  const size_t wsz = (size_t)mc.d_model * mc.expert_hidden;
  for (int m = 0; m < mc.moe_layers(); ++m)
    for (int e = 0; e < mc.n_experts; ++e) {
      h.master.push_back(expert_of(cfg, model.layout(), model.params(Arena::EXPERTS), m, e));
      h.view.emplace_back();
      if (!views.remote(m, e)) continue;
      h.view.back().resize(3 * wsz);
      float* v = h.view.back().data();
      views.dequantize(m, e, v, v + wsz, v + 2 * wsz);
    }
  return h;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

}  // namespace

// With a checkpoint after every step: a remote expert's view on every island is bit-identical
// to the step before at every step that is not a multiple of snapshot_every, and equal to its
// home's master of that step (and changed) at every one that is; every homed expert's master
// changes at every step (its home trains it from its own island's tokens). Snapshot bytes are
// exactly (snapshots) x (other learners) x (4 + homed experts x (12 + full expert wire)), and
// no sketch or adapter byte is sent.
TEST(MpiSpes, RemoteExpertsChangeOnlyAtRefreshStepsHomedOnesEveryStep) {
  const int steps = 8, snap = 3;
  const Config cfg = spes({"train.steps=8", "experts.snapshot_every=3", "checkpoint.every=1",
                           "checkpoint.keep=0", "data.eval_every=8", "sync.backbone_every=4"});
  const std::string dir = shared_dir("spes_views");
  const TrainResult r = run(kIslands, cfg, dir);
  if (world_rank() != 0) return;
  const ModelConfig& mc = cfg.model;
  const int ME = mc.moe_layers() * mc.n_experts;
  for (int rank = 0; rank < kIslands; ++rank) {
    Held before = held_at(cfg, "", rank);
    for (int s = 1; s <= steps; ++s) {
      Held now = held_at(cfg, checkpoint_path(dir, s), rank);
      for (int i = 0; i < ME; ++i) {
        const int m = i / mc.n_experts, e = i % mc.n_experts;
        const std::string at = "rank " + std::to_string(rank) + ", expert (" + std::to_string(m) + ", " +
                               std::to_string(e) + "), step " + std::to_string(s);
        if (now.view[i].empty()) {  // homed here: trained every step
          EXPECT_EQ(expert_home(topology_of(rank), m, e, mc.n_experts), rank) << at;
          EXPECT_FALSE(same_bits(now.master[i], before.master[i])) << "homed expert unchanged, " << at;
        } else if (s % snap != 0) {
          EXPECT_TRUE(same_bits(now.view[i], before.view[i])) << "view changed between refreshes, " << at;
        } else {
          EXPECT_TRUE(same_bits(now.view[i], now.master[i])) << "view is not its home's master, " << at;
          EXPECT_FALSE(same_bits(now.view[i], before.view[i])) << "view not refreshed, " << at;
        }
      }
      before = std::move(now);
    }
  }
  const int64_t full = (int64_t)full_expert_wire_bytes(cpu::EXPERT_ACT_SWIGLU, mc.d_model, mc.expert_hidden);
  for (int rank = 0; rank < kIslands; ++rank) {
    const int64_t homed = (int64_t)experts_homed_at(topology_of(rank), rank, mc.moe_layers(), mc.n_experts).size();
    EXPECT_EQ(r.comm_bytes[(int)Tier::SNAPSHOT][rank], (steps / snap) * (kIslands - 1) * (4 + homed * (12 + full)))
        << "rank " << rank;
    EXPECT_EQ(r.comm_bytes[(int)Tier::SKETCH][rank], 0) << "rank " << rank;
    EXPECT_EQ(r.comm_bytes[(int)Tier::ADAPTER][rank], 0) << "rank " << rank;
  }
  ASSERT_GE(r.evals.size(), 2u);
  EXPECT_LT(r.evals.back().second, r.evals.front().second - 0.3);
}

// A SPES run stopped at a step that is not a snapshot step (views stale against the masters)
// and resumed is bit-identical to the uninterrupted run: losses, last evaluation, every
// parameter (backbone and masters) and every rank's views in the last checkpoint.
TEST(MpiSpes, ResumeIsBitIdentical) {
  const Config cfg = spes({"train.steps=12", "experts.snapshot_every=4", "checkpoint.every=0",
                           "data.eval_every=6", "sync.backbone_every=6"});
  expect_bit_identical_resume(kIslands, cfg, "spes_resume", 5);
  if (world_rank() != 0) return;
  const std::string a = checkpoint_path(shared_dir("spes_resume_full"), 12),
                    b = checkpoint_path(shared_dir("spes_resume_part"), 12);
  MoeModel<float> ma(cfg.model, 1, 2), mb(cfg.model, 1, 2);
  load_model_params(a, ma);
  load_model_params(b, mb);
  for (Arena arena : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = arena == Arena::BACKBONE ? ma.layout().backbone_size : ma.layout().experts_size;
    EXPECT_EQ(std::memcmp(ma.params(arena), mb.params(arena), 4 * n), 0)
        << (arena == Arena::BACKBONE ? "backbone" : "experts") << " differ after the resume";
  }
  for (int rank = 0; rank < kIslands; ++rank) {
    const auto words = [&](const std::string& p) {
      const size_t n = (size_t)read_rank_array<int64_t>(p, rank, "views/state_words", 1)[0];
      return read_rank_array<int32_t>(p, rank, "views/state", n);
    };
    const auto va = words(a);
    EXPECT_GT(va.size(), 0u);
    EXPECT_EQ(va, words(b)) << "rank " << rank << "'s views differ after the resume";
  }
}

// Full views under the other signals (sketches: the upper-bound row; adapters on full views):
// the runs learn, send their signal and exactly the full snapshots, and at the last step (a
// snapshot step) every island's copy of every expert homed elsewhere is its home's master.
TEST(MpiSpes, FullViewsWorkWithTheSketchAndAdapterSignals) {
  const int steps = 8, snap = 4;
  for (const std::string signal : {"sketches", "adapters"}) {
    std::vector<std::string> ov = {"experts.signal=\"" + signal + "\"", "train.steps=8",
                                   "experts.snapshot_every=4", "data.eval_every=8",
                                   "checkpoint.every=0", "sync.backbone_every=1000"};
    if (signal == "adapters") ov.insert(ov.end(), {"experts.adapter_rank=4", "experts.adapter_every=4"});
    const Config cfg = spes(ov);
    const std::string dir = shared_dir("spes_full_" + signal);
    const TrainResult r = run(kIslands, cfg, dir);
    if (world_rank() != 0) continue;
    ASSERT_GE(r.evals.size(), 2u);
    EXPECT_LT(r.evals.back().second, r.evals.front().second - 0.3) << signal;
    const ModelConfig& mc = cfg.model;
    const int64_t full = (int64_t)full_expert_wire_bytes(cpu::EXPERT_ACT_SWIGLU, mc.d_model, mc.expert_hidden);
    const Tier sent = signal == "sketches" ? Tier::SKETCH : Tier::ADAPTER;
    for (int rank = 0; rank < kIslands; ++rank) {
      const int64_t homed = (int64_t)experts_homed_at(topology_of(rank), rank, mc.moe_layers(), mc.n_experts).size();
      EXPECT_EQ(r.comm_bytes[(int)Tier::SNAPSHOT][rank], (steps / snap) * (kIslands - 1) * (4 + homed * (12 + full)))
          << signal << ", rank " << rank;
      EXPECT_GT(r.comm_bytes[(int)sent][rank], 0) << signal << ", rank " << rank;
      const Held h = held_at(cfg, checkpoint_path(dir, steps), rank);
      for (size_t i = 0; i < h.view.size(); ++i)
        if (!h.view[i].empty())
          EXPECT_TRUE(same_bits(h.view[i], h.master[i])) << signal << ", rank " << rank << ", expert " << i;
    }
  }
}
