// defines: expert_ffn_forward, expert_ffn_backward (grouped GEMM, raw mma.sync m16n8k16 bf16,
// ldmatrix from XOR-swizzled shared memory, multi-stage cp.async pipeline)
#include "expert_ffn.cuh"
#include "expert_ffn_sm90.cuh"  // defines: expert_ffn_forward_sm90, expert_ffn_backward_sm90
#include "mma_sm80.cuh"         // defines: ldsm_x4, ldsm_x4_t, mma16816

#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace px::cuda {

namespace {

// Block tile BM x BN(per B operand) x BK, NT threads. Warps as 2 (M) x NT/64 (N), warp tile
// 64 x 64 in total over the NB B operands sharing the A tile (NB = 2 for the fused [W1|W3]
// GEMMs), so always 128 fp32 accumulators per thread.
// NT = 256: 8 warps as 2 x 4, tiles 128 x 256 (NB = 1) / 128 x (2 x 128) (NB = 2), 48 KB per
// stage, one block per SM, 4 stages on sm_90.
// NT = 128 (default): 4 warps as 2 x 2, tiles 128 x 128 / 128 x (2 x 64), 32 KB per stage,
// two blocks per SM on sm_90 (3 stages each). NT = 256 (PX_FFN_BIG=1): the shapes above.
constexpr int BM = 128, BK = 64, WM = 64, FM = WM / 16;
template <int NB, int NT = 256> constexpr int bn() { return (NB == 1 ? 256 : 128) * NT / 256; }
template <int NT> constexpr int stage_elems() { return BM * BK + bn<1, NT>() * BK; }
template <int NT> constexpr size_t stage_bytes() { return stage_elems<NT>() * sizeof(bf16); }
static_assert(BM * BK + 2 * bn<2>() * BK == stage_elems<256>(), "stage size");

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Wait until at most stages-2 groups are pending (stages is uniform: 2, 3 or 4).
__device__ __forceinline__ void cp_async_wait_stages(int stages) {
  if (stages >= 4) cp_async_wait<2>();
  else if (stages == 3) cp_async_wait<1>();
  else cp_async_wait<0>();
}

// Shared-memory tile [R][C] (C >= 64 bf16, 16-byte chunks): chunk index XOR (row & 7), so the
// 8 rows an ldmatrix phase reads (same logical chunk) land in 8 distinct bank groups.
template <int C>
__device__ __forceinline__ int swz(int r, int c) {
  return r * C + ((((c >> 3) ^ (r & 7))) << 3);
}

// Part P (of 4) of the tile [R][C] from global (row stride ld, element (0,0) at g); zero fill
// outside rv x cv. The four parts are issued between the four k16 steps of the main loop so
// the copies interleave with the MMAs.
template <int R, int C, int P, int THREADS>
__device__ __forceinline__ void load_tile_part(bf16* s, const bf16* g, long ld, int rv, int cv) {
  constexpr int CH = C / 8, TOTAL = R * CH, PER = TOTAL / THREADS;
  static_assert(TOTAL % (4 * THREADS) == 0, "tile / threads");
#pragma unroll
  for (int i = P * PER / 4; i < (P + 1) * PER / 4; ++i) {
    const int idx = threadIdx.x + i * THREADS;
    const int r = idx / CH, c = (idx % CH) * 8;
    const bool v = r < rv && c < cv;
    cp_async16(s + swz<C>(r, c), v ? g + (long)r * ld + c : g, v);
  }
}


template <int NB, int NT>
struct Acc {
  static constexpr int BN = bn<NB, NT>(), WARPS_N = NT / 64, WN = BN / WARPS_N, FN = WN / 8;
  static_assert(FN % 2 == 0, "pairs of n8 tiles");
  float v[NB][FM][FN][4];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j)
#pragma unroll
          for (int q = 0; q < 4; ++q) v[b][i][j][q] = 0.f;
  }
};

