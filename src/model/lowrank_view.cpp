// Low-rank views of routed experts: randomized fitting from masters, deltas and their
// re-compressing addition, the wire form, dequantization (method, layout and rules in
// lowrank_view.hpp).
//
// Every dense buffer here is row-major. Loops over rows may run on OpenMP threads, but each
// output element is summed by one thread in a fixed (ascending) order, so the bits do not depend
// on the thread count; Eigen is used only for JacobiSVD of small square matrices (no GEMM).
#include "model/lowrank_view.hpp"
#include "model/expert_slices.hpp"  // defines: expert_offset, expert_act_of

#include <Eigen/SVD>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numbers>
#include <stdexcept>
#include <string>

#include "util/hash_rng.hpp"     // defines: splitmix64, uniform01
#include "wire/expert_wire.hpp"  // defines: wire::expert_to_wire, wire::expert_from_wire, wire::for_each_matrix

namespace px {

namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

constexpr size_t kParallelWork = size_t{1} << 18;  // below this many multiply-adds: one thread

using wire::check_shape;
using wire::invalid;
using wire::malformed;
using wire::shape_str;

template <class T>
void check_finite(const char* what, const char* name, const T* W, int rows, int cols) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const T x = W[(size_t)i * cols + j];
      if (!std::isfinite(x))
        invalid(what, std::string(name) + "[" + std::to_string(i) + ", " + std::to_string(j) + "] is " +
                          std::to_string((double)x) + " (must be finite)");
    }
}

// What is wrong with the size of the weights finite factors stand for ("" when nothing): every
// |W_ij| = |sum_c U_ic V_cj| <= rank * max|U| * max|V|, which must be within kViewWeightBound.
std::string weight_problem(const LowrankMatrix& m) {
  float u = 0.f, v = 0.f;
  for (float x : m.U) u = std::max(u, std::fabs(x));
  for (float x : m.V) v = std::max(v, std::fabs(x));
  const double bound = (double)m.rank * u * v;
  if (bound <= kViewWeightBound) return "";
  return "factors of up to |U| = " + std::to_string(u) + ", |V| = " + std::to_string(v) + " at rank " +
         std::to_string(m.rank) + " may stand for weights above " + wire::weight_bound_str();
}

// A well-formed in-memory matrix: the wire's rules (shape, rank, sizes, finite values, weights
// within kViewWeightBound).
void check_matrix(const char* what, const LowrankMatrix& m) {
  check_shape(what, m.in, m.out);
  if (m.rank < 1 || m.rank > std::min(m.in, m.out) || m.rank > kLowrankMaxRank)
    invalid(what, "rank " + std::to_string(m.rank) + " of " + shape_str(m.in, m.out) + " (must be 1.." +
                      std::to_string(std::min({m.in, m.out, kLowrankMaxRank})) + ")");
  if (m.U.size() != (size_t)m.in * m.rank || m.V.size() != (size_t)m.rank * m.out)
    invalid(what, "U/V sizes " + std::to_string(m.U.size()) + "/" + std::to_string(m.V.size()) +
                      " do not match the shape " + shape_str(m.in, m.out) + " at rank " + std::to_string(m.rank));
  check_finite(what, "U", m.U.data(), m.in, m.rank);
  check_finite(what, "V", m.V.data(), m.rank, m.out);
  if (const std::string p = weight_problem(m); !p.empty()) invalid(what, p);
}

// ---- fixed-order dense kernels (double accumulation) ------------------------------------------

// C [m, n] = A [m, k] B [k, n]; A of type T (fp32 masters or double), B double.
template <class T>
void mul_ab(double* C, const T* A, const double* B, int m, int k, int n) {
#pragma omp parallel for schedule(static) if ((size_t)m * k * n > kParallelWork)
  for (int i = 0; i < m; ++i) {
    double* c = C + (size_t)i * n;
    std::fill(c, c + n, 0.0);
    const T* a = A + (size_t)i * k;
    for (int p = 0; p < k; ++p) {
      const double w = (double)a[p];
      const double* b = B + (size_t)p * n;
      for (int j = 0; j < n; ++j) c[j] += w * b[j];
    }
  }
}

