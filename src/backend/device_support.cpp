// defines: device_learner_unsupported
#include "backend/device_support.hpp"

#include <fmt/format.h>

namespace px {

std::string device_learner_unsupported(const Config& cfg) {
  const auto& t = cfg.topology;
  if (t.pipeline_stages > 1)
    return fmt::format("topology.pipeline_stages = {} is not built on it yet", t.pipeline_stages);
  if (cfg.train.zero == 1) return "train.zero = 1 is not built on it yet";
  if (cfg.train.micro_batches != 1)
    return fmt::format("train.micro_batches = {} is not built on it yet", cfg.train.micro_batches);
  return "";
}

bool routed_experts_on_host(const Config& cfg) {
  const auto& t = cfg.topology;
  return cfg.train.mode == TrainMode::PARALLAX ||
         (cfg.train.mode == TrainMode::SYNC && t.islands * t.ranks_per_island > 1);
}

}  // namespace px