// acc[b] += A_tile(BM x K) * B_b_tile(K x BN), summed over nseg (1 or 2) segments
// (A0,B0[]) and (A1,B1[]) of the same K. A logical [M, K], stored [M, K] (lda) or, if TA,
// [K, M]; B logical [K, N], stored [K, N] (ldb) or, if TB, [N, K]. Pointers at the tile
// origin (row m0 / col n0). Zero fill outside (Mv, Nv, K).
template <bool TA, bool TB, int NB, int NT>
__device__ __forceinline__ void mainloop(Acc<NB, NT>& acc, bf16* smem, int stages, const bf16* A0,
                                         const bf16* A1, long lda, const bf16* const* B0,
                                         const bf16* const* B1, long ldb, int Mv, int Nv, int K,
                                         int nseg) {
  using AC = Acc<NB, NT>;
  constexpr int BN = AC::BN, WN = AC::WN, FN = AC::FN, STAGE_ELEMS = stage_elems<NT>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = (warp / AC::WARPS_N) * WM, wn = (warp % AC::WARPS_N) * WN;
  const int kps = (K + BK - 1) / BK, ktiles = kps * nseg;
  // Global sources of k tile kt (valid when kt < ktiles).
  struct Src { const bf16* a; const bf16* b[NB]; int kv; };
  auto src = [&](int kt) {
    Src q;
    const bool s1 = kt >= kps;
    const int k0 = (kt - (s1 ? kps : 0)) * BK;
    q.kv = K - k0;
    q.a = (s1 ? A1 : A0) + (TA ? (long)k0 * lda : (long)k0);
#pragma unroll
    for (int b = 0; b < NB; ++b) q.b[b] = (s1 ? B1[b] : B0[b]) + (TB ? (long)k0 : (long)k0 * ldb);
    return q;
  };
  auto issue_part = [&](const Src& q, bf16* sA, auto part) {
    constexpr int P = decltype(part)::value;
    if (!TA) load_tile_part<BM, BK, P, NT>(sA, q.a, lda, Mv, q.kv);
    else load_tile_part<BK, BM, P, NT>(sA, q.a, lda, q.kv, Mv);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      bf16* sB = sA + BM * BK + b * BN * BK;
      if (TB) load_tile_part<BN, BK, P, NT>(sB, q.b[b], ldb, Nv, q.kv);
      else load_tile_part<BK, BN, P, NT>(sB, q.b[b], ldb, q.kv, Nv);
    }
  };
  for (int s = 0; s < stages - 1; ++s) {
    if (s < ktiles) {
      Src q = src(s);
      bf16* sA = smem + (size_t)s * STAGE_ELEMS;
      issue_part(q, sA, std::integral_constant<int, 0>());
      issue_part(q, sA, std::integral_constant<int, 1>());
      issue_part(q, sA, std::integral_constant<int, 2>());
      issue_part(q, sA, std::integral_constant<int, 3>());
    }
    cp_async_commit();
  }
  // Per-lane ldmatrix coordinates (see the m16n8k16 fragment layouts). Every row a lane
  // addresses has row & 7 == lane & 7.
  const int l7 = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;
  int st_read = 0, st_write = stages - 1;
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait_stages(stages);
    __syncthreads();
    const bool more = kt + stages - 1 < ktiles;
    Src q = src(more ? kt + stages - 1 : kt);
    bf16* sW = smem + (size_t)st_write * STAGE_ELEMS;
    const bf16* sA = smem + (size_t)st_read * STAGE_ELEMS;
    // Fragments double-buffered across the four k16 steps: step P loads step P+1's
    // fragments before issuing its own MMAs.
    uint32_t fa[2][FM][4], fb[2][NB][FN][2];
    auto load_frags = [&](int buf, int kk) {
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        if (!TA) {  // [m][k]: matrices (m0-7,k0-7) (m8-15,k0-7) (m0-7,k8-15) (m8-15,k8-15)
          ldsm_x4(fa[buf][i], sA + swz<BK>(wm + i * 16 + (lane & 15), kk + l16 * 8));
        } else {    // [k][m], transposed load
          ldsm_x4_t(fa[buf][i], sA + swz<BM>(kk + l7 + l16 * 8, wm + i * 16 + l8 * 8));
        }
      }
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const bf16* sB = sA + BM * BK + b * BN * BK;
#pragma unroll
        for (int jj = 0; jj < FN / 2; ++jj) {
          uint32_t r[4];
          if (TB) {  // [n][k]: (n0-7,k0-7) (n0-7,k8-15) (n8-15,k0-7) (n8-15,k8-15)
            ldsm_x4(r, sB + swz<BK>(wn + jj * 16 + l7 + l16 * 8, kk + l8 * 8));
          } else {   // [k][n], transposed: (k0-7,n0-7) (k8-15,n0-7) (k0-7,n8-15) (k8-15,n8-15)
            ldsm_x4_t(r, sB + swz<BN>(kk + l7 + l8 * 8, wn + jj * 16 + l16 * 8));
          }
          fb[buf][b][2 * jj][0] = r[0]; fb[buf][b][2 * jj][1] = r[1];
          fb[buf][b][2 * jj + 1][0] = r[2]; fb[buf][b][2 * jj + 1][1] = r[3];
        }
      }
    };
    load_frags(0, 0);
    auto step = [&](auto part) {
      constexpr int P = decltype(part)::value, cur = P & 1;
      if (P < 3) load_frags(cur ^ 1, (P + 1) * 16);
      if (more) issue_part(q, sW, part);
#pragma unroll
      for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int i = 0; i < FM; ++i)