// C [n, l] = A^T X, A [m, n] of type T, X [m, l] double. Output rows are spread over threads in
// blocks; each row C[j, :] sums over i = 0, 1, ..., m-1 in order.
template <class T>
void mul_atb(double* C, const T* A, const double* X, int m, int n, int l) {
  constexpr int kBlock = 64;
  const int blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if ((size_t)m * n * l > kParallelWork)
  for (int b = 0; b < blocks; ++b) {
    const int j0 = b * kBlock, j1 = std::min(n, j0 + kBlock);
    std::fill(C + (size_t)j0 * l, C + (size_t)j1 * l, 0.0);
    for (int i = 0; i < m; ++i) {
      const T* a = A + (size_t)i * n;
      const double* x = X + (size_t)i * l;
      for (int j = j0; j < j1; ++j) {
        const double w = (double)a[j];
        double* c = C + (size_t)j * l;
        for (int t = 0; t < l; ++t) c[t] += w * x[t];
      }
    }
  }
}

// row i of U V into acc [out] (ascending c).
void uv_row(double* acc, const LowrankMatrix& f, int i) {
  std::fill(acc, acc + f.out, 0.0);
  const float* u = f.U.data() + (size_t)i * f.rank;
  for (int c = 0; c < f.rank; ++c) {
    const double w = (double)u[c];
    const float* v = f.V.data() + (size_t)c * f.out;
    for (int j = 0; j < f.out; ++j) acc[j] += w * (double)v[j];
  }
}

// Thin Householder QR of A [m, k] (row-major): Q [m, kq] with orthonormal columns and R [kq, k]
// upper triangular (either may be null), kq = min(m, k), A = Q R. Reflector j maps column j's
// x = A[j:, j] to alpha e_1, alpha = -sign(x_0) ||x|| (a zero column is left alone, R[j, j] = 0).
// Columns are held contiguous; each column update is one dot product and one axpy in ascending
// row order, columns spread over threads.
void qr_thin(const double* A, int m, int k, std::vector<double>* Q, std::vector<double>* R) {
  const int kq = std::min(m, k);
  std::vector<double> X((size_t)m * k);  // column-major copy
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < k; ++c) X[(size_t)c * m + i] = A[(size_t)i * k + c];
  std::vector<double> Vh((size_t)kq * m, 0.0);  // unit reflector vectors, column j from row j
  std::vector<char> active(kq, 0);
  auto reflect = [m](double* col, const double* v, int j) {
    double dot = 0.0;
    for (int i = j; i < m; ++i) dot += v[i] * col[i];
    dot *= 2.0;
    for (int i = j; i < m; ++i) col[i] -= dot * v[i];
  };
  for (int j = 0; j < kq; ++j) {
    double* x = X.data() + (size_t)j * m;
    double norm2 = 0.0;
    for (int i = j; i < m; ++i) norm2 += x[i] * x[i];
    if (norm2 == 0.0) continue;
    const double norm = std::sqrt(norm2);
    const double alpha = x[j] >= 0.0 ? -norm : norm;
    double* v = Vh.data() + (size_t)j * m;
    for (int i = j; i < m; ++i) v[i] = x[i];
    v[j] -= alpha;
    double vn2 = 0.0;
    for (int i = j; i < m; ++i) vn2 += v[i] * v[i];
    if (vn2 == 0.0) continue;  // x = alpha e_1 exactly: nothing to reflect
    const double inv = 1.0 / std::sqrt(vn2);
    for (int i = j; i < m; ++i) v[i] *= inv;
    active[j] = 1;
    x[j] = alpha;
    for (int i = j + 1; i < m; ++i) x[i] = 0.0;
#pragma omp parallel for schedule(static) if ((size_t)(m - j) * (k - j) > kParallelWork)
    for (int c = j + 1; c < k; ++c) reflect(X.data() + (size_t)c * m, v, j);
  }
  if (R) {
    R->assign((size_t)kq * k, 0.0);
    for (int r = 0; r < kq; ++r)
      for (int c = r; c < k; ++c) (*R)[(size_t)r * k + c] = X[(size_t)c * m + r];
  }
  if (Q) {
    std::vector<double> E((size_t)kq * m, 0.0);  // column-major [m, kq], starts as I
    for (int c = 0; c < kq; ++c) E[(size_t)c * m + c] = 1.0;
    for (int j = kq - 1; j >= 0; --j) {
      if (!active[j]) continue;
      const double* v = Vh.data() + (size_t)j * m;
      // columns c < j are still e_c, zero in rows >= j: H_j leaves them alone
#pragma omp parallel for schedule(static) if ((size_t)(m - j) * (kq - j) > kParallelWork)
      for (int c = j; c < kq; ++c) reflect(E.data() + (size_t)c * m, v, j);
    }
    Q->resize((size_t)m * kq);
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < kq; ++c) (*Q)[(size_t)i * kq + c] = E[(size_t)c * m + i];
  }
}

