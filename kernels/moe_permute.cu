// defines: moe_permute_build, gather_rows, permute_rows, combine_rows, combine_rows_add,
// combine_rows_backward, scatter_add_rows
#include "moe_permute.cuh"

#include <algorithm>
#include <initializer_list>

#include "elementwise.cuh"  // defines: load8, store8, aligned16

namespace px::cuda {

namespace {

constexpr int kChunk = 256;  // assignments per chunk (one warp ranks a chunk in order)

int num_chunks(int N, int k) { return ceil_div((long)N * k, kChunk); }

// counts[c * E + e] = assignments of chunk c routed to e.
__global__ void chunk_count_kernel(int* counts, const int32_t* idx, int total, int E) {
  extern __shared__ int sh[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) sh[e] = 0;
  __syncthreads();
  int c = blockIdx.x;
  for (int a = c * kChunk + threadIdx.x; a < min(total, (c + 1) * kChunk); a += blockDim.x)
    atomicAdd(&sh[idx[a]], 1);
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[(size_t)c * E + e] = sh[e];
}

// One block: per expert, exclusive scan over chunks (in place), then bounds.
__global__ void scan_kernel(int32_t* bounds, int* counts, int chunks, int E, int align) {
  extern __shared__ int tot[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int s = 0;
    for (int c = 0; c < chunks; ++c) {
      int v = counts[(size_t)c * E + e];
      counts[(size_t)c * E + e] = s;
      s += v;
    }
    tot[e] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int s = 0;
    for (int e = 0; e < E; ++e) {
      bounds[e] = s;
      s += (tot[e] + align - 1) / align * align;
    }
    bounds[E] = s;
  }
}

// One warp per chunk, in order; ballot ranking keeps assignment order inside experts.
__global__ void place_kernel(int32_t* pos, int32_t* row_token, const int32_t* bounds,
                             const int* offsets, const int32_t* idx, int total, int E, int k) {
  extern __shared__ int run[];  // running count per expert inside this chunk
  int c = blockIdx.x, lane = threadIdx.x;
  for (int e = lane; e < E; e += 32) run[e] = bounds[e] + offsets[(size_t)c * E + e];
  __syncwarp();
  for (int base = c * kChunk; base < min(total, (c + 1) * kChunk); base += 32) {
    int a = base + lane;
    bool valid = a < total;
    int e = valid ? idx[a] : -1 - lane;  // unique dummy keys for invalid lanes
    unsigned same = __match_any_sync(0xffffffffu, e);
    int rank = __popc(same & ((1u << lane) - 1));
    int leader = __ffs(same) - 1;
    int start = valid ? run[e] : 0;
    __syncwarp();
    if (valid) {
      int r = start + rank;
      pos[a] = r;
      row_token[r] = a / k;
      if (lane == leader) run[e] = start + __popc(same);
    }
    __syncwarp();
  }
}

template <class T>
__global__ void gather_rows_kernel(T* Xp, const T* X, const int32_t* row_token, int d) {
  int r = blockIdx.x;
  int t = row_token[r];
  T* dst = Xp + (size_t)r * d;
  if (t < 0) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = from_float<T>(0.f);
  } else {
    const T* src = X + (size_t)t * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
  }
}

template <class TO, class TY>
__global__ void combine_rows_kernel(TO* out, const TY* Yp, const float* gates,
                                    const int32_t* pos, int k, int d) {
  int n = blockIdx.x;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float s = to_float(out[(size_t)n * d + i]);
    for (int j = 0; j < k; ++j)
      s += gates[(size_t)n * k + j] * to_float(Yp[(size_t)pos[(size_t)n * k + j] * d + i]);
    out[(size_t)n * d + i] = from_float<TO>(s);
  }
}

// One block per token; dot products by block reduction.
template <class TD, class TY>
__global__ void combine_rows_backward_kernel(TY* dYp, float* dgates, const TD* dout,
                                             const TY* Yp, const float* gates,
                                             const int32_t* pos, int k, int d) {
  int n = blockIdx.x;
  const TD* g = dout + (size_t)n * d;
  for (int j = 0; j < k; ++j) {
    size_t r = (size_t)pos[(size_t)n * k + j];
    float gate = gates[(size_t)n * k + j];
    float dot = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
      float gv = to_float(g[i]);
      dot += gv * to_float(Yp[r * d + i]);
      dYp[r * d + i] = from_float<TY>(gate * gv);
    }
    dot = block_sum(dot);
    if (threadIdx.x == 0) dgates[(size_t)n * k + j] = dot;
  }
}

