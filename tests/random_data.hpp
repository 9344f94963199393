#pragma once
// Random test data shared by the single-rank tests: n normal(0, sd) values from a seeded
// std::mt19937 (fresh data per test, reproducible per seed).
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace px::test {

template <class T = float>
std::vector<T> randn_vec(size_t n, uint32_t seed, T sd = T(1)) {
  std::mt19937 g(seed);
  std::normal_distribution<T> d(T(0), sd);
  std::vector<T> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace px::test
