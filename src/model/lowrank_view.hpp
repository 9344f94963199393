#pragma once
// Low-rank views of routed experts (DESIGN §6, base `lowrank`): each weight matrix W [in, out]
// as U V (U [in, rank], V [rank, out], row-major, W stored [in, out] like every weight here),
// fitted by the home to its master and refreshed by low-rank deltas.
//
// Fitting (lowrank_fit) is the randomized range finder of Halko, Martinsson and Tropp (2011),
// Algorithm 4.4 + 5.1: l = rank + p columns, p = kLowrankOversample capped by min(in, out) - rank;
//   Omega [out, l] Gaussian, element (k, c) = Box-Muller of uniform01(seed, 2 e), uniform01(seed,
//     2 e + 1), e = k l + c (util/hash_rng.hpp: a function of (seed, e) only);
//   Y = W Omega, Q = qr(Y); power_iters times: Q' = qr(W^T Q), Q = qr(W Q');
//   B = Q^T W [l, out]; SVD of B via B^T = Q2 R (QR) and an SVD of the small square R^T = Ur S Vr^T
//   (Eigen::JacobiSVD), so B = Ur S (Q2 Vr)^T;
//   keep the top `rank`: U = Q Ur S (singular values folded into U), V = (Q2 Vr)^T.
// Everything is computed in double and stored as fp32.
//
// Quality (tests/test_lowrank_view.cpp, 128 x 256 at rank 16, power_iters = 2): ||W - U V||_F is
// 1.0000x the optimal (Eckart-Young) error for singular values 0.85^i, 1.0006x for 1/(i+1), 1.0003x
// for a Gaussian matrix with decaying column scales (without power iterations: 1.13x, 1.31x,
// 1.28x). On a flat spectrum (a Gaussian, freshly initialised master, 256 x 704) the fit is within
// 1.009x of the optimum at rank 16 (1.026x at rank 64), but the optimum itself keeps only 14% of
// ||W||_F^2 at rank 16: a low-rank view says little about an expert until training has given its
// weights a decaying spectrum. Cost (one core, 1024 x 4096): fit 115 ms at rank 16 (290 ms at
// rank 64), rank-8 delta 115 ms, add 5 ms.
//
// Refreshing: lowrank_delta fits the residual W - U V with the same method at rank update_rank
// (DESIGN: 8) and returns it as factors (Ud, Vd), which is what a home sends; lowrank_add then
// re-compresses U V + Ud Vd to current.rank (QR of [U Ud] and of [V; Vd]^T, SVD of the small
// core), so a view's memory and wire size never grow. The home applies the same lowrank_add to
// its own copy of the view, and since every step is deterministic, home and islands keep
// bit-identical views.
//
// Determinism: same inputs and seed -> the same bits, on any thread count. Every product whose
// size grows with in * out (W Omega, W^T Q, the residual, the QRs of tall matrices, U Ur, Q2 Vr,
// lowrank_to_dense) is a loop written here with a fixed summation order: rows may be spread over
// OpenMP threads, but each output element is summed by one thread in ascending index order. Eigen
// is used only for the SVD of a small *square* matrix (JacobiSVD: Jacobi rotations, no GEMM, no
// QR preconditioner for square input). Eigen's GEMM (and so HouseholderQR's blocked path and the
// application of its Q for 48 or more columns) is avoided on purpose: it runs on OpenMP threads
// depending on size and omp_get_max_threads(), and its kernels peel rows and columns into blocks
// that sum differently, so an element's bits can depend on the thread count (measured: with
// Eigen's GEMM in place of the kernels here, LowrankFit.Deterministic sees other bits at 2 and 3
// threads than at 1). Such differences live in the double intermediates and mostly vanish when
// U and V are rounded to fp32, but not always (singular vectors of close singular values amplify
// them), and one flipped bit would make a home's and an island's views drift apart. What the bits do
// depend on is the build: the compiler may contract a * b + c into an fma (-ffp-contract=fast,
// -march=x86-64-v3) and std::log / std::cos come from libm, so two different builds may differ in
// the last bits; one binary gives the same bits on every machine.
//
// On the wire and at rest: little-endian, parts back to back, no padding, nothing aligned (read
// with memcpy):
//
//   one matrix W [in, out] of rank r                          lowrank_wire_bytes(in, out, r)
//     LowrankWireHeader   16 bytes: magic "PXL1", version 1 (uint8), reserved 0 (uint8),
//                         rank r (uint16, 1 <= r <= min(in, out)), in, out (int32 >= 1)
//     U  [in, r]          fp32, row-major, finite                4 * in * r bytes
//     V  [r, out]         fp32, row-major, finite                4 * r * out bytes
//     total = 16 + 4 r (in + out)
//   (the header differs from the ternary one in its one-byte version: it also holds the rank)
//
//   one expert (framing: wire/expert_wire.hpp)                lowrank_expert_wire_bytes(kind, d, h, r)
//     LowrankExpertWireHeader 16 bytes: magic "PXLE", version 1 (uint16), act (0 swiglu, 1 relu2),
//                         reserved 0, d, h (int32 >= 1)
//     W1 [d, h] matrix, then W3 [d, h] (swiglu only), then W2 [h, d], each as above, each with its
//     own rank (the expert header holds none: a view of rank r has r in all three, a delta its
//     update rank)
//     total = 16 + (swiglu ? 3 : 2) * (16 + 4 r (d + h)) when every matrix has rank r
//
// Decoding checks everything and throws std::invalid_argument naming what is wrong and where:
// a size other than the header implies (truncated or trailing bytes), bad magic / version /
// reserved / act, in/out/d/h < 1, a rank of 0 or above min(in, out), a non-finite value (named
// by its factor and index), factors that may stand for weights above kViewWeightBound
// (wire/expert_wire.hpp: rank * max|U| * max|V|; encoding and lowrank_add refuse them too), or
// an expert's matrix whose shape disagrees with its d and h. The wire form is canonical (values
// are copied bit for bit), so to_wire(from_wire(b)) == b for every accepted b. No checksum:
// views travel over MPI, which delivers bytes intact.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout
#include "ops/cpu/cpu_ops.hpp"     // defines: ExpertAct
#include "wire/expert_wire.hpp"    // defines: ExpertWireHeader

