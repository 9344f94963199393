// defines: attention_forward_bf16, attention_backward_bf16 (causal flash attention on tensor
// cores: mma.sync m16n8k16 bf16, ldmatrix from XOR-swizzled shared memory, cp.async double
// buffering; forward FlashAttention-2 style, backward as a dK/dV pass over key tiles plus a dQ
// pass over query tiles, no atomics)
#include "attention_bf16.cuh"
#include "mma_sm80.cuh"  // defines: ldsm_x4, ldsm_x4_t, mma16816

namespace px::cuda {

namespace {

constexpr int BQ = 64, BKV = 64, NT = 128;  // 4 warps, 16 query (key) rows each
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Shared tile [R][C] bf16 in 16-byte chunks, chunk index XOR-swizzled so that the 8 rows one
// ldmatrix phase reads (same logical chunk) hit 8 distinct bank groups: C >= 64 (128-byte
// rows or more): chunk ^ (row & 7); C = 32 (64-byte rows, two per 128 bytes):
// chunk ^ ((row >> 1) & 3).
template <int C>
__device__ __forceinline__ int swz(int r, int c) {
  if constexpr (C >= 64) return r * C + ((((c >> 3) ^ (r & 7))) << 3) + (c & 7);
  else return r * C + ((((c >> 3) ^ ((r >> 1) & 3))) << 3) + (c & 7);
}

// Rows [0, R) of a [R][C] tile from global (row stride ld, row 0 at g); rows >= rv zero-filled.
template <int R, int C>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, long ld, int rv) {
  constexpr int CH = C / 8, TOTAL = R * CH;
  static_assert(TOTAL % NT == 0, "tile / threads");
#pragma unroll
  for (int i = 0; i < TOTAL / NT; ++i) {
    const int idx = threadIdx.x + i * NT, r = idx / CH, c = (idx % CH) * 8;
    const bool v = r < rv;
    cp_async16(s + swz<C>(r, c), v ? g + (long)r * ld + c : g, v);
  }
}

// A operand (16 rows from r0, k16 step at column kk) of a row-major [rows][C] tile.
template <int C>
__device__ __forceinline__ void ld_a(uint32_t (&a)[4], const bf16* s, int r0, int kk, int lane) {
  ldsm_x4(a, s + swz<C>(r0 + (lane & 15), kk + (lane >> 4) * 8));
}
// acc[n] (n8 tiles over NR rows of s) += A * S^T, s a [NR][C] tile read as B = [n][k]
// (k = column kk..kk+15): S = Q K^T with s = K, dP = dO V^T with s = V.
template <int C, int NR>
__device__ __forceinline__ void mma_abt(float (&acc)[NR / 8][4], const uint32_t (&a)[4],
                                        const bf16* s, int kk, int lane) {
  const int l7 = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;
#pragma unroll
  for (int jj = 0; jj < NR / 16; ++jj) {
    uint32_t r[4];
    ldsm_x4(r, s + swz<C>(jj * 16 + l7 + l16 * 8, kk + l8 * 8));
    mma16816(acc[2 * jj], a, r[0], r[1]);
    mma16816(acc[2 * jj + 1], a, r[2], r[3]);
  }
}
// acc[n] (n8 tiles over the C columns of s) += A * s[kk..kk+15][:], s a [rows][C] tile read as
// B = [k][n] (transposed ldmatrix): O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q.
template <int C>
__device__ __forceinline__ void mma_ab(float (&acc)[C / 8][4], const uint32_t (&a)[4],
                                       const bf16* s, int kk, int lane) {
  const int l7 = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;
#pragma unroll
  for (int jj = 0; jj < C / 16; ++jj) {
    uint32_t r[4];
    ldsm_x4_t(r, s + swz<C>(kk + l7 + l8 * 8, jj * 16 + l16 * 8));
    mma16816(acc[2 * jj], a, r[0], r[1]);
    mma16816(acc[2 * jj + 1], a, r[2], r[3]);
  }
}
// A fragment for k16 step kk of a 16 x N accumulator tile (the C layout of two n8 tiles is
// the A layout of one k16 step).
template <int N>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&s)[N][4], int kk) {
  a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}