template <class TO, class TI>
__global__ void scatter_add_rows_kernel(TO* dX, const TI* dXp, const int32_t* pos, int k,
                                        int d) {
  int n = blockIdx.x;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float s = to_float(dX[(size_t)n * d + i]);
    for (int j = 0; j < k; ++j) s += to_float(dXp[(size_t)pos[(size_t)n * k + j] * d + i]);
    dX[(size_t)n * d + i] = from_float<TO>(s);
  }
}


// ---- vectorised row kernels (rows of 16-byte units; combine: chunks of 8 elements) --------

constexpr int kWarpsPerBlock = 8;  // one warp per token (combine, permute), 8 per block

// Xp[r] = X[row_token[r]] in 16-byte units, 4 units per thread in flight.
__global__ void gather_units_kernel(uint4* __restrict__ Xp, const uint4* __restrict__ X,
                                    const int32_t* __restrict__ row_token, int rows, int upr) {
  const size_t total = (size_t)rows * upr;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i0 < total; i0 += 4 * stride) {
    uint4 v[4];
    size_t dst[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const size_t i = i0 + q * stride;
      dst[q] = i;
      v[q] = make_uint4(0, 0, 0, 0);
      if (i < total) {
        const int r = (int)(i / upr), u = (int)(i - (size_t)r * upr);
        const int t = row_token[r];
        if (t >= 0) v[q] = X[(size_t)t * upr + u];
      }
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (dst[q] < total) Xp[dst[q]] = v[q];
  }
}

// Xp[pos[n*k+j]] = X[n]: one warp per token reads its row once and writes it k times.
__global__ void permute_units_kernel(uint4* __restrict__ Xp, const uint4* __restrict__ X,
                                     const int32_t* __restrict__ pos, int N, int k, int upr) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int mypos = lane < k ? pos[(size_t)n * k + lane] : 0;
  const uint4* src = X + (size_t)n * upr;
  // uniform trip count across the warp (the shuffles need all 32 lanes)
  for (int ub = 0; ub < upr; ub += 4 * 32) {
    const int u0 = ub + lane;
    uint4 v[4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (u0 + q * 32 < upr) v[q] = src[u0 + q * 32];
    for (int j = 0; j < k; ++j) {
      const size_t r = (size_t)__shfl_sync(0xffffffffu, mypos, j);
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (u0 + q * 32 < upr) Xp[r * upr + u0 + q * 32] = v[q];
    }
  }
}

// out[n] = base[n] (+ b2[n]) + sum_j gate_j Yp[pos[n,j]] (gate 1 when !GATED); base = a or
// out itself. One warp per token, a lane handles chunks of 8 columns, the k source rows of
// a chunk loaded together (KM >= k, unrolled).
template <class TO, class TY, int KM, bool GATED>
__global__ void combine_vec_kernel(TO* out, const float* a, const bf16* b2, const TY* Yp,
                                   const float* gates, const int32_t* pos, int N, int k, int d) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int mypos = lane < k ? pos[(size_t)n * k + lane] : 0;
  const float myg = GATED && lane < k ? gates[(size_t)n * k + lane] : 1.f;
  const size_t o = (size_t)n * d;
  for (int cb = 0; cb < d / 8; cb += 32) {  // uniform trip count (shuffles inside)
    const int c = cb + lane;
    const bool act = c < d / 8;
    float s[8], t[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) s[u] = 0.f;
    if (act) {
      if (a) load8(a + o + c * 8, s);
      else load8(out + o + c * 8, s);
    }
    if (b2 && act) {
      load8(b2 + o + c * 8, t);
#pragma unroll
      for (int u = 0; u < 8; ++u) s[u] += t[u];
    }
#pragma unroll
    for (int j = 0; j < KM; ++j) {
      if (j < k) {
        const size_t r = (size_t)__shfl_sync(0xffffffffu, mypos, j);
        const float gj = __shfl_sync(0xffffffffu, myg, j);
        if (act) {
          float y[8];
          load8(Yp + r * d + c * 8, y);
#pragma unroll
          for (int u = 0; u < 8; ++u) s[u] += GATED ? gj * y[u] : y[u];
        }
      }
    }
    if (act) store8(out + o + c * 8, s);
  }
}

// dYp[pos[n,j]] = gate_j dout[n]; dgates[n,j] = <dout[n], Yp[pos[n,j]]>. One warp per token.
template <class TD, class TY, int KM>
__global__ void combine_bwd_vec_kernel(TY* dYp, float* dgates, const TD* dout, const TY* Yp,
                                       const float* gates, const int32_t* pos, int N, int k,
                                       int d) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int mypos = lane < k ? pos[(size_t)n * k + lane] : 0;
  const float myg = lane < k ? gates[(size_t)n * k + lane] : 0.f;
  float acc[KM];
