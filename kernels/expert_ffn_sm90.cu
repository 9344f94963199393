// defines: expert_ffn_forward_sm90, expert_ffn_backward_sm90, expert_ffn_sm90_available
// (grouped GEMM on Hopper: wgmma.mma_async + TMA + mbarrier pipeline, warp-specialised).
// Compiled for sm_90a only (CMake target parallax_kernels_sm90).
//
// Block: 384 threads = 3 warpgroups. Warpgroup 0 is the producer (registers given back with
// setmaxnreg; thread 0 issues every TMA load), warpgroups 1 and 2 are the consumers: rows
// [0, 64) and [64, 128) of the 128-row tile, each with one m64nNk16 wgmma chain per B operand.
// Tile BM x BN x BK = 128 x 256 x 64 (NB = 1) or 128 x (2 x 128) x 64 (NB = 2: the fused
// [W1|W3] GEMM, both B tiles share the A tile); 48 KB per stage, 4 stages (192 KB + 1 KB of
// alignment slack), one block per SM.
// Pipeline (per stage s): full[s] (count 1: the producer's arrive.expect_tx, completed by
// the TMA bytes) and empty[s] (count 256: every consumer thread arrives once the wgmmas that
// read the stage have completed). The block's k iteration `it` (counted over all the tiles
// it handles) uses stage it % 4 with parity (it / 4) & 1; the producer waits on empty with the
// opposite parity (a fresh barrier passes parity 1). The consumers keep one wgmma group in
// flight (wait_group 1), release the previous iteration's stage, and the tile's last stage
// after wait_group 0 (before the epilogue).
// Row-segment phases (forward up / down, dact, dX) are persistent: one block per SM walks the
// tiles (expert, row tile, column tile) found from the device-side bounds (one launch per
// phase, no host sync), the pipeline running on across tiles so that the next tile's loads
// overlap the epilogue. The weight-gradient kernel has one block per (M, N) tile and expert.
// Operand tiles come from TMA tensor maps:
//   rows operand (X, act, dY, dA, dB) [rows_cap, K]: 2-D map, box 64 (K) x 128 (rows), at
//     (k0, first row of the tile). Rows past the expert's segment belong to the next expert
//     (or are zero past rows_cap): their outputs are computed and dropped by the epilogue.
//   weights W[e]: 3-D map [E][.][.] so that the K and N edges of one expert are zero-filled
//     (never the next expert's weights). N-major ([K, N], forward: W1, W3 [d, h]; W2 [h, d]):
//     box 64 (n) x 64 (k) x 1, BN / 64 boxes per stage. K-major ([N, K], backward: W2 [h, d]
//     for dY W2^T; W1, W3 [d, h] for dA W1^T): box 64 (k) x 256 (n) x 1.
// K past the operand's extent is zero-filled in both operands (K tails need no masking).
// Epilogues: straight from the accumulator registers to global memory (bf16x2 stores), rows
// < the segment's rows and columns < N only; the same math as expert_ffn.cu.
#include "expert_ffn_sm90.cuh"
#include "wgmma_sm90.cuh"  // defines: wgmma_m64n{128,256}k16, smem descriptors, tma, mbarrier

#include <cuda.h>          // defines: CUtensorMap, cuTensorMapEncodeTiled's enums
#include <cudaTypedefs.h>  // defines: PFN_cuTensorMapEncodeTiled_v12000

#include <cstdlib>
#include <cstring>

