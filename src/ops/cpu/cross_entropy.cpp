// Mean token cross-entropy over logits [N, V] and its gradient.
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

template <class T>
double cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                     T dscale) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int n = 0; n < N; ++n) {
    const T* l = logits + (size_t)n * V;
    T mx = l[0];
    for (int v = 1; v < V; ++v) mx = std::max(mx, l[v]);
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp((double)(l[v] - mx));
    const double lse = mx + std::log(sum);
    total += lse - l[targets[n]];
    if (dlogits) {
      T* dl = dlogits + (size_t)n * V;
      for (int v = 0; v < V; ++v) dl[v] = (T)(std::exp(l[v] - lse)) * dscale;
      dl[targets[n]] -= dscale;
    }
  }
  return total / N;
}

template double cross_entropy<float>(float*, const float*, const int32_t*, int, int, float);
template double cross_entropy<double>(double*, const double*, const int32_t*, int, int, double);

}  // namespace px::cpu
