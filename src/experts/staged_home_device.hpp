#pragma once
// experts.home_device = "staged" (tests): the home's state in private CPU vectors and the CPU
// home's arithmetic on them (home_math, expert_rows_gradient), so that a home that reads or
// writes its host copy outside the declared sync points changes the run's numbers.
#include <vector>

#include "experts/home_device.hpp"  // defines: HomeDevice
#include "sketch/sketch_home.hpp"   // defines: HomeExpertSlot, ExpertRowsScratch

namespace px {

class StagedHomeDevice final : public HomeDevice {
 public:
  StagedHomeDevice(const Config& cfg, size_t experts);

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
  int d_, h_;
  bool swiglu_;
  size_t per_;
  std::vector<float> masters_, grads_, m_, v_;
  std::vector<HomeExpertSlot> slots_;  // into masters_ and grads_
  ExpertRowsScratch scratch_;
};

}  // namespace px
