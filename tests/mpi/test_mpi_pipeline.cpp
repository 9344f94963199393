// Pipelined islands (topology.pipeline_stages = P, D ranks per stage) with real ranks: the
// island's ranks are P stages of a 4-layer model, micro-batches flow 1F1B with the
// activations and their gradients point-to-point. Against the unpipelined run of the same
// micro-batches (train.micro_batches, one rank per island): the losses agree to 1e-4 relative
// over 8 steps and the parameters (the stages' arena spans joined) to 1e-3 relative after
// them, in modes sync (the stage's gradients all-reduced over the same stage of each island)
// and diloco (each stage's outer sync over its peers, or through a syncer); the island tier
// counts exactly the
// micro-batches' activations and gradients; ZeRO-1 inside a stage shards the moments (each
// rank's equal its slice of the unsharded ones); a pipelined run resumes bit-identically.
// (Tolerances: fp32 sums in another order -- the stages' norms, the all-reduces -- grow over
// the steps; routing near-ties make token-by-token comparisons meaningless.)
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>

#include "config/config.hpp"           // defines: Config
#include "io/checkpoint_parallel.hpp"  // defines: read_rank_array
#include "model/moe_model.hpp"         // defines: MoeModel, ModelMemory
#include "parallel/comm.hpp"           // defines: Tier
#include "parallel/pipeline_split.hpp"  // defines: PipelineSplit, pipeline_layer_begin
#include "train/assembled_eval.hpp"    // defines: evaluate_checkpoint
#include "train/trainer.hpp"           // defines: train, TrainResult

#include "mpi_train_util.hpp"  // defines: world_rank, shared_dir, tiny, run, expect_close, expect_arrays_close, checkpoint_path

using namespace px;
using namespace px::test;

