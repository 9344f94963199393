// Whole-model GPU training step (px::cuda::CudaModel: forward + backward + AdamW) — a plain
// executable that prints a table of step time, tokens/s and MFU per model config.
//
// MFU = F * tokens/s / peak, with F the model FLOPs per token (PaLM / llm.c convention):
//   F = 6 * A + 12 * L * d * T
//   A = active matmul parameters per token = L * 4 d^2 (attention projections)
//       + dense layers * 3 d dh + MoE layers * (d E [router] + (top_k + n_shared) * m d h)
//       + d V (head); m = 3 (SwiGLU) or 2 (relu2); the embedding lookup is not counted;
//   12 L d T: attention scores and weighted values, forward + backward, full T x T (the causal
//   half is not subtracted).
// peak: dense bf16 tensor-core FLOP/s of the device, from a table keyed by its name.
// Timing: cudaEvents around step() on the model's stream (the step ends by reading the loss),
// after warm-up steps, median of several steps, random tokens (a few batches rotated).
// First, an attention micro-benchmark (B 32, T 1024, causal; hd 64 x 32 heads and hd 128 x 16
// heads): the bf16 tensor-core flash kernels (forward; backward = rowdot + dK/dV + dQ passes)
// and, for hd 64, the fp32 CUDA-core kernel; TFLOP/s with the causal FLOP count
// (forward 4 B H hd T(T+1)/2, backward 2.5x that).
// Then (--kernels) the memory-bound kernels of a MoE layer at the moe-1b shape (N 32768,
// d 2048, k 8, E 64, 32 heads x 64): the current launchers, ms, bytes (each input read once,
// each output written once) and GB/s, next to a device-to-device copy (read + write bytes).
// Then (--ffn) the dense FFN / shared expert at the moe-1b shapes: grouped kernel vs cuBLASLt.
// Usage: bench_cuda_step [--plan] [--kernels] [--ffn] [--only SUBSTR] [--no-attn]
//   --plan: print the configs and device bytes, no GPU needed; --only: configs whose name
//   contains SUBSTR; --no-attn: skip the attention micro-benchmark.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "attention.cuh"           // defines: px::cuda::attention_forward/backward (fp32)
#include "attention_bf16.cuh"      // defines: px::cuda::attention_forward_bf16/backward_bf16
#include "cuda_common.cuh"         // defines: cudaCheck, device_available
#include "cuda_model.cuh"          // defines: px::cuda::CudaModel
#include "elementwise.cuh"         // defines: px::cuda::add, add_inplace, rmsnorm_forward_cast, ffn_act_*
#include "expert_ffn.cuh"          // defines: px::cuda::expert_ffn_forward/backward (one segment: old FFN path)
#include "matmul_lt.cuh"           // defines: px::cuda::matmul
#include "moe_permute.cuh"         // defines: px::cuda::permute_rows, combine_rows_add, ...
#include "rmsnorm.cuh"             // defines: px::cuda::rmsnorm_backward_fused
#include "rope.cuh"                // defines: px::cuda::rope_forward2, rope_backward2
#include "router.cuh"              // defines: px::cuda::router_forward, router_backward
#include "model/param_layout.hpp"  // defines: px::ParamLayout