#pragma unroll
          for (int j = 0; j < FN; ++j)
            mma16816(acc.v[b][i][j], fa[cur][i], fb[cur][b][j][0], fb[cur][b][j][1]);
    };
    static_assert(BK == 64, "four k16 steps");
    step(std::integral_constant<int, 0>());
    step(std::integral_constant<int, 1>());
    step(std::integral_constant<int, 2>());
    step(std::integral_constant<int, 3>());
    cp_async_commit();
    st_read = st_read + 1 == stages ? 0 : st_read + 1;
    st_write = st_write + 1 == stages ? 0 : st_write + 1;
  }
  cp_async_wait<0>();
}

// Epilogue: f(row_in_tile, col_in_tile, v[NB][2]) for each pair of adjacent columns
// (col even) the thread owns; straight from the accumulator registers.
template <int NB, int NT, class F>
__device__ __forceinline__ void epilogue(const Acc<NB, NT>& acc, F f) {
  using AC = Acc<NB, NT>;
  constexpr int WN = AC::WN, FN = AC::FN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = (warp / AC::WARPS_N) * WM, wn = (warp % AC::WARPS_N) * WN;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float v[NB][2];
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          v[b][0] = acc.v[b][i][j][2 * hh];
          v[b][1] = acc.v[b][i][j][2 * hh + 1];
        }
        f(wm + i * 16 + g + hh * 8, wn + j * 8 + 2 * t, v);
      }
}

// Map row tile `tile` to (expert, first row, rows valid) over row tiles of the segments.
// Returns false when this block has no tile (the grid is an upper bound).
__device__ inline bool find_row_tile(const int32_t* bounds, int E, int tile, int& e_out, int& r0,
                                     int& mv) {
  __shared__ int s_e, s_r0, s_mv;
  if (threadIdx.x == 0) {
    int t = tile, e_found = -1;
    for (int e = 0; e < E; ++e) {
      int b0 = bounds[e], cnt = bounds[e + 1] - b0;
      int nt = (cnt + BM - 1) / BM;
      if (t < nt) {
        e_found = e;
        s_r0 = b0 + t * BM;
        s_mv = min(BM, cnt - t * BM);
        break;
      }
      t -= nt;
    }
    s_e = e_found;
  }
  __syncthreads();
  e_out = s_e; r0 = s_r0; mv = s_mv;
  return e_out >= 0;
}

__device__ inline float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }

