// make_plan: memory, FLOPs and traffic per role from the config alone.
#include "train/plan.hpp"
#include "train/plan_pipeline.hpp"  // defines: pipeline_stage_plan
#include "train/mfu.hpp"            // defines: train_flops_per_token
#include "train/plan_experts.hpp"   // defines: view_bytes, add_signal_bytes, expert_worker_plan, ...

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "data/token_shards.hpp"    // defines: shard_token_count
#include "experts/parallax_experts.hpp"  // defines: ParallaxExperts::buffer_bytes
#include "sync/outer_sync.hpp"      // defines: OuterSync::scratch_bytes
#include "parallel/expert_parallel.hpp"  // defines: ExpertParallel::buffer_bytes
#include "backend/learner_model.hpp"  // defines: learner_model_memory
#include "model/moe_model.hpp"      // defines: MoeModel::activation_bytes
#include "model/param_layout.hpp"   // defines: ParamLayout
#include "parallel/comm.hpp"        // defines: Tier, tier_name, ring_allreduce_bytes
#include "sync/codec.hpp"           // defines: encoded_bytes
#include "experts/expert_signal.hpp"  // defines: experts_frozen
#include "wire/push_header.hpp"     // defines: PushHeader

namespace px {

namespace {
// The syncers' memory and traffic: their units of the P synced parameters (DESIGN §5).
RolePlan syncer_plan(const Config& cfg, const ParamLayout& L, double P) {
  const TopologyConfig& t = cfg.topology;
  const int I = t.islands, R = t.ranks_per_island;
  const bool parallax = cfg.train.mode == TrainMode::PARALLAX;
  const double H = cfg.sync.backbone_every;
  const int bb = (int)Tier::BACKBONE;
  RolePlan sr;
  sr.role = "syncer";
  sr.count = t.syncers;
  sr.outer_bytes = 8.0 * P / t.syncers;  // global shards + outer momentum
  // the pushes of one fragment's units (the fragments are staggered: a fragment's round is
  // merged before the next one is due): every island's push as received (encoded); one merge
  // at a time: the merged delta and its reply (one buffer for every island) and one chunk
  // decoded per island (a tensor piece with RDA); the push being received. Its shards'
  // initial values are computed in place.
  const double unit = std::ceil(P / ((double)cfg.sync.fragments * R));
  const double live = std::min(std::ceil((double)R / t.syncers), std::ceil((double)cfg.sync.fragments * R / t.syncers));
  const double push = sizeof(PushHeader) + (double)encoded_bytes(cfg.sync.outer_dtype, (size_t)unit);
  double tensor = 0;  // the largest synced tensor: a merge decodes at most one piece of one at a time
  for (const ParamSpec& s : L.specs)
    if (!parallax || s.arena == Arena::BACKBONE) tensor = std::max(tensor, (double)s.size);
  const double chunk = std::min({unit, tensor, cfg.sync.merge == MergeKind::RDA ? unit : (double)Syncer::kMergeChunk});
  sr.other_bytes = live * I * push + 8.0 * unit + 4.0 * I * chunk + push;
  sr.bytes_per_step.assign(kTierCount, 0.0);
  sr.bytes_per_step[bb] = 4.0 * P / t.syncers * I / H;  // a reply to every island
  return sr;
}
}  // namespace

Plan make_plan(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const TopologyConfig& t = cfg.topology;
  const ParamLayout L(m);
  Plan p;
  p.params_backbone = (int64_t)L.backbone_size;
  p.params_experts = (int64_t)L.experts_size;
  p.params_total = p.params_backbone + p.params_experts;
  const int64_t d = m.d_model, h = m.expert_hidden, E = m.n_experts;
  const int64_t per_expert = (m.expert_act == ExpertActKind::SWIGLU ? 3 : 2) * d * h;
  // active matmul parameters per token (the embedding lookup is not a product)
  p.params_active = p.params_backbone - (int64_t)m.vocab * d + m.moe_layers() * m.top_k * per_expert;
  p.train_flops_per_token = train_flops_per_token(m);
  const int I = t.islands, R = t.ranks_per_island, NL = I * R;
  const int B = cfg.train.batch_size, T = m.seq_len;
  const int data_parts = I * (R / t.pipeline_stages);  // (every stage of an island: one part)
  p.tokens_per_step = (int64_t)B * T * data_parts;
  const bool sync = cfg.train.mode == TrainMode::SYNC;
  const bool parallax = cfg.train.mode == TrainMode::PARALLAX;
  // the parameters the backbone tier syncs: all of them, or the backbone alone in parallax
  const int64_t P = parallax ? p.params_backbone : p.params_total;
  const double H = cfg.sync.backbone_every, K = cfg.sync.island_every;

  RolePlan lr;
  lr.role = "learner";
  lr.count = NL;
  // sync: every learner's model holds every expert's weights and gradients; AdamW covers the
  // experts it computes (expert parallel) only. ZeRO-1 (train.zero = 1): each rank of the
  // data-parallel group (all learners in sync, the island otherwise) holds the moments of its
  // 1/D of every all-reduced arena
  const int DP = sync ? NL : R;
  const double zero_div = cfg.train.zero == 1 ? DP : 1.0;
  const double held = sync ? p.params_backbone / zero_div + (double)p.params_experts / NL
                           : (double)p.params_total / zero_div;
  lr.param_bytes = 4.0 * p.params_total;
  lr.grad_bytes = 4.0 * p.params_total;
  lr.optim_bytes = 8 * held;
  // parallax: the model holds no routed experts (the homes' masters and the views do); the
  // optimizer covers the backbone and, when W = 0, this rank's share of the expert masters
  const int W = t.expert_workers;
  const double homed_params = parallax && W == 0 ? (double)p.params_experts / NL : 0.0;
  const int M_ALL = m.moe_layers();
  if (parallax) {
    // weights: the backbone, my experts' masters (W = 0) and the views of the others
    const double remote = (double)M_ALL * E - (W == 0 ? (double)M_ALL * E / NL : 0.0);
    lr.param_bytes = 4.0 * p.params_backbone + 4.0 * homed_params + remote * view_bytes(cfg);
    // gradients: the backbone's, plus my experts' pending sum at the home
    lr.grad_bytes = 4.0 * p.params_backbone + 4.0 * homed_params;
    lr.optim_bytes = 8.0 * p.params_backbone / zero_div + 12.0 * homed_params;
  }
  const int MB = cfg.train.micro_batches;  // activations are held for one micro-batch
  lr.act_bytes = (double)MoeModel<float>::activation_bytes(m, B / MB, T, learner_model_memory(cfg));
  // the token shards a learner holds: its part of the training split and the validation split
  p.train_tokens = shard_token_count(cfg.data.dir, "train");
  p.val_tokens = shard_token_count(cfg.data.dir, "val");
  double token_bytes = 0;
  if (p.train_tokens > 0) token_bytes += 4.0 * std::ceil((double)p.train_tokens / data_parts);
  if (p.val_tokens > 0) token_bytes += 4.0 * (double)p.val_tokens;
  if (t.pipeline_stages > 1) {
    for (int s = 0; s < t.pipeline_stages; ++s) p.roles.push_back(pipeline_stage_plan(cfg, s, token_bytes));
    if (parallax && t.expert_workers > 0)
      p.roles.push_back(expert_worker_plan(cfg, (double)p.params_experts, data_parts));
    if (t.syncers > 0) p.roles.push_back(syncer_plan(cfg, L, P));
    return p;
  }
  lr.other_bytes += token_bytes;
  const int max_rows = (B / MB) * T * m.top_k;
  if (parallax) lr.other_bytes += ParallaxExperts::buffer_bytes(cfg, max_rows, m.moe_layers(), 1);
  if (sync && NL > 1) lr.other_bytes += ExpertParallel::buffer_bytes(m, max_rows, NL);
  // transients, the larger of: one fragment's outer sync (and, at a home on the learners, a
  // step's decoded sketches), or while it is built, mode parallax's one initial expert at a
  // time (model/expert_source.hpp: the homes and views are built expert by expert)
  const double one_expert = 4.0 * 3 * d * h;
  double run_transient = 0, build_transient = 0;
  if (!sync) run_transient += OuterSync::scratch_bytes(cfg, std::ceil((double)P / cfg.sync.fragments), R, I);
  // ZeRO-1's reduce-scatter receives my shard of the largest sharded arena
  if (cfg.train.zero == 1 && DP > 1)
    run_transient = std::max(run_transient, 4.0 * std::ceil((sync ? p.params_backbone : (double)P) / DP));
  if (parallax) build_transient = one_expert;
  // a home on the learners: a step's sketches (SketchHome keeps the codes until its update)
  if (parallax && W == 0) run_transient += sketch_queue_bytes(cfg, std::ceil((double)M_ALL * E / NL), NL - 1);
  lr.other_bytes += std::max(run_transient, build_transient);
  lr.bytes_per_step.assign(kTierCount, 0.0);
  auto& bps = lr.bytes_per_step;
  const int isl = (int)Tier::ISLAND, bb = (int)Tier::BACKBONE, ep = (int)Tier::EXPERT_PARALLEL;
  if (sync) {
    bps[isl] = (double)ring_allreduce_bytes(4 * p.params_backbone, NL);
    // each MoE layer: rows to other ranks, there and back, in forward and backward
    const double rows_out = (double)B * T * m.top_k * (NL - 1) / NL;
    bps[ep] = NL > 1 ? m.moe_layers() * 4.0 * rows_out * d * 4 : 0;
  } else {
    const double shard = (double)P / R;
    // my shard's global parameters and outer momentum (+ its error-feedback residual)
    lr.outer_bytes = 8.0 * shard + (cfg.sync.outer_dtype != WireDtype::FP32 ? 4.0 * shard : 0);
    if (R > 1) bps[isl] = K > 1 ? ring_allreduce_bytes(4 * P, R) / K
                                : (double)ring_allreduce_bytes(4 * P, R);
    if (R > 1) bps[isl] += 4.0 * shard * (R - 1) / H;  // shards all-gathered after each sync
    const WireDtype dt = cfg.sync.outer_dtype;
    const double enc = (double)encoded_bytes(dt, (size_t)shard);
    double per_sync = 0;
    if (cfg.sync.backbone_sync == BackboneSyncKind::SYNCER)
      per_sync = sizeof(PushHeader) + enc;
    else if (dt == WireDtype::FP32 && cfg.sync.merge == MergeKind::MEAN)
      per_sync = (double)ring_allreduce_bytes((int64_t)(4 * shard), I);
    else
      per_sync = enc * (I - 1);
    bps[bb] = per_sync / H;
  }
  const int M = m.moe_layers();
  if (parallax) {
    // sketches (or adapter deltas) of every expert homed elsewhere, a bundle header per home
    const double remote = W > 0 ? (double)M * E : (double)M * E * (NL - 1) / NL;
    const double homes = W > 0 ? W : std::min<double>(NL, (double)M * E) - 1;
    add_signal_bytes(cfg, remote, homes, bps);
    const bool lowrank = cfg.experts.view == ViewKind::LOWRANK;
    const double every = lowrank ? cfg.experts.surrogate_every : cfg.experts.snapshot_every;
    if (W == 0 && !experts_frozen(cfg.experts))  // my experts' views to every other learner
      bps[(int)(lowrank ? Tier::SURROGATE : Tier::SNAPSHOT)] =
          (4.0 + (double)M * E / NL * view_message_bytes(cfg)) * (NL - 1) / every;
  }
  p.roles.push_back(lr);
  if (parallax && W > 0) p.roles.push_back(expert_worker_plan(cfg, (double)p.params_experts, NL));
  if (t.syncers > 0) p.roles.push_back(syncer_plan(cfg, L, P));
  return p;
}

namespace {
std::string human(double b) {
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 1000 && i < 4) b /= 1000, ++i;
  return fmt::format("{:.2f} {}", b, u[i]);
}
}  // namespace

