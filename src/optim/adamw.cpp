// AdamW over arenas: per-tensor weight decay, fused update from the CPU backend.
#include "optim/adamw.hpp"

#include <algorithm>
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"  // defines: adamw_update

namespace px {

AdamW::AdamW(const ParamLayout& layout, const AdamWConfig& cfg, int expert_begin, int expert_end,
             std::array<ArenaWindow, 2> windows, std::array<size_t, 2> storage_lo)
    : layout_(layout), cfg_(cfg), storage_lo_(storage_lo) {
  auto add = [&](int a, size_t offset, size_t size, bool decay) {  // the part inside the window
    const size_t lo = std::max(offset, windows[a].lo), hi = std::min(offset + size, windows[a].hi);
    if (lo < hi) ranges_[a].push_back({lo, hi - lo, decay});
  };
  for (const ParamSpec& spec : layout.specs) {
    if (spec.arena == Arena::BACKBONE || expert_end < 0) {
      add((int)spec.arena, spec.offset, spec.size, spec.decay);
    } else {
      const size_t per = spec.size / (size_t)spec.shape[0];  // expert tensors are [E, ...]
      if (expert_end > expert_begin)
        add(1, spec.offset + per * expert_begin, per * (expert_end - expert_begin), spec.decay);
    }
  }
  for (int a = 0; a < 2; ++a) {  // moments indexed like the window; none for an arena not stepped
    window_lo_[a] = std::min(windows[a].lo, layout.size((Arena)a));
    const size_t n = ranges_[a].empty() ? 0 : std::min(windows[a].hi, layout.size((Arena)a)) - window_lo_[a];
    first_moment_[a].assign(n, 0.f);
    second_moment_[a].assign(n, 0.f);
  }
}

double AdamW::sq_norm(const float* g, Arena a) const {
  double ss = 0;
  for (const Range& r : ranges_[(int)a]) {
    const float* p = g + (r.offset - storage_lo_[(int)a]);
#pragma omp parallel for reduction(+ : ss) schedule(static) if (r.size > 65536)
    for (size_t i = 0; i < r.size; ++i) ss += (double)p[i] * p[i];
  }
  return ss;
}

void AdamW::step(float* const params[2], float* const grads[2], double lr, double norm) {
  ++step_;
  const float scale =
      cfg_.grad_clip > 0 && norm > cfg_.grad_clip ? (float)(cfg_.grad_clip / norm) : 1.f;
  for (int a = 0; a < 2; ++a)
    for (const Range& r : ranges_[a]) {
      if (!grads[a]) break;  // (an arena stepped elsewhere: DeviceLearner's host experts)
      float* g = grads[a] + (r.offset - storage_lo_[a]);
      if (scale != 1.f)
        for (size_t i = 0; i < r.size; ++i) g[i] *= scale;
      if (cfg_.sgd) {
        float* p = params[a] + (r.offset - storage_lo_[a]);
        const float wd = r.decay ? (float)cfg_.weight_decay : 0.f;
        for (size_t i = 0; i < r.size; ++i) p[i] -= (float)lr * (g[i] + wd * p[i]);
        continue;
      }
      const size_t mo = r.offset - window_lo_[a];
      cpu::adamw_update(params[a] + (r.offset - storage_lo_[a]), g, first_moment_[a].data() + mo,
                        second_moment_[a].data() + mo, r.size, (float)lr, (float)cfg_.beta1,
                        (float)cfg_.beta2, (float)cfg_.eps,
                        r.decay ? (float)cfg_.weight_decay : 0.f, step_);
    }
}

double AdamW::step(float* const params[2], float* const grads[2], double lr) {
  const double norm =
      std::sqrt(sq_norm(grads[0], Arena::BACKBONE) + sq_norm(grads[1], Arena::EXPERTS));
  step(params, grads, lr, norm);
  return norm;
}

}  // namespace px
