// validate_config (table-driven ranges + cross-field rules) and check_supported.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "config/config.hpp"
#include "config/config_fields.hpp"  // defines: config_fields, Bound, numeric_value
#include "backend/device_support.hpp"   // defines: device_learner_unsupported
#include "parallel/pipeline_split.hpp"  // defines: PipelineSplit
#include "util/errors.hpp"           // defines: UserError

namespace px {
namespace {

using cfg::Bound;
using cfg::FieldDesc;
using cfg::FieldType;

std::string num(double v) { return fmt::format("{}", v); }

// The bound's value and how a message shows it: "8" or "model.n_experts (8)".
std::pair<double, std::string> resolve(const Bound& b, const Config& c) {
  if (b.kind == Bound::CONST) return {b.value, num(b.value)};
  const FieldDesc* f = cfg::find_field(b.field);
  double v = cfg::numeric_value(*f, c);
  return {v, fmt::format("{} ({})", b.field, num(v))};
}

void check_range(const FieldDesc& f, const Config& c) {
  if (f.type != FieldType::INT && f.type != FieldType::FLOAT) return;
  const double v = cfg::numeric_value(f, c);
  const std::string shown = cfg::format_value(f.get(c));
  if (!std::isfinite(v))
    throw UserError(fmt::format("{} = {}: must be a finite number", f.name(), shown));
  bool ok = true;
  std::string lo_s, hi_s;
  if (f.lo.kind != Bound::NONE) {
    auto [lo, s] = resolve(f.lo, c);
    lo_s = s;
    ok = ok && (f.lo.open ? v > lo : v >= lo);
  }
  if (f.hi.kind != Bound::NONE) {
    auto [hi, s] = resolve(f.hi, c);
    hi_s = s;
    ok = ok && (f.hi.open ? v < hi : v <= hi);
  }
  if (ok) return;
  std::string rule;
  if (!lo_s.empty() && !hi_s.empty() && !f.lo.open && !f.hi.open)
    rule = fmt::format("must be between {} and {}", lo_s, hi_s);
  else if (!lo_s.empty() && !hi_s.empty())
    rule = fmt::format("must be {} {} and {} {}", f.lo.open ? ">" : ">=", lo_s, f.hi.open ? "<" : "<=", hi_s);
  else if (!lo_s.empty())
    rule = fmt::format("must be {} {}", f.lo.open ? ">" : ">=", lo_s);
  else
    rule = fmt::format("must be {} {}", f.hi.open ? "<" : "<=", hi_s);
  throw UserError(fmt::format("{} = {}: {}", f.name(), shown, rule));
}

[[noreturn]] void fail(const std::string& msg) { throw UserError(msg); }

// topology.pipeline_stages: what this first version of pipelined islands is built for.
void check_pipeline(const Config& c) {
  const int P = c.topology.pipeline_stages, R = c.topology.ranks_per_island;
  if (P == 1) return;
  if (R % P != 0)
    fail(fmt::format("topology.pipeline_stages = {} must divide topology.ranks_per_island = {} "
                     "(P stages of R / P data-parallel ranks each)", P, R));
  if (c.train.mode == TrainMode::PARALLAX && c.topology.expert_workers == 0)
    fail(fmt::format("topology.pipeline_stages = {} in mode \"parallax\" is built with expert "
                     "workers homing the experts (topology.expert_workers > 0) for now; got 0: "
                     "homes on the learners of a pipeline are not built yet", P));
  if (c.train.mode == TrainMode::PARALLAX && c.experts.signal == ExpertSignalKind::ADAPTERS)
    fail(fmt::format("topology.pipeline_stages = {} with experts.signal = \"adapters\" is not "
                     "built yet; use \"sketches\" (or \"none\")", P));
  if (c.train.device != DeviceKind::CPU)
    fail(fmt::format("topology.pipeline_stages = {} is built for train.device = \"cpu\" only; "
                     "got \"{}\"", P, to_string(c.train.device)));
  const PipelineSplit split(c);
  for (int s = 0; s < P; ++s)  // (the even split gives every stage a layer: P <= n_layers)
    if (split.layers(s).end <= split.layers(s).begin)
      fail(fmt::format("topology.pipeline_split = \"{}\" with {} stages of model.n_layers = {} "
                       "leaves stage {} without a layer; use fewer stages or \"even\"",
                       to_string(c.topology.pipeline_split), P, c.model.n_layers, s));
  if (c.sync.island_every != 1)
    fail(fmt::format("topology.pipeline_stages = {} with sync.island_every = {}: a stage has no "
                     "island peers to average with; use 1", P, c.sync.island_every));
}

// Rules that a per-field range cannot express.
void check_cross_fields(const Config& c) {
  check_pipeline(c);
  const auto& m = c.model;
  if (m.d_model % m.n_heads != 0)
    fail(fmt::format("model.d_model = {}: must be divisible by model.n_heads ({})", m.d_model, m.n_heads));
  if (m.head_dim() % 2 != 0)
    fail(fmt::format("model.d_model / model.n_heads = {}: the head dimension must be even (RoPE rotates pairs)",
                     m.head_dim()));
  if (c.train.batch_size % c.train.micro_batches != 0)
    fail(fmt::format("train.micro_batches = {} must divide train.batch_size = {}",
                     c.train.micro_batches, c.train.batch_size));
  if (c.data.dir.empty())
    fail("data.dir = \"\": must name the output folder of `parallax data prepare`");
  const auto& x = c.experts;
  for (auto [name, v] : {std::pair{"experts.adapter_rank", x.adapter_rank},
                         std::pair{"experts.surrogate_rank", x.surrogate_rank},
                         std::pair{"experts.update_rank", x.update_rank}})
    if (v > m.d_model)
      fail(fmt::format("{} = {}: must be <= model.d_model ({})", name, v, m.d_model));
  if (x.signal == ExpertSignalKind::ADAPTERS && x.adapter_rank < 1)
    fail(fmt::format("experts.adapter_rank = {}: must be >= 1 when experts.signal = \"adapters\"",
                     x.adapter_rank));
  const auto& t = c.topology;
  if (c.sync.backbone_sync == BackboneSyncKind::SYNCER && t.syncers < 1)
    fail("topology.syncers = 0: must be >= 1 when sync.backbone_sync = \"syncer\"");
  if (c.sync.backbone_sync == BackboneSyncKind::ALLREDUCE && t.syncers > 0)
    fail(fmt::format("topology.syncers = {}: must be 0 when sync.backbone_sync = \"allreduce\" "
                     "(syncer ranks need backbone_sync = \"syncer\")", t.syncers));
  const int64_t world = int64_t(t.islands) * t.ranks_per_island + t.syncers + t.expert_workers;
  if (world > (int64_t(1) << 24))
    fail(fmt::format("topology: {} islands x {} ranks + {} syncers + {} expert workers = {} ranks: "
                     "must be at most {}", t.islands, t.ranks_per_island, t.syncers, t.expert_workers,
                     world, int64_t(1) << 24));
}

}  // namespace

void validate_config(const Config& c) {
  for (const auto& f : cfg::config_fields()) check_range(f, c);
  check_cross_fields(c);
}

void check_supported(const Config& c) {
  const auto& t = c.topology;
  const auto& y = c.sync;
  if (c.train.mode == TrainMode::PARALLAX) {
    const auto& x = c.experts;
    if (x.signal == ExpertSignalKind::ADAPTERS) {
      if (t.ranks_per_island != 1)
        fail(fmt::format("experts.signal = \"adapters\" with topology.ranks_per_island = {} is "
                         "not supported yet (an island's ranks would share adapters); use 1",
                         t.ranks_per_island));
      if (x.adapter_rank > x.update_rank)
        fail(fmt::format("experts.adapter_rank = {}: deltas are sent at full adapter rank, which "
                         "must be at most experts.update_rank ({})", x.adapter_rank, x.update_rank));
    }
    if (x.view == ViewKind::LOWRANK &&
        x.surrogate_rank > std::min(c.model.d_model, c.model.expert_hidden))
      fail(fmt::format("experts.surrogate_rank = {}: must be at most min(model.d_model, "
                       "model.expert_hidden) = {}", x.surrogate_rank,
                       std::min(c.model.d_model, c.model.expert_hidden)));
    if (x.adapter_rank != 0 && x.signal != ExpertSignalKind::ADAPTERS)
      fail(fmt::format("experts.adapter_rank = {} with experts.signal = \"sketches\": adapters "
                       "are trained only under the adapter signal; use 0 (frozen views)",
                       x.adapter_rank));
    if (x.sparsity_2of8)
      fail("experts.sparsity_2of8 = true is not supported yet; use false");
    if (x.ternary_native && x.view != ViewKind::TERNARY)
      fail(fmt::format("experts.ternary_native = true needs experts.view = \"ternary\" (the views "
                       "are the ternary forms the experts compute with); got view \"{}\": use "
                       "false with views \"lowrank\" and \"full\"", to_string(x.view)));
    if (x.view == ViewKind::FULL && x.signal == ExpertSignalKind::NONE) {
      // the SPES-style baseline: a home learns from its own island's tokens only
      if (t.expert_workers != 0)
        fail(fmt::format("topology.expert_workers = {} with experts.view = \"full\" and "
                         "experts.signal = \"none\" (the SPES-style baseline): an expert worker "
                         "has no tokens of its own, so its experts would never train; use 0 "
                         "(homes on the learners) or signal \"sketches\"", t.expert_workers));
      if (t.ranks_per_island != 1)
        fail(fmt::format("topology.ranks_per_island = {} with experts.view = \"full\" and "
                         "experts.signal = \"none\" (the SPES-style baseline) is not supported "
                         "yet: a home would learn from its own rank's tokens only, not from its "
                         "whole island's; use 1", t.ranks_per_island));
    }
    if (t.expert_workers > c.model.moe_layers() * c.model.n_experts)
      fail(fmt::format("topology.expert_workers = {}: more workers than routed experts ({} MoE "
                       "layers x {} experts); every worker must home at least one",
                       t.expert_workers, c.model.moe_layers(), c.model.n_experts));
    if (x.private_layers > c.model.dense_layers)
      fail(fmt::format("experts.private_layers = {}: private layers are the leading dense "
                       "layers; must be at most model.dense_layers ({})",
                       x.private_layers, c.model.dense_layers));
    if (x.home_device != DeviceKind::CPU) {
      const std::string hd = fmt::format("experts.home_device = \"{}\"", to_string(x.home_device));
      if (x.signal == ExpertSignalKind::ADAPTERS)
        fail(hd + " with experts.signal = \"adapters\" is not built yet (the deltas fold into "
                  "the masters on the host); use \"sketches\" or home_device = \"cpu\"");
      if (x.ternary_native)
        fail(hd + " with experts.ternary_native = true is not built yet; use false or "
                  "home_device = \"cpu\"");
      if (c.train.optimizer != OptimizerKind::ADAMW)
        fail(hd + " steps the experts with AdamW only; use train.optimizer = \"adamw\"");
      if (x.home_device == DeviceKind::CUDA &&
          (c.model.d_model % 8 != 0 || c.model.expert_hidden % 8 != 0))
        fail(fmt::format("{} needs model.d_model and model.expert_hidden multiples of 8 (the "
                         "grouped expert FFN); got {} and {}", hd, c.model.d_model,
                         c.model.expert_hidden));
    }
  } else if (c.experts.ternary_native) {
    fail(fmt::format("experts.ternary_native = true is built for train.mode = \"parallax\" "
                     "only; got mode \"{}\": use false", to_string(c.train.mode)));
  } else if (c.experts.home_device != DeviceKind::CPU) {
    fail(fmt::format("experts.home_device = \"{}\": expert homes are mode \"parallax\"'s; use "
                     "\"cpu\" or train.mode = \"parallax\"", to_string(c.experts.home_device)));
  } else if (t.expert_workers != 0) {
    fail(fmt::format("topology.expert_workers = {}: expert workers are homes of mode "
                     "\"parallax\"; set it to 0 or train.mode = \"parallax\"",
                     t.expert_workers));
  }
  if (c.train.recompute != RecomputeKind::NONE && c.train.device == DeviceKind::CUDA)
    fail(fmt::format("train.recompute = \"{}\" is not built for train.device = \"cuda\" yet; use \"none\"",
                     to_string(c.train.recompute)));
  if (c.train.zero == 1 && c.train.device == DeviceKind::CUDA)
    fail("train.zero = 1 is not built for train.device = \"cuda\" yet; use 0");
  if (c.train.zero == 1 && y.island_every != 1)
    fail(fmt::format("train.zero = 1 shards the optimizer over the ranks that all-reduce every "
                     "step; sync.island_every = {} averages parameters instead: use 0 or "
                     "island_every = 1", y.island_every));
  if (c.train.device == DeviceKind::CUDA) {
    if (const std::string why = device_learner_unsupported(c); !why.empty())
      fail(fmt::format("train.device = \"cuda\": {}; use device = \"cpu\"", why));
    if (c.data.eval_without_routed)
      fail("data.eval_without_routed = true is not supported with train.device = \"cuda\" yet; "
           "use false");
    if (c.model.balance != BalanceKind::AUX)
      fail("model.balance = \"bias\" is not supported with train.device = \"cuda\" yet; use "
           "\"aux\"");
    if (c.train.optimizer != OptimizerKind::ADAMW)
      fail("train.optimizer = \"sgd\" is not supported with train.device = \"cuda\"; use "
           "\"adamw\"");
  }
  if (c.train.mode == TrainMode::SYNC && t.syncers != 0)
    fail(fmt::format("topology.syncers = {}: mode \"sync\" has no outer sync to serve; use 0 "
                     "syncers or mode \"diloco\" with sync.backbone_sync = \"syncer\"",
                     t.syncers));
  if (y.island_every != 1 && c.train.mode != TrainMode::DILOCO)
    fail(fmt::format("sync.island_every = {}: the hierarchical variant needs train.mode = "
                     "\"diloco\"; use 1", y.island_every));
  if (c.train.mode == TrainMode::DILOCO && y.backbone_every % y.island_every != 0)
    fail(fmt::format("sync.backbone_every = {}: must be a multiple of sync.island_every ({}) so "
                     "an island agrees on its parameters at every outer sync",
                     y.backbone_every, y.island_every));
  if (y.grace_steps != 0 && (c.train.deterministic || y.backbone_sync != BackboneSyncKind::SYNCER))
    fail(fmt::format("sync.grace_steps = {}: a grace window needs sync.backbone_sync = "
                     "\"syncer\" and train.deterministic = false", y.grace_steps));
  if (c.train.deterministic && y.quorum != 0 && y.quorum != t.islands)
    fail(fmt::format("sync.quorum = {} with train.deterministic = true: a deterministic run "
                     "merges every island; set quorum = 0 (all) or deterministic = false",
                     y.quorum));
  if (y.quorum > t.islands)
    fail(fmt::format("sync.quorum = {}: must be at most topology.islands ({})", y.quorum,
                     t.islands));
  if (y.fragments > c.model.n_layers)
    fail(fmt::format("sync.fragments = {}: must be at most model.n_layers ({})", y.fragments,
                     c.model.n_layers));
  if (y.backbone_every < y.fragments)
    fail(fmt::format("sync.backbone_every = {}: must be at least sync.fragments ({}) so the "
                     "fragments sync at distinct steps", y.backbone_every, y.fragments));
}

}  // namespace px
