// Ternary pack / unpack / matmul: the CPU twin of kernels/ternary.cu (rules in cpu_ops.hpp).
//
// Bit-identical packing: the GPU's scale kernel gives each output unit j one thread that sums
// |W[i, j]| in fp32 for i = 0, 1, ..., in-1 and divides by in; the pack kernel computes
// rintf(W / s) in fp32 and clamps with fminf/fmaxf. The order is fixed, so the CPU below does
// the same operations in the same order (per-unit running sums in ascending i, only vectorised
// across units, which does not reorder any one sum) and gets the same bits: no tolerance is
// needed for scales or codes. Nothing here has a multiply feeding an add that the compiler could
// contract into an fma (-ffp-contract=fast), except in ternary_matmul, where the fma is written
// out on purpose.
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"  // defines: ternary_words, ternary_decode, the declarations

namespace px::cpu {

void ternary_pack(uint32_t* packed, float* scale, const float* W, int in, int out) {
  if (in <= 0 || out <= 0) return;
  // absmean: one running fp32 sum per unit, rows in ascending order (the GPU's order)
  std::vector<float> sum((size_t)out, 0.f);
  for (int i = 0; i < in; ++i) {
    const float* w = W + (size_t)i * out;
    for (int j = 0; j < out; ++j) sum[j] += std::fabs(w[j]);
  }
  for (int j = 0; j < out; ++j) scale[j] = sum[j] / (float)in;

  const int words = ternary_words(in);
#pragma omp parallel for schedule(static) if ((size_t)in * out > 65536)
  for (int j = 0; j < out; ++j) {
    const float s = scale[j];
    for (int k = 0; k < words; ++k) {
      uint32_t word = 0;
      for (int t = 0; t < 16 && k * 16 + t < in; ++t) {
        const float v = W[(size_t)(k * 16 + t) * out + j];
        // as the kernel: NaN from v / s is dropped by fmax (-> -1); s = 0 or NaN -> 0
        const float r = s > 0.f ? std::fmin(1.f, std::fmax(-1.f, std::rint(v / s))) : 0.f;
        const uint32_t c = r > 0.f ? 1u : (r < 0.f ? 2u : 0u);
        word |= c << (2 * t);
      }
      packed[(size_t)j * words + k] = word;
    }
  }
}

template <class T>
void ternary_unpack(T* W, const uint32_t* packed, const float* scale, int in, int out) {
  if (in <= 0 || out <= 0) return;
  const int words = ternary_words(in);
#pragma omp parallel for schedule(static) if ((size_t)in * out > 65536)
  for (int i = 0; i < in; ++i) {
    T* w = W + (size_t)i * out;
    const int k = i / 16, t = i % 16;
    for (int j = 0; j < out; ++j)
      w[j] = (T)((float)ternary_decode(packed[(size_t)j * words + k], t) * scale[j]);
  }
}

void ternary_matmul(float* Y, const float* X, const uint32_t* packed, const float* scale, int M,
                    int in, int out, bool accumulate) {
  if (M <= 0 || out <= 0) return;
  const int words = ternary_words(in);
#pragma omp parallel if ((size_t)M * in * out > (1u << 20))
  {
    std::vector<int8_t> sign((size_t)words * 16);  // unit j's codes, decoded once per unit
#pragma omp for schedule(static)
    for (int j = 0; j < out; ++j) {
      const uint32_t* p = packed + (size_t)j * words;
      for (int k = 0; k < words; ++k)
        for (int t = 0; t < 16; ++t) sign[(size_t)k * 16 + t] = (int8_t)ternary_decode(p[k], t);
      const float s = scale[j];
      for (int m = 0; m < M; ++m) {
        const float* x = X + (size_t)m * in;
        float sum = 0.f;
        for (int i = 0; i < in; ++i) {
          // add, subtract or skip, as the kernel (skipping keeps a non-finite x out)
          const int c = sign[i];
          if (c > 0) sum += x[i];
          else if (c < 0) sum -= x[i];
        }
        float& y = Y[(size_t)m * out + j];
        y = std::fma(sum, s, accumulate ? y : 0.f);
      }
    }
  }
}

template void ternary_unpack<float>(float*, const uint32_t*, const float*, int, int);
template void ternary_unpack<double>(double*, const uint32_t*, const float*, int, int);

}  // namespace px::cpu