template <int N>
__device__ __forceinline__ void zero(float (&s)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
}
__device__ __forceinline__ void store2(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
__device__ __forceinline__ void store2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

// Forward. Block: BQ queries of one (b, h), warp w owns rows 16w..16w+15; key tiles of BKV
// double-buffered. Thread (g = lane/4, t = lane%4) holds rows g and g+8 of its warp's 16,
// columns 8n + 2t, +1 of each n8 tile. Scores stay raw (unscaled); exp2 with scale*log2(e).
template <int HD>
__global__ void __launch_bounds__(NT) fa_fwd_kernel(bf16* out, float* lse, const bf16* q,
                                                    const bf16* k, const bf16* v, int Tn, int H,
                                                    float sl2) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BQ][HD]
  bf16* sK = sQ + BQ * HD;                        // [2][BKV][HD]
  bf16* sV = sK + 2 * BKV * HD;                   // [2][BKV][HD]
  const int qt = gridDim.x - 1 - blockIdx.x;      // long (late) query tiles first
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const long ld = (long)H * HD;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  const int q0 = qt * BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int nkt = (min(Tn, q0 + BQ) + BKV - 1) / BKV;
  load_tile<BQ, HD>(sQ, q + base + (size_t)q0 * ld, ld, Tn - q0);
  load_tile<BKV, HD>(sK, k + base, ld, Tn);
  load_tile<BKV, HD>(sV, v + base, ld, Tn);
  cp_async_commit();
  uint32_t qf[HD / 16][4];
  float o[HD / 8][4];
  zero(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row0 = q0 + warp * 16 + g;  // and row0 + 8
  for (int kt = 0; kt < nkt; ++kt) {
    cp_async_wait_all();
    __syncthreads();  // tile kt visible; tile kt-1's buffers free
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) ld_a<HD>(qf[kk], sQ, warp * 16, kk * 16, lane);
    }
    if (kt + 1 < nkt) {
      const int buf = (kt + 1) & 1, k1 = (kt + 1) * BKV;
      load_tile<BKV, HD>(sK + buf * BKV * HD, k + base + (size_t)k1 * ld, ld, Tn - k1);
      load_tile<BKV, HD>(sV + buf * BKV * HD, v + base + (size_t)k1 * ld, ld, Tn - k1);
    }
    cp_async_commit();
    const bf16* cK = sK + (kt & 1) * BKV * HD;
    const bf16* cV = sV + (kt & 1) * BKV * HD;
    float s[BKV / 8][4];
    zero(s);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) mma_abt<HD, BKV>(s, qf[kk], cK, kk * 16, lane);
    const int k0 = kt * BKV;
    if (k0 + BKV - 1 > q0 + warp * 16 || k0 + BKV > Tn) {  // warp-uniform
#pragma unroll
      for (int n = 0; n < BKV / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = k0 + 8 * n + 2 * t4 + e;
          if (j > row0 || j >= Tn) s[n][e] = -INFINITY;
          if (j > row0 + 8 || j >= Tn) s[n][2 + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mt = -INFINITY;
#pragma unroll
      for (int n = 0; n < BKV / 8; ++n) mt = fmaxf(mt, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
      const float mn = fmaxf(m[r], mt);
      const float ms = mn == -INFINITY ? 0.f : mn * sl2;
      const float corr = exp2f(m[r] * sl2 - ms);  // 0 when m[r] = -inf
      m[r] = mn;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        o[n][2 * r] *= corr;
        o[n][2 * r + 1] *= corr;
      }
      float rs = 0.f;
#pragma unroll
      for (int n = 0; n < BKV / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(fmaf(s[n][2 * r + e], sl2, -ms));
          s[n][2 * r + e] = p;
          rs += p;
        }
      l[r] = l[r] * corr + rs;  // partial over this thread's columns; quad-summed at the end
    }
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      uint32_t a[4];
      acc_to_a(a, s, kk);
      mma_ab<HD>(o, a, cV, kk * 16, lane);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lt = l[r];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const int row = row0 + 8 * r;
    if (row >= Tn) continue;
    const float inv = 1.f / lt;
    bf16* po = out + base + (size_t)row * ld + 2 * t4;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) store2(po + 8 * n, o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    if (t4 == 0) lse[(size_t)bh * Tn + row] = (m[r] * sl2 + log2f(lt)) * kLn2;
  }
}

// D[bh*T + i] = <dout_i, out_i> (bf16 inputs, fp32 sum); one warp per row.
__global__ void fa_rowdot_kernel(float* D, const bf16* dout, const bf16* out, int Tn, int H,
                                 int hd, int rows) {
  const int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;  // row = bh * Tn + i
  const int bh = row / Tn, i = row % Tn, b = bh / H, h = bh % H;
  const size_t o = ((size_t)b * Tn + i) * H * hd + (size_t)h * hd;
  const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(dout + o);
  const __nv_bfloat162* c = reinterpret_cast<const __nv_bfloat162*>(out + o);
  float s = 0.f;
  for (int t = lane; t < hd / 2; t += 32) {
    float2 x = __bfloat1622float2(a[t]), y = __bfloat1622float2(c[t]);
    s += x.x * y.x + x.y * y.y;
  }
  s = warp_sum(s);
  if (lane == 0) D[row] = s;
}