std::string plan_json(const Plan& p) {
  std::string o = fmt::format("{{\"params_total\": {}, \"params_backbone\": {}, \"params_experts\": {}, "
                              "\"params_active\": {}, \"tokens_per_step\": {}, \"roles\": [",
                              p.params_total, p.params_backbone, p.params_experts, p.params_active,
                              p.tokens_per_step);
  for (size_t i = 0; i < p.roles.size(); ++i) {
    const RolePlan& r = p.roles[i];
    o += fmt::format("{}{{\"role\": \"{}\", \"count\": {}, \"param_bytes\": {:.0f}, \"grad_bytes\": {:.0f}, "
                     "\"optim_bytes\": {:.0f}, \"outer_bytes\": {:.0f}, \"act_bytes\": {:.0f}, "
                     "\"other_bytes\": {:.0f}, \"total_bytes\": {:.0f}, \"bytes_per_step\": {{",
                     i ? ", " : "", r.role, r.count, r.param_bytes, r.grad_bytes, r.optim_bytes,
                     r.outer_bytes, r.act_bytes, r.other_bytes, r.total());
    bool first = true;
    for (int t = 0; t < kTierCount; ++t)
      if (r.bytes_per_step[t] > 0) {
        o += fmt::format("{}\"{}\": {:.1f}", first ? "" : ", ", tier_name((Tier)t), r.bytes_per_step[t]);
        first = false;
      }
    o += "}}";
  }
  return o + "]}\n";
}

