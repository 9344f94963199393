#pragma once
// One forward/backward pair per layer kind (DESIGN §2), over explicit shapes.
// Backward functions ADD into parameter gradients and ASSIGN activation gradients.
#include "model/activations.hpp"  // defines: AttentionActs, FfnActs, MoeActs
#include "ops/cpu/cpu_ops.hpp"     // defines: ExpertAct

namespace px {

struct AttnDims {
  int B, Tn, H, hd;
  int N() const { return B * Tn; }
  int d() const { return H * hd; }
};

// Scratch buffers for the backward passes, each large enough for its largest user.
template <class T>
struct Scratch {
  T* nd[6];      // [N, d] each
  T* rows_d[2];  // [max(N*k, N), d]
  T* rows_h[3];  // [max(N*k*h, N*dense_hidden, N*h)]
  T* nk;         // [N*k]
  T* ne;         // [N, E]
};

// h = x + (RMSNorm(x; g) -> RoPE'd causal MHA with Wq,Wk,Wv -> Wo).
template <class T>
void attention_block_forward(T* h, AttentionActs<T>& a, const T* x, const T* g, const T* wq,
                             const T* wk, const T* wv, const T* wo, const AttnDims& dm);
// dx = dh + d(attention branch)/dx; parameter gradients accumulated.
template <class T>
void attention_block_backward(T* dx, T* dg, T* dwq, T* dwk, T* dwv, T* dwo, const T* dh,
                              const AttentionActs<T>& a, const T* x, const T* g, const T* wq,
                              const T* wk, const T* wv, const T* wo, const AttnDims& dm,
                              Scratch<T>& s);

// Dense FFN on N rows: out (=) act(x W1 [* x W3]) W2.
template <class T>
void ffn_forward(T* out, FfnActs<T>& a, const T* x, const T* w1, const T* w3, const T* w2, int N,
                 int d, int h, cpu::ExpertAct kind);
// dx (= or += per accumulate_dx) ; parameter gradients accumulated.
template <class T>
void ffn_backward(T* dx, T* dw1, T* dw3, T* dw2, const T* dout, const FfnActs<T>& a, const T* x,
                  const T* w1, const T* w3, const T* w2, int N, int d, int h, cpu::ExpertAct kind,
                  bool accumulate_dx, Scratch<T>& s);

struct MoeDims {
  int N, d, E, k, S, h;
  cpu::ExpertAct kind;
  double aux_alpha;  // 0 disables the aux loss
};

// out (=) shared experts + sum_j gate_j * expert_{idx_j}(x); also fills a.aux_loss.
// bias (may be null) shifts the top-k selection only.
template <class T>
void moe_forward(T* out, MoeActs<T>& a, const T* x, const T* wr, const T* sw1, const T* sw3,
                 const T* sw2, const T* ew1, const T* ew3, const T* ew2, const T* bias,
                 const MoeDims& dm, T* scratch_nd);
// dx (=); all parameter gradients accumulated (router, shared, routed experts).
template <class T>
void moe_backward(T* dx, T* dwr, T* dsw1, T* dsw3, T* dsw2, T* dew1, T* dew3, T* dew2,
                  const T* dout, const MoeActs<T>& a, const T* x, const T* wr, const T* sw1,
                  const T* sw3, const T* sw2, const T* ew1, const T* ew3, const T* ew2,
                  const MoeDims& dm, Scratch<T>& s);

}  // namespace px
