#pragma once
// experts.home_device = "cpu": the home's arithmetic in place on ExpertHome's own vectors
// (HomeArrays), so its sync points do nothing and the CPU home runs the one code path of
// ExpertHome::update that every home device runs. The only device with SGD.
#include "experts/home_device.hpp"  // defines: HomeDevice, HomeArrays
#include "sketch/sketch_home.hpp"   // defines: ExpertRowsScratch

namespace px {

class HostHomeDevice final : public HomeDevice {
 public:
  HostHomeDevice(const Config& cfg, HomeArrays host);

  // In place: the arrays ExpertHome passes are the ones this works on (anything else is a
  // programming error: std::logic_error).
  void upload(const float* masters, const float* grads, const float* m, const float* v) override;
  void download(float* masters, float* grads, float* m, float* v) override;
  void accumulate_rows(int slot, const float* X, const float* dY, int rows) override;
  void add_grad(size_t offset, const float* g, size_t n) override;
  bool any_grad() override;
  double scale_grads_sum_squares(float inv) override;
  void scale_grads(float s) override;
  void adamw_step(float lr, float wd, int step) override;
  void sgd_step(float lr, float wd) override;
  void zero_grads() override;

 private:
  void check_in_place(const float* masters, const float* grads, const float* m,
                      const float* v) const;

  int d_, h_;
  px::cpu::ExpertAct act_;
  HomeArrays a_;
  ExpertRowsScratch scratch_;
};

}  // namespace px