// Standard normal number e of stream `seed` (Box-Muller, uniform01 in (0, 1]: log is finite).
double gaussian(uint64_t seed, uint64_t e) {
  const double u1 = uniform01(seed, 2 * e), u2 = uniform01(seed, 2 * e + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

// SVD of a square n x n matrix (row-major): U, Vt n x n column-major via Eigen, s descending.
Eigen::JacobiSVD<MatD> svd_square(const double* C, int n) {
  MatD M(n, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) M(i, j) = C[(size_t)i * n + j];
  return Eigen::JacobiSVD<MatD>(M, Eigen::ComputeFullU | Eigen::ComputeFullV);
}

// Factors from A ~ (Qa Ul S)(Qb Vl)^T: U = Qa [m, ka] (Ul[:ka, :r] S), V = (Qb [n, kb] Vl[:kb, :r])^T,
// with Ul, Vl the (padded, s x s) singular vectors of an SVD.
LowrankMatrix assemble(const std::vector<double>& Qa, int m, int ka, const std::vector<double>& Qb, int n, int kb,
                       const Eigen::JacobiSVD<MatD>& svd, int r) {
  const MatD& Ul = svd.matrixU();
  const MatD& Vl = svd.matrixV();
  const auto& s = svd.singularValues();
  std::vector<double> M((size_t)ka * r), N((size_t)kb * r);
  for (int j = 0; j < ka; ++j)
    for (int c = 0; c < r; ++c) M[(size_t)j * r + c] = Ul(j, c) * s(c);
  for (int j = 0; j < kb; ++j)
    for (int c = 0; c < r; ++c) N[(size_t)j * r + c] = Vl(j, c);
  std::vector<double> U((size_t)m * r), Vt((size_t)n * r);
  mul_ab(U.data(), Qa.data(), M.data(), m, ka, r);
  mul_ab(Vt.data(), Qb.data(), N.data(), n, kb, r);
  LowrankMatrix f;
  f.in = m;
  f.out = n;
  f.rank = r;
  f.U.resize((size_t)m * r);
  f.V.resize((size_t)r * n);
  for (size_t e = 0; e < f.U.size(); ++e) f.U[e] = (float)U[e];
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < r; ++c) f.V[(size_t)c * n + j] = (float)Vt[(size_t)j * r + c];
  return f;
}

// The randomized fit (lowrank_view.hpp) of W [m, n] (finite, checked by the caller) at rank r.
template <class T>
LowrankMatrix fit(const T* W, int m, int n, int r, uint64_t seed, int power_iters) {
  const int mn = std::min(m, n);
  r = std::min(r, mn);
  const int l = r + std::min(kLowrankOversample, mn - r);  // <= min(m, n): every thin Q has l columns
  std::vector<double> omega((size_t)n * l);
  for (size_t e = 0; e < omega.size(); ++e) omega[e] = gaussian(seed, e);
  std::vector<double> Y((size_t)m * l), Z((size_t)n * l), Q, Qz;
  mul_ab(Y.data(), W, omega.data(), m, n, l);
  qr_thin(Y.data(), m, l, &Q, nullptr);
  for (int it = 0; it < power_iters; ++it) {
    mul_atb(Z.data(), W, Q.data(), m, n, l);
    qr_thin(Z.data(), n, l, &Qz, nullptr);
    mul_ab(Y.data(), W, Qz.data(), m, n, l);
    qr_thin(Y.data(), m, l, &Q, nullptr);
  }
  // B^T = W^T Q = Q2 R, B = R^T Q2^T, R^T = Ur S Vr^T
  mul_atb(Z.data(), W, Q.data(), m, n, l);
  std::vector<double> Q2, R;
  qr_thin(Z.data(), n, l, &Q2, &R);
  std::vector<double> Rt((size_t)l * l);
  for (int i = 0; i < l; ++i)
    for (int j = 0; j < l; ++j) Rt[(size_t)i * l + j] = R[(size_t)j * l + i];
  return assemble(Q, m, l, Q2, n, l, svd_square(Rt.data(), l), r);
}

void check_fit_args(const char* what, int in, int out, int rank, int power_iters) {
  check_shape(what, in, out);
  if (rank < 1) invalid(what, "rank " + std::to_string(rank) + " (must be >= 1)");
  if (std::min(rank, std::min(in, out)) > kLowrankMaxRank)
    invalid(what, "rank " + std::to_string(rank) + " (the wire holds at most " + std::to_string(kLowrankMaxRank) + ")");
  if (power_iters < 0) invalid(what, "power_iters " + std::to_string(power_iters) + " (must be >= 0)");
}

std::vector<float> to_fp32(const double* W, size_t n) {
  std::vector<float> w(n);
  for (size_t k = 0; k < n; ++k) w[k] = (float)W[k];
  return w;
}

// Decodes one matrix at data[0..size); with `used`, the buffer may go on (an expert's next
// matrix) and *used gets this matrix's byte count. `what` names the caller for messages.
LowrankMatrix decode_matrix(const uint8_t* data, size_t size, const std::string& what, size_t* used) {
  const auto hd = wire::read_header<LowrankWireHeader>(data, size, what, "header", "lowrank matrix");
  wire::check_reserved(what, hd.reserved);
  wire::check_header_shape(what, hd.in, hd.out);
  if (hd.rank < 1 || hd.rank > std::min(hd.in, hd.out))
    malformed(what, "rank " + std::to_string(hd.rank) + " of " + shape_str(hd.in, hd.out) + " (must be 1..min(in, out))");
  const size_t need = lowrank_wire_bytes(hd.in, hd.out, hd.rank);
  wire::check_matrix_size(what, size, need, used == nullptr,
                          shape_str(hd.in, hd.out) + " at rank " + std::to_string(hd.rank));
  LowrankMatrix m;
  m.in = hd.in;
  m.out = hd.out;
  m.rank = hd.rank;
  m.U.resize((size_t)m.in * m.rank);
  m.V.resize((size_t)m.rank * m.out);
  const uint8_t* p = data + sizeof hd;
  std::memcpy(m.U.data(), p, 4 * m.U.size());
  p += 4 * m.U.size();
  std::memcpy(m.V.data(), p, 4 * m.V.size());
  auto finite = [&](const char* name, const std::vector<float>& a, int cols) {
    for (size_t e = 0; e < a.size(); ++e)
      if (!std::isfinite(a[e]))
        malformed(what, std::string(name) + "[" + std::to_string(e / cols) + ", " + std::to_string(e % cols) +
                            "] is " + std::to_string(a[e]) + " (values must be finite)");
  };
  finite("U", m.U, m.rank);
  finite("V", m.V, m.out);
  if (const std::string p = weight_problem(m); !p.empty()) malformed(what, p);
  if (used) *used = need;
  return m;
}

uint64_t matrix_seed(uint64_t seed, int m) { return splitmix64(seed + (uint64_t)m); }

}  // namespace