// dQ pass. Block: BQ queries of one (b, h) (Q, dO tiles resident, fragments in registers);
// key tiles 0..diagonal double-buffered. S = Q K^T, P = exp(scale S - lse), dP = dO V^T,
// dS = P (dP - D), dQ = scale dS K.
template <int HD, class G>
__global__ void __launch_bounds__(NT) fa_bwd_dq_kernel(G* dq, const bf16* dout, const bf16* q,
                                                       const bf16* k, const bf16* v,
                                                       const float* lse, const float* D, int Tn,
                                                       int H, float scale, float sl2) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BQ][HD]
  bf16* sO = sQ + BQ * HD;                        // [BQ][HD] dO
  bf16* sK = sO + BQ * HD;                        // [2][BKV][HD]
  bf16* sV = sK + 2 * BKV * HD;                   // [2][BKV][HD]
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const long ld = (long)H * HD;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  const int q0 = qt * BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int nkt = (min(Tn, q0 + BQ) + BKV - 1) / BKV;
  load_tile<BQ, HD>(sQ, q + base + (size_t)q0 * ld, ld, Tn - q0);
  load_tile<BQ, HD>(sO, dout + base + (size_t)q0 * ld, ld, Tn - q0);
  load_tile<BKV, HD>(sK, k + base, ld, Tn);
  load_tile<BKV, HD>(sV, v + base, ld, Tn);
  cp_async_commit();
  const int row0 = q0 + warp * 16 + g;
  float L2[2], Dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    L2[r] = row < Tn ? lse[(size_t)bh * Tn + row] * kLog2e : 0.f;
    Dr[r] = row < Tn ? D[(size_t)bh * Tn + row] : 0.f;
  }
  uint32_t qf[HD / 16][4], of[HD / 16][4];
  float acc[HD / 8][4];
  zero(acc);
  for (int kt = 0; kt < nkt; ++kt) {
    cp_async_wait_all();
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        ld_a<HD>(qf[kk], sQ, warp * 16, kk * 16, lane);
        ld_a<HD>(of[kk], sO, warp * 16, kk * 16, lane);
      }
    }
    if (kt + 1 < nkt) {
      const int buf = (kt + 1) & 1, k1 = (kt + 1) * BKV;
      load_tile<BKV, HD>(sK + buf * BKV * HD, k + base + (size_t)k1 * ld, ld, Tn - k1);
      load_tile<BKV, HD>(sV + buf * BKV * HD, v + base + (size_t)k1 * ld, ld, Tn - k1);
    }
    cp_async_commit();
    const bf16* cK = sK + (kt & 1) * BKV * HD;
    const bf16* cV = sV + (kt & 1) * BKV * HD;
    float s[BKV / 8][4], dp[BKV / 8][4];
    zero(s);
    zero(dp);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      mma_abt<HD, BKV>(s, qf[kk], cK, kk * 16, lane);
      mma_abt<HD, BKV>(dp, of[kk], cV, kk * 16, lane);
    }
    const int k0 = kt * BKV;
    const bool mask = k0 + BKV - 1 > q0 + warp * 16 || k0 + BKV > Tn;
#pragma unroll
    for (int n = 0; n < BKV / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, j = k0 + 8 * n + 2 * t4 + (e & 1);
        float p = exp2f(fmaf(s[n][e], sl2, -L2[r]));
        if (mask && (j > row0 + 8 * r || j >= Tn)) p = 0.f;
        s[n][e] = p * (dp[n][e] - Dr[r]);  // dS
      }
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      uint32_t a[4];
      acc_to_a(a, s, kk);
      mma_ab<HD>(acc, a, cK, kk * 16, lane);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= Tn) continue;
    G* p = dq + base + (size_t)row * ld + 2 * t4;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) store2(p + 8 * n, acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
  }
}