namespace {

struct Case {
  std::string name;
  px::ModelConfig cfg;
  std::vector<int> batches;  // candidates, largest first; the first that fits is used
  int seq;
  bool graph = false;  // step() through a captured CUDA graph
};

px::ModelConfig small_toml() {  // experiments/small.toml [model]
  px::ModelConfig c;
  c.d_model = 128;
  c.n_layers = 4;
  c.n_heads = 4;
  c.vocab = 2048;
  c.seq_len = 128;
  c.dense_layers = 1;
  c.n_experts = 16;
  c.top_k = 2;
  c.n_shared = 1;
  c.expert_hidden = 128;
  c.dense_hidden = 512;
  return c;
}

px::ModelConfig moe_1b(int E, int k, int h) {
  px::ModelConfig c;
  c.d_model = 2048;
  c.n_layers = 16;
  c.n_heads = 32;  // head_dim 64
  c.vocab = 32000;
  c.seq_len = 1024;
  c.dense_layers = 1;
  c.n_experts = E;
  c.top_k = k;
  c.n_shared = 1;
  c.expert_hidden = h;
  c.dense_hidden = 5632;
  return c;
}

px::ModelConfig moe_1b_l8() {  // the same layers, half as many: ~1.0B parameters in total
  px::ModelConfig c = moe_1b(64, 8, 256);
  c.n_layers = 8;
  return c;
}

double total_params(const px::ModelConfig& c) {
  px::ParamLayout layout(c);
  return (double)layout.backbone_size + (double)layout.experts_size;
}

double active_params(const px::ModelConfig& c) {
  const double d = c.d_model, m = c.expert_act == px::ExpertActKind::SWIGLU ? 3 : 2;
  double a = c.n_layers * 4 * d * d + c.dense_layers * 3 * d * c.dense_hidden +
             c.moe_layers() * (d * c.n_experts + (c.top_k + c.n_shared) * m * d * c.expert_hidden) +
             d * c.vocab;
  return a;
}

double flops_per_token(const px::ModelConfig& c, int seq) {
  return 6 * active_params(c) + 12.0 * c.n_layers * c.d_model * seq;
}

// Dense bf16 tensor-core peak (FLOP/s) by device name; 0 when unknown.
double peak_flops(const std::string& name) {
  struct P {
    const char* key;
    double tflops;
  };
  const P table[] = {{"H100 PCIe", 756}, {"H100", 989}, {"H200", 989}, {"GH200", 989},
                     {"A100", 312},      {"4090", 165}, {"3090", 71}};
  for (const P& p : table)
    if (name.find(p.key) != std::string::npos) return p.tflops * 1e12;
  return 0;
}

// Parameters with the init scales of MoeModel::init_params (uniform with the same std, from a
// fast counter hash: normal sampling of 2B values on one host core takes minutes).
void fast_init(const px::ParamLayout& layout, std::vector<float>& bb, std::vector<float>& ex) {
  bb.assign(layout.backbone_size, 0.f);
  ex.assign(layout.experts_size, 0.f);
  for (const px::ParamSpec& s : layout.specs) {
    float* p = (s.arena == px::Arena::BACKBONE ? bb.data() : ex.data()) + s.offset;
    const float a = (float)(s.init_std * 1.7320508);
    for (size_t i = 0; i < s.size; ++i) {
      const uint64_t r = px::cuda::splitmix64(s.offset * 2 + (uint64_t)s.arena + (i << 1) * 0x9E37ull);
      p[i] = s.init_std == 0 ? 1.f : a * (float)((r >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
  }
}

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(g);
  return t;
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class T>
__global__ void fill_uniform(T* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const uint64_t r = px::cuda::splitmix64(seed * 0x9E3779B97F4A7C15ull + i);
    p[i] = (T)(float)((r >> 40) * (4.0 / 16777216.0) - 2.0);
  }
}

// Median ms of f() over reps launches (after 2 warm-ups), cudaEvents on stream 0.
template <class F>
float time_ms(F f, int reps) {
  cudaEvent_t e0, e1;
  cudaCheck(cudaEventCreate(&e0));
  cudaCheck(cudaEventCreate(&e1));
  for (int i = 0; i < 2; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    cudaCheck(cudaEventRecord(e0));
    f();
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  cudaCheck(cudaEventDestroy(e0));
  cudaCheck(cudaEventDestroy(e1));
  return median(t);
}

void bench_attention() {
  using px::cuda::bf16;
  struct A { int B, T, H, hd; bool fp32; };
  const A cases[] = {{32, 1024, 32, 64, true}, {32, 1024, 16, 128, false}};
  std::printf("\n| attention (causal) | kernel | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const A& a : cases) {
    const size_t n = (size_t)a.B * a.T * a.H * a.hd, nl = (size_t)a.B * a.H * a.T;
    const double ff = 4.0 * a.B * a.H * a.hd * (a.T * (a.T + 1.0) / 2), fb = 2.5 * ff;
    bf16* buf = nullptr;
    float *lse = nullptr, *D = nullptr;
    cudaCheck(cudaMalloc(&buf, 8 * n * sizeof(bf16)));
    cudaCheck(cudaMalloc(&lse, nl * sizeof(float)));
    cudaCheck(cudaMalloc(&D, nl * sizeof(float)));
    bf16 *q = buf, *k = q + n, *v = k + n, *dout = v + n, *out = dout + n, *dq = out + n,
         *dk = dq + n, *dv = dk + n;
    fill_uniform<<<1024, 256>>>(buf, 4 * n, 7 + a.hd);
    cudaCheck(cudaGetLastError());
    const float tf = time_ms([&] { px::cuda::attention_forward_bf16(out, lse, q, k, v, a.B, a.T, a.H, a.hd); }, 10);
    const float tb = time_ms([&] {
      px::cuda::attention_backward_bf16<bf16>(dq, dk, dv, dout, out, q, k, v, lse, a.B, a.T, a.H, a.hd, D);
    }, 10);
    std::printf("| B%d T%d H%d hd%d | bf16 mma.sync | %.3f | %.1f | %.3f | %.1f |\n", a.B, a.T,
                a.H, a.hd, tf, ff / tf / 1e9, tb, fb / tb / 1e9);
    cudaCheck(cudaFree(buf));
    if (a.fp32) {
      float* fbuf = nullptr;
      cudaCheck(cudaMalloc(&fbuf, 8 * n * sizeof(float)));
      float *fq = fbuf, *fk = fq + n, *fv = fk + n, *fdo = fv + n, *fo = fdo + n, *fdq = fo + n,
            *fdk = fdq + n, *fdv = fdk + n;
      fill_uniform<<<1024, 256>>>(fbuf, 4 * n, 11);
      cudaCheck(cudaGetLastError());
      const float gf = time_ms([&] { px::cuda::attention_forward(fo, lse, fq, fk, fv, a.B, a.T, a.H, a.hd); }, 2);
      const float gb = time_ms([&] {
        px::cuda::attention_backward(fdq, fdk, fdv, fdo, fo, fq, fk, fv, lse, a.B, a.T, a.H, a.hd, D);
      }, 2);
      std::printf("| B%d T%d H%d hd%d | fp32 CUDA cores | %.3f | %.1f | %.3f | %.1f |\n", a.B,
                  a.T, a.H, a.hd, gf, ff / gf / 1e9, gb, fb / gb / 1e9);
      cudaCheck(cudaFree(fbuf));
    }
    cudaCheck(cudaFree(lse));
    cudaCheck(cudaFree(D));
  }
  std::printf("\n");
}


// Dense FFN / shared expert (SwiGLU) at the moe-1b shapes (N 32768, d 2048, f = 5632 dense,
// 256 shared): the grouped expert kernel with one segment (the old CudaModel path) vs the
// cuBLASLt path of CudaModel (interleaved [W1|W3] GEMM + elementwise SwiGLU; backward: dact
// GEMM, dW2, SwiGLU backward, dX in one K = 2f GEMM, d[W1|W3] + de-interleave add).
void bench_ffn() {
  using px::cuda::bf16;
  using px::cuda::matmul;
  const int N = 32768, d = 2048;
  std::printf("\nFFN (SwiGLU) N %d d %d: old = grouped expert kernel, one segment; new = cuBLASLt\n", N, d);
  std::printf("| f | pass | old ms | new ms | TFLOP/s old | new |\n|---|---|---|---|---|---|\n");
  for (int f : {5632, 256}) {
    const size_t Nd = (size_t)N * d, Nf = (size_t)N * f, df = (size_t)d * f;
    bf16 *X, *W1, *W3, *W2, *dY, *Y, *A, *Bm, *act, *dA, *dB, *dXb, *AB, *dab, *wcat;
    float *gw1, *gw3, *gw2, *dX, *dwcat;
    int32_t* b1;
    for (bf16** p : {&X, &dY, &Y, &dXb}) cudaCheck(cudaMalloc(p, Nd * 2));
    for (bf16** p : {&W1, &W3, &W2}) cudaCheck(cudaMalloc(p, df * 2));
    for (bf16** p : {&A, &Bm, &act, &dA, &dB}) cudaCheck(cudaMalloc(p, Nf * 2));
    for (bf16** p : {&AB, &dab}) cudaCheck(cudaMalloc(p, 2 * Nf * 2));
    cudaCheck(cudaMalloc(&wcat, 2 * df * 2));
    for (float** p : {&gw1, &gw3, &gw2}) cudaCheck(cudaMalloc(p, df * 4));
    cudaCheck(cudaMalloc(&dwcat, 2 * df * 4));
    cudaCheck(cudaMalloc(&dX, Nd * 4));
    cudaCheck(cudaMalloc(&b1, 8));
    const int32_t hb[2] = {0, N};
    cudaCheck(cudaMemcpy(b1, hb, 8, cudaMemcpyHostToDevice));
    fill_uniform<<<1024, 256>>>(X, Nd, 21); fill_uniform<<<1024, 256>>>(dY, Nd, 22);
    fill_uniform<<<1024, 256>>>(W1, df, 23); fill_uniform<<<1024, 256>>>(W3, df, 24);
    fill_uniform<<<1024, 256>>>(W2, df, 25);
    cudaCheck(cudaMemset(gw1, 0, df * 4)); cudaCheck(cudaMemset(gw3, 0, df * 4));
    cudaCheck(cudaMemset(gw2, 0, df * 4));
    cudaCheck(cudaGetLastError());
    const auto sw = px::cpu::EXPERT_ACT_SWIGLU;
    const int reps = f > 1024 ? 10 : 20;
    const float of = time_ms([&] {
      px::cuda::expert_ffn_forward(Y, A, Bm, act, X, W1, W3, W2, b1, N, 1, d, f, sw);
    }, reps);
    const float ob = time_ms([&] {
      px::cuda::expert_ffn_backward(dXb, gw1, gw3, gw2, dY, X, A, Bm, act, W1, W3, W2, b1, N, 1,
                                    d, f, sw, dA, dB);
      px::cuda::convert_bf16_to_f32(dX, dXb, Nd);
    }, reps);
    const float nf = time_ms([&] {
      px::cuda::interleave_cols(wcat, W1, W3, d, f);
      matmul(AB, X, wcat, N, d, 2 * f, false, false, false);
      px::cuda::ffn_act_forward(act, AB, N, f, true);
      matmul(Y, act, W2, N, f, d, false, false, false);
    }, reps);
    const float nb = time_ms([&] {
      matmul(dA, dY, W2, N, d, f, false, true, false);
      matmul(gw2, act, dY, f, N, d, true, false, true);
      px::cuda::ffn_act_backward(dab, dA, AB, N, f, true);
      px::cuda::interleave_cols(wcat, W1, W3, d, f);
      matmul(dX, dab, wcat, N, 2 * f, d, false, true, false);
      matmul(dwcat, X, dab, d, N, 2 * f, true, false, false);
      px::cuda::deinterleave_add(gw1, gw3, dwcat, d, f);
    }, reps);
    const double F = 2.0 * N * d * f;  // one N x d x f GEMM
    std::printf("| %d | fwd | %.3f | %.3f | %.0f | %.0f |\n", f, of, nf, 3 * F / of / 1e9,
                3 * F / nf / 1e9);
    std::printf("| %d | bwd | %.3f | %.3f | %.0f | %.0f |\n", f, ob, nb, 6 * F / ob / 1e9,
                6 * F / nb / 1e9);
    // the new path's pieces
    struct P { const char* name; double flop; float ms; };
    std::vector<P> parts = {
        {"X [W1|W3] (N x d x 2f)", 2 * F, time_ms([&] { matmul(AB, X, wcat, N, d, 2 * f, false, false, false); }, reps)},
        {"act W2 (N x f x d), bf16 out", F, time_ms([&] { matmul(Y, act, W2, N, f, d, false, false, false); }, reps)},
        {"dact = dY W2^T", F, time_ms([&] { matmul(dA, dY, W2, N, d, f, false, true, false); }, reps)},
        {"dW2 += act^T dY (K = N)", F, time_ms([&] { matmul(gw2, act, dY, f, N, d, true, false, true); }, reps)},
        {"dX = [da|db] W13^T (K = 2f), fp32", 2 * F, time_ms([&] { matmul(dX, dab, wcat, N, 2 * f, d, false, true, false); }, reps)},
        {"d[W1|W3] = X^T [da|db] (K = N)", 2 * F, time_ms([&] { matmul(dwcat, X, dab, d, N, 2 * f, true, false, false); }, reps)},
        {"swiglu fwd (elementwise)", 0, time_ms([&] { px::cuda::ffn_act_forward(act, AB, N, f, true); }, reps)},
        {"swiglu bwd (elementwise)", 0, time_ms([&] { px::cuda::ffn_act_backward(dab, dA, AB, N, f, true); }, reps)},
        {"interleave W + de-interleave add dW", 0, time_ms([&] {
           px::cuda::interleave_cols(wcat, W1, W3, d, f);
           px::cuda::deinterleave_add(gw1, gw3, dwcat, d, f);
         }, reps)}};
    for (const P& p : parts)
      std::printf("|   f %d: %s | | | %.3f ms | %.0f TFLOP/s |\n", f, p.name, p.ms,
                  p.flop > 0 ? p.flop / p.ms / 1e9 : 0.0);
    for (void* p : {(void*)X, (void*)dY, (void*)Y, (void*)dXb, (void*)W1, (void*)W3, (void*)W2,
                    (void*)A, (void*)Bm, (void*)act, (void*)dA, (void*)dB, (void*)AB, (void*)dab,
                    (void*)wcat, (void*)gw1, (void*)gw3, (void*)gw2, (void*)dwcat, (void*)dX,
                    (void*)b1})
      cudaCheck(cudaFree(p));
  }
}

// Memory-bound kernels of one MoE layer at the moe-1b shape (the current launchers).
void bench_kernels() {
  using px::cuda::bf16;
  const int B = 32, T = 1024, N = B * T, d = 2048, k = 8, E = 64, H = 32, hd = 64;
  const size_t Nd = (size_t)N * d, R = (size_t)N * k, Rd = R * d;
  bf16 *xb, *q, *kk, *Yp, *Xp, *dYp, *bs;
  float *x, *dout, *res, *dx, *xf, *g, *dg, *rstd, *gates, *dgates, *scratch, *logits, *probs, *dl;
  int32_t *idx, *pos, *row_token, *bounds;
  void* pscratch;
  cudaCheck(cudaMalloc(&xb, Nd * 2)); cudaCheck(cudaMalloc(&q, Nd * 2)); cudaCheck(cudaMalloc(&kk, Nd * 2));
  cudaCheck(cudaMalloc(&bs, Nd * 2));
  cudaCheck(cudaMalloc(&Yp, Rd * 2)); cudaCheck(cudaMalloc(&Xp, Rd * 2)); cudaCheck(cudaMalloc(&dYp, Rd * 2));
  for (float** p : {&x, &dout, &res, &dx, &xf}) cudaCheck(cudaMalloc(p, Nd * 4));
  cudaCheck(cudaMalloc(&g, d * 4)); cudaCheck(cudaMalloc(&dg, d * 4)); cudaCheck(cudaMalloc(&rstd, N * 4));
  cudaCheck(cudaMalloc(&gates, R * 4)); cudaCheck(cudaMalloc(&dgates, R * 4));
  cudaCheck(cudaMalloc(&logits, (size_t)N * E * 4)); cudaCheck(cudaMalloc(&probs, (size_t)N * E * 4));
  cudaCheck(cudaMalloc(&dl, (size_t)N * E * 4));
  cudaCheck(cudaMalloc(&scratch, px::cuda::rmsnorm_backward_scratch_bytes(N, d)));
  cudaCheck(cudaMalloc(&idx, R * 4)); cudaCheck(cudaMalloc(&pos, R * 4));
  cudaCheck(cudaMalloc(&row_token, R * 4)); cudaCheck(cudaMalloc(&bounds, (E + 1) * 4));
  cudaCheck(cudaMalloc(&pscratch, px::cuda::moe_permute_scratch_bytes(N, E, k)));
  fill_uniform<<<1024, 256>>>(xb, Nd, 1); fill_uniform<<<1024, 256>>>(q, Nd, 2);
  fill_uniform<<<1024, 256>>>(kk, Nd, 3); fill_uniform<<<1024, 256>>>(bs, Nd, 4);
  fill_uniform<<<1024, 256>>>(Yp, Rd, 5);
  for (float* p : {x, dout, res}) fill_uniform<<<1024, 256>>>(p, Nd, (uint64_t)(uintptr_t)p);
  fill_uniform<<<64, 256>>>(g, (size_t)d, 9);
  fill_uniform<<<1024, 256>>>(logits, (size_t)N * E, 10);
  cudaCheck(cudaGetLastError());
  // routing from the router itself (random logits: roughly balanced experts)
  px::cuda::router_forward(probs, idx, gates, logits, nullptr, N, E, k);
  px::cuda::moe_permute_build(bounds, pos, row_token, idx, N, E, k, 1, pscratch);
  px::cuda::rmsnorm_forward_cast(xb, nullptr, rstd, x, g, N, d);
  cudaCheck(cudaDeviceSynchronize());
  struct K {
    const char* name;
    double bytes;
    float ms;
  };
  std::vector<K> rows;
  const int reps = 20;
  auto run = [&](const char* name, double bytes, auto f) {
    rows.push_back({name, bytes, time_ms(f, reps)});
  };
  const double MB = 1e6;
  run("D2D copy 1074 MB (read + write)", 2.0 * Rd * 2, [&] {
    cudaCheck(cudaMemcpyAsync(Xp, Yp, Rd * 2, cudaMemcpyDeviceToDevice));
  });
  run("rope q+k fwd (rope_forward2)", 4.0 * Nd * 2, [&] {
    px::cuda::rope_forward2<bf16>(q, kk, B, T, H, hd);
  });
  run("rmsnorm fwd fp32 -> bf16 + fp32 (rmsnorm_forward_cast)", Nd * (4.0 + 2 + 4), [&] {
    px::cuda::rmsnorm_forward_cast(xb, xf, rstd, x, g, N, d);
  });
  // backward + residual add + bf16 copy (the model's sequence): min bytes of the fused pass
  const double bwd_bytes = Nd * (4.0 * 3 + 4 + 2);
  run("rmsnorm bwd+dg+add+bf16 copy (rmsnorm_backward_fused, 2 kernels)", bwd_bytes, [&] {
    px::cuda::rmsnorm_backward_fused<float>(dx, bs, dg, dout, x, g, rstd, res, N, d, scratch);
  });
  run("gather xp (gather_rows, 16 B units)", Rd * 2.0 * 2, [&] {
    px::cuda::gather_rows<bf16>(Xp, xb, row_token, (int)R, d);
  });
  run("permute xp (permute_rows, by token)", Nd * 2.0 + Rd * 2, [&] {
    px::cuda::permute_rows<bf16>(Xp, xb, pos, N, k, d);
  });
  run("combine + shared add (combine_rows_add)", Rd * 2.0 + Nd * (4.0 + 2 + 4), [&] {
    px::cuda::combine_rows_add(dx, res, bs, Yp, gates, pos, N, k, d);
  });
  run("combine backward (combine_rows_backward)", Rd * 4.0 + Nd * 4, [&] {
    px::cuda::combine_rows_backward<float, bf16>(dYp, dgates, dout, Yp, gates, pos, N, k, d);
  });
  run("scatter-add dxp (scatter_add_rows)", Rd * 2.0 + Nd * 8, [&] {
    px::cuda::scatter_add_rows<float, bf16>(dx, Yp, pos, N, k, d);
  });
  run("router fwd (softmax + top-8 of 64)", (double)N * E * 8 + R * 8, [&] {
    px::cuda::router_forward(probs, idx, gates, logits, nullptr, N, E, k);
  });
  run("router bwd", (double)N * E * 8 + R * 12, [&] {
    px::cuda::router_backward(dl, dgates, probs, idx, gates, nullptr, N, E, k);
  });
  run("router stats", (double)N * E * 4 + R * 4, [&] {
    px::cuda::router_stats(row_token, dl, probs, idx, N, E, k);
  });
  run("moe_permute_build", R * 4.0 * 3, [&] {
    px::cuda::moe_permute_build(bounds, pos, row_token, idx, N, E, k, 1, pscratch);
  });
  cudaCheck(cudaDeviceSynchronize());
  std::printf("\n| kernel (N %d, d %d, k %d, E %d, H %d x %d) | ms | MB moved | GB/s |\n", N, d,
              k, E, H, hd);
  std::printf("|---|---|---|---|\n");
  for (const K& r : rows)
    std::printf("| %s | %.3f | %.0f | %.0f |\n", r.name, r.ms, r.bytes / MB, r.bytes / r.ms / 1e6);
  for (void* p : std::initializer_list<void*>{xb, q, kk, bs, Yp, Xp, dYp, x, dout, res, dx, xf, g, dg,
                                              rstd, gates, dgates, scratch, logits, probs, dl,
                                              idx, pos, row_token, bounds, pscratch})
    cudaCheck(cudaFree(p));
}
}  // namespace

int main(int argc, char** argv) {
  bool plan_only = false, kernels = false, attn = true, ffn = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--plan")) plan_only = true;
    else if (!std::strcmp(argv[i], "--kernels")) kernels = true;
    else if (!std::strcmp(argv[i], "--no-attn")) attn = false;
    else if (!std::strcmp(argv[i], "--ffn")) ffn = true;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
  }
  std::vector<Case> cases = {
      {"small.toml (d128 L4 E16 k2)", small_toml(), {16}, 128},
      {"moe-2b (d2048 L16 E64 k8 h256)", moe_1b(64, 8, 256), {16, 12, 8, 4, 2}, 1024},
      {"moe-1b (d2048 L8 E64 k8 h256)", moe_1b_l8(), {32, 24, 16, 8}, 1024},
      {"small.toml, CUDA graph", small_toml(), {16}, 128, true},
  };
  for (const Case& c : cases) {
    std::printf("%-34s total %.3fB params, active %.3fB/token, %.2f GFLOP/token\n",
                c.name.c_str(), total_params(c.cfg) / 1e9, active_params(c.cfg) / 1e9,
                flops_per_token(c.cfg, c.seq) / 1e9);
    for (int b : c.batches)
      std::printf("    batch %2d x %d: %.2f GiB on the device\n", b, c.seq,
                  px::cuda::CudaModel::device_bytes(c.cfg, b, c.seq) / 1073741824.0);
  }
  if (plan_only) return 0;
  if (!px::cuda::device_available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaCheck(cudaGetDeviceProperties(&prop, 0));
  const double peak = peak_flops(prop.name);
  std::printf("device: %s, peak bf16 dense %.0f TFLOP/s\n", prop.name, peak / 1e12);
  if (attn) bench_attention();
  if (kernels) bench_kernels();
  if (ffn) bench_ffn();
  struct Row {
    std::string name;
    int batch, seq;
    float step_ms, fwd_ms;
    double tok_s, tflops, mfu, loss0, loss1;
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    int batch = 0;
    for (int b : c.batches)
      if (px::cuda::CudaModel::device_bytes(c.cfg, b, c.seq) + (size_t)(2ull << 30) < free_b) {
        batch = b;
        break;
      }
    if (!batch) {
      std::printf("%s: does not fit (%.1f GiB free)\n", c.name.c_str(), free_b / 1073741824.0);
      continue;
    }
    const int N = batch * c.seq;
    Row r{c.name, batch, c.seq};
    {
      std::vector<float> bb, ex;
      px::cuda::CudaModel m(c.cfg, batch, c.seq);
      m.set_use_graph(c.graph);
      fast_init(m.layout(), bb, ex);
      m.upload_params(bb.data(), ex.data());
      std::vector<float>().swap(bb);
      std::vector<float>().swap(ex);
      std::vector<std::vector<int32_t>> in, tg;
      for (int i = 0; i < 4; ++i) {
        in.push_back(random_tokens(N, c.cfg.vocab, 100 + 2 * i));
        tg.push_back(random_tokens(N, c.cfg.vocab, 101 + 2 * i));
      }
      cudaEvent_t e0, e1;
      cudaCheck(cudaEventCreate(&e0));
      cudaCheck(cudaEventCreate(&e1));
      const int warm = 3, reps = c.cfg.d_model >= 1024 ? 8 : 30;
      std::vector<float> st, ft;
      for (int i = 0; i < warm + reps; ++i) {
        cudaCheck(cudaEventRecord(e0, m.stream()));
        double loss = m.step(in[i % 4].data(), tg[i % 4].data(), 3e-4f, 1.0f, 0.1f);
        cudaCheck(cudaEventRecord(e1, m.stream()));
        cudaCheck(cudaEventSynchronize(e1));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
        if (i == 0) r.loss0 = loss;
        r.loss1 = loss;
        if (i >= warm) st.push_back(ms);
      }
      for (int i = 0; i < warm + reps / 2; ++i) {
        cudaCheck(cudaEventRecord(e0, m.stream()));
        m.forward_loss(in[i % 4].data(), tg[i % 4].data());
        cudaCheck(cudaEventRecord(e1, m.stream()));
        cudaCheck(cudaEventSynchronize(e1));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= warm) ft.push_back(ms);
      }
      cudaCheck(cudaEventDestroy(e0));
      cudaCheck(cudaEventDestroy(e1));
      r.step_ms = median(st);
      r.fwd_ms = median(ft);
      r.tok_s = N / (r.step_ms * 1e-3);
      r.tflops = flops_per_token(c.cfg, c.seq) * r.tok_s / 1e12;
      r.mfu = peak > 0 ? r.tflops * 1e12 / peak : 0;
      std::printf("%s: batch %d x %d, %.1f GiB, step %.2f ms (forward %.2f ms), loss %.4f -> "
                  "%.4f\n",
                  c.name.c_str(), batch, c.seq, m.bytes() / 1073741824.0, r.step_ms, r.fwd_ms,
                  r.loss0, r.loss1);
      if (!c.graph) {
        // per-phase breakdown (events between phases; separate steps, not the timed ones)
        const int prof_steps = 3;
        m.set_use_graph(false);  // no events inside a graph
        m.set_profiling(true);
        m.reset_profile();
        for (int i = 0; i < prof_steps; ++i) m.step(in[i % 4].data(), tg[i % 4].data(), 3e-4f, 1.0f, 0.1f);
        m.set_profiling(false);
        double tot = 0;
        for (auto& [name, ms] : m.profile_ms()) tot += ms;
        std::printf("  phase breakdown (mean of %d profiled steps, %.2f ms/step):\n", prof_steps,
                    tot / prof_steps);
        for (auto& [name, ms] : m.profile_ms())
          std::printf("    %-28s %9.2f ms  %5.1f%%\n", name.c_str(), ms / prof_steps,
                      tot > 0 ? 100 * ms / tot : 0.0);
      }
    }
    rows.push_back(r);
  }
  std::printf("\n| config | batch x seq | step ms | fwd ms | tokens/s | model TFLOP/s | MFU |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows)
    std::printf("| %s | %d x %d | %.2f | %.2f | %.0f | %.1f | %.1f%% |\n", r.name.c_str(),
                r.batch, r.seq, r.step_ms, r.fwd_ms, r.tok_s, r.tflops, 100 * r.mfu);
  return 0;
}