// ---- one matrix -------------------------------------------------------------------------------

LowrankMatrix lowrank_fit(const float* W, int in, int out, int rank, uint64_t seed, int power_iters) {
  check_fit_args("lowrank_fit", in, out, rank, power_iters);
  check_finite("lowrank_fit", "W", W, in, out);
  return fit(W, in, out, rank, seed, power_iters);
}

LowrankMatrix lowrank_fit(const double* W, int in, int out, int rank, uint64_t seed, int power_iters) {
  check_fit_args("lowrank_fit", in, out, rank, power_iters);
  const auto w = to_fp32(W, (size_t)in * out);
  return lowrank_fit(w.data(), in, out, rank, seed, power_iters);
}

LowrankMatrix lowrank_delta(const float* W, const LowrankMatrix& current, int update_rank, uint64_t seed) {
  check_matrix("lowrank_delta", current);
  check_fit_args("lowrank_delta", current.in, current.out, update_rank, 0);
  check_finite("lowrank_delta", "W", W, current.in, current.out);
  const int m = current.in, n = current.out;
  std::vector<double> res((size_t)m * n);
#pragma omp parallel for schedule(static) if ((size_t)m * n * current.rank > kParallelWork)
  for (int i = 0; i < m; ++i) {
    double* r = res.data() + (size_t)i * n;
    uv_row(r, current, i);
    const float* w = W + (size_t)i * n;
    for (int j = 0; j < n; ++j) r[j] = (double)w[j] - r[j];
  }
  return fit(res.data(), m, n, update_rank, seed, 2);
}

