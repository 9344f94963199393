// defines: HomeDevice::sgd_step (the default), make_home_device
#include "experts/home_device.hpp"

#include <stdexcept>

#include "experts/gpu_home_device.hpp"     // defines: GpuHomeDevice
#include "experts/host_home_device.hpp"    // defines: HostHomeDevice
#include "experts/staged_home_device.hpp"  // defines: StagedHomeDevice

namespace px {

void HomeDevice::sgd_step(float, float) {
  throw std::logic_error("this expert home device runs AdamW only (the config refuses SGD)");
}

std::unique_ptr<HomeDevice> make_home_device(const Config& cfg, size_t experts, HomeArrays host) {
  switch (cfg.experts.home_device) {
    case DeviceKind::STAGED:
      return std::make_unique<StagedHomeDevice>(cfg, experts);
    case DeviceKind::CUDA:
      return std::make_unique<GpuHomeDevice>(cfg, experts);
    case DeviceKind::CPU:
      break;
  }
  return std::make_unique<HostHomeDevice>(cfg, std::move(host));
}

}  // namespace px
