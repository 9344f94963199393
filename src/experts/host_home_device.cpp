// defines: HostHomeDevice
#include "experts/host_home_device.hpp"

#include <algorithm>
#include <stdexcept>

#include "experts/home_math.hpp"  // defines: any_nonzero, scale_and_sum_squares, scale_values, home_adamw, home_sgd

namespace px {

HostHomeDevice::HostHomeDevice(const Config& cfg, HomeArrays host)
    : d_(cfg.model.d_model), h_(cfg.model.expert_hidden),
      act_(cfg.model.expert_act == ExpertActKind::SWIGLU ? cpu::EXPERT_ACT_SWIGLU
                                                         : cpu::EXPERT_ACT_RELU2),
      a_(std::move(host)) {}

void HostHomeDevice::check_in_place(const float* masters, const float* grads, const float* m,
                                    const float* v) const {
  for (auto [given, own] : {std::pair{masters, a_.masters}, {grads, a_.grads}, {m, a_.m}, {v, a_.v}})
    if (given && given != own)
      throw std::logic_error("HostHomeDevice works in place: a sync point got other arrays");
}

void HostHomeDevice::upload(const float* masters, const float* grads, const float* m,
                            const float* v) {
  check_in_place(masters, grads, m, v);
}

void HostHomeDevice::download(float* masters, float* grads, float* m, float* v) {
  check_in_place(masters, grads, m, v);
}

void HostHomeDevice::accumulate_rows(int slot, const float* X, const float* dY, int rows) {
  expert_rows_gradient(a_.slots[slot], X, dY, rows, d_, h_, act_, scratch_);
}

void HostHomeDevice::add_grad(size_t offset, const float* g, size_t n) {
  float* dst = a_.grads + offset;
  for (size_t j = 0; j < n; ++j) dst[j] += g[j];
}

bool HostHomeDevice::any_grad() { return any_nonzero(a_.grads, a_.n); }

double HostHomeDevice::scale_grads_sum_squares(float inv) {
  return scale_and_sum_squares(a_.grads, a_.n, inv);
}

void HostHomeDevice::scale_grads(float s) { scale_values(a_.grads, a_.n, s); }

void HostHomeDevice::adamw_step(float lr, float wd, int step) {
  home_adamw(a_.masters, a_.grads, a_.m, a_.v, a_.n, (size_t)d_ * h_, lr, wd, step);
}

void HostHomeDevice::sgd_step(float lr, float wd) { home_sgd(a_.masters, a_.grads, a_.n, lr, wd); }

void HostHomeDevice::zero_grads() { std::fill(a_.grads, a_.grads + a_.n, 0.f); }

}  // namespace px
