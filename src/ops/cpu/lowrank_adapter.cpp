// defines: adapter_merge, adapter_backward (low-rank adapters on expert views, DESIGN §6)
#include <algorithm>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
void adapter_merge(T* W, const T* base, const T* A, const T* B, int in, int r, int out) {
  std::copy(base, base + (size_t)in * out, W);
  if (r > 0) matmul(W, A, B, in, r, out, false, false, true);
}

template <class T>
void adapter_backward(T* dA, T* dB, const T* dW, const T* A, const T* B, int in, int r, int out) {
  matmul(dA, dW, B, in, out, r, false, true, true);  // dA [in, r] += dW [in, out] B^T
  matmul(dB, A, dW, r, in, out, true, false, true);  // dB [r, out] += A^T dW
}

template void adapter_merge<float>(float*, const float*, const float*, const float*, int, int, int);
template void adapter_merge<double>(double*, const double*, const double*, const double*, int, int, int);
template void adapter_backward<float>(float*, float*, const float*, const float*, const float*, int, int, int);
template void adapter_backward<double>(double*, double*, const double*, const double*, const double*, int, int, int);

}  // namespace px::cpu
