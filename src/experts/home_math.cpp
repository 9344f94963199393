// defines: any_nonzero, scale_and_sum_squares, scale_values, home_adamw, home_sgd
#include "experts/home_math.hpp"

#include "ops/cpu/cpu_ops.hpp"  // defines: adamw_update
#include "optim/adamw.hpp"      // defines: AdamWConfig (betas, eps)

namespace px {

bool any_nonzero(const float* g, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (g[i] != 0.f) return true;
  return false;
}

double scale_and_sum_squares(float* g, size_t n, float inv) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) {
    g[i] *= inv;
    ss += (double)g[i] * g[i];
  }
  return ss;
}

void scale_values(float* g, size_t n, float s) {
  for (size_t i = 0; i < n; ++i) g[i] *= s;
}

void home_adamw(float* masters, const float* g, float* m, float* v, size_t n, size_t wsz,
                float lr, float wd, int step) {
  const AdamWConfig ac;
  for (size_t o = 0; o < n; o += wsz)
    cpu::adamw_update(masters + o, g + o, m + o, v + o, wsz, lr, (float)ac.beta1,
                      (float)ac.beta2, (float)ac.eps, wd, step);
}

void home_sgd(float* masters, const float* g, size_t n, float lr, float wd) {
  for (size_t i = 0; i < n; ++i) masters[i] -= lr * (g[i] + wd * masters[i]);
}

}  // namespace px
