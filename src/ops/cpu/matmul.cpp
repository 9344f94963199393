// matmul: C = (accumulate ? C : 0) + op(A) op(B) through Eigen's GEMM.
#include "ops/cpu/cpu_ops.hpp"
#include "ops/cpu/eigen_maps.hpp"

namespace px::cpu {

template <class T>
void matmul(T* C, const T* A, const T* B, int M, int K, int N, bool transA, bool transB,
            bool accumulate) {
  MapMat<T> c(C, M, N);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
  CMapMat<T> a(A, transA ? K : M, transA ? M : K);
  CMapMat<T> b(B, transB ? N : K, transB ? K : N);
  if (!accumulate) c.setZero();
  if (!transA && !transB) c.noalias() += a * b;
  else if (transA && !transB) c.noalias() += a.transpose() * b;
  else if (!transA && transB) c.noalias() += a * b.transpose();
  else c.noalias() += a.transpose() * b.transpose();
}

template void matmul<float>(float*, const float*, const float*, int, int, int, bool, bool, bool);
template void matmul<double>(double*, const double*, const double*, int, int, int, bool, bool,
                             bool);

}  // namespace px::cpu
