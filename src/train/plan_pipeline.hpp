#pragma once
// `parallax plan` for pipelined islands (topology.pipeline_stages = P > 1, D = R / P ranks per
// stage; modes sync, diloco and parallax): stage s's learners hold layers [s L / P, (s+1) L / P).
#include "config/config.hpp"  // defines: Config
#include "train/plan.hpp"     // defines: RolePlan

namespace px {

// The memory and traffic of stage `stage`'s learners (D per island). token_bytes: the
// token shards a learner holds.
RolePlan pipeline_stage_plan(const Config& cfg, int stage, double token_bytes);

}  // namespace px
