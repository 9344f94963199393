// defines: router_forward, router_stats, router_backward
#include "router.cuh"

namespace px::cuda {

namespace {

constexpr int kMaxPerLane = 32;  // E <= 32 * 32

// PL = experts per lane (E <= 32 PL), a compile-time bound so that p[] stays in registers.
template <int PL>
__global__ void router_fwd_kernel(float* probs, int32_t* idx, float* gates, const float* logits,
                                  const float* bias, int N, int E, int k) {
  int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (n >= N) return;
  const float* l = logits + (size_t)n * E;
  float p[PL];
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    int e = lane + 32 * j;
    p[j] = e < E ? l[e] : -INFINITY;
    mx = fmaxf(mx, p[j]);
  }
  mx = warp_max(mx);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    int e = lane + 32 * j;
    p[j] = e < E ? expf(p[j] - mx) : 0.f;
    s += p[j];
  }
  s = warp_sum(s);
  float inv = 1.f / s;
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    int e = lane + 32 * j;
    p[j] *= inv;
    if (e < E) probs[(size_t)n * E + e] = p[j];
  }
  // top-k by p + bias, k rounds of warp argmax (ties -> lower index).
  unsigned taken = 0;  // bit j: element lane+32j taken
  float gsum = 0.f, my_p = 0.f;  // lane r keeps round r's winner
  int my_e = 0;
  for (int r = 0; r < k; ++r) {
    float best = -INFINITY;
    int be = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < PL; ++j) {
      int e = lane + 32 * j;
      if (e < E && !(taken >> j & 1)) {
        float sc = p[j] + (bias ? bias[e] : 0.f);
        if (sc > best || (sc == best && e < be)) best = sc, be = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      float ob = __shfl_xor_sync(0xffffffffu, best, o);
      int oe = __shfl_xor_sync(0xffffffffu, be, o);
      if (ob > best || (ob == best && oe < be)) best = ob, be = oe;
    }
    if ((be & 31) == lane) taken |= 1u << (be >> 5);
    // probability of the winner, from its owner lane
    float pw = 0.f;
#pragma unroll
    for (int j = 0; j < PL; ++j)
      if (lane + 32 * j == be) pw = p[j];
    pw = __shfl_sync(0xffffffffu, pw, be & 31);
    if (lane == r) my_p = pw, my_e = be;
    gsum += pw;
  }
  if (lane < k) {
    idx[(size_t)n * k + lane] = my_e;
    gates[(size_t)n * k + lane] = my_p / gsum;
  }
}

__global__ void router_stats_kernel(int32_t* counts, float* prob_mean, const float* probs,
                                    const int32_t* idx, int N, int E, int k) {
  int e = blockIdx.x;
  float s = 0.f, c = 0.f;
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    s += probs[(size_t)n * E + e];
    for (int j = 0; j < k; ++j) c += idx[(size_t)n * k + j] == e ? 1.f : 0.f;
  }
  s = block_sum(s);
  c = block_sum(c);
  if (threadIdx.x == 0) {
    prob_mean[e] = s / N;
    counts[e] = (int32_t)c;
  }
}

template <int PL>
__global__ void router_bwd_kernel(float* dlogits, const float* dgates, const float* probs,
                                  const int32_t* idx, const float* gates, const float* aux_coef,
                                  int N, int E, int k) {
  int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (n >= N) return;
  const float* p = probs + (size_t)n * E;
  // lane m < k holds assignment m (k <= 32)
  const int my_i = lane < k ? idx[(size_t)n * k + lane] : -1;
  const float my_dg = lane < k ? dgates[(size_t)n * k + lane] : 0.f;
  float S = lane < k ? p[my_i] : 0.f, dot = lane < k ? my_dg * gates[(size_t)n * k + lane] : 0.f;
  S = warp_sum(S);
  dot = warp_sum(dot);
  float dp[PL], pv[PL];
  float pd = 0.f;
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    int e = lane + 32 * j;
    dp[j] = 0.f;
    pv[j] = 0.f;
    if (e < E) {
      pv[j] = p[e];
      dp[j] = aux_coef ? aux_coef[e] : 0.f;
    }
    for (int m = 0; m < k; ++m) {
      const int em = __shfl_sync(0xffffffffu, my_i, m);
      const float dgm = __shfl_sync(0xffffffffu, my_dg, m);
      if (em == e) dp[j] += (dgm - dot) / S;
    }
    if (e < E) {
      pd += pv[j] * dp[j];
    }
  }
  pd = warp_sum(pd);
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    int e = lane + 32 * j;
    if (e < E) dlogits[(size_t)n * E + e] = pv[j] * (dp[j] - pd);
  }
}

}  // namespace

void router_forward(float* probs, int32_t* idx, float* gates, const float* logits,
                    const float* bias, int N, int E, int k, cudaStream_t stream) {
  if (N <= 0) return;
  if (E > 32 * kMaxPerLane || k > 32 || k > E)
    cuda_fail("router_forward", "needs E <= 1024 and k <= min(32, E)", __FILE__, __LINE__);
#define PX_FWD(PL) \
  router_fwd_kernel<PL><<<ceil_div(N, 4), 128, 0, stream>>>(probs, idx, gates, logits, bias, N, E, k)
  if (E <= 32) PX_FWD(1); else if (E <= 64) PX_FWD(2); else if (E <= 128) PX_FWD(4);
  else if (E <= 256) PX_FWD(8); else if (E <= 512) PX_FWD(16); else PX_FWD(32);
#undef PX_FWD
  cudaCheckLaunch();
}

void router_stats(int32_t* counts, float* prob_mean, const float* probs, const int32_t* idx,
                  int N, int E, int k, cudaStream_t stream) {
  if (E <= 0) return;
  router_stats_kernel<<<E, 256, 0, stream>>>(counts, prob_mean, probs, idx, N, E, k);
  cudaCheckLaunch();
}

void router_backward(float* dlogits, const float* dgates, const float* probs, const int32_t* idx,
                     const float* gates, const float* aux_coef, int N, int E, int k,
                     cudaStream_t stream) {
  if (N <= 0) return;
  if (E > 32 * kMaxPerLane) cuda_fail("router_backward", "needs E <= 1024", __FILE__, __LINE__);
  if (k > 32) cuda_fail("router_backward", "needs k <= 32", __FILE__, __LINE__);
#define PX_BWD(PL)                                                                          \
  router_bwd_kernel<PL><<<ceil_div(N, 4), 128, 0, stream>>>(dlogits, dgates, probs, idx, gates, \
                                                            aux_coef, N, E, k)
  if (E <= 32) PX_BWD(1); else if (E <= 64) PX_BWD(2); else if (E <= 128) PX_BWD(4);
  else if (E <= 256) PX_BWD(8); else if (E <= 512) PX_BWD(16); else PX_BWD(32);
#undef PX_BWD
  cudaCheckLaunch();
}

}  // namespace px::cuda