__device__ __forceinline__ void st_bf16x2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ float2 ld_bf16x2(const bf16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

extern __shared__ __align__(128) unsigned char smem_raw[];

// F1: [A|Bm] = X [W1|W3], act = silu(A)*Bm  (or relu2: A = X W1, act = relu(A)^2).
template <int NB, int NT>
__global__ void __launch_bounds__(NT, 256 / NT) ffn_up_kernel(bf16* A, bf16* Bm, bf16* act,
                                                            const bf16* X, const bf16* W1,
                                                            const bf16* W3,
                                                            const int32_t* bounds, int E, int d,
                                                            int h, int stages, int colfast) {
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  // colfast: blockIdx.x = column tile, so the column tiles of one row tile run together
  // and the row block is read from DRAM once.
  const int rt = colfast ? blockIdx.y : blockIdx.x, ct = colfast ? blockIdx.x : blockIdx.y;
  if (!find_row_tile(bounds, E, rt, e, r0, mv)) return;
  const int n0 = ct * bn<NB, NT>(), nv = min(bn<NB, NT>(), h - n0);
  const bf16* B[2] = {W1 + (size_t)e * d * h + n0,
                      NB == 2 ? W3 + (size_t)e * d * h + n0 : nullptr};
  Acc<NB, NT> acc;
  acc.zero();
  const bf16* Xr = X + (size_t)r0 * d;
  mainloop<false, false, NB, NT>(acc, smem, stages, Xr, Xr, d, B, B, h, mv, nv, d, 1);
  epilogue<NB, NT>(acc, [&](int r, int c, const float (*v)[2]) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(r0 + r) * h + n0 + c;
    __nv_bfloat162 a16 = __floats2bfloat162_rn(v[0][0], v[0][1]);
    *reinterpret_cast<__nv_bfloat162*>(A + o) = a16;
    float2 a = __bfloat1622float2(a16);
    if constexpr (NB == 2) {
      __nv_bfloat162 b16 = __floats2bfloat162_rn(v[1][0], v[1][1]);
      *reinterpret_cast<__nv_bfloat162*>(Bm + o) = b16;
      float2 b = __bfloat1622float2(b16);
      st_bf16x2(act + o, a.x * sigmoidf_(a.x) * b.x, a.y * sigmoidf_(a.y) * b.y);
    } else {
      float x = fmaxf(a.x, 0.f), y = fmaxf(a.y, 0.f);
      st_bf16x2(act + o, x * x, y * y);
    }
  });
}

// Row-segment GEMM: C[rows, N] = A_seg [*, K] * op(W[e]) (+ A2_seg * op(W2[e]) if DUAL);
// W[e] at W + e*K*N, stored [K,N] or (TB) [N,K]. C bf16.
template <bool TB, bool DUAL, int NT>
__global__ void __launch_bounds__(NT, 256 / NT) rowseg_gemm_kernel(bf16* C, const bf16* Aop,
                                                                 const bf16* W,
                                                                 const bf16* Aop2,
                                                                 const bf16* Wb,
                                                                 const int32_t* bounds, int E,
                                                                 int K, int N, int stages,
                                                                 int colfast) {
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  // colfast: blockIdx.x = column tile, so the column tiles of one row tile run together
  // and the row block is read from DRAM once.
  const int rt = colfast ? blockIdx.y : blockIdx.x, ct = colfast ? blockIdx.x : blockIdx.y;
  if (!find_row_tile(bounds, E, rt, e, r0, mv)) return;
  const int n0 = ct * bn<1, NT>(), nv = min(bn<1, NT>(), N - n0);
  const size_t wstride = (size_t)K * N;
  const long ldb = TB ? K : N;
  const size_t boff = TB ? (size_t)n0 * K : (size_t)n0;
  Acc<1, NT> acc;
  acc.zero();
  const bf16* B0[1] = {W + e * wstride + boff};
  const bf16* B1[1] = {DUAL ? Wb + e * wstride + boff : B0[0]};
  const bf16* A0 = Aop + (size_t)r0 * K;
  const bf16* A1 = DUAL ? Aop2 + (size_t)r0 * K : A0;
  mainloop<false, TB, 1, NT>(acc, smem, stages, A0, A1, K, B0, B1, ldb, mv, nv, K, DUAL ? 2 : 1);
  epilogue<1, NT>(acc, [&](int r, int c, const float (*v)[2]) {
    if (r < mv && c < nv) st_bf16x2(C + (size_t)(r0 + r) * N + n0 + c, v[0][0], v[0][1]);
  });
}