void lowrank_add(LowrankMatrix& current, const LowrankMatrix& delta) {
  check_matrix("lowrank_add", current);
  check_matrix("lowrank_add", delta);
  if (delta.in != current.in || delta.out != current.out)
    invalid("lowrank_add", "delta is " + shape_str(delta.in, delta.out) + ", the view " +
                               shape_str(current.in, current.out));
  const int m = current.in, n = current.out, r = current.rank, k = r + delta.rank;
  std::vector<double> A((size_t)m * k), Bt((size_t)n * k);  // [U Ud], [V; Vd]^T
  for (int i = 0; i < m; ++i) {
    for (int c = 0; c < r; ++c) A[(size_t)i * k + c] = current.U[(size_t)i * r + c];
    for (int c = 0; c < delta.rank; ++c) A[(size_t)i * k + r + c] = delta.U[(size_t)i * delta.rank + c];
  }
  for (int c = 0; c < r; ++c)
    for (int j = 0; j < n; ++j) Bt[(size_t)j * k + c] = current.V[(size_t)c * n + j];
  for (int c = 0; c < delta.rank; ++c)
    for (int j = 0; j < n; ++j) Bt[(size_t)j * k + r + c] = delta.V[(size_t)c * n + j];
  const int ka = std::min(m, k), kb = std::min(n, k), s = std::max(ka, kb);
  std::vector<double> Qa, Ra, Qb, Rb;
  qr_thin(A.data(), m, k, &Qa, &Ra);
  qr_thin(Bt.data(), n, k, &Qb, &Rb);
  // core C = Ra Rb^T [ka, kb], zero-padded to s x s (r <= min(ka, kb): the kept singular vectors
  // of non-zero singular values live in the first ka / kb coordinates)
  std::vector<double> RbT((size_t)k * kb), C((size_t)ka * kb), Cs((size_t)s * s, 0.0);
  for (int i = 0; i < kb; ++i)
    for (int c = 0; c < k; ++c) RbT[(size_t)c * kb + i] = Rb[(size_t)i * k + c];
  mul_ab(C.data(), Ra.data(), RbT.data(), ka, k, kb);
  for (int i = 0; i < ka; ++i)
    for (int j = 0; j < kb; ++j) Cs[(size_t)i * s + j] = C[(size_t)i * kb + j];
  LowrankMatrix sum = assemble(Qa, m, ka, Qb, n, kb, svd_square(Cs.data(), s), r);
  check_matrix("lowrank_add (the view plus the delta)", sum);
  current = std::move(sum);
}

template <class T>
void lowrank_to_dense(T* W, const LowrankMatrix& m) {
#pragma omp parallel if ((size_t)m.in * m.out * m.rank > kParallelWork)
  {
    std::vector<double> acc((size_t)m.out);
#pragma omp for schedule(static)
    for (int i = 0; i < m.in; ++i) {
      uv_row(acc.data(), m, i);
      T* w = W + (size_t)i * m.out;
      for (int j = 0; j < m.out; ++j) w[j] = (T)acc[j];
    }
  }
}

template <class T>
void lowrank_add_to_dense(T* W, const LowrankMatrix& delta) {
#pragma omp parallel if ((size_t)delta.in * delta.out * delta.rank > kParallelWork)
  {
    std::vector<double> acc((size_t)delta.out);
#pragma omp for schedule(static)
    for (int i = 0; i < delta.in; ++i) {
      uv_row(acc.data(), delta, i);
      T* w = W + (size_t)i * delta.out;
      for (int j = 0; j < delta.out; ++j) w[j] = (T)((double)w[j] + acc[j]);
    }
  }
}