namespace px::cuda {

namespace {

using namespace sm90;

constexpr int BM = 128, BK = 64, STAGES = 4, NTHREADS = 384;
constexpr int A_BYTES = BM * BK * 2;          // 16 KB
constexpr int B_BYTES = 256 * BK * 2;         // 32 KB over the NB B operands
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;  // + slack to align to 1024 bytes
constexpr int CONSUMER_THREADS = 256;
static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "1024-byte aligned tiles");

enum Epi { EPI_STORE = 0, EPI_SWIGLU, EPI_RELU2, EPI_DACT_SWIGLU, EPI_DACT_RELU2 };

struct Params {
  bf16* C;            // EPI_STORE: out; SWIGLU / RELU2: A; DACT: dA
  bf16* C2;           // SWIGLU: Bm; DACT_SWIGLU: dB
  bf16* C3;           // SWIGLU / RELU2: act
  const bf16* In1;    // DACT: A
  const bf16* In2;    // DACT_SWIGLU: Bm
  const int32_t* bounds;
  int E, N, K;        // output columns, reduction length (per segment when DUAL)
  int ncol_tiles;     // column tiles per row tile
  int ntiles;         // row-tile bound x column tiles (tile t: row tile t / ncol_tiles)
};

// Map row tile `tile` to (expert, first row, rows valid); false when there is no such tile
// (the tile count is a host-side bound). Called by a whole warp (converged; every lane gets
// the result): the experts are scanned 32 at a time, parallel loads of bounds and a prefix
// sum of the row tiles per expert by shuffles, so a lookup costs E/32 dependent loads.
__device__ inline bool warp_find_row_tile(const int32_t* bounds, int E, int tile, int& e_out,
                                          int& r0, int& mv) {
  const int lane = threadIdx.x & 31;
  int before = 0;  // row tiles of the experts of earlier chunks
  for (int e0 = 0; e0 < E; e0 += 32) {
    const int e = e0 + lane;
    int b0 = 0, cnt = 0;
    if (e < E) {
      b0 = bounds[e];
      cnt = bounds[e + 1] - b0;
    }
    const int nt = (cnt + BM - 1) / BM;
    int incl = nt;  // inclusive prefix sum over the lanes
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const int first = before + incl - nt;  // first row tile of expert e
    // at most one lane: the experts' tile ranges are disjoint
    const unsigned m = __ballot_sync(0xffffffffu, nt > 0 && tile >= first && tile < first + nt);
    if (m) {
      const int src = __ffs(m) - 1, t = tile - first;
      e_out = __shfl_sync(0xffffffffu, e, src);
      r0 = __shfl_sync(0xffffffffu, b0 + t * BM, src);
      mv = __shfl_sync(0xffffffffu, min(BM, cnt - t * BM), src);
      return true;
    }
    before += __shfl_sync(0xffffffffu, incl, 31);
  }
  return false;
}

__device__ inline float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }
__device__ __forceinline__ void st_bf16x2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ float2 ld_bf16x2(const bf16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

template <int BNB, int TA, int TB>
__device__ __forceinline__ void wgmma_tile(float (&d)[BNB / 2], uint64_t da, uint64_t db) {
  if constexpr (BNB == 256) wgmma_m64n256k16<TA, TB>(d, da, db, 1);
  else wgmma_m64n128k16<TA, TB>(d, da, db, 1);
}

// Epilogue of one output element pair (row r, columns c, c+1 of the block tile); v[b] the
// two accumulators of B operand b.
template <int NB, int EPI>
__device__ __forceinline__ void epi_pair(const Params& p, size_t o, const float (*v)[2]) {
  if constexpr (EPI == EPI_STORE) {
    st_bf16x2(p.C + o, v[0][0], v[0][1]);
  } else if constexpr (EPI == EPI_SWIGLU || EPI == EPI_RELU2) {
    __nv_bfloat162 a16 = __floats2bfloat162_rn(v[0][0], v[0][1]);
    *reinterpret_cast<__nv_bfloat162*>(p.C + o) = a16;
    float2 a = __bfloat1622float2(a16);
    if constexpr (EPI == EPI_SWIGLU) {
      static_assert(NB == 2, "SwiGLU needs [W1|W3]");
      __nv_bfloat162 b16 = __floats2bfloat162_rn(v[1][0], v[1][1]);
      *reinterpret_cast<__nv_bfloat162*>(p.C2 + o) = b16;
      float2 b = __bfloat1622float2(b16);
      st_bf16x2(p.C3 + o, a.x * sigmoidf_(a.x) * b.x, a.y * sigmoidf_(a.y) * b.y);
    } else {
      float x = fmaxf(a.x, 0.f), y = fmaxf(a.y, 0.f);
      st_bf16x2(p.C3 + o, x * x, y * y);
    }
  } else if constexpr (EPI == EPI_DACT_SWIGLU) {
    float2 a = ld_bf16x2(p.In1 + o), b = ld_bf16x2(p.In2 + o);
    float s0 = sigmoidf_(a.x), s1 = sigmoidf_(a.y);
    st_bf16x2(p.C + o, v[0][0] * b.x * s0 * (1.f + a.x * (1.f - s0)),
              v[0][1] * b.y * s1 * (1.f + a.y * (1.f - s1)));
    st_bf16x2(p.C2 + o, v[0][0] * a.x * s0, v[0][1] * a.y * s1);
  } else {  // EPI_DACT_RELU2
    float2 a = ld_bf16x2(p.In1 + o);
    st_bf16x2(p.C + o, v[0][0] * 2.f * fmaxf(a.x, 0.f), v[0][1] * 2.f * fmaxf(a.y, 0.f));
  }
}

// Declared 128-byte aligned only: the kernels round the address up to 1024 themselves
// (SMEM_BYTES has the slack), so nothing depends on where the runtime puts dynamic smem.
extern __shared__ __align__(128) unsigned char smem_raw[];

// C[rows of the segment, N] = A_seg [*, K] op(W[e]) (+ A1_seg op(W'[e]) when DUAL), NB B
// operands sharing the A tile (NB = 2: B0 = W1, B1 = W3, two outputs). BMN: B stored N-major
// ([K, N] per expert), else K-major ([N, K]).
// Persistent: block b handles tiles b, b + gridDim.x, ... (tile t = row tile t / ncol_tiles,
// column tile t % ncol_tiles: the column tiles of a row tile run at the same time, so its rows
// come from DRAM once). The stage / phase counter runs on across tiles, so the producer loads
// the next tile while the consumers run the epilogue. gridDim.x = ntiles gives one tile per
// block (PX_SM90_PERSISTENT=0).
template <int NB, bool BMN, bool DUAL, int EPI>
__global__ void __launch_bounds__(NTHREADS, 1)
    wgmma_rowseg_kernel(const __grid_constant__ CUtensorMap tmA0,
                        const __grid_constant__ CUtensorMap tmA1,
                        const __grid_constant__ CUtensorMap tmB0,
                        const __grid_constant__ CUtensorMap tmB1, const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(!(NB == 2 && DUAL), "two B operands or two K segments, not both");
  constexpr int BNB = NB == 2 ? 128 : 256;        // columns per B operand (= tile columns)
  constexpr int B_OP_BYTES = BNB * BK * 2;        // one B operand's tile
  constexpr int TB = BMN ? 1 : 0;
  __shared__ __align__(8) uint64_t full_bar[STAGES], empty_bar[STAGES];

  // 1024-byte aligned stage buffers (the 128-byte swizzle pattern repeats every 1024 bytes;
  // descriptors assume base offset 0).
  const uint32_t raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full_bar[s], 1);
      mbar_init(&empty_bar[s], CONSUMER_THREADS);
    }
    mbar_init_fence();
  }
  __syncthreads();

  const int kps = (p.K + BK - 1) / BK, ktiles = DUAL ? 2 * kps : kps;
  const int wg = threadIdx.x / 128, lane = threadIdx.x & 31;

  if (wg == 0) {
    // ---- producer: warp 0 looks the tiles up, its lane 0 issues the TMA loads ----
    regs_dealloc<40>();
    if (threadIdx.x >= 32) return;
    if (lane == 0) {
      tma_prefetch_desc(&tmA0);
      tma_prefetch_desc(&tmB0);
      if (DUAL || NB == 2) tma_prefetch_desc(&tmB1);
      if (DUAL) tma_prefetch_desc(&tmA1);
    }
    uint32_t it = 0;  // k iterations issued by this block, over all its tiles
    for (int tile = blockIdx.x; tile < p.ntiles; tile += gridDim.x) {
      int e, r0, mv;
      if (!warp_find_row_tile(p.bounds, p.E, tile / p.ncol_tiles, e, r0, mv)) continue;
      const int n0 = (tile % p.ncol_tiles) * BNB;
      if (lane == 0) {
        for (int kt = 0; kt < ktiles; ++kt, ++it) {
          const int s = (int)(it % STAGES);
          mbar_wait(&empty_bar[s], ((it / STAGES) & 1u) ^ 1u);
          unsigned char* sA = smem + s * STAGE_BYTES;
          unsigned char* sB = sA + A_BYTES;
          mbar_arrive_expect_tx(&full_bar[s], (uint32_t)(A_BYTES + NB * B_OP_BYTES));
          const bool seg1 = DUAL && kt >= kps;
          const int k0 = (seg1 ? kt - kps : kt) * BK;
          tma_load_2d(sA, seg1 ? &tmA1 : &tmA0, &full_bar[s], k0, r0);
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            const CUtensorMap* tb = (b == 1 || seg1) ? &tmB1 : &tmB0;
            unsigned char* dst = sB + b * B_OP_BYTES;
            if constexpr (BMN) {
#pragma unroll
              for (int c = 0; c < BNB / 64; ++c)
                tma_load_3d(dst + c * 8192, tb, &full_bar[s], n0 + 64 * c, k0, e);
            } else {
              tma_load_3d(dst, tb, &full_bar[s], k0, n0, e);
            }
          }
        }
      }
      __syncwarp();
    }
    return;
  }

  // ---- consumers ----
  regs_alloc<232>();
  const int cw = wg - 1;  // rows [64 cw, 64 cw + 64) of the tile
  const int t = threadIdx.x % 128, w = t / 32;
  const int rbase = cw * 64 + w * 16 + lane / 4, cbase = 2 * (lane % 4);
  uint32_t it = 0;  // k iterations consumed, over all tiles (same sequence as the producer)
  for (int tile = blockIdx.x; tile < p.ntiles; tile += gridDim.x) {
    int e, r0, mv;
    if (!warp_find_row_tile(p.bounds, p.E, tile / p.ncol_tiles, e, r0, mv)) continue;
    const int n0 = (tile % p.ncol_tiles) * BNB, nv = min(BNB, p.N - n0);
    float acc[NB][BNB / 2];
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
      for (int i = 0; i < BNB / 2; ++i) acc[b][i] = 0.f;

    for (int kt = 0; kt < ktiles; ++kt, ++it) {
      const int s = (int)(it % STAGES);
      mbar_wait(&full_bar[s], (it / STAGES) & 1u);
      const uint32_t sA = smem_u32(smem + s * STAGE_BYTES) + cw * (64 * BK * 2);
      const uint32_t sB = smem_u32(smem + s * STAGE_BYTES + A_BYTES);
#pragma unroll
      for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        const uint64_t da = desc_kmajor(sA + kk * 32);
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          const uint32_t bb = sB + b * B_OP_BYTES;
          const uint64_t db = BMN ? desc_mnmajor(bb + kk * 2048) : desc_kmajor(bb + kk * 32);
          wgmma_tile<BNB, 0, TB>(acc[b], da, db);
        }
      }
      wgmma_commit();
