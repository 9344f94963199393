#pragma once
// `parallax plan CONFIG [--ranks N]` (DESIGN §11): per-role memory (parameters, optimizer
// state, outer state, activations), FLOPs per token and bytes per tier per step, computed from
// the config and topology alone (nothing is allocated, nothing trains). The byte formulas are
// the ones the counted MPI layer uses (ring all-reduce 2(p-1)/p, all-gather (p-1) x payload,
// pushes header + payload), so a run's /comm/<tier>/bytes can be checked against them.
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"  // defines: Config

namespace px {

struct RolePlan {
  std::string role;  // "learner" or "syncer"
  int count = 0;     // ranks with this role
  double param_bytes = 0, grad_bytes = 0, optim_bytes = 0, outer_bytes = 0, act_bytes = 0;
  // working buffers: the routed experts' per-layer rows (parallax), message buffers, the
  // token shards held in memory
  double other_bytes = 0;
  double total() const {
    return param_bytes + grad_bytes + optim_bytes + outer_bytes + act_bytes + other_bytes;
  }
  // bytes this rank sends per step, averaged over an outer period, by tier (tier_name order)
  std::vector<double> bytes_per_step;
};

struct Plan {
  int64_t params_total = 0, params_backbone = 0, params_experts = 0, params_active = 0;
  double train_flops_per_token = 0;  // 6 x active matmul params + attention
  int64_t tokens_per_step = 0;       // all islands
  // the token shards of data.dir (-1: not readable, then not counted in the learners' memory)
  int64_t train_tokens = -1, val_tokens = -1;
  std::vector<RolePlan> roles;
};

Plan make_plan(const Config& cfg);
std::string format_plan(const Config& cfg, const Plan& p);
// One JSON object: the model's counts, tokens per step and per role its count, memory by
// kind and in total (bytes) and bytes sent per step by tier (for scripts: plan vs measured).
std::string plan_json(const Plan& p);

}  // namespace px
