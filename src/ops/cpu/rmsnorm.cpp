// RMSNorm forward/backward: out = x * rstd * g, rstd = 1/sqrt(mean(x^2) + 1e-5).
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

constexpr double kRmsEps = 1e-5;

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* g, int N, int d) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (size_t)n * d;
    double ss = 0;
    for (int i = 0; i < d; ++i) ss += (double)xr[i] * xr[i];
    T r = (T)(1.0 / std::sqrt(ss / d + kRmsEps));
    rstd[n] = r;
    T* o = out + (size_t)n * d;
    for (int i = 0; i < d; ++i) o[i] = xr[i] * r * g[i];
  }
}

// y_i = x_i r g_i, r = (mean(x^2)+eps)^-1/2:
// dx_i = r (g_i dy_i) - x_i r^3 / d * sum_j (g_j dy_j x_j);  dg_i += dy_i x_i r.
template <class T>
void rmsnorm_backward(T* dx, T* dg, const T* dout, const T* x, const T* g, const T* rstd, int N,
                      int d) {
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (size_t)n * d;
    const T* dy = dout + (size_t)n * d;
    T* dxr = dx + (size_t)n * d;
    const T r = rstd[n];
    double dot = 0;
    for (int i = 0; i < d; ++i) dot += (double)g[i] * dy[i] * xr[i];
    const T c = (T)(dot * r * r * r / d);
    for (int i = 0; i < d; ++i) {
      dxr[i] = r * g[i] * dy[i] - xr[i] * c;
      dg[i] += dy[i] * xr[i] * r;
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int, int);

}  // namespace px::cpu
