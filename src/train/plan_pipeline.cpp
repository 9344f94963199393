// make_plan's learners of pipelined islands (topology.pipeline_stages = P > 1): one role per
// stage, each from the arena spans, activation slots and messages of its own layers (mode
// parallax: and the views, routed rows and sketches of its own MoE layers).
#include "train/plan_pipeline.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "backend/pipeline_learner.hpp"  // defines: PipelineLearner::stage_memory
#include "experts/parallax_experts.hpp"  // defines: ParallaxExperts::buffer_bytes
#include "parallel/pipeline_split.hpp"     // defines: PipelineSplit
#include "train/plan_experts.hpp"        // defines: view_bytes, add_signal_bytes
#include "model/moe_model.hpp"           // defines: MoeModel::activation_bytes
#include "model/param_layout.hpp"        // defines: ParamLayout, ArenaSpan
#include "parallel/comm.hpp"             // defines: Tier, ring_allreduce_bytes
#include "sync/codec.hpp"                // defines: encoded_bytes
#include "sync/fragments.hpp"            // defines: FragmentPlan
#include "sync/outer_sync.hpp"           // defines: OuterSync::scratch_bytes

namespace px {

RolePlan pipeline_stage_plan(const Config& cfg, int stage, double token_bytes) {
  const ModelConfig& m = cfg.model;
  const int I = cfg.topology.islands, MB = cfg.train.micro_batches;
  const int D = cfg.topology.ranks_per_island / cfg.topology.pipeline_stages;  // ranks per stage
  const int B = cfg.train.batch_size, T = m.seq_len;
  const bool sync = cfg.train.mode == TrainMode::SYNC;
  const bool parallax = cfg.train.mode == TrainMode::PARALLAX;
  const ModelMemory mem = PipelineLearner::stage_memory(cfg, stage);
  const ParamLayout layout(m);  // (the spans alone: the plan allocates no model)
  // (mode parallax: the model holds no routed experts; the views of the stage's do)
  const PipelineSplit split(cfg);
  const std::array<ArenaSpan, 2> held = split.spans(layout, stage, !parallax);
  const double n = (double)held[0].size() + (double)held[1].size();
  const MoeLayerRange moe = split.moe_layers(stage);
  const double views = parallax ? (double)moe.count() * m.n_experts : 0;  // (all homed at the workers)
  RolePlan r;
  r.role = fmt::format("learner stage {}", stage);
  r.count = I * D;
  r.param_bytes = 4 * n + (parallax ? views * view_bytes(cfg) : 0);
  r.grad_bytes = 4 * n;
  // every element of the stage (no expert parallelism inside a stage), or with ZeRO-1 my 1/dp
  // of each arena's span, dp the stage's data-parallel group
  const int dp = sync ? I * D : D;
  const bool zero = cfg.train.zero == 1 && dp > 1;
  r.optim_bytes = 0;
  for (const ArenaSpan& span : held)
    r.optim_bytes += 8.0 * (zero ? std::ceil((double)span.size() / dp) : (double)span.size());
  r.act_bytes = (double)MoeModel<float>::activation_bytes(m, B / MB, T, mem);
  const bool first = stage == 0, last = stage + 1 == cfg.topology.pipeline_stages;
  const double boundary = 4.0 * (B / MB) * T * m.d_model;  // one micro-batch's [N, d] in fp32
  // the next stage's input gradient as received; my outputs and input gradients in flight (a
  // ring of kSendBuffers each)
  const int ring = PipelineLearner::kSendBuffers;
  r.other_bytes = token_bytes + (last ? 0 : (1 + ring) * boundary) + (first ? 0 : ring * boundary);
  // parallax: the stage's routed rows of every micro-batch in flight (ParallaxExperts)
  if (parallax)
    r.other_bytes += ParallaxExperts::buffer_bytes(cfg, (B / MB) * T * m.top_k, moe.count(), mem.slots);
  r.bytes_per_step.assign(kTierCount, 0.0);
  auto& bps = r.bytes_per_step;
  const int isl = (int)Tier::ISLAND, bb = (int)Tier::BACKBONE;
  // every micro-batch's output to the next stage, its input gradient to the previous one
  bps[isl] = ((last ? 0 : 1) + (first ? 0 : 1)) * MB * boundary;
  // the stage's gradients, all-reduced over the same stage of every island (sync) or over the
  // stage's ranks of the island (diloco)
  if (dp > 1) bps[isl] += (double)ring_allreduce_bytes((int64_t)(4 * n), dp);  // (or ZeRO-1's
  // reduce-scatter + all-gather: the same bytes)
  // parallax: the sketches of the stage's experts, a bundle header to every worker
  if (parallax) add_signal_bytes(cfg, views, cfg.topology.expert_workers, bps);
  // ZeRO-1's reduce-scatter receives my shard of the larger span
  const double zero_transient = zero ? 4.0 * std::ceil((double)std::max(held[0].size(), held[1].size()) / dp) : 0;
  if (sync) {
    r.other_bytes += zero_transient;
    return r;
  }
  // diloco: the stage's ranks of every island sync its parts of the fragments, rank r of the
  // stage its shard r, which the stage's ranks then all-gather
  const FragmentPlan frags(layout, cfg.sync.fragments, !parallax, held.data());
  double largest = 0;
  for (int f = 0; f < frags.count(); ++f) largest = std::max(largest, (double)frags.size(f));
  const double shard = n / D;
  r.outer_bytes = 8 * shard + (cfg.sync.outer_dtype != WireDtype::FP32 ? 4 * shard : 0);
  // (parallax: or while the views are built, one initial expert at a time)
  const double one_expert = parallax ? 4.0 * 3 * m.d_model * m.expert_hidden : 0;
  r.other_bytes += std::max({OuterSync::scratch_bytes(cfg, largest, D, I), zero_transient, one_expert});
  if (D > 1) bps[isl] += 4.0 * shard * (D - 1) / cfg.sync.backbone_every;  // the all-gathers
  const WireDtype dt = cfg.sync.outer_dtype;
  double per_period = 0;  // every fragment once per outer period
  for (int f = 0; f < frags.count(); ++f) {
    const double k = std::ceil((double)frags.size(f) / D);  // my shard of fragment f
    if (k == 0) continue;
    per_period += dt == WireDtype::FP32 && cfg.sync.merge == MergeKind::MEAN
                      ? (double)ring_allreduce_bytes((int64_t)(4 * k), I)
                      : (double)encoded_bytes(dt, (size_t)k) * (I - 1);
  }
  bps[bb] = per_period / cfg.sync.backbone_every;
  return r;
}

}  // namespace px
