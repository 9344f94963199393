// defines: expert_ffn_forward, expert_ffn_backward (grouped GEMM, WMMA bf16, cp.async pipeline)
#include "expert_ffn.cuh"

#include <mma.h>

namespace px::cuda {

namespace {

using namespace nvcuda;

constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int WM = 64, WN = 32;                 // warp tile (2 x 4 warps)
constexpr int FM = WM / 16, FN = WN / 16;       // fragments per warp
constexpr int PAD = 8;
constexpr int TILE_ELEMS = 5120;                // max(BM*(BK+PAD), BK*(BN+PAD))
static_assert(BM * (BK + PAD) <= TILE_ELEMS && BK * (BN + PAD) <= TILE_ELEMS, "tile size");

template <int NB>
constexpr size_t smem_bytes() { return (size_t)STAGES * (1 + NB) * TILE_ELEMS * sizeof(bf16); }

__device__ inline void cp_async16(void* smem, const void* gmem, bool valid) {
  unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Operand A of the tile: logical [M, K]; stored row-major [M, K] (lda) or, if TA, [K, M].
// Loads rows [m0, m0+BM) x [k0, k0+BK) with zero fill outside (Mv, K).
template <bool TA>
__device__ inline void load_a(bf16* s, const bf16* A, long lda, int Mv, int K, int k0) {
  for (int c = threadIdx.x; c < 512; c += THREADS) {
    if (!TA) {  // smem [BM][BK+PAD]
      int m = c >> 2, kc = (c & 3) * 8;
      bool v = m < Mv && k0 + kc < K;
      cp_async16(s + m * (BK + PAD) + kc, v ? A + (long)m * lda + k0 + kc : A, v);
    } else {    // smem [BK][BM+PAD] (col-major A)
      int k = c >> 4, mc = (c & 15) * 8;
      bool v = k0 + k < K && mc < Mv;
      cp_async16(s + k * (BM + PAD) + mc, v ? A + (long)(k0 + k) * lda + mc : A, v);
    }
  }
}
// Operand B: logical [K, N]; stored row-major [K, N] (ldb) or, if TB, [N, K].
template <bool TB>
__device__ inline void load_b(bf16* s, const bf16* B, long ldb, int Nv, int K, int k0) {
  for (int c = threadIdx.x; c < 512; c += THREADS) {
    if (!TB) {  // smem [BK][BN+PAD]
      int k = c >> 4, nc = (c & 15) * 8;
      bool v = k0 + k < K && nc < Nv;
      cp_async16(s + k * (BN + PAD) + nc, v ? B + (long)(k0 + k) * ldb + nc : B, v);
    } else {    // smem [BN][BK+PAD] (col-major B)
      int n = c >> 2, kc = (c & 3) * 8;
      bool v = n < Nv && k0 + kc < K;
      cp_async16(s + n * (BK + PAD) + kc, v ? B + (long)n * ldb + k0 + kc : B, v);
    }
  }
}

template <int NB>
using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>[NB][FM][FN];

// acc[b] += A_tile(BM x K) * B_b_tile(K x BN); A, B point at the tile origin (row m0 / col n0).
template <bool TA, bool TB, int NB>
__device__ void mainloop(Acc<NB>& acc, bf16* smem, const bf16* A, long lda, const bf16* const* B,
                         long ldb, int Mv, int Nv, int K) {
  using LA = std::conditional_t<TA, wmma::col_major, wmma::row_major>;
  using LB = std::conditional_t<TB, wmma::col_major, wmma::row_major>;
  const int warp = threadIdx.x >> 5, wm = (warp >> 2) * WM, wn = (warp & 3) * WN;
  const int ktiles = (K + BK - 1) / BK;
  auto sA = [&](int st) { return smem + (size_t)st * (1 + NB) * TILE_ELEMS; };
  auto sB = [&](int st, int b) { return sA(st) + (1 + b) * TILE_ELEMS; };
  auto issue = [&](int kt) {
    if (kt < ktiles) {
      int st = kt % STAGES;
      load_a<TA>(sA(st), A, lda, Mv, K, kt * BK);
#pragma unroll
      for (int b = 0; b < NB; ++b) load_b<TB>(sB(st, b), B[b], ldb, Nv, K, kt * BK);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) issue(s);
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    issue(kt + STAGES - 1);
    const int st = kt % STAGES;
    const bf16* a = sA(st);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> fa[FM];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        int m = wm + i * 16;
        if (TA) wmma::load_matrix_sync(fa[i], a + kk * (BM + PAD) + m, BM + PAD);
        else wmma::load_matrix_sync(fa[i], a + m * (BK + PAD) + kk, BK + PAD);
      }
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const bf16* bs = sB(st, b);
#pragma unroll
        for (int j = 0; j < FN; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> fb;
          int n = wn + j * 16;
          if (TB) wmma::load_matrix_sync(fb, bs + n * (BK + PAD) + kk, BK + PAD);
          else wmma::load_matrix_sync(fb, bs + kk * (BN + PAD) + n, BN + PAD);
#pragma unroll
          for (int i = 0; i < FM; ++i) wmma::mma_sync(acc[b][i][j], fa[i], fb, acc[b][i][j]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();
}

template <int NB>
__device__ inline void zero(Acc<NB>& acc) {
#pragma unroll
  for (int b = 0; b < NB; ++b)
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[b][i][j], 0.f);
}

// Epilogue: f(row_in_tile, col_in_tile, v[NB]) for every element of the block tile, staged
// per warp through shared memory (smem free after mainloop).
template <int NB, class F>
__device__ inline void epilogue(Acc<NB>& acc, bf16* smem, F f) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = (warp >> 2) * WM, wn = (warp & 3) * WN;
  float* st = reinterpret_cast<float*>(smem) + warp * NB * 256;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) {
#pragma unroll
      for (int b = 0; b < NB; ++b)
        wmma::store_matrix_sync(st + b * 256, acc[b][i][j], 16, wmma::mem_row_major);
      __syncwarp();
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        int e = lane + 32 * t, r = e >> 4, c = e & 15;
        float v[NB];
#pragma unroll
        for (int b = 0; b < NB; ++b) v[b] = st[b * 256 + e];
        f(wm + i * 16 + r, wn + j * 16 + c, v);
      }
      __syncwarp();
    }
}

// Map blockIdx.x to (expert, first row, rows valid) over row tiles of the segments.
// Returns false when this block has no tile (the grid is an upper bound).
__device__ inline bool find_row_tile(const int32_t* bounds, int E, int& e_out, int& r0,
                                     int& mv) {
  __shared__ int s_e, s_r0, s_mv;
  if (threadIdx.x == 0) {
    int t = blockIdx.x, e_found = -1;
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

// F1: [A|Bm] = X [W1|W3], act = silu(A)*Bm  (or relu2: A = X W1, act = relu(A)^2).
template <int NB>
__global__ void __launch_bounds__(THREADS) ffn_up_kernel(bf16* A, bf16* Bm, bf16* act,
                                                         const bf16* X, const bf16* W1,
                                                         const bf16* W3, const int32_t* bounds,
                                                         int E, int d, int h) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  if (!find_row_tile(bounds, E, e, r0, mv)) return;
  const int n0 = blockIdx.y * BN, nv = min(BN, h - n0);
  const bf16* B[2] = {W1 + (size_t)e * d * h + n0, NB == 2 ? W3 + (size_t)e * d * h + n0 : nullptr};
  Acc<NB> acc;
  zero<NB>(acc);
  mainloop<false, false, NB>(acc, smem, X + (size_t)r0 * d, d, B, h, mv, nv, d);
  epilogue<NB>(acc, smem, [&](int r, int c, const float* v) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(r0 + r) * h + n0 + c;
    bf16 a16 = __float2bfloat16(v[0]);
    A[o] = a16;
    if constexpr (NB == 2) {
      bf16 b16 = __float2bfloat16(v[1]);
      Bm[o] = b16;
      float a = __bfloat162float(a16), b = __bfloat162float(b16);
      act[o] = __float2bfloat16(a * sigmoidf_(a) * b);
    } else {
      float a = fmaxf(__bfloat162float(a16), 0.f);
      act[o] = __float2bfloat16(a * a);
    }
  });
}

// Row-segment GEMM: C[rows, N] = A_seg [*, K] * op(W[e]) (+ A2_seg * op(W2[e]) if DUAL);
// W[e] at W + e*K*N, stored [K,N] or (TB) [N,K]. C bf16.
template <bool TB, bool DUAL>
__global__ void __launch_bounds__(THREADS) rowseg_gemm_kernel(bf16* C, const bf16* Aop,
                                                              const bf16* W, const bf16* Aop2,
                                                              const bf16* Wb,
                                                              const int32_t* bounds, int E,
                                                              int K, int N) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  if (!find_row_tile(bounds, E, e, r0, mv)) return;
  const int n0 = blockIdx.y * BN, nv = min(BN, N - n0);
  const size_t wstride = (size_t)K * N;
  const long ldb = TB ? K : N;
  const size_t boff = TB ? (size_t)n0 * K : (size_t)n0;
  Acc<1> acc;
  zero<1>(acc);
  const bf16* B[1] = {W + e * wstride + boff};
  mainloop<false, TB, 1>(acc, smem, Aop + (size_t)r0 * K, K, B, ldb, mv, nv, K);
  if (DUAL) {
    const bf16* B2[1] = {Wb + e * wstride + boff};
    mainloop<false, TB, 1>(acc, smem, Aop2 + (size_t)r0 * K, K, B2, ldb, mv, nv, K);
  }
  epilogue<1>(acc, smem, [&](int r, int c, const float* v) {
    if (r < mv && c < nv) C[(size_t)(r0 + r) * N + n0 + c] = __float2bfloat16(v[0]);
  });
}

