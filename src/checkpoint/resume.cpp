// defines: check_resume_compatible, rehoming, saved_topology, checkpoint_config,
// checkpoint_tokenizer, load_model_params
#include "checkpoint/resume.hpp"

#include "parallel/pipeline_split.hpp"  // defines: PipelineSplit

#include <fmt/format.h>

#include "checkpoint/stateful.hpp"        // defines: StateReader
#include "io/checkpoint_parallel.hpp"     // defines: read_rank_array, checkpoint_attr
#include "model/expert_source.hpp"        // defines: ExpertSource
#include "sync/fragments.hpp"             // defines: FragmentPlan
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "experts/expert_home.hpp"           // defines: ExpertHome
#include "util/errors.hpp"                // defines: UserError

namespace px {

bool rehoming(const std::string& path, const Config& cfg) {
  const Config saved = checkpoint_config(path);
  const TopologyConfig &s = saved.topology, &t = cfg.topology;
  if (cfg.train.mode != TrainMode::PARALLAX || saved.train.mode != TrainMode::PARALLAX ||
      s.expert_workers == t.expert_workers || s.islands != t.islands ||
      s.ranks_per_island != t.ranks_per_island || s.syncers != t.syncers ||
      s.pipeline_stages != t.pipeline_stages || s.pipeline_split != t.pipeline_split)
    return false;
  if (cfg.experts.view != ViewKind::TERNARY || cfg.experts.signal != ExpertSignalKind::SKETCHES)
    throw UserError(fmt::format("{}: resuming with topology.expert_workers = {} (was {}) re-homes "
                                "the experts; supported for experts.view = \"ternary\" and "
                                "experts.signal = \"sketches\" only",
                                path, cfg.topology.expert_workers, saved.topology.expert_workers));
  return true;
}

Topology saved_topology(const std::string& path, int rank) {
  const Config saved = checkpoint_config(path);
  const TopologyConfig& t = saved.topology;
  return Topology::make(t.islands, t.ranks_per_island, t.syncers, t.expert_workers, rank,
                       (int)checkpoint_world_size(path));
}

void check_resume_compatible(const std::string& path, const Config& cfg) {
  const Config saved = checkpoint_config(path);
  if (has_rank_array(path, 0, "outer/theta_global/backbone"))
    throw UserError(fmt::format("{}: written by an older Parallax (every learner held the whole "
                                "outer state); resume it with a build of commit 96b0e4f or "
                                "earlier", path));
  if (saved.train.zero != cfg.train.zero)
    throw UserError(fmt::format("{}: written with train.zero = {} (its AdamW moments are sharded "
                                "another way); resume with train.zero = {}",
                                path, saved.train.zero, saved.train.zero));
  {
    Config a = cfg;
    a.model = saved.model;
    if (!(a == cfg))
      throw UserError(fmt::format("{}: written for another [model] section; resume with the "
                                  "run's own config.toml",
                                  path));
    Config b = cfg;
    b.topology = saved.topology;
    const bool same_world = checkpoint_world_size(path) == cfg.topology.islands *
                                                               cfg.topology.ranks_per_island +
                                                           cfg.topology.syncers +
                                                           cfg.topology.expert_workers;
    if ((!(b == cfg) || !same_world) && !rehoming(path, cfg))
      throw UserError(fmt::format("{}: written on another [topology]; resuming on a different "
                                  "topology is supported only for mode parallax with another "
                                  "topology.expert_workers (experts are re-homed)",
                                  path));
  }
}

Config checkpoint_config(const std::string& path) {
  return parse_config(checkpoint_attr(path, "config"), path + " (attribute config)");
}

BpeTokenizer checkpoint_tokenizer(const std::string& path) {
  const size_t m = (size_t)read_rank_array<int64_t>(path, 0, "tokenizer/count", 1)[0];
  const auto flat = read_rank_array<int32_t>(path, 0, "tokenizer/merges", 2 * m);
  std::vector<std::pair<int32_t, int32_t>> merges(m);
  for (size_t i = 0; i < m; ++i) merges[i] = {flat[2 * i], flat[2 * i + 1]};
  return BpeTokenizer::from_merges(std::move(merges), path);
}

bool has_global_backbone(const std::string& path) {
  return has_rank_array(path, 0, "outer/global/0");
}

namespace {
// The global backbone of the last outer sync into backbone: local rank r of island 0 (world
// rank r) holds shard r of every fragment (sync/outer_sync.hpp).
void read_global_backbone(const std::string& path, const ParamLayout& layout, float* backbone) {
  const Config saved = checkpoint_config(path);
  const FragmentPlan plan(layout, saved.sync.fragments, saved.train.mode != TrainMode::PARALLAX);
  const int R = saved.topology.ranks_per_island;
  float* const arenas[2] = {backbone, nullptr};  // (diloco's fragments hold experts too: skipped)
  for (int f = 0; f < plan.count(); ++f)
    for (int r = 0; r < R; ++r) {
      const size_t lo = FragmentPlan::shard_begin(plan.size(f), r, R), hi = FragmentPlan::shard_begin(plan.size(f), r + 1, R);
      const auto shard = read_rank_array<float>(path, r, fmt::format("outer/global/{}", f), hi - lo);
      plan.scatter(f, lo, hi, shard.data(), arenas);
    }
}
}  // namespace

namespace {
// A pipelined run's global backbone of the last outer sync: rank k of island 0's stage s (world
// rank s D + k) holds shard k of the stage's part of every fragment.
void read_global_backbone_stages(const std::string& path, const Config& saved, const ParamLayout& layout,
                                 float* backbone) {
  const int P = saved.topology.pipeline_stages, D = saved.topology.ranks_per_island / P;
  const bool experts = saved.train.mode != TrainMode::PARALLAX;
  const PipelineSplit split(saved);
  for (int s = 0; s < P; ++s) {
    const auto held = split.spans(layout, s, experts);
    const FragmentPlan plan(layout, saved.sync.fragments, experts, held.data());
    float* const arenas[2] = {backbone + held[0].lo, nullptr};  // (the plan's storage offsets)
    for (int f = 0; f < plan.count(); ++f)
      for (int k = 0; k < D && plan.size(f) > 0; ++k) {
        const size_t lo = FragmentPlan::shard_begin(plan.size(f), k, D), hi = FragmentPlan::shard_begin(plan.size(f), k + 1, D);
        const auto shard = read_rank_array<float>(path, s * D + k, fmt::format("outer/global/{}", f), hi - lo);
        plan.scatter(f, lo, hi, shard.data(), arenas);
      }
  }
}

// A pipelined run's parameters: island 0's stage s (its first rank, world rank s D) holds its
// layers' spans.
void read_pipeline_stages(const std::string& path, const Config& saved, MoeModel<float>& model) {
  const ParamLayout& layout = model.layout();
  const int P = saved.topology.pipeline_stages;
  const PipelineSplit split(saved);
  for (int s = 0; s < P; ++s) {
    // (mode parallax: no experts span, the homes hold them)
    const auto spans = split.spans(layout, s, saved.train.mode != TrainMode::PARALLAX);
    for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
      const ArenaSpan span = spans[(int)a];
      if (span.size() == 0 || !model.params(a)) continue;
      const int rank = s * (saved.topology.ranks_per_island / P);  // (island 0, stage s, rank 0 in it)
      const auto part = read_rank_array<float>(path, rank, std::string("params/") + arena_name(a), span.size());
      std::copy(part.begin(), part.end(), model.params(a) + span.lo);
    }
  }
  const auto bias = read_rank_array<float>(path, 0, "model/router_bias", model.router_bias().size());
  std::copy(bias.begin(), bias.end(), model.router_bias().begin());
}

// Mode parallax: the learners hold views of the experts homed elsewhere; every expert's master
// comes from its home.
void read_home_masters(const std::string& path, const Config& saved_run, MoeModel<float>& model) {
  Config saved = saved_run;  // (reading masters is host work, wherever the run's homes computed)
  saved.experts.home_device = DeviceKind::CPU;
  const ParamLayout& layout = model.layout();
  const TopologyConfig& tc = saved.topology;
  const int world = (int)checkpoint_world_size(path);
  for (int r = 0; r < world; ++r) {
    if (!has_rank_array(path, r, "home/masters")) continue;
    const Topology topo =
        Topology::make(tc.islands, tc.ranks_per_island, tc.syncers, tc.expert_workers, r, world);
    ExpertHome home(saved, layout,
                    experts_homed_at(topo, r, saved.model.moe_layers(), saved.model.n_experts),
                    ExpertSource::arena(saved.model, layout, model.params(Arena::EXPERTS)));
    home.load(StateReader(path, r, saved));
    home.write_forward_weights(model.params(Arena::EXPERTS));
  }
}
}  // namespace