#pragma unroll
      for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
      wgmma_wait<1>();  // the previous k tile's group is done: release its stage
#pragma unroll
      for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
      if (kt > 0) mbar_arrive(&empty_bar[(it - 1) % STAGES]);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
    mbar_arrive(&empty_bar[(it - 1) % STAGES]);  // this tile's last stage (ktiles >= 1)

    // ---- epilogue: d[4j + 2h + q] is row 16 w + l/4 + 8 h, column 8 j + 2 (l%4) + q ----
#pragma unroll
    for (int j = 0; j < BNB / 8; ++j) {
      const int c = j * 8 + cbase;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = rbase + hh * 8;
        if (r < mv && c < nv) {
          float v[NB][2];
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            v[b][0] = acc[b][4 * j + 2 * hh];
            v[b][1] = acc[b][4 * j + 2 * hh + 1];
          }
          epi_pair<NB, EPI>(p, (size_t)(r0 + r) * p.N + n0 + c, v);
        }
      }
    }
  }
#endif
}

// Weight gradients: dW_b[e] (M x N, fp32, +=) += P_seg^T Q_b,seg with P [rows, M], Q_b
// [rows, N] and K = the segment's rows (NB = 2: dW1, dW3 sharing P = X). Both operands are
// M/N-major row blocks of the permuted buffers: P box 64 (m) x 64 (k rows), two per stage
// (consumer cw reads the m chunk cw); Q boxes 64 (n) x 64 (k rows), BN / 64 per operand. K
// tiles start at the segment's first row; the rows of the last tile past the segment (the
// next expert's, or zero / anything past rows_cap) are zeroed in shared memory by the
// consumers before the wgmmas (a k row of an M/N-major chunk is one 128-byte line, so the
// swizzle does not matter), so NaN or Inf there cannot leak in. Grid: (M/BM * N/BN, E).
template <int NB>
__global__ void __launch_bounds__(NTHREADS, 1)
    wgmma_wgrad_kernel(const __grid_constant__ CUtensorMap tmP,
                       const __grid_constant__ CUtensorMap tmQ0,
                       const __grid_constant__ CUtensorMap tmQ1, float* dW0, float* dW1,
                       const int32_t* bounds, int M, int N) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BNB = NB == 2 ? 128 : 256;
  constexpr int B_OP_BYTES = BNB * BK * 2;
  constexpr int CHUNK = 64 * BK * 2;                            // one 64 x 64 box, 8 KB
  constexpr int NCHUNK = (A_BYTES + NB * B_OP_BYTES) / CHUNK;   // 6 per stage
  __shared__ __align__(8) uint64_t full_bar[STAGES], empty_bar[STAGES];

  const int e = blockIdx.y;
  const int ntn = (N + BNB - 1) / BNB;
  const int m0 = (blockIdx.x / ntn) * BM, n0 = (blockIdx.x % ntn) * BNB;
  const int mv = min(BM, M - m0), nv = min(BNB, N - n0);
  const int b0 = bounds[e], K = bounds[e + 1] - b0;
  if (K <= 0) return;  // nothing to add (uniform over the block)

  const uint32_t raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full_bar[s], 1);
      mbar_init(&empty_bar[s], CONSUMER_THREADS);
    }
    mbar_init_fence();
  }
  __syncthreads();

  const int ktiles = (K + BK - 1) / BK;
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    regs_dealloc<40>();
    if (threadIdx.x == 0) {
      tma_prefetch_desc(&tmP);
      tma_prefetch_desc(&tmQ0);
      if (NB == 2) tma_prefetch_desc(&tmQ1);
      for (int kt = 0; kt < ktiles; ++kt) {
        const int s = kt % STAGES;
        mbar_wait(&empty_bar[s], ((uint32_t)(kt / STAGES) & 1u) ^ 1u);
        unsigned char* st = smem + s * STAGE_BYTES;
        mbar_arrive_expect_tx(&full_bar[s], (uint32_t)(A_BYTES + NB * B_OP_BYTES));
        const int row = b0 + kt * BK;
        tma_load_2d(st, &tmP, &full_bar[s], m0, row);
        tma_load_2d(st + CHUNK, &tmP, &full_bar[s], m0 + 64, row);
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
          for (int c = 0; c < BNB / 64; ++c)
            tma_load_2d(st + A_BYTES + b * B_OP_BYTES + c * CHUNK, b ? &tmQ1 : &tmQ0,
                        &full_bar[s], n0 + 64 * c, row);
      }
    }
    return;
  }

  regs_alloc<232>();
  const int cw = wg - 1, tc = threadIdx.x - 128;  // consumer thread 0..255
  float acc[NB][BNB / 2];