namespace px {

inline constexpr uint32_t kLowrankMagic = 0x314C5850u;        // "PXL1" in file order
inline constexpr uint32_t kLowrankExpertMagic = 0x454C5850u;  // "PXLE" in file order
inline constexpr uint8_t kLowrankWireVersion = 1;
inline constexpr uint16_t kLowrankExpertWireVersion = 1;
inline constexpr int kLowrankOversample = 8;      // extra range-finder columns (Halko et al.: 5-10)
inline constexpr int kLowrankMaxRank = 65535;     // the wire's uint16 rank field

struct LowrankWireHeader {
  uint32_t magic = kLowrankMagic;
  uint8_t version = kLowrankWireVersion;
  uint8_t reserved = 0;  // must be 0
  uint16_t rank = 0;     // 1 <= rank <= min(in, out)
  int32_t in = 0;        // rows of W [in, out] (and of U)
  int32_t out = 0;       // columns of W (and of V)
};
static_assert(sizeof(LowrankWireHeader) == 16, "the lowrank matrix header is 16 bytes on the wire");

// magic "PXLE", version, act, reserved, d, h (wire/expert_wire.hpp, shared with the ternary views)
using LowrankExpertWireHeader = ExpertWireHeader<kLowrankExpertMagic, kLowrankExpertWireVersion>;

// One weight matrix W [in, out] as W ~ U V.
struct LowrankMatrix {
  int in = 0, out = 0, rank = 0;
  std::vector<float> U;  // [in, rank], singular values folded in (column c scaled by s_c)
  std::vector<float> V;  // [rank, out], orthonormal rows as fitted