// B1: dact = dY W2[e]^T (W2[e] is [h, d] = [N, K]); epilogue: dA, dB from dact, A, Bm.
template <int NT>
__global__ void __launch_bounds__(NT, 256 / NT) ffn_dact_kernel(bf16* dA, bf16* dB,
                                                              const bf16* dY, const bf16* W2,
                                                              const bf16* A, const bf16* Bm,
                                                              const int32_t* bounds, int E,
                                                              int d, int h, int kind,
                                                              int stages, int colfast) {
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  // colfast: blockIdx.x = column tile, so the column tiles of one row tile run together
  // and the row block is read from DRAM once.
  const int rt = colfast ? blockIdx.y : blockIdx.x, ct = colfast ? blockIdx.x : blockIdx.y;
  if (!find_row_tile(bounds, E, rt, e, r0, mv)) return;
  const int n0 = ct * bn<1, NT>(), nv = min(bn<1, NT>(), h - n0);
  Acc<1, NT> acc;
  acc.zero();
  const bf16* B[1] = {W2 + (size_t)e * h * d + (size_t)n0 * d};
  const bf16* A0 = dY + (size_t)r0 * d;
  mainloop<false, true, 1, NT>(acc, smem, stages, A0, A0, d, B, B, d, mv, nv, d, 1);
  epilogue<1, NT>(acc, [&](int r, int c, const float (*v)[2]) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(r0 + r) * h + n0 + c;
    float2 a = ld_bf16x2(A + o);
    if (kind == px::cpu::EXPERT_ACT_SWIGLU) {
      float2 b = ld_bf16x2(Bm + o);
      float s0 = sigmoidf_(a.x), s1 = sigmoidf_(a.y);
      st_bf16x2(dA + o, v[0][0] * b.x * s0 * (1.f + a.x * (1.f - s0)),
                v[0][1] * b.y * s1 * (1.f + a.y * (1.f - s1)));
      st_bf16x2(dB + o, v[0][0] * a.x * s0, v[0][1] * a.y * s1);
    } else {
      st_bf16x2(dA + o, v[0][0] * 2.f * fmaxf(a.x, 0.f), v[0][1] * 2.f * fmaxf(a.y, 0.f));
    }
  });
}

// K-segment GEMM for weight gradients: dW_b[e] (M x N, fp32, +=) += P_seg^T Q_b,seg where
// P is [rows, M] and Q_b [rows, N]; K = the segment's rows. Grid: (M/BM * N/BN, E).
template <int NB, int NT>
__global__ void __launch_bounds__(NT, 256 / NT) wgrad_kernel(float* dW0, float* dW1,
                                                           const bf16* P, const bf16* Q0,
                                                           const bf16* Q1,
                                                           const int32_t* bounds, int M, int N,
                                                           int stages) {
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  constexpr int BN = bn<NB, NT>();
  const int e = blockIdx.y;
  const int ntn = (N + BN - 1) / BN;
  const int m0 = (blockIdx.x / ntn) * BM, n0 = (blockIdx.x % ntn) * BN;
  const int mv = min(BM, M - m0), nv = min(BN, N - n0);
  const int b0 = bounds[e], K = bounds[e + 1] - b0;
  if (K <= 0) return;  // nothing to add
  Acc<NB, NT> acc;
  acc.zero();
  const bf16* B[2] = {Q0 + (size_t)b0 * N + n0, NB == 2 ? Q1 + (size_t)b0 * N + n0 : nullptr};
  const bf16* A0 = P + (size_t)b0 * M + m0;
  mainloop<true, false, NB, NT>(acc, smem, stages, A0, A0, M, B, B, N, mv, nv, K, 1);
  float* out[2] = {dW0 + (size_t)e * M * N, NB == 2 ? dW1 + (size_t)e * M * N : nullptr};
  epilogue<NB, NT>(acc, [&](int r, int c, const float (*v)[2]) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(m0 + r) * N + n0 + c;
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      float2* p = reinterpret_cast<float2*>(out[b] + o);
      float2 x = *p;
      x.x += v[b][0];
      x.y += v[b][1];
      *p = x;
    }
  });
}

