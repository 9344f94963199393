// Outer-gradient merge rules and the outer Nesterov step.
#include "sync/outer_merge.hpp"

#include <cmath>

namespace px {

void merge_outer(const FragmentPlan& plan, int f, size_t lo, size_t hi,
                 const std::vector<const float*>& deltas, const std::vector<double>& w, bool rda,
                 float* out) {
  const size_t n = hi - lo;
  const size_t k = deltas.size();
  for (size_t j = 0; j < n; ++j) {
    double s = 0;
    for (size_t i = 0; i < k; ++i) s += w[i] * deltas[i][j];
    out[j] = (float)s;
  }
  if (!rda) return;
  plan.for_each_tensor(f, lo, hi, [&](size_t a, size_t b, bool mean_only) {
    if (mean_only) return;
    const size_t o = a - lo, m = b - a;
    std::vector<double> norms(k, 0.0);
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = 0; j < m; ++j) norms[i] += (double)deltas[i][o + j] * deltas[i][o + j];
      norms[i] = std::sqrt(norms[i]);
    }
    double radius = 0;
    for (size_t i = 0; i < k; ++i) radius += w[i] * norms[i];
    std::vector<double> dir(m, 0.0);
    for (size_t i = 0; i < k; ++i)
      if (norms[i] > 0)
        for (size_t j = 0; j < m; ++j) dir[j] += w[i] * deltas[i][o + j] / norms[i];
    double dn = 0;
    for (double v : dir) dn += v * v;
    dn = std::sqrt(dn);
    for (size_t j = 0; j < m; ++j) out[o + j] = dn > 0 ? (float)(radius * dir[j] / dn) : 0.f;
  });
}

void outer_nesterov(float* theta, float* mom, const float* g, size_t n, double lr, double mu) {
  for (size_t i = 0; i < n; ++i) {
    mom[i] = (float)(mu * mom[i] + g[i]);
    theta[i] -= (float)(lr * (g[i] + mu * mom[i]));
  }
}

}  // namespace px
