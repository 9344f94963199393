// defines: make_learner_model
#include "backend/cpu_learner.hpp"       // defines: CpuLearner
#include "backend/device_learner.hpp"    // defines: DeviceLearner
#include "backend/device_support.hpp"    // defines: device_learner_unsupported
#include "backend/gpu_step.hpp"          // defines: GpuStepper
#include "backend/host_stepper.hpp"      // defines: HostStepper
#include "backend/learner_model.hpp"
#include "backend/pipeline_learner.hpp"  // defines: PipelineLearner
#include "backend/staged_learner.hpp"    // defines: StagedLearner

#include <stdexcept>

namespace px {

std::unique_ptr<LearnerModel> make_learner_model(const Config& cfg, Comm& dp, bool expert_parallel,
                                                 int micro_batch, const Topology* topo,
                                                 Comm* island) {
  if (cfg.topology.pipeline_stages > 1) {
    if (!island) throw std::logic_error("make_learner_model: a pipeline stage needs its island");
    return std::make_unique<PipelineLearner>(cfg, *island, dp, micro_batch, topo);
  }
  switch (cfg.train.device) {
    case DeviceKind::CUDA:
      return std::make_unique<DeviceLearner>(cfg, dp, micro_batch, topo,
                                             std::make_unique<GpuStepper>(cfg, micro_batch));
    case DeviceKind::STAGED:
      // the GPU's driver wherever it runs the config, the staged CPU learner elsewhere
      if (device_learner_unsupported(cfg).empty())
        return std::make_unique<DeviceLearner>(cfg, dp, micro_batch, topo,
                                               std::make_unique<HostStepper>(cfg, micro_batch));
      return std::make_unique<StagedLearner>(cfg, dp, expert_parallel, micro_batch, topo);
    case DeviceKind::CPU:
      break;
  }
  return std::make_unique<CpuLearner>(cfg, dp, expert_parallel, micro_batch, topo);
}

}  // namespace px
