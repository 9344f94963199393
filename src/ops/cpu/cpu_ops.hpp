#pragma once
// CPU (Eigen) implementations of every op the model uses, one free function per
// forward/backward. This is the reference every other backend is tested against.
//
// Conventions (stated once, kept everywhere):
//  - all matrices are row-major, weights stored [in, out] and applied as x W;
//  - backward functions ADD (+=) into parameter gradients and ASSIGN (=) activation
//    gradients, unless the name says otherwise;
//  - N = number of token rows (B*T), d = model width, h = hidden width.
// Templates are instantiated for float (training) and double (gradient tests).
#include <cstddef>
#include <cstdint>

namespace px::cpu {

// C[M,N] = (accumulate ? C : 0) + op(A) op(B), op(X) = X or X^T.
// A is [M,K] (or [K,M] if transA), B is [K,N] (or [N,K] if transB).
template <class T>
void matmul(T* C, const T* A, const T* B, int M, int K, int N, bool transA, bool transB,
            bool accumulate);

// RMSNorm: out = x / sqrt(mean(x^2) + eps) * g; rstd[N] saved for backward.
template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* g, int N, int d);
template <class T>
void rmsnorm_backward(T* dx, T* dg, const T* dout, const T* x, const T* g, const T* rstd, int N,
                      int d);

// RoPE, rotate-half convention, on [B, T, H, hd] laid out as [B*T, H*hd]; position = t.
// Pair i (i < hd/2) rotates (x[i], x[i+hd/2]) by angle t * 10000^(-2i/hd). In place allowed.
template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd);
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd);

// Causal multi-head attention. q,k,v,out: [B*T, H*hd]; probs: [B, H, T, T] (saved).
// The causal softmax probabilities [B, H, T, T] of q k^T / sqrt(hd) (upper triangle zeros):
// attention_forward's first half, called again by a backward that recomputes them.
template <class T>
void attention_probs(T* probs, const T* q, const T* k, int B, int Tn, int H, int hd);
template <class T>
void attention_forward(T* out, T* probs, const T* q, const T* k, const T* v, int B, int Tn, int H,
                       int hd);
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* probs, int B, int Tn, int H, int hd);
// The same, holding one head's probabilities at a time (no [B, H, T, T] buffer): the backward
// recomputes each head's from q and k (train.recompute). Bit-identical to the stored path.
template <class T>
void attention_forward_streamed(T* out, const T* q, const T* k, const T* v, int B, int Tn, int H, int hd);
template <class T>
void attention_backward_streamed(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                 const T* v, int B, int Tn, int H, int hd);

// SwiGLU activation: act = silu(a) * b, elementwise over n values.
template <class T>
void swiglu_forward(T* act, const T* a, const T* b, size_t n);
template <class T>
void swiglu_backward(T* da, T* db, const T* dact, const T* a, const T* b, size_t n);
// relu2 activation: act = relu(a)^2.
template <class T>
void relu2_forward(T* act, const T* a, size_t n);
template <class T>
void relu2_backward(T* da, const T* dact, const T* a, size_t n);

// Router: probs = softmax(logits) row-wise over E; top-k of (probs + bias) (bias may be null);
// gates = the chosen probs renormalised to sum 1. idx/gates: [N, k]. Ties: lower index first.
template <class T>
void router_forward(T* probs, int32_t* idx, T* gates, const T* logits, const T* bias, int N, int E,
                    int k);
// dprobs[N,E] (assigned) from dgates[N,k] through the renormalisation, plus aux_coef[e]
// added to every row (the aux-loss gradient); then dlogits = softmax backward of dprobs.
template <class T>
void router_backward(T* dlogits, const T* dgates, const T* probs, const int32_t* idx,
                     const T* gates, const T* aux_coef, int N, int E, int k);

// Group the N*k assignments by expert. bounds[E+1]: expert e's rows are
// [bounds[e], bounds[e+1]) of the permuted buffer; order inside a segment follows
// assignment order (token-major). pos[N*k]: permuted row of assignment a = n*k + j;
// row_token[N*k]: token of permuted row r. Counting sort, O(N*k + E).
void moe_permute_build(int32_t* bounds, int32_t* pos, int32_t* row_token, const int32_t* idx, int N,
                       int E, int k);

// Xp[r] = X[row_token[r]] for r < rows.
template <class T>
void gather_rows(T* Xp, const T* X, const int32_t* row_token, int rows, int d);
// out[n] += sum_j gates[n,j] * Yp[pos[n*k+j]].
template <class T>
void combine_rows(T* out, const T* Yp, const T* gates, const int32_t* pos, int N, int k, int d);
// dYp[pos[n*k+j]] = gates[n,j] * dout[n]; dgates[n,j] = <dout[n], Yp[pos[n*k+j]]>.
template <class T>
void combine_rows_backward(T* dYp, T* dgates, const T* dout, const T* Yp, const T* gates,
                           const int32_t* pos, int N, int k, int d);
// dX[row_token[r]] += dXp[r].
template <class T>
void scatter_add_rows(T* dX, const T* dXp, const int32_t* row_token, int rows, int d);