#pragma unroll
  for (int j = 0; j < KM; ++j) acc[j] = 0.f;
  const size_t o = (size_t)n * d;
  for (int cb = 0; cb < d / 8; cb += 32) {  // uniform trip count (shuffles inside)
    const int c = cb + lane;
    const bool act = c < d / 8;
    float g8[8];
    if (act) load8(dout + o + c * 8, g8);
#pragma unroll
    for (int j = 0; j < KM; ++j) {
      if (j < k) {
        const size_t r = (size_t)__shfl_sync(0xffffffffu, mypos, j);
        const float gj = __shfl_sync(0xffffffffu, myg, j);
        if (act) {
          float y[8], w[8];
          load8(Yp + r * d + c * 8, y);
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            acc[j] += g8[u] * y[u];
            w[u] = gj * g8[u];
          }
          store8(dYp + r * d + c * 8, w);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < KM; ++j) {
    if (j < k) {
      const float v = warp_sum(acc[j]);
      if (lane == 0) dgates[(size_t)n * k + j] = v;
    }
  }
}

bool rows_vec_ok(int d, size_t elem, std::initializer_list<const void*> ptrs) {
  if ((d * elem) % 16 != 0 || d % 8 != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}

unsigned warp_blocks(int N) { return (unsigned)ceil_div(N, kWarpsPerBlock); }

template <class TO, class TY, bool GATED>
void combine_vec(TO* out, const float* a, const bf16* b2, const TY* Yp, const float* gates,
                 const int32_t* pos, int N, int k, int d, cudaStream_t stream) {
  if (k <= 8)
    combine_vec_kernel<TO, TY, 8, GATED><<<warp_blocks(N), 32 * kWarpsPerBlock, 0, stream>>>(
        out, a, b2, Yp, gates, pos, N, k, d);
  else
    combine_vec_kernel<TO, TY, 32, GATED><<<warp_blocks(N), 32 * kWarpsPerBlock, 0, stream>>>(
        out, a, b2, Yp, gates, pos, N, k, d);
  cudaCheckLaunch();
}

int row_threads(int d) { return d >= 256 ? 256 : (d >= 128 ? 128 : 64); }

}  // namespace

size_t moe_permute_scratch_bytes(int N, int E, int k) {
  return (size_t)num_chunks(N, k) * E * sizeof(int) + 256;
}

void moe_permute_build(int32_t* bounds, int32_t* pos, int32_t* row_token, const int32_t* idx,
                       int N, int E, int k, int align, void* scratch, cudaStream_t stream) {
  if (align < 1) align = 1;
  int total = N * k, chunks = num_chunks(N, k);
  int* counts = static_cast<int*>(scratch);
  long cap = moe_permuted_capacity(N, E, k, align);
  if (align > 1) cudaCheck(cudaMemsetAsync(row_token, 0xFF, cap * sizeof(int32_t), stream));
  if (chunks == 0) {
    cudaCheck(cudaMemsetAsync(bounds, 0, (E + 1) * sizeof(int32_t), stream));
    return;
  }
  size_t sh = E * sizeof(int);
  chunk_count_kernel<<<chunks, 256, sh, stream>>>(counts, idx, total, E);
  cudaCheckLaunch();
  scan_kernel<<<1, E < 1024 ? ((E + 31) / 32) * 32 : 1024, sh, stream>>>(bounds, counts, chunks,
                                                                          E, align);
  cudaCheckLaunch();
  place_kernel<<<chunks, 32, sh, stream>>>(pos, row_token, bounds, counts, idx, total, E, k);
  cudaCheckLaunch();
}

template <class T>
void gather_rows(T* Xp, const T* X, const int32_t* row_token, int rows, int d,
                 cudaStream_t stream) {
  if (rows <= 0) return;
  if (rows_vec_ok(d, sizeof(T), {Xp, X})) {
    const int upr = (int)(d * sizeof(T) / 16);
    const size_t units = (size_t)rows * upr;
    const unsigned grid = (unsigned)std::min<size_t>((units + 1023) / 1024, 132 * 16);
    gather_units_kernel<<<std::max(grid, 1u), 256, 0, stream>>>(
        reinterpret_cast<uint4*>(Xp), reinterpret_cast<const uint4*>(X), row_token, rows, upr);
    cudaCheckLaunch();
    return;
  }
  gather_rows_kernel<<<rows, row_threads(d), 0, stream>>>(Xp, X, row_token, d);
  cudaCheckLaunch();
}

template <class TO, class TY>
void combine_rows(TO* out, const TY* Yp, const float* gates, const int32_t* pos, int N, int k,
                  int d, cudaStream_t stream) {
  if (N <= 0) return;
  if (k <= 32 && rows_vec_ok(d, sizeof(TY), {out, Yp}) && rows_vec_ok(d, sizeof(TO), {}))
    return combine_vec<TO, TY, true>(out, nullptr, nullptr, Yp, gates, pos, N, k, d, stream);
  combine_rows_kernel<<<N, row_threads(d), 0, stream>>>(out, Yp, gates, pos, k, d);
  cudaCheckLaunch();
}

template <class TD, class TY>
void combine_rows_backward(TY* dYp, float* dgates, const TD* dout, const TY* Yp,
                           const float* gates, const int32_t* pos, int N, int k, int d,
                           cudaStream_t stream) {
  if (N <= 0) return;
  if (k <= 32 && rows_vec_ok(d, sizeof(TY), {dYp, Yp, dout}) && rows_vec_ok(d, sizeof(TD), {})) {
    if (k <= 8)
      combine_bwd_vec_kernel<TD, TY, 8><<<warp_blocks(N), 32 * kWarpsPerBlock, 0, stream>>>(
          dYp, dgates, dout, Yp, gates, pos, N, k, d);
    else
      combine_bwd_vec_kernel<TD, TY, 32><<<warp_blocks(N), 32 * kWarpsPerBlock, 0, stream>>>(
          dYp, dgates, dout, Yp, gates, pos, N, k, d);
    cudaCheckLaunch();
    return;
  }
  combine_rows_backward_kernel<<<N, row_threads(d), 0, stream>>>(dYp, dgates, dout, Yp, gates,
                                                                 pos, k, d);
  cudaCheckLaunch();
}

template <class TO, class TI>
void scatter_add_rows(TO* dX, const TI* dXp, const int32_t* pos, int N, int k, int d,
                      cudaStream_t stream) {
  if (N <= 0) return;
  if (k <= 32 && rows_vec_ok(d, sizeof(TI), {dX, dXp}) && rows_vec_ok(d, sizeof(TO), {}))
    return combine_vec<TO, TI, false>(dX, nullptr, nullptr, dXp, nullptr, pos, N, k, d, stream);
  scatter_add_rows_kernel<<<N, row_threads(d), 0, stream>>>(dX, dXp, pos, k, d);
  cudaCheckLaunch();
}

template <class T>
void permute_rows(T* Xp, const T* X, const int32_t* pos, int N, int k, int d,
                  cudaStream_t stream) {
  if (N <= 0) return;
  if (k > 32 || !rows_vec_ok(d, sizeof(T), {Xp, X}))
    cuda_fail("permute_rows", "needs k <= 32, d * sizeof(T) % 16 == 0, aligned rows", __FILE__,
              __LINE__);
  permute_units_kernel<<<warp_blocks(N), 32 * kWarpsPerBlock, 0, stream>>>(
      reinterpret_cast<uint4*>(Xp), reinterpret_cast<const uint4*>(X), pos, N, k,
      (int)(d * sizeof(T) / 16));
  cudaCheckLaunch();
}

void combine_rows_add(float* out, const float* a, const bf16* b, const bf16* Yp,
                      const float* gates, const int32_t* pos, int N, int k, int d,
                      cudaStream_t stream) {
  if (N <= 0) return;
  if (k > 32 || !rows_vec_ok(d, sizeof(bf16), {out, a, b, Yp}))
    cuda_fail("combine_rows_add", "needs k <= 32, d % 8 == 0, aligned rows", __FILE__,
              __LINE__);
  combine_vec<float, bf16, true>(out, a, b, Yp, gates, pos, N, k, d, stream);
}

template void permute_rows<float>(float*, const float*, const int32_t*, int, int, int,
                                  cudaStream_t);
template void permute_rows<bf16>(bf16*, const bf16*, const int32_t*, int, int, int,
                                 cudaStream_t);

#define PX_INST2(TO, TI)                                                                     \
  template void combine_rows<TO, TI>(TO*, const TI*, const float*, const int32_t*, int, int, \
                                     int, cudaStream_t);                                     \
  template void combine_rows_backward<TO, TI>(TI*, float*, const TO*, const TI*,             \
                                              const float*, const int32_t*, int, int, int,   \
                                              cudaStream_t);                                 \
  template void scatter_add_rows<TO, TI>(TO*, const TI*, const int32_t*, int, int, int,      \
                                         cudaStream_t);
PX_INST2(float, float)
PX_INST2(float, bf16)
PX_INST2(bf16, bf16)
template void gather_rows<float>(float*, const float*, const int32_t*, int, int, cudaStream_t);
template void gather_rows<bf16>(bf16*, const bf16*, const int32_t*, int, int, cudaStream_t);

}  // namespace px::cuda
