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
// Usage: bench_cuda_step [--plan]   (--plan: print the configs and device bytes, no GPU needed)
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention.cuh"           // defines: px::cuda::attention_forward/backward (fp32)
#include "attention_bf16.cuh"      // defines: px::cuda::attention_forward_bf16/backward_bf16
#include "cuda_common.cuh"         // defines: cudaCheck, device_available
#include "cuda_model.cuh"          // defines: px::cuda::CudaModel
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
  px::ParamLayout l(c);
  return (double)l.backbone_size + (double)l.experts_size;
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
void fast_init(const px::ParamLayout& l, std::vector<float>& bb, std::vector<float>& ex) {
  bb.assign(l.backbone_size, 0.f);
  ex.assign(l.experts_size, 0.f);
  for (const px::ParamSpec& s : l.specs) {
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

}  // namespace

int main(int argc, char** argv) {
  const bool plan_only = argc > 1 && std::strcmp(argv[1], "--plan") == 0;
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
  bench_attention();
  struct Row {
    std::string name;
    int batch, seq;
    float step_ms, fwd_ms;
    double tok_s, tflops, mfu, loss0, loss1;
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
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