#pragma unroll
  for (int b = 0; b < NB; ++b)
#pragma unroll
    for (int i = 0; i < BNB / 2; ++i) acc[b][i] = 0.f;

  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    mbar_wait(&full_bar[s], (uint32_t)(kt / STAGES) & 1u);
    unsigned char* st = smem + s * STAGE_BYTES;
    const int kv = K - kt * BK;
    if (kv < BK) {  // last tile, partial: zero k rows [kv, BK) of every chunk
      const int per = (BK - kv) * 8;  // 16-byte vectors per chunk
      for (int i = tc; i < NCHUNK * per; i += CONSUMER_THREADS) {
        const int ch = i / per, v = i % per;
        *reinterpret_cast<uint4*>(st + ch * CHUNK + kv * 128 + v * 16) = make_uint4(0, 0, 0, 0);
      }
      fence_proxy_async_smem();
      named_bar_sync(1, CONSUMER_THREADS);
    }
    const uint32_t sA = smem_u32(st) + cw * CHUNK;
    const uint32_t sB = smem_u32(st) + A_BYTES;
#pragma unroll
    for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      const uint64_t da = desc_mnmajor(sA + kk * 2048);
#pragma unroll
      for (int b = 0; b < NB; ++b)
        wgmma_tile<BNB, 1, 1>(acc[b], da, desc_mnmajor(sB + b * B_OP_BYTES + kk * 2048));
    }
    wgmma_commit();