// B1: dact = dY W2[e]^T (W2[e] is [h, d] = [N, K]); epilogue: dA, dB from dact, A, Bm.
__global__ void __launch_bounds__(THREADS) ffn_dact_kernel(bf16* dA, bf16* dB, const bf16* dY,
                                                           const bf16* W2, const bf16* A,
                                                           const bf16* Bm,
                                                           const int32_t* bounds, int E, int d,
                                                           int h, int kind) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int e, r0, mv;
  if (!find_row_tile(bounds, E, e, r0, mv)) return;
  const int n0 = blockIdx.y * BN, nv = min(BN, h - n0);
  Acc<1> acc;
  zero<1>(acc);
  const bf16* B[1] = {W2 + (size_t)e * h * d + (size_t)n0 * d};
  mainloop<false, true, 1>(acc, smem, dY + (size_t)r0 * d, d, B, d, mv, nv, d);
  epilogue<1>(acc, smem, [&](int r, int c, const float* v) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(r0 + r) * h + n0 + c;
    float g = v[0], a = __bfloat162float(A[o]);
    if (kind == px::cpu::EXPERT_ACT_SWIGLU) {
      float b = __bfloat162float(Bm[o]), s = sigmoidf_(a);
      dA[o] = __float2bfloat16(g * b * s * (1.f + a * (1.f - s)));
      dB[o] = __float2bfloat16(g * a * s);
    } else {
      dA[o] = __float2bfloat16(g * 2.f * fmaxf(a, 0.f));
    }
  });
}

