#pragma once
// experts.home_device = "cuda": an expert home's state and arithmetic on this rank's GPU (the
// node-local rank's, as the learners'; kernels/home_state.cuh). The one file of experts/ that
// knows whether CUDA was compiled in; without it (or without a visible GPU) construction
// throws UserError naming the field.
#include <memory>

#include "experts/home_device.hpp"  // defines: HomeDevice

namespace px {

class GpuHomeDevice final : public HomeDevice {
 public:
  GpuHomeDevice(const Config& cfg, size_t experts);
  ~GpuHomeDevice() override;

  void upload(const float* masters, const float* grads, const float* m, const float* v) override;
  void download(float* masters, float* grads, float* m, float* v) override;
  void accumulate_rows(int slot, const float* X, const float* dY, int rows) override;
  void add_grad(size_t offset, const float* g, size_t n) override;
  bool any_grad() override;
  double scale_grads_sum_squares(float inv) override;
  void scale_grads(float s) override;
  void adamw_step(float lr, float wd, int step) override;
  void zero_grads() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace px