#pragma unroll
    for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
    wgmma_wait<1>();
#pragma unroll
    for (int b = 0; b < NB; ++b) fence_regs(acc[b]);
    if (kt > 0) mbar_arrive(&empty_bar[(kt - 1) % STAGES]);
  }
  wgmma_wait<0>();
#pragma unroll
  for (int b = 0; b < NB; ++b) fence_regs(acc[b]);

  float* out[2] = {dW0 + (size_t)e * M * N, NB == 2 ? dW1 + (size_t)e * M * N : nullptr};
  const int t = threadIdx.x % 128, w = t / 32, l = t % 32;
  const int rbase = cw * 64 + w * 16 + l / 4, cbase = 2 * (l % 4);
#pragma unroll
  for (int j = 0; j < BNB / 8; ++j) {
    const int c = j * 8 + cbase;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = rbase + hh * 8;
      if (r < mv && c < nv) {
        const size_t o = (size_t)(m0 + r) * N + n0 + c;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          float2* q = reinterpret_cast<float2*>(out[b] + o);
          float2 x = *q;
          x.x += acc[b][4 * j + 2 * hh];
          x.y += acc[b][4 * j + 2 * hh + 1];
          *q = x;
        }
      }
    }
  }
#endif
}

// ---- host: tensor maps -------------------------------------------------------------------

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                               cudaEnableDefault, &q));
    if (!f || q != cudaDriverEntryPointSuccess)
      cuda_fail("expert_ffn_sm90", "cuTensorMapEncodeTiled not available", __FILE__, __LINE__);
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// bf16 tensor map, dims/strides innermost first (strides in bytes, rank-1 of them), 128-byte
// swizzle, out-of-bounds elements read as zero.
CUtensorMap make_map(const bf16* ptr, int rank, const uint64_t* dims, const uint64_t* strides,
                     const uint32_t* box) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16)
    cuda_fail("expert_ffn_sm90", "operand not 16-byte aligned", __FILE__, __LINE__);
  CUtensorMap m;
  std::memset(&m, 0, sizeof m);
  const uint32_t estr[3] = {1, 1, 1};
  CUresult r = encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (cuuint32_t)rank,
                           const_cast<bf16*>(ptr), dims, strides, box, estr,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "cuTensorMapEncodeTiled error %d", (int)r);
    cuda_fail("expert_ffn_sm90", buf, __FILE__, __LINE__);
  }
  return m;
}
// Row-major [rows, cols] buffer, box box_c (cols) x box_r (rows).
CUtensorMap map_2d(const bf16* p, int rows, int cols, int box_c, int box_r) {
  const uint64_t dims[2] = {(uint64_t)cols, (uint64_t)rows};
  const uint64_t strides[1] = {(uint64_t)cols * 2};
  const uint32_t box[2] = {(uint32_t)box_c, (uint32_t)box_r};
  return make_map(p, 2, dims, strides, box);
}
// Rows operand [rows, K] (K contiguous) of the row-segment GEMMs: box 64 (K) x 128 (rows).
CUtensorMap map_rows(const bf16* p, int rows, int K) { return map_2d(p, rows, K, BK, BM); }
// Weights [E][K][N] used N-major: box 64 (n) x 64 (k) x 1.
CUtensorMap map_w_nmajor(const bf16* p, int E, int K, int N) {
  const uint64_t dims[3] = {(uint64_t)N, (uint64_t)K, (uint64_t)E};
  const uint64_t strides[2] = {(uint64_t)N * 2, (uint64_t)K * N * 2};
  const uint32_t box[3] = {64, BK, 1};
  return make_map(p, 3, dims, strides, box);
}
// Weights [E][N][K] used K-major: box 64 (k) x 256 (n) x 1.
CUtensorMap map_w_kmajor(const bf16* p, int E, int N, int K) {
  const uint64_t dims[3] = {(uint64_t)K, (uint64_t)N, (uint64_t)E};
  const uint64_t strides[2] = {(uint64_t)K * 2, (uint64_t)N * K * 2};
  const uint32_t box[3] = {BK, 256, 1};
  return make_map(p, 3, dims, strides, box);
}

