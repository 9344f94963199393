// defines: attention_forward, attention_backward (flash-style causal attention, fp32)
#include "attention.cuh"

namespace px::cuda {

namespace {

constexpr int KT = 32;           // keys per tile (one per lane)
constexpr int QW = 4;            // query rows per warp
constexpr int WARPS = 4;         // warps per block
constexpr int QB = QW * WARPS;   // query rows per block

// Block: QB consecutive queries of one (b, h). Lane j of a warp scores key j of the tile;
// every lane owns HD/32 output dims. Online softmax per query row.
template <int HD>
__global__ void __launch_bounds__(WARPS * 32) attn_fwd_kernel(float* out, float* lse,
                                                              const float* q, const float* k,
                                                              const float* v, int Tn, int H,
                                                              float scale) {
  constexpr int DL = HD / 32;
  __shared__ float ks[KT][HD + 1], vs[KT][HD + 1], qs[QB][HD + 1];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, ld = H * HD;
  const int q0 = blockIdx.x * QB, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  for (int c = threadIdx.x; c < QB * HD; c += blockDim.x) {
    int r = c / HD, dd = c % HD;
    qs[r][dd] = q0 + r < Tn ? q[base + (size_t)(q0 + r) * ld + dd] * scale : 0.f;
  }
  float m[QW], l[QW], o[QW][DL];
#pragma unroll
  for (int r = 0; r < QW; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int j = 0; j < DL; ++j) o[r][j] = 0.f;
  }
  const int qlast = min(Tn - 1, q0 + QB - 1);
  for (int k0 = 0; k0 <= qlast; k0 += KT) {
    __syncthreads();
    for (int c = threadIdx.x; c < KT * HD; c += blockDim.x) {
      int r = c / HD, dd = c % HD;
      bool ok = k0 + r < Tn;
      ks[r][dd] = ok ? k[base + (size_t)(k0 + r) * ld + dd] : 0.f;
      vs[r][dd] = ok ? v[base + (size_t)(k0 + r) * ld + dd] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < QW; ++r) {
      const int qr = warp * QW + r, i = q0 + qr;
      if (i >= Tn || k0 > i) continue;  // warp-uniform
      const int j = k0 + lane;
      float s = -INFINITY;
      if (j <= i) {
        s = 0.f;
#pragma unroll 8
        for (int dd = 0; dd < HD; ++dd) s += qs[qr][dd] * ks[lane][dd];
      }
      float mt = warp_max(s), mn = fmaxf(m[r], mt);
      float p = j <= i ? expf(s - mn) : 0.f;
      float corr = expf(m[r] - mn);  // 0 when m was -inf
      l[r] = l[r] * corr + warp_sum(p);
      m[r] = mn;
#pragma unroll
      for (int jd = 0; jd < DL; ++jd) o[r][jd] *= corr;
      for (int kk = 0; kk < KT; ++kk) {
        float pk = __shfl_sync(0xffffffffu, p, kk);
#pragma unroll
        for (int jd = 0; jd < DL; ++jd) o[r][jd] += pk * vs[kk][lane + 32 * jd];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < QW; ++r) {
    const int i = q0 + warp * QW + r;
    if (i >= Tn) continue;
    float inv = 1.f / l[r];
#pragma unroll
    for (int jd = 0; jd < DL; ++jd) out[base + (size_t)i * ld + lane + 32 * jd] = o[r][jd] * inv;
    if (lane == 0) lse[(size_t)bh * Tn + i] = m[r] + logf(l[r]);
  }
}

// D[bh, i] = <dout_i, out_i>; one warp per row.
__global__ void attn_rowdot_kernel(float* D, const float* dout, const float* out, int Tn, int H,
                                   int hd, int rows) {
  int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;  // row = bh * Tn + i
  int bh = row / Tn, i = row % Tn, b = bh / H, h = bh % H;
  size_t o = ((size_t)b * Tn + i) * H * hd + (size_t)h * hd;
  float s = 0.f;
  for (int dd = lane; dd < hd; dd += 32) s += dout[o + dd] * out[o + dd];
  s = warp_sum(s);
  if (lane == 0) D[row] = s;
}

// dq_i = scale * sum_{j<=i} P_ij (dP_ij - D_i) k_j, dP_ij = <dout_i, v_j>. Same tiling as fwd.
template <int HD>
__global__ void __launch_bounds__(WARPS * 32) attn_dq_kernel(float* dq, const float* dout,
                                                             const float* q, const float* k,
                                                             const float* v, const float* lse,
                                                             const float* D, int Tn, int H,
                                                             float scale) {
  constexpr int DL = HD / 32;
  __shared__ float ks[KT][HD + 1], vs[KT][HD + 1], qs[QB][HD + 1], gs[QB][HD + 1];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, ld = H * HD;
  const int q0 = blockIdx.x * QB, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  for (int c = threadIdx.x; c < QB * HD; c += blockDim.x) {
    int r = c / HD, dd = c % HD;
    bool ok = q0 + r < Tn;
    qs[r][dd] = ok ? q[base + (size_t)(q0 + r) * ld + dd] * scale : 0.f;
    gs[r][dd] = ok ? dout[base + (size_t)(q0 + r) * ld + dd] : 0.f;
  }
  float acc[QW][DL];
#pragma unroll
  for (int r = 0; r < QW; ++r)
#pragma unroll
    for (int j = 0; j < DL; ++j) acc[r][j] = 0.f;
  const int qlast = min(Tn - 1, q0 + QB - 1);
  for (int k0 = 0; k0 <= qlast; k0 += KT) {
    __syncthreads();
    for (int c = threadIdx.x; c < KT * HD; c += blockDim.x) {
      int r = c / HD, dd = c % HD;
      bool ok = k0 + r < Tn;
      ks[r][dd] = ok ? k[base + (size_t)(k0 + r) * ld + dd] : 0.f;
      vs[r][dd] = ok ? v[base + (size_t)(k0 + r) * ld + dd] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < QW; ++r) {
      const int qr = warp * QW + r, i = q0 + qr;
      if (i >= Tn || k0 > i) continue;
      const int j = k0 + lane;
      float ds = 0.f;
      if (j <= i) {
        float s = 0.f, dp = 0.f;
#pragma unroll 8
        for (int dd = 0; dd < HD; ++dd) {
          s += qs[qr][dd] * ks[lane][dd];
          dp += gs[qr][dd] * vs[lane][dd];
        }
        float p = expf(s - lse[(size_t)bh * Tn + i]);
        ds = p * (dp - D[(size_t)bh * Tn + i]);
      }
      for (int kk = 0; kk < KT; ++kk) {
        float dk_ = __shfl_sync(0xffffffffu, ds, kk);
#pragma unroll
        for (int jd = 0; jd < DL; ++jd) acc[r][jd] += dk_ * ks[kk][lane + 32 * jd];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < QW; ++r) {
    const int i = q0 + warp * QW + r;
    if (i >= Tn) continue;
#pragma unroll
    for (int jd = 0; jd < DL; ++jd) dq[base + (size_t)i * ld + lane + 32 * jd] = acc[r][jd] * scale;
  }
}

// Block: QB consecutive keys; query tiles of 32 (one per lane) from the first key on.
// dv_j = sum_{i>=j} P_ij dout_i ; dk_j = scale * sum_{i>=j} P_ij (dP_ij - D_i) q_i.
template <int HD>
__global__ void __launch_bounds__(WARPS * 32) attn_dkv_kernel(float* dk, float* dv,
                                                              const float* dout, const float* q,
                                                              const float* k, const float* v,
                                                              const float* lse, const float* D,
                                                              int Tn, int H, float scale) {
  constexpr int DL = HD / 32;
  __shared__ float qs[KT][HD + 1], gs[KT][HD + 1], ks[QB][HD + 1], vs[QB][HD + 1];
  __shared__ float ls[KT], Ds[KT];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, ld = H * HD;
  const int j0 = blockIdx.x * QB, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const size_t base = (size_t)b * Tn * ld + (size_t)h * HD;
  for (int c = threadIdx.x; c < QB * HD; c += blockDim.x) {
    int r = c / HD, dd = c % HD;
    bool ok = j0 + r < Tn;
    ks[r][dd] = ok ? k[base + (size_t)(j0 + r) * ld + dd] * scale : 0.f;
    vs[r][dd] = ok ? v[base + (size_t)(j0 + r) * ld + dd] : 0.f;
  }
  float ak[QW][DL], av[QW][DL];
#pragma unroll
  for (int r = 0; r < QW; ++r)
#pragma unroll
    for (int jd = 0; jd < DL; ++jd) ak[r][jd] = av[r][jd] = 0.f;
  for (int i0 = (j0 / KT) * KT; i0 < Tn; i0 += KT) {
    __syncthreads();
    for (int c = threadIdx.x; c < KT * HD; c += blockDim.x) {
      int r = c / HD, dd = c % HD;
      bool ok = i0 + r < Tn;
      qs[r][dd] = ok ? q[base + (size_t)(i0 + r) * ld + dd] : 0.f;
      gs[r][dd] = ok ? dout[base + (size_t)(i0 + r) * ld + dd] : 0.f;
    }
    if (threadIdx.x < KT) {
      bool ok = i0 + threadIdx.x < Tn;
      ls[threadIdx.x] = ok ? lse[(size_t)bh * Tn + i0 + threadIdx.x] : 0.f;
      Ds[threadIdx.x] = ok ? D[(size_t)bh * Tn + i0 + threadIdx.x] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < QW; ++r) {
      const int kr = warp * QW + r, j = j0 + kr;
      if (j >= Tn || i0 + KT - 1 < j) continue;
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < Tn && i >= j) {
        float s = 0.f, dp = 0.f;
#pragma unroll 8
        for (int dd = 0; dd < HD; ++dd) {
          s += qs[lane][dd] * ks[kr][dd];
          dp += gs[lane][dd] * vs[kr][dd];
        }
        p = expf(s - ls[lane]);
        ds = p * (dp - Ds[lane]);
      }
      for (int ii = 0; ii < KT; ++ii) {
        float pi = __shfl_sync(0xffffffffu, p, ii), di = __shfl_sync(0xffffffffu, ds, ii);
#pragma unroll
        for (int jd = 0; jd < DL; ++jd) {
          av[r][jd] += pi * gs[ii][lane + 32 * jd];
          ak[r][jd] += di * qs[ii][lane + 32 * jd];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < QW; ++r) {
    const int j = j0 + warp * QW + r;
    if (j >= Tn) continue;
#pragma unroll
    for (int jd = 0; jd < DL; ++jd) {
      dv[base + (size_t)j * ld + lane + 32 * jd] = av[r][jd];
      dk[base + (size_t)j * ld + lane + 32 * jd] = ak[r][jd] * scale;
    }
  }
}

}  // namespace

#define PX_ATTN_DISPATCH(HDV, CALL) \
  if (hd == HDV) {                  \
    constexpr int HD = HDV;         \
    CALL;                           \
  } else

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int Tn, int H, int hd, cudaStream_t stream) {
  if (B * Tn * H == 0) return;
  float scale = (float)(1.0 / std::sqrt((double)hd));
  dim3 grid(ceil_div(Tn, QB), B * H);
  PX_ATTN_DISPATCH(32, (attn_fwd_kernel<HD><<<grid, WARPS * 32, 0, stream>>>(out, lse, q, k, v, Tn, H, scale)))
  PX_ATTN_DISPATCH(64, (attn_fwd_kernel<HD><<<grid, WARPS * 32, 0, stream>>>(out, lse, q, k, v, Tn, H, scale)))
  PX_ATTN_DISPATCH(128, (attn_fwd_kernel<HD><<<grid, WARPS * 32, 0, stream>>>(out, lse, q, k, v, Tn, H, scale)))
  cuda_fail("attention_forward", "head_dim must be 32, 64 or 128", __FILE__, __LINE__);
  cudaCheckLaunch();
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k, const float* v, const float* lse, int B,
                        int Tn, int H, int hd, float* scratch, cudaStream_t stream) {
  if (B * Tn * H == 0) return;
  float scale = (float)(1.0 / std::sqrt((double)hd));
  int rows = B * H * Tn;
  attn_rowdot_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(scratch, dout, out, Tn, H, hd, rows);
  cudaCheckLaunch();
  dim3 grid(ceil_div(Tn, QB), B * H);
#define PX_ATTN_BWD                                                                              \
  attn_dq_kernel<HD><<<grid, WARPS * 32, 0, stream>>>(dq, dout, q, k, v, lse, scratch, Tn, H,     \
                                                      scale);                                    \
  cudaCheckLaunch();                                                                             \
  attn_dkv_kernel<HD><<<grid, WARPS * 32, 0, stream>>>(dk, dv, dout, q, k, v, lse, scratch, Tn, \
                                                       H, scale)
  PX_ATTN_DISPATCH(32, PX_ATTN_BWD)
  PX_ATTN_DISPATCH(64, PX_ATTN_BWD)
  cuda_fail("attention_backward", "head_dim must be 32 or 64 (128: TODO, static smem)", __FILE__, __LINE__);
#undef PX_ATTN_BWD
  cudaCheckLaunch();
}

}  // namespace px::cuda
