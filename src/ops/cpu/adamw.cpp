// Fused AdamW step (decoupled weight decay), bias-corrected moments.
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
static void adamw_impl(T* p, const T* g, T* m, T* v, size_t n, T lr, T b1, T b2, T eps, T wd,
                       int step) {
  const T c1 = (T)1 / ((T)1 - (T)std::pow((double)b1, step));
  const T c2 = (T)1 / ((T)1 - (T)std::pow((double)b2, step));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + ((T)1 - b1) * g[i];
    v[i] = b2 * v[i] + ((T)1 - b2) * g[i] * g[i];
    const T upd = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    p[i] -= lr * (upd + wd * p[i]);
  }
}

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, int step) {
  adamw_impl(p, g, m, v, n, lr, beta1, beta2, eps, wd, step);
}
void adamw_update(double* p, const double* g, double* m, double* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double wd, int step) {
  adamw_impl(p, g, m, v, n, lr, beta1, beta2, eps, wd, step);
}

}  // namespace px::cpu
