// AdamW over arenas: per-tensor weight decay, fused update from the CPU backend.
#include "optim/adamw.hpp"

#include <cmath>

#include "ops/cpu/cpu_ops.hpp"  // defines: adamw_update

namespace px {

AdamW::AdamW(const ParamLayout& layout, const AdamWConfig& cfg) : layout_(layout), cfg_(cfg) {
  for (int a = 0; a < 2; ++a) {
    m_[a].assign(layout.size((Arena)a), 0.f);
    v_[a].assign(layout.size((Arena)a), 0.f);
  }
}

double AdamW::global_norm(const ParamLayout& layout, float* const grads[2]) {
  double ss = 0;
  for (int a = 0; a < 2; ++a) {
    const float* g = grads[a];
    const size_t n = layout.size((Arena)a);
#pragma omp parallel for reduction(+ : ss) schedule(static)
    for (size_t i = 0; i < n; ++i) ss += (double)g[i] * g[i];
  }
  return std::sqrt(ss);
}

double AdamW::step(float* const params[2], float* const grads[2], double lr) {
  ++step_;
  const double norm = global_norm(layout_, grads);
  if (cfg_.grad_clip > 0 && norm > cfg_.grad_clip) {
    const float scale = (float)(cfg_.grad_clip / norm);
    for (int a = 0; a < 2; ++a) {
      float* g = grads[a];
      const size_t n = layout_.size((Arena)a);
      for (size_t i = 0; i < n; ++i) g[i] *= scale;
    }
  }
  for (const ParamSpec& s : layout_.specs) {
    const int a = (int)s.arena;
    cpu::adamw_update(params[a] + s.offset, grads[a] + s.offset, m_[a].data() + s.offset,
                      v_[a].data() + s.offset, s.size, (float)lr, (float)cfg_.beta1,
                      (float)cfg_.beta2, (float)cfg_.eps,
                      s.decay ? (float)cfg_.weight_decay : 0.f, step_);
  }
  return norm;
}

}  // namespace px
