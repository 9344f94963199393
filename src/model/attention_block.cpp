// Attention sub-block of a layer: h = x + Wo(MHA(RoPE(Wq xn), RoPE(Wk xn), Wv xn)),
// xn = RMSNorm(x).
#include <algorithm>

#include "model/layers.hpp"

namespace px {

using namespace px::cpu;

template <class T>
void attention_block_forward(T* h, AttentionActs<T>& a, const T* x, const T* g, const T* wq,
                             const T* wk, const T* wv, const T* wo, const AttnDims& dm) {
  const int N = dm.N(), d = dm.d();
  rmsnorm_forward(a.xn, a.rstd, x, g, N, d);
  matmul(a.q, a.xn, wq, N, d, d, false, false, false);
  matmul(a.k, a.xn, wk, N, d, d, false, false, false);
  matmul(a.v, a.xn, wv, N, d, d, false, false, false);
  rope_forward(a.q, a.q, dm.B, dm.Tn, dm.H, dm.hd);
  rope_forward(a.k, a.k, dm.B, dm.Tn, dm.H, dm.hd);
  if (dm.recompute) attention_forward_streamed(a.y, a.q, a.k, a.v, dm.B, dm.Tn, dm.H, dm.hd);
  else attention_forward(a.y, a.probs, a.q, a.k, a.v, dm.B, dm.Tn, dm.H, dm.hd);
  std::copy(x, x + (size_t)N * d, h);
  matmul(h, a.y, wo, N, d, d, false, false, true);
}

template <class T>
void attention_block_backward(T* dx, T* dg, T* dwq, T* dwk, T* dwv, T* dwo, const T* dh,
                              const AttentionActs<T>& a, const T* x, const T* g, const T* wq,
                              const T* wk, const T* wv, const T* wo, const AttnDims& dm,
                              Scratch<T>& s) {
  const int N = dm.N(), d = dm.d();
  T *dy = s.nd[0], *dq = s.nd[1], *dk = s.nd[2], *dv = s.nd[3], *dxn = s.nd[4];
  matmul(dwo, a.y, dh, d, N, d, true, false, true);
  matmul(dy, dh, wo, N, d, d, false, true, false);
  // (train.recompute: no probabilities kept, each head's recomputed from q and k)
  if (dm.recompute) attention_backward_streamed(dq, dk, dv, dy, a.q, a.k, a.v, dm.B, dm.Tn, dm.H, dm.hd);
  else attention_backward(dq, dk, dv, dy, a.q, a.k, a.v, a.probs, dm.B, dm.Tn, dm.H, dm.hd);
  rope_backward(dq, dq, dm.B, dm.Tn, dm.H, dm.hd);
  rope_backward(dk, dk, dm.B, dm.Tn, dm.H, dm.hd);
  matmul(dwq, a.xn, dq, d, N, d, true, false, true);
  matmul(dwk, a.xn, dk, d, N, d, true, false, true);
  matmul(dwv, a.xn, dv, d, N, d, true, false, true);
  matmul(dxn, dq, wq, N, d, d, false, true, false);
  matmul(dxn, dk, wk, N, d, d, false, true, true);
  matmul(dxn, dv, wv, N, d, d, false, true, true);
  rmsnorm_backward(dx, dg, dxn, x, g, a.rstd, N, d);
  const size_t n = (size_t)N * d;
  for (size_t i = 0; i < n; ++i) dx[i] += dh[i];
}

#define PX_INSTANTIATE(T)                                                                       \
  template void attention_block_forward<T>(T*, AttentionActs<T>&, const T*, const T*, const T*, \
                                           const T*, const T*, const T*, const AttnDims&);      \
  template void attention_block_backward<T>(T*, T*, T*, T*, T*, T*, const T*,                   \
                                            const AttentionActs<T>&, const T*, const T*,        \
                                            const T*, const T*, const T*, const T*,             \
                                            const AttnDims&, Scratch<T>&);
PX_INSTANTIATE(float)
PX_INSTANTIATE(double)
#undef PX_INSTANTIATE

}  // namespace px
