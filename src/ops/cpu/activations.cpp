// Elementwise expert activations: SwiGLU (silu(a) * b) and relu2 (relu(a)^2).
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
static inline T sigmoid(T x) {
  return (T)1 / ((T)1 + std::exp(-x));
}

template <class T>
void swiglu_forward(T* act, const T* a, const T* b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) act[i] = a[i] * sigmoid(a[i]) * b[i];
}

// silu'(a) = s (1 + a (1 - s)), s = sigmoid(a).
template <class T>
void swiglu_backward(T* da, T* db, const T* dact, const T* a, const T* b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    const T s = sigmoid(a[i]);
    const T silu = a[i] * s;
    db[i] = dact[i] * silu;
    da[i] = dact[i] * b[i] * s * ((T)1 + a[i] * ((T)1 - s));
  }
}

template <class T>
void relu2_forward(T* act, const T* a, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) act[i] = a[i] > 0 ? a[i] * a[i] : (T)0;
}

template <class T>
void relu2_backward(T* da, const T* dact, const T* a, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) da[i] = a[i] > 0 ? (T)2 * a[i] * dact[i] : (T)0;
}

template void swiglu_forward<float>(float*, const float*, const float*, size_t);
template void swiglu_forward<double>(double*, const double*, const double*, size_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*,
                                     size_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*,
                                      const double*, size_t);
template void relu2_forward<float>(float*, const float*, size_t);
template void relu2_forward<double>(double*, const double*, size_t);
template void relu2_backward<float>(float*, const float*, const float*, size_t);
template void relu2_backward<double>(double*, const double*, const double*, size_t);

}  // namespace px::cpu