std::string format_plan(const Config& cfg, const Plan& p) {
  std::string o;
  auto count = [](double n) {
    return n >= 1e9 ? fmt::format("{:.2f} B", n / 1e9) : fmt::format("{:.2f} M", n / 1e6);
  };
  o += fmt::format("model: {} parameters ({} backbone, {} routed experts), {} active per token\n",
                   count(p.params_total), count(p.params_backbone), count(p.params_experts),
                   count(p.params_active));
  o += fmt::format("training FLOPs per token: {:.3g} (6 x active + causal attention)\n",
                   p.train_flops_per_token);
  o += fmt::format("mode {}, {} islands x {} ranks{} + {} syncers + {} expert workers; {} tokens per "
                   "step ({} micro-batch(es) of {} sequences per learner)\n",
                   to_string(cfg.train.mode), cfg.topology.islands, cfg.topology.ranks_per_island,
                   cfg.topology.pipeline_stages > 1
                       ? fmt::format(" ({} pipeline stages)", cfg.topology.pipeline_stages)
                       : std::string(),
                   cfg.topology.syncers, cfg.topology.expert_workers, p.tokens_per_step,
                   cfg.train.micro_batches, cfg.train.batch_size / cfg.train.micro_batches);
  if (p.train_tokens >= 0 && p.val_tokens >= 0)
    o += fmt::format("token shards held by a learner: {} of the {} training tokens, all {} "
                     "validation tokens (int32)\n",
                     count(std::ceil((double)p.train_tokens / p.roles[0].count)), count((double)p.train_tokens),
                     count((double)p.val_tokens));
  else
    o += fmt::format("data.dir '{}' is not readable here: the token shards a learner holds are not "
                     "counted\n", cfg.data.dir);
  for (const RolePlan& r : p.roles) {
    o += fmt::format("\n{} ({} ranks): memory {}\n", r.role, r.count, human(r.total()));
    o += fmt::format("  parameters {} | gradients {} | AdamW {} | outer state {} | activations {} | "
                     "buffers {}\n",
                     human(r.param_bytes), human(r.grad_bytes), human(r.optim_bytes),
                     human(r.outer_bytes), human(r.act_bytes), human(r.other_bytes));
    o += "  bytes sent per step (mean over an outer period):";
    double tot = 0;
    for (int i = 0; i < kTierCount; ++i)
      if (r.bytes_per_step[i] > 0) {
        o += fmt::format(" {} {}", tier_name((Tier)i), human(r.bytes_per_step[i]));
        tot += r.bytes_per_step[i];
      }
    o += fmt::format("{}\n", tot > 0 ? "" : " none");
    if (r.role.rfind("learner", 0) == 0 && tot > 0)
      o += fmt::format("  bytes sent per token this rank trains: {:.2f}\n",
                       tot / ((double)p.tokens_per_step / r.count));
  }
  return o;
}

}  // namespace px