void load_model_params(const std::string& path, MoeModel<float>& model, bool global_backbone) {
  const ParamLayout& layout = model.layout();
  if (const Config saved = checkpoint_config(path); saved.topology.pipeline_stages > 1) {
    read_pipeline_stages(path, saved, model);  // (the stages' own parameters)
    if (global_backbone && has_global_backbone(path))
      read_global_backbone_stages(path, saved, model.layout(), model.params(Arena::BACKBONE));
    if (saved.train.mode == TrainMode::PARALLAX) read_home_masters(path, saved, model);
    return;
  }
  if (global_backbone && has_global_backbone(path)) {
    read_global_backbone(path, layout, model.params(Arena::BACKBONE));
  } else {
    const auto bb = read_rank_array<float>(path, 0, "params/backbone", layout.backbone_size);
    std::copy(bb.begin(), bb.end(), model.params(Arena::BACKBONE));
  }
  const int world = (int)checkpoint_world_size(path);
  for (int r = 0; r < world; ++r) {
    if (!has_rank_array(path, r, "params/experts")) continue;
    const auto ex = read_rank_array<float>(path, r, "params/experts", layout.experts_size);
    int64_t e0 = 0, e1 = model.config().n_experts;
    if (has_rank_array(path, r, "ep/expert_range")) {
      const auto rg = read_rank_array<int64_t>(path, r, "ep/expert_range", 2);
      e0 = rg[0];
      e1 = rg[1];
    }
    for (const ParamSpec& s : layout.specs) {
      if (s.arena != Arena::EXPERTS) continue;
      const size_t per = s.size / (size_t)s.shape[0];
      std::copy(ex.begin() + s.offset + per * e0, ex.begin() + s.offset + per * e1,
                model.params(Arena::EXPERTS) + s.offset + per * e0);
    }
    if (e0 == 0 && e1 == model.config().n_experts) break;
  }
  if (const Config saved = checkpoint_config(path); saved.train.mode == TrainMode::PARALLAX)
    read_home_masters(path, saved, model);
  const auto bias = read_rank_array<float>(path, 0, "model/router_bias", model.router_bias().size());
  std::copy(bias.begin(), bias.end(), model.router_bias().begin());
}

}  // namespace px