// dK/dV pass. Block: BKV keys of one (b, h) (K, V tiles resident; fragments read from shared
// memory each step, which keeps HD = 128 in registers); query tiles from the diagonal on,
// double-buffered with their lse / D. Per warp 16 keys x BQ queries, transposed products:
// S^T = K Q^T, P^T = exp(scale S^T - lse), dP^T = V dO^T, dS^T = P^T (dP^T - D),
// dV += P^T dO, dK += scale dS^T Q.
template <int HD, class G>
__global__ void __launch_bounds__(NT) fa_bwd_dkv_kernel(G* dk, G* dv, const bf16* dout,
                                                        const bf16* q, const bf16* k,
                                                        const bf16* v, const float* lse,
                                                        const float* D, int Tn, int H,
                                                        float scale, float sl2) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [BKV][HD]
  bf16* sV = sK + BKV * HD;                       // [BKV][HD]
  bf16* sQ = sV + BKV * HD;                       // [2][BQ][HD]
  bf16* sO = sQ + 2 * BQ * HD;                    // [2][BQ][HD] dO
  float* sL = reinterpret_cast<float*>(sO + 2 * BQ * HD);  // [2][BQ] lse * log2(e)
  float* sD = sL + 2 * BQ;                                 // [2][BQ]
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const long ld = (long)H * HD;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  const int j0 = blockIdx.x * BKV, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int it0 = j0 / BQ, nqt = (Tn + BQ - 1) / BQ;
  auto issue = [&](int it, int buf) {
    const int i0 = it * BQ;
    load_tile<BQ, HD>(sQ + buf * BQ * HD, q + base + (size_t)i0 * ld, ld, Tn - i0);
    load_tile<BQ, HD>(sO + buf * BQ * HD, dout + base + (size_t)i0 * ld, ld, Tn - i0);
    if (threadIdx.x < BQ) {
      const int i = i0 + threadIdx.x;
      sL[buf * BQ + threadIdx.x] = i < Tn ? lse[(size_t)bh * Tn + i] * kLog2e : INFINITY;
      sD[buf * BQ + threadIdx.x] = i < Tn ? D[(size_t)bh * Tn + i] : 0.f;
    }
  };
  load_tile<BKV, HD>(sK, k + base + (size_t)j0 * ld, ld, Tn - j0);
  load_tile<BKV, HD>(sV, v + base + (size_t)j0 * ld, ld, Tn - j0);
  issue(it0, 0);
  cp_async_commit();
  const int jr0 = j0 + warp * 16 + g;  // this thread's key rows jr0, jr0 + 8
  float ak[HD / 8][4], av[HD / 8][4];
  zero(ak);
  zero(av);
  for (int it = it0; it < nqt; ++it) {
    const int cur = (it - it0) & 1;
    cp_async_wait_all();
    __syncthreads();
    if (it + 1 < nqt) issue(it + 1, cur ^ 1);
    cp_async_commit();
    const bf16* cQ = sQ + cur * BQ * HD;
    const bf16* cO = sO + cur * BQ * HD;
    const float* cL = sL + cur * BQ;
    const float* cD = sD + cur * BQ;
    float s[BQ / 8][4], dp[BQ / 8][4];
    zero(s);
    zero(dp);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[4];
      ld_a<HD>(a, sK, warp * 16, kk * 16, lane);
      mma_abt<HD, BQ>(s, a, cQ, kk * 16, lane);
      ld_a<HD>(a, sV, warp * 16, kk * 16, lane);
      mma_abt<HD, BQ>(dp, a, cO, kk * 16, lane);
    }
    const int i0 = it * BQ;
    const bool mask = i0 < j0 + warp * 16 + 15;  // some i < j in this warp's block
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 8 * n + 2 * t4 + (e & 1), j = jr0 + 8 * (e >> 1);
        float p = exp2f(fmaf(s[n][e], sl2, -cL[c]));  // 0 for i >= T (lse = +inf)
        if (mask && i0 + c < j) p = 0.f;
        s[n][e] = p;
        dp[n][e] = p * (dp[n][e] - cD[c]);  // dS^T
      }
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      uint32_t a[4];
      acc_to_a(a, s, kk);
      mma_ab<HD>(av, a, cO, kk * 16, lane);
      acc_to_a(a, dp, kk);
      mma_ab<HD>(ak, a, cQ, kk * 16, lane);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = jr0 + 8 * r;
    if (j >= Tn) continue;
    G* pk = dk + base + (size_t)j * ld + 2 * t4;
    G* pv = dv + base + (size_t)j * ld + 2 * t4;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      store2(pk + 8 * n, ak[n][2 * r] * scale, ak[n][2 * r + 1] * scale);
      store2(pv + 8 * n, av[n][2 * r], av[n][2 * r + 1]);
    }
  }
}