// Expert activation kinds.
enum ExpertAct : int { EXPERT_ACT_SWIGLU = 0, EXPERT_ACT_RELU2 = 1 };

// Grouped expert FFN over segments: for each expert e with rows [bounds[e], bounds[e+1]):
//   swiglu: A = X W1[e], Bm = X W3[e], act = silu(A)*Bm, Y = act W2[e]
//   relu2:  A = X W1[e], act = relu(A)^2, Y = act W2[e]   (W3, Bm unused, may be null)
// W1[e], W3[e]: [d, h] at W1 + e*d*h; W2[e]: [h, d] at W2 + e*h*d.
// A, Bm, act: [rows, h] saved for backward. Y: [rows, d] (assigned).
template <class T>
void expert_ffn_forward(T* Y, T* A, T* Bm, T* act, const T* X, const T* W1, const T* W3,
                        const T* W2, const int32_t* bounds, int E, int d, int h, ExpertAct kind);
// dX assigned; dW1, dW3, dW2 accumulated (null: skipped, for frozen views, as on the GPU).
// dact_scratch, dA_scratch, dB_scratch: [rows, h].
template <class T>
void expert_ffn_backward(T* dX, T* dW1, T* dW3, T* dW2, const T* dY, const T* X, const T* A,
                         const T* Bm, const T* act, const T* W1, const T* W3, const T* W2,
                         const int32_t* bounds, int E, int d, int h, ExpertAct kind,
                         T* dact_scratch, T* dA_scratch, T* dB_scratch);

// Low-rank adapter on a weight (DESIGN §6): W [in, out] = base + A B, A [in, r], B [r, out].
template <class T>
void adapter_merge(T* W, const T* base, const T* A, const T* B, int in, int r, int out);
// From the gradient dW of W: dA += dW B^T, dB += A^T dW (accumulated).
template <class T>
void adapter_backward(T* dA, T* dB, const T* dW, const T* A, const T* B, int in, int r, int out);

// Cross-entropy over logits [N, V] with targets [N]; returns the mean loss and writes
// dlogits = (softmax - onehot) * dscale (dscale = 1/N for the mean) when dlogits != null.
template <class T>
double cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int N, int V, T dscale);

// Fused AdamW on n values: m,v updated; p -= lr * (mhat/(sqrt(vhat)+eps) + wd * p).
// step is 1-based.
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, int step);
void adamw_update(double* p, const double* g, double* m, double* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double wd, int step);

// Ternary views of expert weights (DESIGN §6), the CPU twin of kernels/ternary.cu: same
// layout, same rules, same fp32 arithmetic, so that a GPU pack and a CPU pack of the same fp32
// W agree bit for bit. W [in, out] (applied as x W) becomes t in {-1, 0, +1} with one fp32
// absmean scale per output unit j:
//   s_j  = (sum_i |W[i, j]|, summed in fp32 in ascending i) / (float)in   (fp32 division)
//   t_ij = clamp(rint(W[i, j] / s_j), -1, 1)  (fp32 division, rint = round half to EVEN:
//          |W|/s = 0.5 -> 0, 1.5 -> 2 -> clamped to 1);  s_j = 0 (or NaN) -> t_ij = 0.
// Packed 2 bits per weight, output-unit major: unit j owns words [j * words, (j+1) * words),
// words = ternary_words(in) = ceil(in / 16); weight i sits in word i / 16 at bits 2 * (i % 16);
// code 0 -> 0, 1 -> +1, 2 -> -1 (3 is never written and decodes as 0, as on the GPU).
// The GPU kernels require in % 16 == 0; the CPU also takes any in >= 1, zero-padding (code 0)
// the last word of each unit, so that every expert shape has a view. For in % 16 == 0 the
// buffers are exactly the GPU's.
inline int ternary_words(int in) { return (in + 15) / 16; }
inline int ternary_decode(uint32_t word, int i) {
  const uint32_t c = (word >> (2 * i)) & 3u;
  return c == 1u ? 1 : (c == 2u ? -1 : 0);
}
// packed [out, ternary_words(in)], scale [out]; nothing written when in <= 0 or out <= 0.
void ternary_pack(uint32_t* packed, float* scale, const float* W, int in, int out);
// W [in, out] = t * s, computed in fp32 and converted to T (exact for double).
template <class T>
void ternary_unpack(T* W, const uint32_t* packed, const float* scale, int in, int out);
// Y[M, out] = (accumulate ? Y : 0) + X[M, in] (t * s). Like the GPU kernel: for each (m, j)
// sum_i t_ij X[m, i] in fp32 in ascending i (adds and subtracts only, zero codes skipped), then
// Y = fma(sum, s_j, accumulate ? Y : 0) (nvcc contracts the kernel's `Y + sum * s` into an fma
// by default). The GPU takes X as bf16: pass X rounded to bf16 to compare.
void ternary_matmul(float* Y, const float* X, const uint32_t* packed, const float* scale, int M,
                    int in, int out, bool accumulate);

}  // namespace px::cpu
