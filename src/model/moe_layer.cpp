// MoE FFN (DESIGN §2): softmax router, top-k with renormalised gates, shared experts always
// on, routed experts run grouped over a token permutation (dropless), Switch aux loss.
#include <algorithm>
#include <vector>

#include "model/layers.hpp"

namespace px {

using namespace px::cpu;

template <class T>
void moe_forward(T* out, MoeActs<T>& a, const T* x, const T* wr, const T* sw1, const T* sw3,
                 const T* sw2, const T* ew1, const T* ew3, const T* ew2, const T* bias,
                 const MoeDims& dm, const MoeContext<T>& ctx, T* scratch_nd) {
  const int N = dm.N, d = dm.d, E = dm.E, k = dm.k, h = dm.h;
  const size_t wsz = (size_t)d * h;
  matmul(a.logits, x, wr, N, d, E, false, false, false);
  router_forward(a.probs, a.idx, a.gates, a.logits, bias, N, E, k);
  moe_permute_build(a.bounds, a.pos, a.row_token, a.idx, N, E, k);
  gather_rows(a.xp, x, a.row_token, N * k, d);
  if (ctx.experts)
    ctx.experts->forward(ctx.moe_layer, a.xp, a.bounds, a.yp);
  else
    expert_ffn_forward(a.yp, a.routed.a, a.routed.b, a.routed.act, a.xp, ew1, ew3, ew2, a.bounds,
                       E, d, h, dm.kind);
  std::fill(out, out + (size_t)N * d, (T)0);
  for (int s = 0; s < dm.S; ++s) {
    const size_t ao = (size_t)s * N * h;
    FfnActs<T> sa{a.shared.a + ao, a.shared.b ? a.shared.b + ao : nullptr, a.shared.act + ao};
    ffn_forward(scratch_nd, sa, x, sw1 + s * wsz, sw3 ? sw3 + s * wsz : nullptr, sw2 + s * wsz, N,
                d, h, dm.kind);
    for (size_t i = 0; i < (size_t)N * d; ++i) out[i] += scratch_nd[i];
  }
  if (!ctx.drop_routed) combine_rows(out, a.yp, a.gates, a.pos, N, k, d);
  // Switch aux loss over the whole batch: alpha * E * sum_e f_e P_e; f_e (assignment
  // fraction) carries no gradient, so d(aux)/d(probs[n,e]) = alpha * E * f_e / N_global.
  std::vector<double> st(2 * (size_t)E, 0.0);
  for (int e = 0; e < E; ++e) st[e] = a.bounds[e + 1] - a.bounds[e];
  for (int n = 0; n < N; ++n)
    for (int e = 0; e < E; ++e) st[E + e] += a.probs[(size_t)n * E + e];
  if (ctx.sum_stats) (*ctx.sum_stats)(st.data(), 2 * E);
  const double Ng = ctx.global_tokens > 0 ? ctx.global_tokens : N;
  a.aux_loss = 0;
  for (int e = 0; e < E; ++e) {
    const double f = st[e] / (Ng * k), P = st[E + e] / Ng;
    a.aux_loss += dm.aux_alpha * E * f * P;
    a.aux_coef[e] = (T)(dm.aux_alpha * E * f / Ng * ctx.loss_scale);
  }
}

template <class T>
void moe_backward(T* dx, T* dwr, T* dsw1, T* dsw3, T* dsw2, T* dew1, T* dew3, T* dew2,
                  const T* dout, const MoeActs<T>& a, const T* x, const T* wr, const T* sw1,
                  const T* sw3, const T* sw2, const T* ew1, const T* ew3, const T* ew2,
                  const MoeDims& dm, const MoeContext<T>& ctx, Scratch<T>& s) {
  const int N = dm.N, d = dm.d, E = dm.E, k = dm.k, h = dm.h;
  const size_t wsz = (size_t)d * h;
  T *dyp = s.rows_d[0], *dxp = s.rows_d[1], *dgates = s.nk, *dlogits = s.ne;
  combine_rows_backward(dyp, dgates, dout, a.yp, a.gates, a.pos, N, k, d);
  if (!ctx.experts && dm.recompute_routed)  // the layer's routed activations again (dxp: the
    expert_ffn_forward(dxp, a.routed.a, a.routed.b, a.routed.act, a.xp, ew1, ew3, ew2, a.bounds,
                       E, d, h, dm.kind);  // outputs' scratch, assigned by the backward below)
  if (ctx.experts)
    ctx.experts->backward(ctx.moe_layer, dyp, dxp);
  else
    expert_ffn_backward(dxp, dew1, dew3, dew2, dyp, a.xp, a.routed.a, a.routed.b, a.routed.act,
                        ew1, ew3, ew2, a.bounds, E, d, h, dm.kind, s.rows_h[0], s.rows_h[1],
                        s.rows_h[2]);
  std::fill(dx, dx + (size_t)N * d, (T)0);
  scatter_add_rows(dx, dxp, a.row_token, N * k, d);
  for (int sh = 0; sh < dm.S; ++sh) {
    const size_t ao = (size_t)sh * N * h;
    FfnActs<T> sa{a.shared.a + ao, a.shared.b ? a.shared.b + ao : nullptr, a.shared.act + ao};
    ffn_backward(dx, dsw1 + sh * wsz, dsw3 ? dsw3 + sh * wsz : nullptr, dsw2 + sh * wsz, dout, sa,
                 x, sw1 + sh * wsz, sw3 ? sw3 + sh * wsz : nullptr, sw2 + sh * wsz, N, d, h,
                 dm.kind, true, s);
  }
  router_backward(dlogits, dgates, a.probs, a.idx, a.gates, a.aux_coef, N, E, k);
  matmul(dwr, x, dlogits, d, N, E, true, false, true);
  matmul(dx, dlogits, wr, N, E, d, false, true, true);
}

#define PX_INSTANTIATE(T)                                                                        \
  template void moe_forward<T>(T*, MoeActs<T>&, const T*, const T*, const T*, const T*, const T*, \
                               const T*, const T*, const T*, const T*, const MoeDims&,                   \
                               const MoeContext<T>&, T*);      \
  template void moe_backward<T>(T*, T*, T*, T*, T*, T*, T*, T*, const T*, const MoeActs<T>&,     \
                                const T*, const T*, const T*, const T*, const T*, const T*,      \
                                const T*, const T*, const MoeDims&,                    \
                                const MoeContext<T>&, Scratch<T>&);
PX_INSTANTIATE(float)
PX_INSTANTIATE(double)
#undef PX_INSTANTIATE

}  // namespace px
