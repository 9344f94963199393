#pragma once
// One forward/backward pair per layer kind (DESIGN §2), over explicit shapes.
// Backward functions ADD into parameter gradients and ASSIGN activation gradients.
#include <functional>

#include "model/activations.hpp"  // defines: AttentionActs, FfnActs, MoeActs
#include "ops/cpu/cpu_ops.hpp"     // defines: ExpertAct

namespace px {

struct AttnDims {
  int B, Tn, H, hd;
  bool recompute = false;  // no probabilities kept: each head's held alone, recomputed in the backward
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
  bool recompute_routed = false;  // the backward recomputes the routed hidden activations
};

// Where the routed experts of a MoE layer run. The default (null) runs all of them here;
// expert parallelism (mode "sync") sends each expert's rows to the rank that holds it.
template <class T>
struct RoutedExperts {
  virtual ~RoutedExperts() = default;
  // xp: [rows, d] grouped by expert (bounds[E+1]); writes yp [rows, d] in the same order.
  virtual void forward(int moe_layer, const T* xp, const int32_t* bounds, T* yp) = 0;
  // dyp in the order of the last forward; writes dxp; expert weight gradients accumulate
  // where the experts live.
  virtual void backward(int moe_layer, const T* dyp, T* dxp) = 0;
  // The activation slot (a pipeline stage's micro-batch in flight, MoeModel's slots) the next
  // forward (forward = true) or backward belongs to; the model calls it before each (slot 0
  // when not pipelined). A backward may run the forward of its layers again first
  // (train.recompute = "layers"): same slot, no call.
  virtual void use_slot(int slot, bool forward) { (void)slot, (void)forward; }
};

// How one MoE layer's local batch relates to the batch the loss averages over.
template <class T>
struct MoeContext {
  int moe_layer = 0;
  double global_tokens = 0;  // tokens of the whole batch (0: the local N)
  // Sums [2E] statistics (routed counts, probability sums) over the whole batch; null: local.
  const std::function<void(double*, int)>* sum_stats = nullptr;
  RoutedExperts<T>* experts = nullptr;  // null: every routed expert runs here
  bool drop_routed = false;  // evaluation ablation: the routed experts' outputs are left out
  double loss_scale = 1;     // the loss's gradient is scaled by this (1 / micro-batches)
};

// out (=) shared experts + sum_j gate_j * expert_{idx_j}(x); also fills a.aux_loss.
// bias (may be null) shifts the top-k selection only.
template <class T>
void moe_forward(T* out, MoeActs<T>& a, const T* x, const T* wr, const T* sw1, const T* sw3,
                 const T* sw2, const T* ew1, const T* ew3, const T* ew2, const T* bias,
                 const MoeDims& dm, const MoeContext<T>& ctx, T* scratch_nd);
// dx (=); all parameter gradients accumulated (router, shared, routed experts).
template <class T>
void moe_backward(T* dx, T* dwr, T* dsw1, T* dsw3, T* dsw2, T* dew1, T* dew3, T* dew2,
                  const T* dout, const MoeActs<T>& a, const T* x, const T* wr, const T* sw1,
                  const T* sw3, const T* sw2, const T* ew1, const T* ew3, const T* ew2,
                  const MoeDims& dm, const MoeContext<T>& ctx, Scratch<T>& s);

}  // namespace px