  size_t numel() const { return (size_t)in * out; }             // of the dense W
  size_t params() const { return (size_t)rank * ((size_t)in + out); }  // floats held
};

// Rank-`rank` fit of W [in, out] (see the top of this file). rank is clamped to min(in, out);
// in, out, rank >= 1, power_iters >= 0; W must be finite. A double W is rounded to fp32 first
// (as the GPU's fp32 masters are), so both overloads give the same view of the same fp32 master.
LowrankMatrix lowrank_fit(const float* W, int in, int out, int rank, uint64_t seed, int power_iters = 2);
LowrankMatrix lowrank_fit(const double* W, int in, int out, int rank, uint64_t seed, int power_iters = 2);

// The rank-update_rank fit (same method, power_iters = 2) of the residual W - U V of `current`,
// as factors Ud [in, update_rank], Vd [update_rank, out]. update_rank is clamped to min(in, out).
LowrankMatrix lowrank_delta(const float* W, const LowrankMatrix& current, int update_rank, uint64_t seed);
// current <- the best rank-current.rank approximation of U V + Ud Vd (re-compressing; rank and
// memory stay the same): [U Ud] = Qa Ra, [V; Vd]^T = Qb Rb (Householder QR), C = Ra Rb^T, SVD
// C = Uc S Vc^T (JacobiSVD, padded to square with zeros), U = Qa Uc S, V = (Qb Vc)^T, top
// current.rank kept. Shapes must agree; a sum whose factors may stand for weights above
// kViewWeightBound throws std::invalid_argument and leaves `current` unchanged.
void lowrank_add(LowrankMatrix& current, const LowrankMatrix& delta);

// W [in, out] = U V (each element summed in double, ascending c, then rounded to T once).
template <class T>
void lowrank_to_dense(T* W, const LowrankMatrix& m);
// W [in, out] += Ud Vd (the sum in double, added to W in double, rounded to T once).
template <class T>
void lowrank_add_to_dense(T* W, const LowrankMatrix& delta);

size_t lowrank_wire_bytes(int in, int out, int rank);  // 16 + 4 rank (in + out)
std::vector<uint8_t> lowrank_to_wire(const LowrankMatrix& m);
// Appends m's wire form to `out`.
void lowrank_append_wire(std::vector<uint8_t>& out, const LowrankMatrix& m);
LowrankMatrix lowrank_from_wire(const uint8_t* data, size_t size);

// The low-rank view of one expert: W1, W3 [d, h] (W3 empty for relu2) and W2 [h, d]. Also the
// form of a delta (lowrank_expert_delta), whose matrices have the update rank.
struct LowrankExpertView {
  cpu::ExpertAct kind = cpu::EXPERT_ACT_SWIGLU;
  int d = 0, h = 0;
  LowrankMatrix w1, w3, w2;

  size_t wire_bytes() const;  // 16 + the wire bytes of each matrix at its own rank
  // Dense weights for px::cpu::expert_ffn_forward / _backward (E = 1): W1, W3 [d, h], W2 [h, d];
  // W3 is ignored (may be null) for relu2.
  template <class T>
  void dequantize(T* W1, T* W3, T* W2) const;
};

// Wire bytes of an expert whose matrices all have rank `rank` (clamped to min(d, h)).
size_t lowrank_expert_wire_bytes(cpu::ExpertAct kind, int d, int h, int rank);

// From an expert's master weights W1, W3 [d, h] (W3 unused for relu2, may be null), W2 [h, d]:
// each matrix fitted at `rank` (clamped to min(d, h)) with seed splitmix64(seed + m), m = 0, 1, 2
// for W1, W3, W2.
template <class T>
LowrankExpertView lowrank_view_from_master(const T* W1, const T* W3, const T* W2, int d, int h,
                                           cpu::ExpertAct kind, int rank, uint64_t seed);
// Routed expert e of model layer `layer` (an MoE layer), from the experts arena of a model
// built with cfg (MoeModel<T>::params(Arena::EXPERTS)).
template <class T>
LowrankExpertView lowrank_view_from_master(const ModelConfig& cfg, const ParamLayout& layout,
                                           const T* experts, int layer, int e, int rank, uint64_t seed);

// The deltas (lowrank_delta, seeds as in lowrank_view_from_master) of each matrix of `current`
// towards the masters W1, W3 [d, h] (W3 unused for relu2, may be null), W2 [h, d].
LowrankExpertView lowrank_expert_delta(const float* W1, const float* W3, const float* W2,
                                       const LowrankExpertView& current, int update_rank, uint64_t seed);
// lowrank_add on each matrix; kind, d and h must agree. All or nothing: when one sum throws,
// `current` is unchanged.
void lowrank_expert_add(LowrankExpertView& current, const LowrankExpertView& delta);

std::vector<uint8_t> lowrank_expert_to_wire(const LowrankExpertView& v);
LowrankExpertView lowrank_expert_from_wire(const uint8_t* data, size_t size);

}  // namespace px