// Persistent grid: one block per SM (PX_SM90_PERSISTENT=0: one block per tile).
int persistent_blocks(int ntiles) {
  static const bool off = [] {
    const char* v = std::getenv("PX_SM90_PERSISTENT");
    return v && std::atoi(v) == 0;
  }();
  int dev = 0, sms = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return off ? ntiles : (ntiles < sms ? ntiles : sms);
}

template <int NB, bool BMN, bool DUAL, int EPI>
void launch(const CUtensorMap& a0, const CUtensorMap& a1, const CUtensorMap& b0,
            const CUtensorMap& b1, Params p, int rows_cap, cudaStream_t stream) {
  constexpr int BNB = NB == 2 ? 128 : 256;
  auto kernel = wgmma_rowseg_kernel<NB, BMN, DUAL, EPI>;
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 SMEM_BYTES));
  p.ncol_tiles = ceil_div(p.N, BNB);
  p.ntiles = (ceil_div(rows_cap, BM) + p.E) * p.ncol_tiles;  // row tiles <= rows/BM + E
  kernel<<<persistent_blocks(p.ntiles), NTHREADS, SMEM_BYTES, stream>>>(a0, a1, b0, b1, p);
  cudaCheckLaunch();
}

template <int NB>
void launch_wgrad(const CUtensorMap& P, const CUtensorMap& Q0, const CUtensorMap& Q1,
                  float* dW0, float* dW1, const int32_t* bounds, int E, int M, int N,
                  cudaStream_t stream) {
  constexpr int BNB = NB == 2 ? 128 : 256;
  auto kernel = wgmma_wgrad_kernel<NB>;
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 SMEM_BYTES));
  dim3 g(ceil_div(M, BM) * ceil_div(N, BNB), E);
  kernel<<<g, NTHREADS, SMEM_BYTES, stream>>>(P, Q0, Q1, dW0, dW1, bounds, M, N);
  cudaCheckLaunch();
}