size_t lowrank_wire_bytes(int in, int out, int rank) {
  check_shape("lowrank_wire_bytes", in, out);
  if (rank < 1 || rank > std::min(in, out) || rank > kLowrankMaxRank)
    invalid("lowrank_wire_bytes", "rank " + std::to_string(rank) + " of " + shape_str(in, out) +
                                      " (must be 1..min(in, out), at most " + std::to_string(kLowrankMaxRank) + ")");
  return sizeof(LowrankWireHeader) + 4 * (size_t)rank * ((size_t)in + (size_t)out);
}

void lowrank_append_wire(std::vector<uint8_t>& buf, const LowrankMatrix& m) {
  check_matrix("lowrank_to_wire", m);
  const size_t base = buf.size();
  buf.resize(base + lowrank_wire_bytes(m.in, m.out, m.rank));
  uint8_t* p = buf.data() + base;
  LowrankWireHeader hd;
  hd.rank = (uint16_t)m.rank;
  hd.in = m.in;
  hd.out = m.out;
  std::memcpy(p, &hd, sizeof hd);
  p += sizeof hd;
  std::memcpy(p, m.U.data(), 4 * m.U.size());
  p += 4 * m.U.size();
  std::memcpy(p, m.V.data(), 4 * m.V.size());
}

std::vector<uint8_t> lowrank_to_wire(const LowrankMatrix& m) {
  std::vector<uint8_t> buf;
  lowrank_append_wire(buf, m);
  return buf;
}

LowrankMatrix lowrank_from_wire(const uint8_t* data, size_t size) {
  return decode_matrix(data, size, "lowrank_from_wire", nullptr);
}

// ---- one expert -------------------------------------------------------------------------------

size_t lowrank_expert_wire_bytes(cpu::ExpertAct kind, int d, int h, int rank) {
  wire::check_act("lowrank_expert_wire_bytes", kind);
  check_shape("lowrank_expert_wire_bytes", d, h);
  const int r = std::min(rank, std::min(d, h));
  return sizeof(LowrankExpertWireHeader) + (size_t)(wire::expert_matrix_count(kind) - 1) * lowrank_wire_bytes(d, h, r) +
         lowrank_wire_bytes(h, d, r);
}

size_t LowrankExpertView::wire_bytes() const {
  size_t n = sizeof(LowrankExpertWireHeader) + lowrank_wire_bytes(w1.in, w1.out, w1.rank) +
             lowrank_wire_bytes(w2.in, w2.out, w2.rank);
  if (kind == cpu::EXPERT_ACT_SWIGLU) n += lowrank_wire_bytes(w3.in, w3.out, w3.rank);
  return n;
}

template <class T>
void LowrankExpertView::dequantize(T* W1, T* W3, T* W2) const {
  T* const dense[3] = {W1, W3, W2};
  wire::for_each_matrix(*this, [&](int slot, const char*, const LowrankMatrix& m, int, int) {
    lowrank_to_dense(dense[slot], m);
  });
}

template <class T>
LowrankExpertView lowrank_view_from_master(const T* W1, const T* W3, const T* W2, int d, int h,
                                           cpu::ExpertAct kind, int rank, uint64_t seed) {
  wire::check_act("lowrank_view_from_master", kind);
  if (wire::has_w3(kind) && W3 == nullptr) invalid("lowrank_view_from_master", "a swiglu expert needs W3");
  LowrankExpertView v;
  v.kind = kind;
  v.d = d;
  v.h = h;
  const T* const master[3] = {W1, W3, W2};
  wire::for_each_matrix(v, [&](int slot, const char*, LowrankMatrix& m, int in, int out) {
    m = lowrank_fit(master[slot], in, out, rank, matrix_seed(seed, slot));
  });
  return v;
}

template <class T>
LowrankExpertView lowrank_view_from_master(const ModelConfig& cfg, const ParamLayout& layout,
                                           const T* experts, int layer, int e, int rank, uint64_t seed) {
  if (layer < 0 || layer >= cfg.n_layers || !cfg.is_moe(layer) || e < 0 || e >= cfg.n_experts)
    invalid("lowrank_view_from_master", "no routed expert " + std::to_string(e) + " in layer " + std::to_string(layer));
  const int m = layer - cfg.dense_layers;  // index among the MoE layers
  const bool glu = cfg.expert_act == ExpertActKind::SWIGLU;
  return lowrank_view_from_master(experts + expert_offset(cfg, layout, m, e, 0),
                                  glu ? experts + expert_offset(cfg, layout, m, e, 1) : nullptr,
                                  experts + expert_offset(cfg, layout, m, e, 2), cfg.d_model,
                                  cfg.expert_hidden, expert_act_of(cfg), rank, seed);
}