namespace {

const std::vector<std::string> kDiloco = {"train.mode=\"diloco\"", "sync.backbone_every=3",
                                          "sync.fragments=2"};

// Stage s of P's span of arena a (its layers by cfg's topology.pipeline_split).
ArenaSpan stage_span(const Config& cfg, int P, int s, Arena a) {
  Config piped = cfg;  // (cfg may be the unpipelined run's)
  piped.topology.pipeline_stages = P;
  const LayerRange layers = PipelineSplit(piped).layers(s);
  return ParamLayout(cfg.model).layers_span(a, layers.begin, layers.end);
}

std::vector<std::string> base(std::vector<std::string> ov) {
  ov.insert(ov.begin(), {"model.n_layers=4", "train.steps=8", "data.eval_every=4",
                         "checkpoint.every=8", "topology.islands=2"});
  return ov;
}

// Mode parallax with one expert worker homing every routed expert (lockstep: deterministic).
const std::vector<std::string> kParallax = {"train.mode=\"parallax\"", "topology.expert_workers=1",
                                            "train.deterministic=true", "sync.backbone_every=3",
                                            "sync.fragments=2", "experts.snapshot_every=2"};

// Island 0's stages' spans of arena `name` (from each stage's first rank, world rank s D),
// joined in stage order (the whole arena).
std::vector<float> joined(const std::string& path, int P, int D, const char* name, const Config& cfg) {
  std::vector<float> out;
  const Arena a = std::string(name) == "params/backbone" ? Arena::BACKBONE : Arena::EXPERTS;
  for (int s = 0; s < P; ++s) {
    const size_t n = stage_span(cfg, P, s, a).size();
    if (n == 0) continue;  // (a stage of dense layers only holds no experts)
    const auto part = read_rank_array<float>(path, s * D, name, n);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// The routed experts of an unpipelined run on `ranks` ranks: in mode sync each rank steps only
// the experts it holds (expert parallel), so each expert is read from its rank.
std::vector<float> unpipelined_experts(const std::string& path, const Config& cfg, const ParamLayout& L,
                                       int ranks) {
  std::vector<float> out = read_rank_array<float>(path, 0, "params/experts", L.experts_size);
  if (cfg.train.mode != TrainMode::SYNC) return out;
  for (int r = 1; r < ranks; ++r) {
    const auto other = read_rank_array<float>(path, r, "params/experts", L.experts_size);
    const auto range = read_rank_array<int64_t>(path, r, "ep/expert_range", 2);
    const int E = cfg.model.n_experts;
    for (const ParamSpec& spec : L.specs) {
      if (spec.arena != Arena::EXPERTS) continue;
      const size_t per = spec.size / E;
      std::copy_n(other.begin() + spec.offset + per * range[0], per * (range[1] - range[0]),
                  out.begin() + spec.offset + per * range[0]);
    }
  }
  return out;
}

// Mode parallax: each stage of island 0 holds the views of its own MoE layers' experts alone,
// every one of them (the checkpoint's views/state: per view i32 layer, expert, bytes, words).
void expect_stage_views(const std::string& path, const Config& cfg, int P, int D) {
  const ModelConfig& m = cfg.model;
  for (int s = 0; s < P; ++s) {
    const MoeLayerRange moe = PipelineSplit(cfg).moe_layers(s);
    const int lo = moe.lo, hi = moe.hi;
    const size_t n = (size_t)read_rank_array<int64_t>(path, s * D, "views/state_words", 1)[0];
    const auto w = read_rank_array<int32_t>(path, s * D, "views/state", n);
    int views = 0;
    for (size_t i = 0; i + 3 <= w.size(); i += 3 + ((size_t)w[i + 2] + 3) / 4, ++views) {
      EXPECT_GE(w[i], lo) << "stage " << s;
      EXPECT_LT(w[i], hi) << "stage " << s;
    }
    EXPECT_EQ(views, (hi - lo) * m.n_experts) << "stage " << s;
  }
}

// Runs ov unpipelined (I islands x D ranks, I = 2 unless ov says) and with P stages of D ranks
// (I x P D ranks) at M micro-batches (the same data parts); on rank 0 compares losses,
// evaluations and the parameters after the last step (mode parallax: the backbone and the
// worker's expert masters, which learn from the stages' sketches).
void expect_pipeline_follows_unpipelined(const std::vector<std::string>& ov, int P, int D, int M,
                                         const std::string& tag, bool zero = false) {
  std::vector<std::string> plain = base(ov), piped = base(ov);
  plain.insert(plain.end(), {"train.micro_batches=" + std::to_string(M),
                             "topology.ranks_per_island=" + std::to_string(D)});
  piped.insert(piped.end(), {"train.micro_batches=" + std::to_string(M),
                             "topology.ranks_per_island=" + std::to_string(P * D),
                             "topology.pipeline_stages=" + std::to_string(P)});
  if (zero) piped.push_back("train.zero=1");
  const Config a_cfg = tiny(plain), b_cfg = tiny(piped);
  const std::string da = shared_dir(tag + "_plain"), db = shared_dir(tag + "_piped");
  const int I = a_cfg.topology.islands, S = a_cfg.topology.syncers, W = a_cfg.topology.expert_workers;
  const TrainResult a = run(I * D + S + W, a_cfg, da);
  const TrainResult b = run(I * P * D + S + W, b_cfg, db);
  if (world_rank() != 0) return;
  expect_close(b.losses, a.losses, 1e-4);
  ASSERT_EQ(b.evals.size(), a.evals.size());
  for (size_t i = 0; i < a.evals.size(); ++i)
    EXPECT_NEAR(b.evals[i].second, a.evals[i].second, 1e-4 * a.evals[i].second) << tag;
  const std::string pa = checkpoint_path(da, 8), pb = checkpoint_path(db, 8);
  const ParamLayout L(a_cfg.model);
  expect_arrays_close(joined(pb, P, D, "params/backbone", b_cfg),
                      read_rank_array<float>(pa, 0, "params/backbone", L.backbone_size), 1e-3,
                      tag + " backbone");
  if (a_cfg.train.mode == TrainMode::PARALLAX) expect_stage_views(pb, b_cfg, P, D);
  // the model the run produced (`parallax eval`): the stages' global backbone (modes diloco,
  // parallax; else island 0's) joined with the experts (parallax: the homes' masters)
  const double ea = evaluate_checkpoint(pa, "", 2, false).loss, eb = evaluate_checkpoint(pb, "", 2, false).loss;
  EXPECT_NEAR(eb, ea, 1e-4 * ea) << tag << " assembled eval";
  if (a_cfg.train.mode == TrainMode::PARALLAX)  // every expert's master at the worker
    expect_arrays_close(read_rank_array<float>(pb, I * P * D + S, "home/masters", L.experts_size),
                        read_rank_array<float>(pa, I * D + S, "home/masters", L.experts_size), 1e-3,
                        tag + " expert masters");
  else
    expect_arrays_close(joined(pb, P, D, "params/experts", b_cfg), unpipelined_experts(pa, a_cfg, L, I * D),
                        1e-3, tag + " experts");
  if (!zero || a_cfg.train.mode == TrainMode::SYNC) return;
  // ZeRO-1 (mode diloco, group = the stage's D ranks): rank k of stage s holds the moments of
  // its 1/D of the stage's backbone span alone, equal to that slice of the unsharded moments
  for (int s = 0; s < P; ++s) {
    const ArenaSpan span = stage_span(a_cfg, P, s, Arena::BACKBONE);
    for (int k = 0; k < D; ++k) {
      const size_t lo = span.lo + span.size() * k / D, hi = span.lo + span.size() * (k + 1) / D;
      for (const char* mv : {"optim/m/backbone", "optim/v/backbone"}) {
        const auto whole = read_rank_array<float>(pa, 0, mv, L.backbone_size);
        const auto mine = read_rank_array<float>(pb, s * D + k, mv, hi - lo);
        expect_arrays_close(mine, std::vector<float>(whole.begin() + lo, whole.begin() + hi), 1e-2,
                            tag + " " + mv + " stage " + std::to_string(s) + " shard " + std::to_string(k));
      }
    }
  }
}

}  // namespace

TEST(MpiPipeline, SyncTwoStagesFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined({}, 2, 1, 4, "sync_p2");
}

// Two stages of two ranks (D = 2): a stage's gradients all-reduced over its 4 ranks (sync) or
// its 2 ranks of the island (diloco, whose outer sync shards each stage's fragments over them).
TEST(MpiPipeline, SyncTwoStagesOfTwoRanksFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined({}, 2, 2, 2, "sync_p2d2");
}

TEST(MpiPipeline, DilocoTwoStagesOfTwoRanksFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined(kDiloco, 2, 2, 2, "diloco_p2d2");
}

// A syncer serving pipelined islands: its units are (fragment, local rank), each a shard of
// the fragment's part in that rank's stage (deterministic: every push merged in step).
TEST(MpiPipeline, DilocoTwoStagesWithASyncerFollowTheUnpipelinedRun) {
  auto ov = kDiloco;
  ov.insert(ov.end(), {"topology.syncers=1", "sync.backbone_sync=\"syncer\"", "train.deterministic=true"});
  expect_pipeline_follows_unpipelined(ov, 2, 1, 2, "diloco_p2_syncer");
}

// ZeRO-1 inside the stages (train.zero = 1): the same updates from sharded moments.
TEST(MpiPipeline, ZeroInsideTwoStagesOfTwoRanksFollowsTheUnshardedRun) {
  expect_pipeline_follows_unpipelined(kDiloco, 2, 2, 2, "diloco_p2d2_zero", true);
  expect_pipeline_follows_unpipelined({}, 2, 2, 2, "sync_p2d2_zero", true);
}

// Four stages with fewer micro-batches than stages: stage s keeps min(P - s, M) in flight.
TEST(MpiPipeline, SyncFourStagesFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined({}, 4, 1, 2, "sync_p4");
}

// Whole-layer recomputation in mode sync (its routing statistics all-reduced again over the
// stage's group in the recomputed forward).
TEST(MpiPipeline, SyncTwoStagesOfTwoRanksRecomputeLayersFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined({"train.recompute=\"layers\""}, 2, 2, 2, "sync_p2d2_layers");
}

TEST(MpiPipeline, DilocoFourStagesFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined(kDiloco, 4, 1, 4, "diloco_p4");
}

// Mode parallax: each stage runs its MoE layers' experts from their views alone (one saved set
// per micro-batch in flight), its backwards sketch them for the worker (the micro-batch's
// stream of its data part), and the worker sends each stage its layers' views.
TEST(MpiPipeline, ParallaxTwoStagesFollowTheUnpipelinedRun) {
  expect_pipeline_follows_unpipelined(kParallax, 2, 1, 4, "parallax_p2");
}

// (with whole-layer recomputation: each slot keeps its layers' inputs alone, and the backward
// runs each layer's forward again, its routed experts from the views included)
TEST(MpiPipeline, ParallaxTwoStagesOfTwoRanksRecomputeLayersFollowTheUnpipelinedRun) {
  auto ov = kParallax;
  ov.insert(ov.end(), {"topology.islands=1", "train.recompute=\"layers\""});
  expect_pipeline_follows_unpipelined(ov, 2, 2, 2, "parallax_p2d2");
}

// Four stages (stage 0: the dense layer alone, no routed expert) with low-rank views, and the
// routed activations recomputed in the backward.
TEST(MpiPipeline, ParallaxFourStagesLowrankRecomputeFollowTheUnpipelinedRun) {
  auto ov = kParallax;
  ov.insert(ov.end(), {"topology.islands=1", "experts.view=\"lowrank\"", "train.recompute=\"experts\""});
  expect_pipeline_follows_unpipelined(ov, 4, 1, 4, "parallax_p4_lowrank");
}

// The "ends" split (the embedding and the head count as a layer each): 5 layers on 2 stages are
// [0, 3) and [3, 5) instead of [0, 2) and [2, 5).
TEST(MpiPipeline, ParallaxTwoStagesSplitAtTheEndsFollowTheUnpipelinedRun) {
  auto ov = kParallax;
  ov.insert(ov.end(), {"model.n_layers=5", "topology.pipeline_split=\"ends\""});
  ASSERT_EQ(pipeline_layer_begin(1, 2, 5, true), 3);
  expect_pipeline_follows_unpipelined(ov, 2, 1, 2, "parallax_p2_ends");
}

// A pipelined parallax run resumes bit-identically (the stages' views, the worker's home).
TEST(MpiPipeline, ParallaxTwoStagesResume) {
  auto ov = kParallax;
  ov.insert(ov.end(), {"train.micro_batches=2", "topology.ranks_per_island=2", "topology.pipeline_stages=2"});
  expect_bit_identical_resume(5, tiny(base(ov)), "parallax_p2", 4);
}

// Mode diloco on 2 stages: the island tier carries the M micro-batches' activations (stage 0,
// also in the evaluations) and their gradients (stage 1), nothing else; resume is exact.
TEST(MpiPipeline, DilocoTwoStagesCountTheirMessagesAndResume) {
  const std::vector<std::string> ov = base({"train.mode=\"diloco\"", "sync.backbone_every=3",
                                            "train.micro_batches=2", "topology.ranks_per_island=2",
                                            "topology.pipeline_stages=2"});
  const Config cfg = tiny(ov);
  const TrainResult full = expect_bit_identical_resume(4, cfg, "diloco_p2", 4);
  if (world_rank() != 0) return;
  const int64_t M = 2, per = (int64_t)cfg.train.batch_size / M * cfg.model.seq_len * cfg.model.d_model * 4;
  const int64_t evals = (int64_t)full.evals.size() * cfg.data.eval_batches;
  const int isl = (int)Tier::ISLAND;
  for (int island = 0; island < 2; ++island) {
    EXPECT_EQ(full.comm_bytes[isl][2 * island], (cfg.train.steps + evals) * M * per) << "stage 0";
    EXPECT_EQ(full.comm_bytes[isl][2 * island + 1], cfg.train.steps * M * per) << "stage 1";
  }
}
