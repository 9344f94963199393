#pragma once
// What a device with its own memory (DeviceLearner: train.device = "cuda", and "staged"
// wherever it can) runs of a config: the CPU learner's features it does not have yet.
#include <string>

#include "config/config.hpp"  // defines: Config

namespace px {

// Why cfg cannot run on DeviceLearner ("" when it can). Used by train.device = "cuda"'s
// config checks and by "staged" to choose this driver wherever it runs the config (the rest
// runs on StagedLearner).
std::string device_learner_unsupported(const Config& cfg);
// Whether DeviceLearner runs cfg's routed experts on the host (mode parallax; mode sync with
// several learners: expert parallelism), the device stepping the backbone alone.
bool routed_experts_on_host(const Config& cfg);

}  // namespace px