// K-segment GEMM for weight gradients: dW_b[e] (M x N, fp32, +=) += P_seg^T Q_b,seg where
// P is [rows, M] and Q_b [rows, N]; K = the segment's rows. Grid: (M/BM * N/BN, E).
template <int NB>
__global__ void __launch_bounds__(THREADS) wgrad_kernel(float* dW0, float* dW1, const bf16* P,
                                                        const bf16* Q0, const bf16* Q1,
                                                        const int32_t* bounds, int M, int N) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  const int e = blockIdx.y;
  const int ntn = (N + BN - 1) / BN;
  const int m0 = (blockIdx.x / ntn) * BM, n0 = (blockIdx.x % ntn) * BN;
  const int mv = min(BM, M - m0), nv = min(BN, N - n0);
  const int b0 = bounds[e], K = bounds[e + 1] - b0;
  Acc<NB> acc;
  zero<NB>(acc);
  if (K > 0) {
    const bf16* B[2] = {Q0 + (size_t)b0 * N + n0, NB == 2 ? Q1 + (size_t)b0 * N + n0 : nullptr};
    mainloop<true, false, NB>(acc, smem, P + (size_t)b0 * M + m0, M, B, N, mv, nv, K);
  }
  float* out[2] = {dW0 + (size_t)e * M * N, NB == 2 ? dW1 + (size_t)e * M * N : nullptr};
  epilogue<NB>(acc, smem, [&](int r, int c, const float* v) {
    if (r >= mv || c >= nv) return;
    size_t o = (size_t)(m0 + r) * N + n0 + c;
#pragma unroll
    for (int b = 0; b < NB; ++b) out[b][o] += v[b];
  });
}

template <class K>
void set_smem(K kernel, size_t bytes) {
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

int row_tiles_bound(int rows_cap, int E) { return ceil_div(rows_cap, BM) + E; }

}  // namespace

