#pragma once
// Test helpers for the CUDA backend (ggml test-backend-ops style): device buffers that
// are poisoned (NaN) before each launch, fresh random inputs, normalised error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_common.cuh"  // defines: cudaCheck, bf16, device_available

#define PX_SKIP_IF_NO_GPU()                                        \
  do {                                                             \
    if (!::px::cuda::device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace px::test {

using px::cuda::bf16;

template <class T>
struct DBuf {
  T* p = nullptr;
  size_t n = 0;
  DBuf() = default;
  explicit DBuf(size_t n_) : n(n_) {
    if (n) cudaCheck(cudaMalloc(&p, n * sizeof(T)));
  }
  DBuf(const std::vector<T>& h) : DBuf(h.size()) { upload(h); }
  ~DBuf() {
    if (p) cudaFree(p);
  }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  void upload(const std::vector<T>& h) {
    if (n) cudaCheck(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n) {
      cudaCheck(cudaDeviceSynchronize());
      cudaCheck(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return h;
  }
  // Fill with 0xFF bytes: NaN for float and bf16, -1 for ints.
  void poison() {
    if (n) cudaCheck(cudaMemset(p, 0xFF, n * sizeof(T)));
  }
  operator T*() { return p; }
  operator const T*() const { return p; }
};

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
inline std::vector<float> randu(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}
inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __bfloat162float(v[i]);
  return o;
}
// Round through bf16 (the CPU reference then sees exactly what the GPU sees).
inline std::vector<float> round_bf16(const std::vector<float>& v) { return to_f32(to_bf16(v)); }

// ||a - b|| / ||b||; NaN anywhere (unwritten poisoned output) gives +inf.
template <class A, class B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    double x = (double)a[i], y = (double)b[i];
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_err(const std::vector<bf16>& a, const std::vector<float>& b) {
  return rel_err(to_f32(a), b);
}

constexpr double kTolF32 = 1e-5;
constexpr double kTolBF16 = 1e-2;

}  // namespace px::test