// Pipeline depth: 4 stages (192 KB) where the device allows it (sm_90: 227 KB, sm_80:
// 163 KB -> 3, sm_86/89: 99 KB -> 2); NT = 128 keeps two blocks per SM (3 stages on sm_90).
// PX_FFN_STAGES (2..4) overrides, for benchmarking.
template <int NT>
int pick_stages() {
  int dev = 0, optin = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaCheck(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  int s = (int)(optin / stage_bytes<NT>());
  if (NT == 128 && s >= 6) s = s / 2;
  static const int env = [] {
    const char* v = std::getenv("PX_FFN_STAGES");
    return v ? std::atoi(v) : 0;
  }();
  if (env >= 2 && env < s) s = env;
  if (s > 4) s = 4;
  if (s < 2) cuda_fail("expert_ffn", "not enough shared memory for two pipeline stages", __FILE__, __LINE__);
  return s;
}

template <int NT, class K>
size_t set_smem(K kernel, int stages) {
  size_t bytes = (size_t)stages * stage_bytes<NT>();
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  return bytes;
}

// NT = 128 (two blocks per SM) is the default: 7% faster than NT = 256 on an H100 (the
// blocks' prologues, barriers and epilogues overlap). PX_FFN_BIG=1 selects NT = 256.
bool small_tiles() {
  static const bool v = [] {
    const char* e = std::getenv("PX_FFN_BIG");
    return !(e && std::atoi(e) != 0);
  }();
  return v;
}

int row_tiles_bound(int rows_cap, int E) { return ceil_div(rows_cap, BM) + E; }

// Grid for the row-segment kernels: column tiles fastest (blockIdx.x) by default, so the
// few column tiles of a row tile run at the same time and its rows come from DRAM once.
// PX_FFN_ROWFAST=1 restores row tiles fastest (for benchmarking); also used when the row
// tiles would not fit gridDim.y.
struct RowGrid { dim3 g; int colfast; };
RowGrid row_grid(int rows_cap, int E, int ncols) {
  static const bool rowfast = [] {
    const char* v = std::getenv("PX_FFN_ROWFAST");
    return v && std::atoi(v) != 0;
  }();
  const int nr = row_tiles_bound(rows_cap, E);
  if (rowfast || nr > 65535) return {dim3(nr, ncols), 0};
  return {dim3(ncols, nr), 1};
}

}  // namespace