// PX_EXPERT_WGRAD=sm80 keeps the weight gradients of the sm90 backward on the mma.sync
// kernels (to isolate the wgmma weight-gradient kernel when testing).
bool wgrad_on_sm80() {
  static const bool v = [] {
    const char* s = std::getenv("PX_EXPERT_WGRAD");
    return s && std::strcmp(s, "sm80") == 0;
  }();
  return v;
}

void check_args(const char* what, int d, int h) {
  if (d % 8 || h % 8) cuda_fail(what, "d and h must be multiples of 8", __FILE__, __LINE__);
  if (!expert_ffn_sm90_available())
    cuda_fail(what, "the sm90 path needs a compute capability 9.0 device", __FILE__, __LINE__);
}

}  // namespace

bool expert_ffn_sm90_available() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  cudaCheck(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return major == 9 && minor == 0;
}

void expert_ffn_forward_sm90(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X,
                             const bf16* W1, const bf16* W3, const bf16* W2,
                             const int32_t* bounds, int rows_cap, int E, int d, int h,
                             ExpertAct kind, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  check_args("expert_ffn_forward_sm90", d, h);
  const bool swiglu = kind == px::cpu::EXPERT_ACT_SWIGLU;
  // F1: [A|Bm] = X [W1|W3] (K = d, N = h), fused activation.
  {
    CUtensorMap a = map_rows(X, rows_cap, d);
    CUtensorMap b0 = map_w_nmajor(W1, E, d, h);
    CUtensorMap b1 = swiglu ? map_w_nmajor(W3, E, d, h) : b0;
    Params p{A, Bm, act, nullptr, nullptr, bounds, E, h, d, 0, 0};
    if (swiglu) launch<2, true, false, EPI_SWIGLU>(a, a, b0, b1, p, rows_cap, stream);
    else launch<1, true, false, EPI_RELU2>(a, a, b0, b1, p, rows_cap, stream);
  }
  // F2: Y = act W2 (K = h, N = d).
  {
    CUtensorMap a = map_rows(act, rows_cap, h);
    CUtensorMap b = map_w_nmajor(W2, E, h, d);
    Params p{Y, nullptr, nullptr, nullptr, nullptr, bounds, E, d, h, 0, 0};
    launch<1, true, false, EPI_STORE>(a, a, b, b, p, rows_cap, stream);
  }
}