template <int HD> constexpr size_t fwd_smem() { return (size_t)(BQ + 4 * BKV) * HD * sizeof(bf16); }
template <int HD> constexpr size_t dq_smem() { return (size_t)(2 * BQ + 4 * BKV) * HD * sizeof(bf16); }
template <int HD> constexpr size_t dkv_smem() {
  return (size_t)(2 * BKV + 4 * BQ) * HD * sizeof(bf16) + 4 * BQ * sizeof(float);
}

// Raise the dynamic shared-memory limit once per kernel (a host attribute, not a stream op).
template <class K>
void set_smem(K kernel, size_t bytes, bool& done) {
  if (done || bytes <= 48 * 1024) return;
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  done = true;
}

template <int HD>
void fwd_launch(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int Tn,
                int H, cudaStream_t stream) {
  static bool done = false;
  set_smem(fa_fwd_kernel<HD>, fwd_smem<HD>(), done);
  const float sl2 = (float)(kLog2e / std::sqrt((double)HD));
  dim3 grid(ceil_div(Tn, BQ), B * H);
  fa_fwd_kernel<HD><<<grid, NT, fwd_smem<HD>(), stream>>>(out, lse, q, k, v, Tn, H, sl2);
  cudaCheckLaunch();
}

template <int HD, class G>
void bwd_launch(G* dq, G* dk, G* dv, const bf16* dout, const bf16* q, const bf16* k,
                const bf16* v, const float* lse, const float* D, int B, int Tn, int H,
                cudaStream_t stream) {
  static bool done_q = false, done_kv = false;
  set_smem(fa_bwd_dq_kernel<HD, G>, dq_smem<HD>(), done_q);
  set_smem(fa_bwd_dkv_kernel<HD, G>, dkv_smem<HD>(), done_kv);
  const float scale = (float)(1.0 / std::sqrt((double)HD)), sl2 = scale * kLog2e;
  fa_bwd_dkv_kernel<HD, G><<<dim3(ceil_div(Tn, BKV), B * H), NT, dkv_smem<HD>(), stream>>>(
      dk, dv, dout, q, k, v, lse, D, Tn, H, scale, sl2);
  cudaCheckLaunch();
  fa_bwd_dq_kernel<HD, G><<<dim3(ceil_div(Tn, BQ), B * H), NT, dq_smem<HD>(), stream>>>(
      dq, dout, q, k, v, lse, D, Tn, H, scale, sl2);
  cudaCheckLaunch();
}

}  // namespace

void attention_forward_bf16(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                            int B, int Tn, int H, int hd, cudaStream_t stream) {
  if ((long)B * Tn * H == 0) return;
  if (hd == 32) fwd_launch<32>(out, lse, q, k, v, B, Tn, H, stream);
  else if (hd == 64) fwd_launch<64>(out, lse, q, k, v, B, Tn, H, stream);
  else if (hd == 128) fwd_launch<128>(out, lse, q, k, v, B, Tn, H, stream);
  else cuda_fail("attention_forward_bf16", "head_dim must be 32, 64 or 128", __FILE__, __LINE__);
}

template <class G>
void attention_backward_bf16(G* dq, G* dk, G* dv, const bf16* dout, const bf16* out,
                             const bf16* q, const bf16* k, const bf16* v, const float* lse, int B,
                             int Tn, int H, int hd, float* scratch, cudaStream_t stream) {
  if ((long)B * Tn * H == 0) return;
  if (hd != 32 && hd != 64 && hd != 128)
    cuda_fail("attention_backward_bf16", "head_dim must be 32, 64 or 128", __FILE__, __LINE__);
  const int rows = B * H * Tn;
  fa_rowdot_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(scratch, dout, out, Tn, H, hd, rows);
  cudaCheckLaunch();
  if (hd == 32) bwd_launch<32, G>(dq, dk, dv, dout, q, k, v, lse, scratch, B, Tn, H, stream);
  else if (hd == 64) bwd_launch<64, G>(dq, dk, dv, dout, q, k, v, lse, scratch, B, Tn, H, stream);
  else bwd_launch<128, G>(dq, dk, dv, dout, q, k, v, lse, scratch, B, Tn, H, stream);
}

template void attention_backward_bf16<float>(float*, float*, float*, const bf16*, const bf16*,
                                             const bf16*, const bf16*, const bf16*, const float*,
                                             int, int, int, int, float*, cudaStream_t);
template void attention_backward_bf16<bf16>(bf16*, bf16*, bf16*, const bf16*, const bf16*,
                                            const bf16*, const bf16*, const bf16*, const float*,
                                            int, int, int, int, float*, cudaStream_t);

}  // namespace px::cuda