namespace {

template <int NT>
void forward_impl(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X, const bf16* W1,
                  const bf16* W3, const bf16* W2, const int32_t* bounds, int rows_cap, int E,
                  int d, int h, ExpertAct kind, cudaStream_t stream) {
  const int st = pick_stages<NT>();
  if (kind == px::cpu::EXPERT_ACT_SWIGLU) {
    RowGrid g1 = row_grid(rows_cap, E, ceil_div(h, bn<2, NT>()));
    size_t sm = set_smem<NT>(ffn_up_kernel<2, NT>, st);
    ffn_up_kernel<2, NT><<<g1.g, NT, sm, stream>>>(A, Bm, act, X, W1, W3, bounds, E, d, h, st,
                                                   g1.colfast);
  } else {
    RowGrid g1 = row_grid(rows_cap, E, ceil_div(h, bn<1, NT>()));
    size_t sm = set_smem<NT>(ffn_up_kernel<1, NT>, st);
    ffn_up_kernel<1, NT><<<g1.g, NT, sm, stream>>>(A, Bm, act, X, W1, W3, bounds, E, d, h, st,
                                                   g1.colfast);
  }
  cudaCheckLaunch();
  RowGrid g2 = row_grid(rows_cap, E, ceil_div(d, bn<1, NT>()));
  size_t sm = set_smem<NT>(rowseg_gemm_kernel<false, false, NT>, st);
  rowseg_gemm_kernel<false, false, NT><<<g2.g, NT, sm, stream>>>(Y, act, W2, nullptr, nullptr,
                                                                 bounds, E, h, d, st, g2.colfast);
  cudaCheckLaunch();
}

// Weight gradients. B2: dW2[e] [h, d] += act^T dY; B3: dW1[e], dW3[e] [d, h] += X^T dA, X^T dB.
template <int NT>
void wgrad_impl(float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                const bf16* act, const bf16* dA_scratch, const bf16* dB_scratch,
                const int32_t* bounds, int E, int d, int h, ExpertAct kind, int st,
                cudaStream_t stream) {
  const bool swiglu = kind == px::cpu::EXPERT_ACT_SWIGLU;
  // B2: dW2[e] [h, d] += act^T dY
  if (dW2) {
    dim3 g(ceil_div(h, BM) * ceil_div(d, bn<1, NT>()), E);
    size_t sm = set_smem<NT>(wgrad_kernel<1, NT>, st);
    wgrad_kernel<1, NT><<<g, NT, sm, stream>>>(dW2, nullptr, act, dY, nullptr, bounds, h, d, st);
    cudaCheckLaunch();
  }
  // B3: dW1[e], dW3[e] [d, h] += X^T dA, X^T dB
  if (dW1) {
    if (swiglu && dW3) {
      dim3 g(ceil_div(d, BM) * ceil_div(h, bn<2, NT>()), E);
      size_t sm = set_smem<NT>(wgrad_kernel<2, NT>, st);
      wgrad_kernel<2, NT><<<g, NT, sm, stream>>>(dW1, dW3, X, dA_scratch, dB_scratch, bounds, d,
                                                 h, st);
    } else {
      dim3 g(ceil_div(d, BM) * ceil_div(h, bn<1, NT>()), E);
      size_t sm = set_smem<NT>(wgrad_kernel<1, NT>, st);
      wgrad_kernel<1, NT><<<g, NT, sm, stream>>>(dW1, nullptr, X, dA_scratch, nullptr, bounds,
                                                 d, h, st);
    }
    cudaCheckLaunch();
  }
}

template <int NT>
void backward_impl(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                   const bf16* A, const bf16* Bm, const bf16* act, const bf16* W1,
                   const bf16* W3, const bf16* W2, const int32_t* bounds, int rows_cap, int E,
                   int d, int h, ExpertAct kind, bf16* dA_scratch, bf16* dB_scratch,
                   cudaStream_t stream) {
  const bool swiglu = kind == px::cpu::EXPERT_ACT_SWIGLU;
  const int st = pick_stages<NT>();
  // B1: dA, dB
  {
    RowGrid g1 = row_grid(rows_cap, E, ceil_div(h, bn<1, NT>()));
    size_t sm = set_smem<NT>(ffn_dact_kernel<NT>, st);
    ffn_dact_kernel<NT><<<g1.g, NT, sm, stream>>>(dA_scratch, dB_scratch, dY, W2, A, Bm, bounds,
                                                  E, d, h, (int)kind, st, g1.colfast);
    cudaCheckLaunch();
  }
  // B2, B3: weight gradients
  wgrad_impl<NT>(dW1, dW3, dW2, dY, X, act, dA_scratch, dB_scratch, bounds, E, d, h, kind, st,
                 stream);
  // B4: dX = dA W1^T (+ dB W3^T); W1[e] is [d, h] = [N, K] with K = h.
  RowGrid g4 = row_grid(rows_cap, E, ceil_div(d, bn<1, NT>()));
  if (swiglu) {
    size_t sm = set_smem<NT>(rowseg_gemm_kernel<true, true, NT>, st);
    rowseg_gemm_kernel<true, true, NT><<<g4.g, NT, sm, stream>>>(
        dX, dA_scratch, W1, dB_scratch, W3, bounds, E, h, d, st, g4.colfast);
  } else {
    size_t sm = set_smem<NT>(rowseg_gemm_kernel<true, false, NT>, st);
    rowseg_gemm_kernel<true, false, NT><<<g4.g, NT, sm, stream>>>(
        dX, dA_scratch, W1, nullptr, nullptr, bounds, E, h, d, st, g4.colfast);
  }
  cudaCheckLaunch();
}

// PX_EXPERT_GEMM=sm90 on a compute capability 9.0 device selects the wgmma path
// (expert_ffn_sm90.cu); anything else runs the mma.sync kernels of this file.
bool use_sm90() {
  static const bool env = [] {
    const char* v = std::getenv("PX_EXPERT_GEMM");
    return v && std::strcmp(v, "sm90") == 0;
  }();
  return env && expert_ffn_sm90_available();
}

}  // namespace

