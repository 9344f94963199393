#pragma once
// Saved activations of one forward pass, per layer kind. All pointers point into the
// model's activation arenas (float/double and int32), sized once from config and batch.
// Shapes: N = B*T token rows, d = d_model, E experts, k = top_k, S shared experts.
#include <cstdint>

namespace px {

template <class T>
struct AttentionActs {
  T* xn;     // [N, d] RMSNorm(x)
  T* rstd;   // [N]
  T* q;      // [N, d] after RoPE
  T* k;      // [N, d] after RoPE
  T* v;      // [N, d]
  T* probs;  // [B, H, T, T]
  T* y;      // [N, d] attention output before Wo
};

// A dense SwiGLU/relu2 FFN over rows (also used for each shared expert).
template <class T>
struct FfnActs {
  T* a;    // [N, h] x W1
  T* b;    // [N, h] x W3 (SwiGLU only)
  T* act;  // [N, h]
};

template <class T>
struct MoeActs {
  T* logits;          // [N, E]
  T* probs;           // [N, E]
  T* gates;           // [N, k]
  int32_t* idx;       // [N, k]
  int32_t* bounds;    // [E + 1]
  int32_t* pos;       // [N*k]
  int32_t* row_token; // [N*k]
  T* xp;              // [N*k, d] permuted expert inputs
  FfnActs<T> routed;  // [N*k, h] each
  T* yp;              // [N*k, d] expert outputs (before gates)
  FfnActs<T> shared;  // [S, N, h] each
  T* aux_coef;        // [E] d(aux)/d(probs[n,e]) for every row
  double aux_loss;
};

template <class T>
struct LayerActs {
  T* x;        // [N, d] layer input (residual stream)
  AttentionActs<T> attn;
  T* h;        // [N, d] x + attention
  T* xn2;      // [N, d] RMSNorm(h)
  T* rstd2;    // [N]
  FfnActs<T> dense;
  MoeActs<T> moe;
};

}  // namespace px
