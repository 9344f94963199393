#pragma once
// Finite-difference gradient checking in double precision, shared by the gradient tests.
#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace px::test {

inline std::vector<double> randn(size_t n, std::mt19937_64& rng, double std = 1.0) {
  std::normal_distribution<double> nd(0.0, std);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

inline double dot(const std::vector<double>& a, const double* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Relative error ||analytic - numeric|| / ||numeric|| over the n entries of x, numeric
// by central differences of loss() while perturbing x in place.
inline double fd_rel_error(double* x, size_t n, const std::vector<double>& analytic,
                           const std::function<double()>& loss, double eps = 1e-6) {
  double num2 = 0, diff2 = 0;
  for (size_t i = 0; i < n; ++i) {
    const double old = x[i];
    x[i] = old + eps;
    const double lp = loss();
    x[i] = old - eps;
    const double lm = loss();
    x[i] = old;
    const double g = (lp - lm) / (2 * eps);
    num2 += g * g;
    diff2 += (g - analytic[i]) * (g - analytic[i]);
  }
  return std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-30);
}
inline double fd_rel_error(std::vector<double>& x, const std::vector<double>& analytic,
                           const std::function<double()>& loss, double eps = 1e-6) {
  return fd_rel_error(x.data(), x.size(), analytic, loss, eps);
}

}  // namespace px::test