void expert_ffn_wgrad_sm80(float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                           const bf16* act, const bf16* dA, const bf16* dB,
                           const int32_t* bounds, int E, int d, int h, ExpertAct kind,
                           cudaStream_t stream) {
  if (E <= 0 || (!dW1 && !dW2)) return;
  if (small_tiles())
    wgrad_impl<128>(dW1, dW3, dW2, dY, X, act, dA, dB, bounds, E, d, h, kind,
                    pick_stages<128>(), stream);
  else
    wgrad_impl<256>(dW1, dW3, dW2, dY, X, act, dA, dB, bounds, E, d, h, kind,
                    pick_stages<256>(), stream);
}

void expert_ffn_forward(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X, const bf16* W1,
                        const bf16* W3, const bf16* W2, const int32_t* bounds, int rows_cap,
                        int E, int d, int h, ExpertAct kind, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  if (d % 8 || h % 8) cuda_fail("expert_ffn_forward", "d and h must be multiples of 8", __FILE__, __LINE__);
  if (use_sm90())
    return expert_ffn_forward_sm90(Y, A, Bm, act, X, W1, W3, W2, bounds, rows_cap, E, d, h, kind,
                                   stream);
  if (small_tiles())
    forward_impl<128>(Y, A, Bm, act, X, W1, W3, W2, bounds, rows_cap, E, d, h, kind, stream);
  else
    forward_impl<256>(Y, A, Bm, act, X, W1, W3, W2, bounds, rows_cap, E, d, h, kind, stream);
}

void expert_ffn_backward(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY,
                         const bf16* X, const bf16* A, const bf16* Bm, const bf16* act,
                         const bf16* W1, const bf16* W3, const bf16* W2, const int32_t* bounds,
                         int rows_cap, int E, int d, int h, ExpertAct kind, bf16* dA_scratch,
                         bf16* dB_scratch, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  if (d % 8 || h % 8) cuda_fail("expert_ffn_backward", "d and h must be multiples of 8", __FILE__, __LINE__);
  if (use_sm90())
    return expert_ffn_backward_sm90(dX, dW1, dW3, dW2, dY, X, A, Bm, act, W1, W3, W2, bounds,
                                    rows_cap, E, d, h, kind, dA_scratch, dB_scratch, stream);
  if (small_tiles())
    backward_impl<128>(dX, dW1, dW3, dW2, dY, X, A, Bm, act, W1, W3, W2, bounds, rows_cap, E, d,
                       h, kind, dA_scratch, dB_scratch, stream);
  else
    backward_impl<256>(dX, dW1, dW3, dW2, dY, X, A, Bm, act, W1, W3, W2, bounds, rows_cap, E, d,
                       h, kind, dA_scratch, dB_scratch, stream);
}

}  // namespace px::cuda