void expert_ffn_forward(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X, const bf16* W1,
                        const bf16* W3, const bf16* W2, const int32_t* bounds, int rows_cap,
                        int E, int d, int h, ExpertAct kind, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  if (d % 8 || h % 8) cuda_fail("expert_ffn_forward", "d and h must be multiples of 8", __FILE__, __LINE__);
  dim3 g1(row_tiles_bound(rows_cap, E), ceil_div(h, BN));
  if (kind == px::cpu::EXPERT_ACT_SWIGLU) {
    set_smem(ffn_up_kernel<2>, smem_bytes<2>());
    ffn_up_kernel<2><<<g1, THREADS, smem_bytes<2>(), stream>>>(A, Bm, act, X, W1, W3, bounds, E, d, h);
  } else {
    set_smem(ffn_up_kernel<1>, smem_bytes<1>());
    ffn_up_kernel<1><<<g1, THREADS, smem_bytes<1>(), stream>>>(A, Bm, act, X, W1, W3, bounds, E, d, h);
  }
  cudaCheckLaunch();
  dim3 g2(row_tiles_bound(rows_cap, E), ceil_div(d, BN));
  set_smem(rowseg_gemm_kernel<false, false>, smem_bytes<1>());
  rowseg_gemm_kernel<false, false><<<g2, THREADS, smem_bytes<1>(), stream>>>(
      Y, act, W2, nullptr, nullptr, bounds, E, h, d);
  cudaCheckLaunch();
}

void expert_ffn_backward(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY,
                         const bf16* X, const bf16* A, const bf16* Bm, const bf16* act,
                         const bf16* W1, const bf16* W3, const bf16* W2, const int32_t* bounds,
                         int rows_cap, int E, int d, int h, ExpertAct kind, bf16* dA_scratch,
                         bf16* dB_scratch, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  if (d % 8 || h % 8) cuda_fail("expert_ffn_backward", "d and h must be multiples of 8", __FILE__, __LINE__);
  const bool swiglu = kind == px::cpu::EXPERT_ACT_SWIGLU;
  // B1: dA, dB
  dim3 g1(row_tiles_bound(rows_cap, E), ceil_div(h, BN));
  set_smem(ffn_dact_kernel, smem_bytes<1>());
  ffn_dact_kernel<<<g1, THREADS, smem_bytes<1>(), stream>>>(dA_scratch, dB_scratch, dY, W2, A,
                                                            Bm, bounds, E, d, h, (int)kind);
  cudaCheckLaunch();
  // B2: dW2[e] [h, d] += act^T dY
  if (dW2) {
    dim3 g(ceil_div(h, BM) * ceil_div(d, BN), E);
    set_smem(wgrad_kernel<1>, smem_bytes<1>());
    wgrad_kernel<1><<<g, THREADS, smem_bytes<1>(), stream>>>(dW2, nullptr, act, dY, nullptr,
                                                             bounds, h, d);
    cudaCheckLaunch();
  }
  // B3: dW1[e], dW3[e] [d, h] += X^T dA, X^T dB
  if (dW1) {
    dim3 g(ceil_div(d, BM) * ceil_div(h, BN), E);
    if (swiglu && dW3) {
      set_smem(wgrad_kernel<2>, smem_bytes<2>());
      wgrad_kernel<2><<<g, THREADS, smem_bytes<2>(), stream>>>(dW1, dW3, X, dA_scratch,
                                                               dB_scratch, bounds, d, h);
    } else {
      set_smem(wgrad_kernel<1>, smem_bytes<1>());
      wgrad_kernel<1><<<g, THREADS, smem_bytes<1>(), stream>>>(dW1, nullptr, X, dA_scratch,
                                                               nullptr, bounds, d, h);
    }
    cudaCheckLaunch();
  }
  // B4: dX = dA W1^T (+ dB W3^T); W1[e] is [d, h] = [N, K] with K = h.
  dim3 g4(row_tiles_bound(rows_cap, E), ceil_div(d, BN));
  if (swiglu) {
    set_smem(rowseg_gemm_kernel<true, true>, smem_bytes<1>());
    rowseg_gemm_kernel<true, true><<<g4, THREADS, smem_bytes<1>(), stream>>>(
        dX, dA_scratch, W1, dB_scratch, W3, bounds, E, h, d);
  } else {
    set_smem(rowseg_gemm_kernel<true, false>, smem_bytes<1>());
    rowseg_gemm_kernel<true, false><<<g4, THREADS, smem_bytes<1>(), stream>>>(
        dX, dA_scratch, W1, nullptr, nullptr, bounds, E, h, d);
  }
  cudaCheckLaunch();
}

}  // namespace px::cuda
