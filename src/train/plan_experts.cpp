// defines: view_bytes, view_message_bytes, sketch_rows, add_signal_bytes, sketch_queue_bytes,
// expert_worker_plan
#include "train/plan_experts.hpp"

#include <algorithm>
#include <cmath>

#include "experts/expert_signal.hpp"  // defines: experts_frozen
#include "model/full_view.hpp"        // defines: full_expert_wire_bytes
#include "model/lowrank_view.hpp"     // defines: lowrank_expert_wire_bytes
#include "model/ternary_view.hpp"     // defines: ternary_expert_wire_bytes
#include "parallel/comm.hpp"          // defines: Tier, kTierCount
#include "wire/sketch_bundle.hpp"     // defines: SketchBundleHeader
#include "wire/sketch_wire.hpp"       // defines: sketch_wire_bytes

namespace px {

namespace {
double matrices(const ModelConfig& m) { return m.expert_act == ExpertActKind::SWIGLU ? 3 : 2; }
double one_sketch_bytes(const Config& cfg) {
  return (double)sketch_wire_bytes((SketchElem)cfg.sketch.dtype, (int)std::ceil(sketch_rows(cfg)),
                                   cfg.model.d_model);
}
}  // namespace

double view_bytes(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const double mats = matrices(m), d = m.d_model, h = m.expert_hidden;
  switch (cfg.experts.view) {
    case ViewKind::LOWRANK: return 4.0 * cfg.experts.surrogate_rank * mats * (d + h);
    case ViewKind::FULL: return 4.0 * mats * d * h;
    case ViewKind::TERNARY: break;
  }
  return mats * d * h / 4.0 + 4.0 * ((mats - 1) * h + d);  // codes + scales
}

double view_message_bytes(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const auto act = m.expert_act == ExpertActKind::SWIGLU ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
  const int d = m.d_model, h = m.expert_hidden;
  switch (cfg.experts.view) {
    case ViewKind::LOWRANK: return 12.0 + (double)lowrank_expert_wire_bytes(act, d, h, cfg.experts.update_rank);
    case ViewKind::FULL: return 12.0 + (double)full_expert_wire_bytes(act, d, h);
    case ViewKind::TERNARY: break;
  }
  return 12.0 + (double)ternary_expert_wire_bytes(act, d, h);
}

double sketch_rows(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const int MB = cfg.train.micro_batches;
  return std::min((double)(cfg.train.batch_size / MB) * m.seq_len * m.top_k / m.n_experts,
                  std::ceil((double)cfg.sketch.tokens / MB));
}

void add_signal_bytes(const Config& cfg, double remote, double homes, std::vector<double>& bps) {
  const ModelConfig& m = cfg.model;
  const double header = homes * sizeof(SketchBundleHeader);
  if (cfg.experts.signal == ExpertSignalKind::SKETCHES) {
    const double sk = cfg.train.micro_batches * (4.0 + one_sketch_bytes(cfg));  // + its length
    bps[(int)Tier::SKETCH] = remote * sk / cfg.experts.sketch_every + header;
  } else if (cfg.experts.signal == ExpertSignalKind::NONE) {  // frozen experts or SPES: flags only
    bps[(int)Tier::CONTROL] += header;
  } else {  // adapter deltas: A and B of every weight of every remote expert, fp32
    const double r = cfg.experts.adapter_rank;
    bps[(int)Tier::ADAPTER] = (remote * (20.0 + 4.0 * r * matrices(m) * (m.d_model + m.expert_hidden)) +
                               4.0 * homes) / cfg.experts.adapter_every;
    bps[(int)Tier::CONTROL] += header;  // empty bundles: flags only
  }
}

double sketch_queue_bytes(const Config& cfg, double homed, double sources) {
  const bool sketches = cfg.experts.signal == ExpertSignalKind::SKETCHES && !experts_frozen(cfg.experts);
  if (!sketches || homed <= 0) return 0.0;
  const double d = cfg.model.d_model, h = cfg.model.expert_hidden, MB = cfg.train.micro_batches;
  const double rows = sketch_rows(cfg) * MB * sources;  // one expert's rows of a step
  return homed * MB * sources * one_sketch_bytes(cfg) + rows * 8.0 * d + 4.0 * rows * (2.0 * d + 6.0 * h);
}

RolePlan expert_worker_plan(const Config& cfg, double params_experts, int data_parts) {
  const ModelConfig& m = cfg.model;
  const TopologyConfig& t = cfg.topology;
  const int W = t.expert_workers, NL = t.islands * t.ranks_per_island;
  RolePlan wr;
  wr.role = "expert worker";
  wr.count = W;
  const double mine = params_experts / W;
  wr.param_bytes = 4 * mine;
  wr.grad_bytes = 4 * mine;
  wr.optim_bytes = 8 * mine;
  // the larger of: the initial expert it computes at a time to start a master from, a step's
  // sketches (one source per data part)
  const double experts = (double)m.moe_layers() * m.n_experts;
  const double one_expert = 4.0 * 3 * m.d_model * m.expert_hidden;
  const double homed = std::ceil(experts / W);
  wr.other_bytes = std::max(one_expert, sketch_queue_bytes(cfg, homed, data_parts));
  // view "lowrank": the islands' surrogates of its experts (and their copy in a checkpoint), a
  // view message (and, to pipelined islands, its stages' parts)
  if (cfg.experts.view == ViewKind::LOWRANK)
    wr.other_bytes += 2 * homed * view_bytes(cfg) +
                      homed * view_message_bytes(cfg) * (t.pipeline_stages > 1 ? 2 : 1);
  wr.bytes_per_step.assign(kTierCount, 0.0);
  // frozen experts send no views; the others: a message to every learner, each of its experts
  // to the learners that run it (every learner, or a pipeline stage's: one per data part)
  const bool lowrank = cfg.experts.view == ViewKind::LOWRANK;
  const double every = lowrank ? cfg.experts.surrogate_every : cfg.experts.snapshot_every;
  if (!experts_frozen(cfg.experts))
    wr.bytes_per_step[(int)(lowrank ? Tier::SURROGATE : Tier::SNAPSHOT)] =
        (4.0 * NL + experts / W * view_message_bytes(cfg) * data_parts) / every;
  return wr;
}

}  // namespace px
