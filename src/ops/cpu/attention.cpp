// Causal multi-head attention, one (batch, head) pair at a time with Eigen products.
// q,k,v,out: [B*T, H*hd]; probs: [B, H, T, T] (upper triangle stored as zeros).
#include <cmath>
#include <limits>

#include "ops/cpu/cpu_ops.hpp"
#include "ops/cpu/eigen_maps.hpp"

namespace px::cpu {

namespace {
template <class T>
using Strided = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using StridedOut = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
}  // namespace

namespace {
// One (batch, head) pair: P [Tn, Tn] = causal softmax(Q K^T / sqrt(hd)) of the head at `off`.
template <class T>
void head_probs(T* probs, const T* q, const T* k, size_t off, int Tn, int ld, int hd) {
  const T scale = (T)(1.0 / std::sqrt((double)hd));
  Strided<T> Q(q + off, Tn, hd, Eigen::OuterStride<>(ld));
  Strided<T> K(k + off, Tn, hd, Eigen::OuterStride<>(ld));
  MapMat<T> P(probs, Tn, Tn);
  P.noalias() = (Q * K.transpose()) * scale;
  for (int i = 0; i < Tn; ++i) {
    T mx = P(i, 0);
    for (int j = 1; j <= i; ++j) mx = std::max(mx, P(i, j));
    T sum = 0;
    for (int j = 0; j <= i; ++j) {
      P(i, j) = std::exp(P(i, j) - mx);
      sum += P(i, j);
    }
    const T inv = 1 / sum;
    for (int j = 0; j <= i; ++j) P(i, j) *= inv;
    for (int j = i + 1; j < Tn; ++j) P(i, j) = 0;
  }
}

// One head's output O = P V.
template <class T>
void head_output(T* out, const T* probs, const T* v, size_t off, int Tn, int ld, int hd) {
  Strided<T> V(v + off, Tn, hd, Eigen::OuterStride<>(ld));
  StridedOut<T> O(out + off, Tn, hd, Eigen::OuterStride<>(ld));
  CMapMat<T> P(probs, Tn, Tn);
  O.noalias() = P * V;
}

// One head's dq, dk, dv from its probabilities.
template <class T>
void head_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                   const T* probs, size_t off, int Tn, int ld, int hd) {
  const T scale = (T)(1.0 / std::sqrt((double)hd));
  Strided<T> Q(q + off, Tn, hd, Eigen::OuterStride<>(ld));
  Strided<T> K(k + off, Tn, hd, Eigen::OuterStride<>(ld));
  Strided<T> V(v + off, Tn, hd, Eigen::OuterStride<>(ld));
  Strided<T> dO(dout + off, Tn, hd, Eigen::OuterStride<>(ld));
  StridedOut<T> dQ(dq + off, Tn, hd, Eigen::OuterStride<>(ld));
  StridedOut<T> dK(dk + off, Tn, hd, Eigen::OuterStride<>(ld));
  StridedOut<T> dV(dv + off, Tn, hd, Eigen::OuterStride<>(ld));
  CMapMat<T> P(probs, Tn, Tn);
  dV.noalias() = P.transpose() * dO;
  RowMat<T> dS = dO * V.transpose();  // dP
  for (int i = 0; i < Tn; ++i) {
    T dot = 0;
    for (int j = 0; j <= i; ++j) dot += dS(i, j) * P(i, j);
    for (int j = 0; j <= i; ++j) dS(i, j) = P(i, j) * (dS(i, j) - dot) * scale;
    for (int j = i + 1; j < Tn; ++j) dS(i, j) = 0;
  }
  dQ.noalias() = dS * K;
  dK.noalias() = dS.transpose() * Q;
}
}  // namespace

template <class T>
void attention_probs(T* probs, const T* q, const T* k, int B, int Tn, int H, int hd) {
  const int ld = H * hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int hh = 0; hh < H; ++hh)
      head_probs(probs + ((size_t)b * H + hh) * Tn * Tn, q, k, (size_t)b * Tn * ld + (size_t)hh * hd, Tn, ld, hd);
}

template <class T>
void attention_forward(T* out, T* probs, const T* q, const T* k, const T* v, int B, int Tn, int H,
                       int hd) {
  attention_probs(probs, q, k, B, Tn, H, hd);
  const int ld = H * hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int hh = 0; hh < H; ++hh)
      head_output(out, probs + ((size_t)b * H + hh) * Tn * Tn, v, (size_t)b * Tn * ld + (size_t)hh * hd, Tn, ld, hd);
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* probs, int B, int Tn, int H, int hd) {
  const int ld = H * hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int hh = 0; hh < H; ++hh)
      head_backward(dq, dk, dv, dout, q, k, v, probs + ((size_t)b * H + hh) * Tn * Tn,
                    (size_t)b * Tn * ld + (size_t)hh * hd, Tn, ld, hd);
}

template <class T>
void attention_forward_streamed(T* out, const T* q, const T* k, const T* v, int B, int Tn, int H, int hd) {
  const int ld = H * hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int hh = 0; hh < H; ++hh) {
      RowMat<T> P(Tn, Tn);  // (this head's alone)
      const size_t off = (size_t)b * Tn * ld + (size_t)hh * hd;
      head_probs(P.data(), q, k, off, Tn, ld, hd);
      head_output(out, P.data(), v, off, Tn, ld, hd);
    }
}

template <class T>
void attention_backward_streamed(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                 const T* v, int B, int Tn, int H, int hd) {
  const int ld = H * hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int hh = 0; hh < H; ++hh) {
      RowMat<T> P(Tn, Tn);
      const size_t off = (size_t)b * Tn * ld + (size_t)hh * hd;
      head_probs(P.data(), q, k, off, Tn, ld, hd);
      head_backward(dq, dk, dv, dout, q, k, v, P.data(), off, Tn, ld, hd);
    }
}

template void attention_probs<float>(float*, const float*, const float*, int, int, int, int);
template void attention_probs<double>(double*, const double*, const double*, int, int, int, int);
template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, const double*,
                                        const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int, int, int,
                                        int);
template void attention_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int, int,
                                         int, int);

}  // namespace px::cpu

namespace px::cpu {
template void attention_forward_streamed<float>(float*, const float*, const float*, const float*, int, int, int, int);
template void attention_forward_streamed<double>(double*, const double*, const double*, const double*, int, int, int, int);
template void attention_backward_streamed<float>(float*, float*, float*, const float*, const float*,
                                                 const float*, const float*, int, int, int, int);
template void attention_backward_streamed<double>(double*, double*, double*, const double*, const double*,
                                                  const double*, const double*, int, int, int, int);
}  // namespace px::cpu
