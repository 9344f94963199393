// Grouped routed-expert FFN: every expert runs dense products on its contiguous segment
// of the permuted token buffer (rows [bounds[e], bounds[e+1])). No per-token loops.
#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
void expert_ffn_forward(T* Y, T* A, T* Bm, T* act, const T* X, const T* W1, const T* W3,
                        const T* W2, const int32_t* bounds, int E, int d, int h, ExpertAct kind) {
  const size_t wsz = (size_t)d * h;
  for (int e = 0; e < E; ++e) {
    const int r0 = bounds[e], n = bounds[e + 1] - bounds[e];
    if (n == 0) continue;
    const T* x = X + (size_t)r0 * d;
    T* a = A + (size_t)r0 * h;
    T* ac = act + (size_t)r0 * h;
    matmul(a, x, W1 + e * wsz, n, d, h, false, false, false);
    if (kind == EXPERT_ACT_SWIGLU) {
      T* bm = Bm + (size_t)r0 * h;
      matmul(bm, x, W3 + e * wsz, n, d, h, false, false, false);
      swiglu_forward(ac, a, bm, (size_t)n * h);
    } else {
      relu2_forward(ac, a, (size_t)n * h);
    }
    matmul(Y + (size_t)r0 * d, ac, W2 + e * wsz, n, h, d, false, false, false);
  }
}

template <class T>
void expert_ffn_backward(T* dX, T* dW1, T* dW3, T* dW2, const T* dY, const T* X, const T* A,
                         const T* Bm, const T* act, const T* W1, const T* W3, const T* W2,
                         const int32_t* bounds, int E, int d, int h, ExpertAct kind,
                         T* dact_scratch, T* dA_scratch, T* dB_scratch) {
  const size_t wsz = (size_t)d * h;
  for (int e = 0; e < E; ++e) {
    const int r0 = bounds[e], n = bounds[e + 1] - bounds[e];
    if (n == 0) continue;
    const T* x = X + (size_t)r0 * d;
    const T* dy = dY + (size_t)r0 * d;
    const T* a = A + (size_t)r0 * h;
    T* dact = dact_scratch + (size_t)r0 * h;
    T* da = dA_scratch + (size_t)r0 * h;
    T* dx = dX + (size_t)r0 * d;
    if (dW2) matmul(dW2 + e * wsz, act + (size_t)r0 * h, dy, h, n, d, true, false, true);
    matmul(dact, dy, W2 + e * wsz, n, d, h, false, true, false);
    if (kind == EXPERT_ACT_SWIGLU) {
      const T* bm = Bm + (size_t)r0 * h;
      T* db = dB_scratch + (size_t)r0 * h;
      swiglu_backward(da, db, dact, a, bm, (size_t)n * h);
      if (dW3) matmul(dW3 + e * wsz, x, db, d, n, h, true, false, true);
      matmul(dx, db, W3 + e * wsz, n, h, d, false, true, false);
      matmul(dx, da, W1 + e * wsz, n, h, d, false, true, true);
    } else {
      relu2_backward(da, dact, a, (size_t)n * h);
      matmul(dx, da, W1 + e * wsz, n, h, d, false, true, false);
    }
    if (dW1) matmul(dW1 + e * wsz, x, da, d, n, h, true, false, true);
  }
}

template void expert_ffn_forward<float>(float*, float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const int32_t*, int, int, int,
                                        ExpertAct);
template void expert_ffn_forward<double>(double*, double*, double*, double*, const double*,
                                         const double*, const double*, const double*,
                                         const int32_t*, int, int, int, ExpertAct);
template void expert_ffn_backward<float>(float*, float*, float*, float*, const float*, const float*,
                                         const float*, const float*, const float*, const float*,
                                         const float*, const float*, const int32_t*, int, int, int,
                                         ExpertAct, float*, float*, float*);
template void expert_ffn_backward<double>(double*, double*, double*, double*, const double*,
                                          const double*, const double*, const double*,
                                          const double*, const double*, const double*,
                                          const double*, const int32_t*, int, int, int, ExpertAct,
                                          double*, double*, double*);

}  // namespace px::cpu
