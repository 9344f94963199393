// MoE router: softmax over experts, top-k by (prob + bias), renormalised gates; backward.
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
void router_forward(T* probs, int32_t* idx, T* gates, const T* logits, const T* bias, int N, int E,
                    int k) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* l = logits + (size_t)n * E;
    T* p = probs + (size_t)n * E;
    T mx = l[0];
    for (int e = 1; e < E; ++e) mx = std::max(mx, l[e]);
    T sum = 0;
    for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - mx));
    for (int e = 0; e < E; ++e) p[e] /= sum;
    // top-k by score = p + bias; ties resolved toward the lower index.
    int32_t* ix = idx + (size_t)n * k;
    for (int j = 0; j < k; ++j) {
      int best = -1;
      T best_s = 0;
      for (int e = 0; e < E; ++e) {
        bool taken = false;
        for (int m = 0; m < j; ++m) taken |= (ix[m] == e);
        if (taken) continue;
        const T s = p[e] + (bias ? bias[e] : (T)0);
        if (best < 0 || s > best_s) best = e, best_s = s;
      }
      ix[j] = best;
    }
    T gs = 0;
    for (int j = 0; j < k; ++j) gs += p[ix[j]];
    for (int j = 0; j < k; ++j) gates[(size_t)n * k + j] = p[ix[j]] / gs;
  }
}

// gates g_j = p_{i_j} / S with S = sum_m p_{i_m}:  dp_{i_j} = (dg_j - sum_m dg_m g_m) / S.
template <class T>
void router_backward(T* dlogits, const T* dgates, const T* probs, const int32_t* idx,
                     const T* gates, const T* aux_coef, int N, int E, int k) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* p = probs + (size_t)n * E;
    const int32_t* ix = idx + (size_t)n * k;
    const T* g = gates + (size_t)n * k;
    const T* dg = dgates + (size_t)n * k;
    T* dl = dlogits + (size_t)n * E;
    for (int e = 0; e < E; ++e) dl[e] = aux_coef ? aux_coef[e] : (T)0;  // dprobs first
    T S = 0, dot = 0;
    for (int j = 0; j < k; ++j) S += p[ix[j]], dot += dg[j] * g[j];
    for (int j = 0; j < k; ++j) dl[ix[j]] += (dg[j] - dot) / S;
    T pd = 0;
    for (int e = 0; e < E; ++e) pd += p[e] * dl[e];
    for (int e = 0; e < E; ++e) dl[e] = p[e] * (dl[e] - pd);
  }
}

template void router_forward<float>(float*, int32_t*, float*, const float*, const float*, int, int,
                                    int);
template void router_forward<double>(double*, int32_t*, double*, const double*, const double*, int,
                                     int, int);
template void router_backward<float>(float*, const float*, const float*, const int32_t*,
                                     const float*, const float*, int, int, int);
template void router_backward<double>(double*, const double*, const double*, const int32_t*,
                                      const double*, const double*, int, int, int);

}  // namespace px::cpu