void expert_ffn_backward_sm90(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY,
                              const bf16* X, const bf16* A, const bf16* Bm, const bf16* act,
                              const bf16* W1, const bf16* W3, const bf16* W2,
                              const int32_t* bounds, int rows_cap, int E, int d, int h,
                              ExpertAct kind, bf16* dA_scratch, bf16* dB_scratch,
                              cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0) return;
  check_args("expert_ffn_backward_sm90", d, h);
  const bool swiglu = kind == px::cpu::EXPERT_ACT_SWIGLU;
  // B1: dact = dY W2[e]^T (W2[e] [h, d] = [N, K], K = d, N = h); epilogue writes dA (, dB).
  {
    CUtensorMap a = map_rows(dY, rows_cap, d);
    CUtensorMap b = map_w_kmajor(W2, E, h, d);
    Params p{dA_scratch, dB_scratch, nullptr, A, Bm, bounds, E, h, d, 0, 0};
    if (swiglu) launch<1, false, false, EPI_DACT_SWIGLU>(a, a, b, b, p, rows_cap, stream);
    else launch<1, false, false, EPI_DACT_RELU2>(a, a, b, b, p, rows_cap, stream);
  }
  // B2, B3: weight gradients.
  if (wgrad_on_sm80())
    expert_ffn_wgrad_sm80(dW1, swiglu ? dW3 : nullptr, dW2, dY, X, act, dA_scratch,
                          swiglu ? dB_scratch : nullptr, bounds, E, d, h, kind, stream);
  else
    expert_ffn_wgrad_sm90(dW1, swiglu ? dW3 : nullptr, dW2, dY, X, act, dA_scratch,
                          swiglu ? dB_scratch : nullptr, bounds, rows_cap, E, d, h, kind,
                          stream);
  // B4: dX = dA W1[e]^T (+ dB W3[e]^T); W1[e] [d, h] = [N, K], K = h, N = d.
  {
    CUtensorMap a0 = map_rows(dA_scratch, rows_cap, h);
    CUtensorMap b0 = map_w_kmajor(W1, E, d, h);
    Params p{dX, nullptr, nullptr, nullptr, nullptr, bounds, E, d, h, 0, 0};
    if (swiglu) {
      CUtensorMap a1 = map_rows(dB_scratch, rows_cap, h);
      CUtensorMap b1 = map_w_kmajor(W3, E, d, h);
      launch<1, false, true, EPI_STORE>(a0, a1, b0, b1, p, rows_cap, stream);
    } else {
      launch<1, false, false, EPI_STORE>(a0, a0, b0, b0, p, rows_cap, stream);
    }
  }
}

void expert_ffn_wgrad_sm90(float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                           const bf16* act, const bf16* dA, const bf16* dB,
                           const int32_t* bounds, int rows_cap, int E, int d, int h,
                           ExpertAct kind, cudaStream_t stream) {
  if (rows_cap <= 0 || E <= 0 || (!dW1 && !dW2)) return;
  check_args("expert_ffn_wgrad_sm90", d, h);
  // B2: dW2[e] [h, d] += act^T dY (M = h, N = d)
  if (dW2) {
    CUtensorMap P = map_2d(act, rows_cap, h, 64, BK), Q = map_2d(dY, rows_cap, d, 64, BK);
    launch_wgrad<1>(P, Q, Q, dW2, nullptr, bounds, E, h, d, stream);
  }
  // B3: dW1[e] (, dW3[e]) [d, h] += X^T dA (, X^T dB) (M = d, N = h)
  if (dW1) {
    CUtensorMap P = map_2d(X, rows_cap, d, 64, BK), Q0 = map_2d(dA, rows_cap, h, 64, BK);
    if (kind == px::cpu::EXPERT_ACT_SWIGLU && dW3) {
      CUtensorMap Q1 = map_2d(dB, rows_cap, h, 64, BK);
      launch_wgrad<2>(P, Q0, Q1, dW1, dW3, bounds, E, d, h, stream);
    } else {
      launch_wgrad<1>(P, Q0, Q0, dW1, nullptr, bounds, E, d, h, stream);
    }
  }
}

}  // namespace px::cuda
