// RoPE (rotate-half): pair i = (x[i], x[i+hd/2]) rotated by t * 10000^(-2i/hd).
#include <cmath>

#include "ops/cpu/cpu_ops.hpp"

namespace px::cpu {

namespace {
// sign = +1 rotates forward (forward pass), -1 rotates back (the transpose, for backward).
template <class T>
void rope_rotate(T* out, const T* in, int B, int Tn, int H, int hd, double sign) {
  const int half = hd / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t) {
      for (int i = 0; i < half; ++i) {
        const double freq = std::pow(10000.0, -2.0 * i / hd);
        const double ang = t * freq;
        const T c = (T)std::cos(ang), s = (T)(sign * std::sin(ang));
        for (int hh = 0; hh < H; ++hh) {
          const size_t base = ((size_t)(b * Tn + t) * H + hh) * hd;
          const T x1 = in[base + i], x2 = in[base + i + half];
          out[base + i] = x1 * c - x2 * s;
          out[base + i + half] = x1 * s + x2 * c;
        }
      }
    }
}
}  // namespace

template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd) {
  rope_rotate(out, in, B, Tn, H, hd, +1.0);
}
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd) {
  rope_rotate(din, dout, B, Tn, H, hd, -1.0);
}

template void rope_forward<float>(float*, const float*, int, int, int, int);
template void rope_forward<double>(double*, const double*, int, int, int, int);
template void rope_backward<float>(float*, const float*, int, int, int, int);
template void rope_backward<double>(double*, const double*, int, int, int, int);

}  // namespace px::cpu
