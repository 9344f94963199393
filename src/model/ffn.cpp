// Dense FFN over all N rows (the dense layers' SwiGLU and every shared expert): the
// grouped expert kernel with a single segment [0, N).
#include "model/layers.hpp"

namespace px {

using namespace px::cpu;

template <class T>
void ffn_forward(T* out, FfnActs<T>& a, const T* x, const T* w1, const T* w3, const T* w2, int N,
                 int d, int h, ExpertAct kind) {
  const int32_t bounds[2] = {0, N};
  expert_ffn_forward(out, a.a, a.b, a.act, x, w1, w3, w2, bounds, 1, d, h, kind);
}

template <class T>
void ffn_backward(T* dx, T* dw1, T* dw3, T* dw2, const T* dout, const FfnActs<T>& a, const T* x,
                  const T* w1, const T* w3, const T* w2, int N, int d, int h, ExpertAct kind,
                  bool accumulate_dx, Scratch<T>& s) {
  const int32_t bounds[2] = {0, N};
  T* dxi = accumulate_dx ? s.rows_d[1] : dx;
  expert_ffn_backward(dxi, dw1, dw3, dw2, dout, x, a.a, a.b, a.act, w1, w3, w2, bounds, 1, d, h,
                      kind, s.rows_h[0], s.rows_h[1], s.rows_h[2]);
  if (accumulate_dx) {
    const size_t n = (size_t)N * d;
    for (size_t i = 0; i < n; ++i) dx[i] += dxi[i];
  }
}

#define PX_INSTANTIATE(T)                                                                   \
  template void ffn_forward<T>(T*, FfnActs<T>&, const T*, const T*, const T*, const T*, int, \
                               int, int, ExpertAct);                                        \
  template void ffn_backward<T>(T*, T*, T*, T*, const T*, const FfnActs<T>&, const T*,      \
                                const T*, const T*, const T*, int, int, int, ExpertAct, bool, \
                                Scratch<T>&);
PX_INSTANTIATE(float)
PX_INSTANTIATE(double)
#undef PX_INSTANTIATE

}  // namespace px
