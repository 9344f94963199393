// defines: StagedHomeDevice
#include "experts/staged_home_device.hpp"

#include <algorithm>

#include "experts/home_math.hpp"        // defines: any_nonzero, scale_and_sum_squares, home_adamw

namespace px {

StagedHomeDevice::StagedHomeDevice(const Config& cfg, size_t experts)
    : d_(cfg.model.d_model), h_(cfg.model.expert_hidden),
      swiglu_(cfg.model.expert_act == ExpertActKind::SWIGLU),
      per_((size_t)(swiglu_ ? 3 : 2) * d_ * h_), masters_(experts * per_), grads_(masters_.size()),
      m_(masters_.size()), v_(masters_.size()) {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < experts; ++i) {
    float* w = masters_.data() + i * per_;
    float* g = grads_.data() + i * per_;
    slots_.push_back({0, (int)i, w, swiglu_ ? w + wsz : nullptr, w + per_ - wsz, g,
                      swiglu_ ? g + wsz : nullptr, g + per_ - wsz});
  }
}

void StagedHomeDevice::upload(const float* masters, const float* grads, const float* m,
                              const float* v) {
  const size_t n = masters_.size();
  for (auto [src, dst] : {std::pair{masters, &masters_}, {grads, &grads_}, {m, &m_}, {v, &v_}})
    if (src) std::copy_n(src, n, dst->data());
}

void StagedHomeDevice::download(float* masters, float* grads, float* m, float* v) {
  for (auto [src, dst] : {std::pair{&masters_, masters}, {&grads_, grads}, {&m_, m}, {&v_, v}})
    if (dst) std::copy(src->begin(), src->end(), dst);
}

void StagedHomeDevice::accumulate_rows(int slot, const float* X, const float* dY, int rows) {
  expert_rows_gradient(slots_[slot], X, dY, rows, d_, h_,
                       swiglu_ ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2, scratch_);
}

void StagedHomeDevice::add_grad(size_t offset, const float* g, size_t n) {
  for (size_t j = 0; j < n; ++j) grads_[offset + j] += g[j];
}

bool StagedHomeDevice::any_grad() { return any_nonzero(grads_.data(), grads_.size()); }

double StagedHomeDevice::scale_grads_sum_squares(float inv) {
  return scale_and_sum_squares(grads_.data(), grads_.size(), inv);
}

void StagedHomeDevice::scale_grads(float s) { scale_values(grads_.data(), grads_.size(), s); }

void StagedHomeDevice::adamw_step(float lr, float wd, int step) {
  home_adamw(masters_.data(), grads_.data(), m_.data(), v_.data(), masters_.size(),
             (size_t)d_ * h_, lr, wd, step);
}

void StagedHomeDevice::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.f); }

}  // namespace px
