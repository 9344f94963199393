// Token permutation for the routed experts: group the N*k (token, expert) assignments by
// expert (counting sort), gather rows into the permuted buffer, combine them back.
#include <cstring>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

void moe_permute_build(int32_t* bounds, int32_t* pos, int32_t* row_token, const int32_t* idx, int N,
                       int E, int k) {
  const int A = N * k;
  std::memset(bounds, 0, sizeof(int32_t) * (E + 1));
  for (int a = 0; a < A; ++a) bounds[idx[a] + 1]++;
  for (int e = 0; e < E; ++e) bounds[e + 1] += bounds[e];
  std::vector<int32_t> fill(bounds, bounds + E);
  for (int a = 0; a < A; ++a) {
    const int r = fill[idx[a]]++;
    pos[a] = r;
    row_token[r] = a / k;
  }
}

template <class T>
void gather_rows(T* Xp, const T* X, const int32_t* row_token, int rows, int d) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    std::memcpy(Xp + (size_t)r * d, X + (size_t)row_token[r] * d, sizeof(T) * d);
}

template <class T>
void combine_rows(T* out, const T* Yp, const T* gates, const int32_t* pos, int N, int k, int d) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    T* o = out + (size_t)n * d;
    for (int j = 0; j < k; ++j) {
      const T g = gates[(size_t)n * k + j];
      const T* y = Yp + (size_t)pos[(size_t)n * k + j] * d;
      for (int i = 0; i < d; ++i) o[i] += g * y[i];
    }
  }
}

template <class T>
void combine_rows_backward(T* dYp, T* dgates, const T* dout, const T* Yp, const T* gates,
                           const int32_t* pos, int N, int k, int d) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* dy = dout + (size_t)n * d;
    for (int j = 0; j < k; ++j) {
      const size_t a = (size_t)n * k + j;
      const T g = gates[a];
      const T* y = Yp + (size_t)pos[a] * d;
      T* dyp = dYp + (size_t)pos[a] * d;
      T dot = 0;
      for (int i = 0; i < d; ++i) {
        dot += dy[i] * y[i];
        dyp[i] = g * dy[i];
      }
      dgates[a] = dot;
    }
  }
}

// Serial over rows: several rows may scatter into the same token.
template <class T>
void scatter_add_rows(T* dX, const T* dXp, const int32_t* row_token, int rows, int d) {
  for (int r = 0; r < rows; ++r) {
    T* o = dX + (size_t)row_token[r] * d;
    const T* s = dXp + (size_t)r * d;
    for (int i = 0; i < d; ++i) o[i] += s[i];
  }
}

#define PX_INSTANTIATE(T)                                                                  \
  template void gather_rows<T>(T*, const T*, const int32_t*, int, int);                    \
  template void combine_rows<T>(T*, const T*, const T*, const int32_t*, int, int, int);    \
  template void combine_rows_backward<T>(T*, T*, const T*, const T*, const T*, const int32_t*, \
                                         int, int, int);                                   \
  template void scatter_add_rows<T>(T*, const T*, const int32_t*, int, int);
PX_INSTANTIATE(float)
PX_INSTANTIATE(double)
#undef PX_INSTANTIATE

}  // namespace px::cpu