LowrankExpertView lowrank_expert_delta(const float* W1, const float* W3, const float* W2,
                                       const LowrankExpertView& current, int update_rank, uint64_t seed) {
  wire::check_expert("lowrank_expert_delta", current);
  if (wire::has_w3(current.kind) && W3 == nullptr) invalid("lowrank_expert_delta", "a swiglu expert needs W3");
  LowrankExpertView v;
  v.kind = current.kind;
  v.d = current.d;
  v.h = current.h;
  const float* const master[3] = {W1, W3, W2};
  wire::for_each_matrix(v, [&](int slot, const char*, LowrankMatrix& m, int, int) {
    m = lowrank_delta(master[slot], wire::matrix_at(current, slot), update_rank, matrix_seed(seed, slot));
  });
  return v;
}

void lowrank_expert_add(LowrankExpertView& current, const LowrankExpertView& delta) {
  wire::check_expert("lowrank_expert_add", current);
  wire::check_expert("lowrank_expert_add", delta);
  if (delta.kind != current.kind || delta.d != current.d || delta.h != current.h)
    invalid("lowrank_expert_add", "delta (act " + std::to_string((int)delta.kind) + ", d = " + std::to_string(delta.d) +
                                      ", h = " + std::to_string(delta.h) + ") does not match the view (act " +
                                      std::to_string((int)current.kind) + ", d = " + std::to_string(current.d) +
                                      ", h = " + std::to_string(current.h) + ")");
  for (const LowrankExpertView* x : {(const LowrankExpertView*)&current, &delta})
    wire::for_each_matrix(*x, [](int, const char*, const LowrankMatrix& m, int, int) {
      check_matrix("lowrank_expert_add", m);
    });
  // the sums are made on a copy: an add that throws (a sum past kViewWeightBound) leaves
  // `current` as it was
  LowrankExpertView sum = current;
  wire::for_each_matrix(sum, [&](int slot, const char*, LowrankMatrix& m, int, int) {
    lowrank_add(m, wire::matrix_at(delta, slot));
  });
  current = std::move(sum);
}

std::vector<uint8_t> lowrank_expert_to_wire(const LowrankExpertView& v) {
  wire::check_expert("lowrank_expert_to_wire", v);
  return wire::expert_to_wire<LowrankExpertWireHeader>(v, lowrank_append_wire);
}

LowrankExpertView lowrank_expert_from_wire(const uint8_t* data, size_t size) {
  // the matrices' ranks are in their own headers: the whole size is known only at the end
  return wire::expert_from_wire<LowrankExpertWireHeader, LowrankExpertView>(
      data, size, "lowrank_expert_from_wire", "lowrank expert", decode_matrix, [](const LowrankExpertView&) {});
}

template void lowrank_to_dense<float>(float*, const LowrankMatrix&);
template void lowrank_to_dense<double>(double*, const LowrankMatrix&);
template void lowrank_add_to_dense<float>(float*, const LowrankMatrix&);
template void lowrank_add_to_dense<double>(double*, const LowrankMatrix&);
template void LowrankExpertView::dequantize<float>(float*, float*, float*) const;
template void LowrankExpertView::dequantize<double>(double*, double*, double*) const;
template LowrankExpertView lowrank_view_from_master<float>(const float*, const float*, const float*, int, int,
                                                           cpu::ExpertAct, int, uint64_t);
template LowrankExpertView lowrank_view_from_master<double>(const double*, const double*, const double*, int, int,
                                                            cpu::ExpertAct, int, uint64_t);
template LowrankExpertView lowrank_view_from_master<float>(const ModelConfig&, const ParamLayout&, const float*, int,
                                                           int, int, uint64_t);
template LowrankExpertView lowrank_view_from_master<double>(const ModelConfig&, const ParamLayout&, const double*,
                                                            int, int, int, uint64_t);

}  // namespace px
