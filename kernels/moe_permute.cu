// defines: moe_permute_build, gather_rows, combine_rows, combine_rows_backward, scatter_add_rows
#include "moe_permute.cuh"

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
  gather_rows_kernel<<<rows, row_threads(d), 0, stream>>>(Xp, X, row_token, d);
  cudaCheckLaunch();
}

template <class TO, class TY>
void combine_rows(TO* out, const TY* Yp, const float* gates, const int32_t* pos, int N, int k,
                  int d, cudaStream_t stream) {
  if (N <= 0) return;
  combine_rows_kernel<<<N, row_threads(d), 0, stream>>>(out, Yp, gates, pos, k, d);
  cudaCheckLaunch();
}

template <class TD, class TY>
void combine_rows_backward(TY* dYp, float* dgates, const TD* dout, const TY* Yp,
                           const float* gates, const int32_t* pos, int N, int k, int d,
                           cudaStream_t stream) {
  if (N <= 0) return;
  combine_rows_backward_kernel<<<N, row_threads(d), 0, stream>>>(dYp, dgates, dout, Yp, gates,
                                                                 pos, k, d);
  cudaCheckLaunch();
}

template <class TO, class TI>
void scatter_add_rows(TO* dX, const TI* dXp, const int32_t* pos, int N, int k, int d,
                      cudaStream_t stream) {
  if (N <= 0) return;
  scatter_add_rows_kernel<<<N, row_threads(d), 0, stream>>>(dX, dXp, pos, k, d);
  cudaCheckLaunch();
}

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
