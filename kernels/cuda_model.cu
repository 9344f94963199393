// CudaModel: embedding -> layers (attention block, dense or MoE FFN) -> final norm -> head
// -> cross-entropy (+ Switch aux loss), backward in reverse, AdamW; the same order and math
// as px::MoeModel (src/model/moe_model.cpp), on one stream.
#include "cuda_model.cuh"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

#include "attention_bf16.cuh" // defines: attention_forward_bf16, attention_backward_bf16
#include "cross_entropy.cuh"  // defines: cross_entropy
#include "elementwise.cuh"    // defines: add, add_inplace, rmsnorm_forward_cast, sum_squares_partial,
                              // interleave_cols, deinterleave_add, ffn_act_forward, ffn_act_backward
#include "embedding.cuh"      // defines: embedding_forward, embedding_backward
#include "expert_ffn.cuh"     // defines: expert_ffn_forward, expert_ffn_backward
#include "matmul_lt.cuh"      // defines: matmul
#include "moe_permute.cuh"    // defines: moe_permute_build, permute_rows, combine_rows_add, ...
#include "rmsnorm.cuh"        // defines: rmsnorm_backward_fused
#include "rope.cuh"           // defines: rope_forward2, rope_backward2
#include "router.cuh"         // defines: router_forward, router_stats, router_backward

namespace px::cuda {

namespace {

// Bump allocator over one device allocation; with base == null it only counts bytes.
struct DevicePlan {
  char* base = nullptr;
  size_t used = 0;
  template <class T>
  T* take(size_t n) {
    if (!n) return nullptr;
    size_t off = (used + 255) & ~size_t(255);
    used = off + n * sizeof(T);
    return base ? reinterpret_cast<T*>(base + off) : nullptr;
  }
};

constexpr int P_BB = 0, P_EX = 1;

}  // namespace

template <class P>
void CudaModel::plan(P& p) {
  const size_t N = tokens_, d = cfg_.d_model, E = cfg_.n_experts, k = cfg_.top_k,
               h = cfg_.expert_hidden, dh = cfg_.dense_hidden, S = cfg_.n_shared,
               V = cfg_.vocab, H = cfg_.n_heads;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  for (int a = 0; a < 2; ++a) {
    const size_t n = dsize_[a];
    p_[a] = p.template take<float>(n);
    w_[a] = p.template take<bf16>(n);
    g_[a] = p.template take<float>(n);
    m_[a] = p.template take<float>(n);
    v_[a] = p.template take<float>(n);
  }
  const size_t act_begin = p.used;
  layer_bufs_.assign(cfg_.n_layers, LayerBufs{});
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerBufs& b = layer_bufs_[l];
    b.x = p.template take<float>(N * d);
    b.xn = p.template take<bf16>(N * d);
    b.rstd1 = p.template take<float>(N);
    b.q = p.template take<bf16>(N * d);
    b.k = p.template take<bf16>(N * d);
    b.v = p.template take<bf16>(N * d);
    b.y_bf = p.template take<bf16>(N * d);
    b.lse = p.template take<float>((size_t)batch_ * H * seq_);
    b.h = p.template take<float>(N * d);
    b.xn2 = p.template take<bf16>(N * d);
    b.rstd2 = p.template take<float>(N);
    if (!cfg_.is_moe(l)) {
      b.fa = p.template take<bf16>(2 * N * dh);  // dense FFN: always SwiGLU
      b.fact = p.template take<bf16>(N * dh);
    } else {
      b.xn2_f = p.template take<float>(N * d);
      b.fa = p.template take<bf16>((glu ? 2 : 1) * S * N * h);
      b.fact = p.template take<bf16>(S * N * h);
      b.logits = p.template take<float>(N * E);
      b.probs = p.template take<float>(N * E);
      b.gates = p.template take<float>(N * k);
      b.idx = p.template take<int32_t>(N * k);
      b.pos = p.template take<int32_t>(N * k);
      b.row_token = p.template take<int32_t>(N * k);
      b.bounds = p.template take<int32_t>(E + 1);
      b.counts = p.template take<int32_t>(E);
      b.prob_mean = p.template take<float>(E);
      b.aux_coef = p.template take<float>(E);
      b.ea = p.template take<bf16>(N * k * h);
      b.eb = glu ? p.template take<bf16>(N * k * h) : nullptr;
      b.eact = p.template take<bf16>(N * k * h);
      b.yp = p.template take<bf16>(N * k * d);
    }
  }
  tok_ = p.template take<int32_t>(N);
  tgt_ = p.template take<int32_t>(N);
  resid_out_ = p.template take<float>(N * d);
  xf_ = p.template take<bf16>(N * d);
  rstdf_ = p.template take<float>(N);
  logits_ = p.template take<float>(N * V);
  dlog_bf_ = p.template take<bf16>(N * V);
  losses_ = p.template take<float>(N);
  loss_ = p.template take<float>(4);
  gcounts_ = p.template take<int32_t>(E);
  hyper_ = p.template take<float>(8);
  partials_ = p.template take<float>(2 * kSumSqBlocks);
  perm_scratch_ = p.template take<char>(moe_permute_scratch_bytes(tokens_, (int)E, (int)k));
  norm_scratch_ = p.template take<char>(rmsnorm_backward_scratch_bytes(tokens_, (int)d));
  for (auto& r : dres_) r = p.template take<float>(N * d);
  dmid_ = p.template take<float>(N * d);
  dffn_ = p.template take<float>(N * d);
  dq_ = p.template take<bf16>(N * d);
  dk_ = p.template take<bf16>(N * d);
  dv_ = p.template take<bf16>(N * d);
  dy_bf_ = p.template take<bf16>(N * d);
  dcur_bf_ = p.template take<bf16>(N * d);
  tmp_bf_ = p.template take<bf16>(N * d);
  attn_scratch_ = p.template take<float>((size_t)batch_ * H * seq_);
  const bool any_moe = cfg_.moe_layers() > 0;
  const size_t rows = any_moe ? N * k : 0;
  xp_ = p.template take<bf16>(rows * d);
  dyp_ = p.template take<bf16>(rows * d);
  dxp_ = p.template take<bf16>(rows * d);
  const size_t hid = std::max({rows * h, cfg_.dense_layers > 0 ? N * dh : 0, S * N * h, N * h});
  dA_ = p.template take<bf16>(hid);
  dB_ = p.template take<bf16>(hid);
  const size_t fmax = std::max(cfg_.dense_layers > 0 ? dh : 0, any_moe && S > 0 ? h : 0);
  wcat_ = p.template take<bf16>(d * 2 * fmax);
  dwcat_ = p.template take<float>(d * 2 * fmax);
  dab_ = p.template take<bf16>(N * 2 * fmax);
  dgates_ = p.template take<float>(std::max<size_t>(rows, 1));
  dlogits_r_ = p.template take<float>(std::max<size_t>(N * E, 1));
  act_end_ = p.used;
  act_begin_ = act_begin;
}

CudaModel::CudaModel(const ModelConfig& cfg, int batch, int seq, Experts experts, bool allocate)
    : cfg_(cfg), layout_(cfg), batch_(batch), seq_(seq), tokens_(batch * seq),
      device_experts_(experts == Experts::ON_DEVICE) {
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("CudaModel: ") + what);
  };
  const int hd = cfg.head_dim();
  need(batch > 0 && seq > 0, "batch and seq must be positive");
  need(hd * cfg.n_heads == cfg.d_model, "d_model must be n_heads * head_dim");
  need(hd == 32 || hd == 64 || hd == 128, "head_dim must be 32, 64 or 128 (attention)");
  need(cfg.d_model % 8 == 0 && cfg.expert_hidden % 8 == 0 && cfg.dense_hidden % 8 == 0,
       "d_model, expert_hidden and dense_hidden must be multiples of 8");
  need(cfg.n_experts <= 1024 && cfg.top_k <= cfg.n_experts && cfg.top_k <= 32,
       "n_experts <= 1024 and top_k <= min(32, n_experts)");
  need(cfg.balance == BalanceKind::AUX, "only balance = \"aux\" (no router bias) on the GPU");
  // device layout (256-byte aligned tensors) and the optimizer's ranges over it
  std::map<size_t, size_t> remap[2];
  for (const ParamSpec& s : layout_.specs) {
    const int a = (int)s.arena;
    if (no_storage(s)) {  // (Experts::ON_HOST: no expert arena on the device)
      doff_.push_back(0);
      continue;
    }
    const size_t off = (dsize_[a] + 127) & ~size_t(127);
    doff_.push_back(off);
    remap[a][s.offset] = off;
    dsize_[a] = off + s.size;
    if (!ranges_.empty() && ranges_.back().arena == a && ranges_.back().decay == s.decay)
      ranges_.back().size = off + s.size - ranges_.back().offset;  // zero padding included
    else
      ranges_.push_back({a, off, s.size, s.decay});
  }
  auto to_dev = [&](int a, size_t o) {
    auto it = remap[a].find(o);
    return it == remap[a].end() ? o : it->second;
  };
  for (LayerOffsets o : layout_.layers) {
    for (size_t* f : {&o.attn_g, &o.wq, &o.wk, &o.wv, &o.wo, &o.ffn_g, &o.dense_w1, &o.dense_w3,
                      &o.dense_w2, &o.router, &o.shared_w1, &o.shared_w3, &o.shared_w2})
      *f = to_dev(0, *f);
    for (size_t* f : {&o.expert_w1, &o.expert_w3, &o.expert_w2}) *f = to_dev(1, *f);
    dev_layers_.push_back(o);
  }
  d_embed_ = to_dev(0, layout_.embed);
  d_final_g_ = to_dev(0, layout_.final_g);
  d_head_ = to_dev(0, layout_.head);
  if (!allocate) return;
  DevicePlan count;
  plan(count);
  bytes_ = count.used;
  cudaCheck(cudaMalloc(&base_, bytes_));
  DevicePlan real{base_, 0};
  plan(real);
  cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cudaCheck(cudaMallocHost(&loss_host_, 4 * sizeof(float)));
  cudaCheck(cudaMallocHost(&hyper_host_, 8 * sizeof(float)));
  cudaCheck(cudaMallocHost(&tok_host_, 2 * (size_t)tokens_ * sizeof(int32_t)));
  // parameters, gradients, moments: zero; activations and scratch: NaN (0xFF) so that a
  // read of something no kernel wrote shows up in the loss.
  cudaCheck(cudaMemset(base_, 0, act_begin_));
  cudaCheck(cudaMemset(base_ + act_begin_, 0xFF, act_end_ - act_begin_));
  cudaCheck(cudaDeviceSynchronize());
}

CudaModel::~CudaModel() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  if (graph_) cudaGraphDestroy(graph_);
  if (hyper_host_) cudaFreeHost(hyper_host_);
  if (base_) cudaFree(base_);
  if (loss_host_) cudaFreeHost(loss_host_);
  if (tok_host_) cudaFreeHost(tok_host_);
  if (stream_) cudaStreamDestroy(stream_);
}

size_t CudaModel::device_bytes(const ModelConfig& cfg, int batch, int seq, Experts experts) {
  CudaModel shell(cfg, batch, seq, experts, false);
  DevicePlan count;
  shell.plan(count);
  return count.used;
}

void CudaModel::upload_params(const float* backbone, const float* experts) {
  const float* src[2] = {backbone, experts};
  cudaCheck(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < layout_.specs.size(); ++i) {
    const ParamSpec& s = layout_.specs[i];
    const int a = (int)s.arena;
    if (!src[a] || no_storage(s)) continue;
    cudaCheck(cudaMemcpyAsync(p_[a] + doff_[i], src[a] + s.offset, s.size * sizeof(float),
                              cudaMemcpyHostToDevice, stream_));
  }
  for (int a = 0; a < 2; ++a) {
    if (!src[a]) continue;
    const size_t n = dsize_[a];
    convert_f32_to_bf16(w_[a], p_[a], n, stream_);
    if (!n) continue;
    cudaCheck(cudaMemsetAsync(m_[a], 0, n * sizeof(float), stream_));
    cudaCheck(cudaMemsetAsync(v_[a], 0, n * sizeof(float), stream_));
  }
  step_ = 0;
  cudaCheck(cudaStreamSynchronize(stream_));
}

void CudaModel::download_arenas(float* backbone, float* experts, const float* const* src) const {
  float* dst[2] = {backbone, experts};
  cudaCheck(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < layout_.specs.size(); ++i) {
    const ParamSpec& s = layout_.specs[i];
    const int a = (int)s.arena;
    if (!dst[a] || no_storage(s)) continue;
    cudaCheck(cudaMemcpyAsync(dst[a] + s.offset, src[a] + doff_[i], s.size * sizeof(float),
                              cudaMemcpyDeviceToHost, stream_));
  }
  cudaCheck(cudaStreamSynchronize(stream_));
}

void CudaModel::download_params(float* backbone, float* experts) const {
  download_arenas(backbone, experts, p_);
}

void CudaModel::download_grads(float* backbone, float* experts) const {
  download_arenas(backbone, experts, g_);
}

void CudaModel::upload_tokens(const int32_t* inputs, const int32_t* targets) {
  const int V = cfg_.vocab;
  for (int n = 0; n < tokens_; ++n) {
    if (inputs[n] < 0 || inputs[n] >= V || (targets && (targets[n] < 0 || targets[n] >= V)))
      throw std::invalid_argument("CudaModel: token id out of [0, vocab)");
  }
  // The previous step ended with a synchronisation, so the staging buffer is free.
  std::copy(inputs, inputs + tokens_, tok_host_);
  std::copy(targets, targets + tokens_, tok_host_ + tokens_);
  cudaCheck(cudaMemcpyAsync(tok_, tok_host_, tokens_ * sizeof(int32_t), cudaMemcpyHostToDevice,
                            stream_));
  cudaCheck(cudaMemcpyAsync(tgt_, tok_host_ + tokens_, tokens_ * sizeof(int32_t), cudaMemcpyHostToDevice,
                            stream_));
}

void CudaModel::forward(bool need_grad) {
  if (!device_experts_ && !host_experts_ && cfg_.moe_layers() > 0)
    throw std::logic_error("CudaModel: Experts::ON_HOST needs set_routed_experts before a forward");
  const int N = tokens_, d = cfg_.d_model, V = cfg_.vocab, E = cfg_.n_experts, k = cfg_.top_k,
            H = cfg_.n_heads, hd = cfg_.head_dim(), S = cfg_.n_shared, h = cfg_.expert_hidden,
            dh = cfg_.dense_hidden;
  const size_t Nd = (size_t)N * d;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  const ExpertAct kind = glu ? px::cpu::EXPERT_ACT_SWIGLU : px::cpu::EXPERT_ACT_RELU2;
  const float* pb = p_[P_BB];
  const bf16* wb = w_[P_BB];
  const bf16* we = w_[P_EX];
  cudaStream_t st = stream_;
  // a training forward of a data-parallel group: the group's routing statistics and mean
  const bool group = need_grad && sum_stats_ && group_tokens_ > 0;
  const int Ng = group ? (int)group_tokens_ : N;
  mark(PROF_EMBED);
  cudaCheck(cudaMemsetAsync(loss_, 0, 2 * sizeof(float), st));
  embedding_forward(layer_bufs_[0].x, pb + d_embed_, tok_, N, d, st);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerBufs& b = layer_bufs_[l];
    const LayerOffsets& o = dev_layers_[l];
    float* next = l + 1 < cfg_.n_layers ? layer_bufs_[l + 1].x : resid_out_;
    // h = x + Wo(attention(RoPE(xn Wq), RoPE(xn Wk), xn Wv)), xn = RMSNorm(x)
    mark(PROF_NORM);
    rmsnorm_forward_cast(b.xn, nullptr, b.rstd1, b.x, pb + o.attn_g, N, d, st);
    mark(PROF_ATTN_GEMM);
    matmul(b.q, b.xn, wb + o.wq, N, d, d, false, false, false, st);
    matmul(b.k, b.xn, wb + o.wk, N, d, d, false, false, false, st);
    matmul(b.v, b.xn, wb + o.wv, N, d, d, false, false, false, st);
    mark(PROF_ATTENTION);
    rope_forward2<bf16>(b.q, b.k, batch_, seq_, H, hd, st);
    attention_forward_bf16(b.y_bf, b.lse, b.q, b.k, b.v, batch_, seq_, H, hd, st);
    mark(PROF_ELEMENTWISE);
    cudaCheck(cudaMemcpyAsync(b.h, b.x, Nd * sizeof(float), cudaMemcpyDeviceToDevice, st));
    mark(PROF_ATTN_GEMM);
    matmul(b.h, b.y_bf, wb + o.wo, N, d, d, false, false, true, st);
    // next = h + FFN(RMSNorm(h))
    mark(PROF_NORM);
    rmsnorm_forward_cast(b.xn2, b.xn2_f, b.rstd2, b.h, pb + o.ffn_g, N, d, st);
    if (!cfg_.is_moe(l)) {
      mark(PROF_DENSE_FFN);
      ffn_up(b.fa, b.fact, b.xn2, wb + o.dense_w1, wb + o.dense_w3, dh, true);
      // next = h + act W2 (fp32 accumulate into the residual stream)
      mark(PROF_ELEMENTWISE);
      cudaCheck(cudaMemcpyAsync(next, b.h, Nd * sizeof(float), cudaMemcpyDeviceToDevice, st));
      mark(PROF_DENSE_FFN);
      matmul(next, b.fact, wb + o.dense_w2, N, dh, d, false, false, true, st);
      continue;
    }
    // router (fp32), aux loss, permutation, routed experts
    mark(PROF_ROUTING);
    matmul(b.logits, b.xn2_f, pb + o.router, N, d, E, false, false, false, st);
    router_forward(b.probs, b.idx, b.gates, b.logits, nullptr, N, E, k, st);
    router_stats(b.counts, b.prob_mean, b.probs, b.idx, N, E, k, st);
    if (group) group_router_stats(b);  // the group's counts and probabilities (host hook)
    moe_aux_loss(b.aux_coef, loss_ + 1, group ? gcounts_ : b.counts, b.prob_mean, Ng, E, k,
                 (float)cfg_.aux_alpha, st);
    moe_permute_build(b.bounds, b.pos, b.row_token, b.idx, N, E, k, 1, perm_scratch_, st);
    permute_rows<bf16>(xp_, b.xn2, b.pos, N, k, d, st);
    mark(PROF_EXPERTS);
    if (host_experts_)
      host_experts_forward(l, b);
    else
      expert_ffn_forward(b.yp, b.ea, b.eb, b.eact, xp_, we + o.expert_w1,
                         glu ? we + o.expert_w3 : nullptr, we + o.expert_w2, b.bounds, N * k, E,
                         d, h, kind, st);
    // shared experts (each one segment over all N rows), then the gated routed outputs
    const size_t wsz = (size_t)d * h, asz = (size_t)N * h;
    mark(PROF_DENSE_FFN);
    for (int s = 0; s < S; ++s) {
      ffn_up(b.fa + s * (glu ? 2 : 1) * asz, b.fact + s * asz, b.xn2,
             wb + o.shared_w1 + s * wsz, glu ? wb + o.shared_w3 + s * wsz : nullptr, h, glu);
      matmul(tmp_bf_, b.fact + s * asz, wb + o.shared_w2 + s * wsz, N, h, d, false, false,
             false, st);
      if (s + 1 < S) add<bf16>(next, s == 0 ? b.h : next, tmp_bf_, Nd, st);
    }
    // next = (h or the sum so far) + last shared output + gated routed outputs, one pass
    mark(PROF_ROUTING);
    combine_rows_add(next, S <= 1 ? b.h : next, S > 0 ? tmp_bf_ : nullptr, b.yp, b.gates, b.pos,
                     N, k, d, st);
  }
  mark(PROF_NORM);
  rmsnorm_forward_cast(xf_, nullptr, rstdf_, resid_out_, pb + d_final_g_, N, d, st);
  mark(PROF_HEAD);
  matmul(logits_, xf_, wb + d_head_, N, d, V, false, false, false, st);
  // dlogits (= (softmax - onehot) / N) written over the logits when a backward follows
  cross_entropy(need_grad ? logits_ : nullptr, losses_, logits_, tgt_, N, V, 1.f / Ng, st);
  sum_into(loss_, losses_, N, 1.f / Ng, st);
}

void CudaModel::backward() {
  const int N = tokens_, d = cfg_.d_model, V = cfg_.vocab, E = cfg_.n_experts, k = cfg_.top_k,
            H = cfg_.n_heads, hd = cfg_.head_dim(), S = cfg_.n_shared, h = cfg_.expert_hidden,
            dh = cfg_.dense_hidden;
  const size_t Nd = (size_t)N * d;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  const ExpertAct kind = glu ? px::cpu::EXPERT_ACT_SWIGLU : px::cpu::EXPERT_ACT_RELU2;
  const float* pb = p_[P_BB];
  const bf16* wb = w_[P_BB];
  const bf16* we = w_[P_EX];
  float* gb = g_[P_BB];
  float* ge = g_[P_EX];
  cudaStream_t st = stream_;
  mark(PROF_OPTIM);
  for (int a = 0; a < 2; ++a)
    if (dsize_[a]) cudaCheck(cudaMemsetAsync(g_[a], 0, dsize_[a] * sizeof(float), st));
  // head and final norm
  mark(PROF_HEAD);
  convert_f32_to_bf16(dlog_bf_, logits_, (size_t)N * V, st);
  matmul(gb + d_head_, xf_, dlog_bf_, d, N, V, true, false, true, st);
  matmul(dmid_, dlog_bf_, wb + d_head_, N, V, d, false, true, false, st);
  float* dcur = dres_[0];
  float* dnext = dres_[1];
  mark(PROF_NORM);
  // dcur (fp32) and its bf16 copy dcur_bf_ (the dense / shared expert backward operand)
  rmsnorm_backward_fused<float>(dcur, dcur_bf_, gb + d_final_g_, dmid_, resid_out_,
                                pb + d_final_g_, rstdf_, nullptr, N, d, norm_scratch_, st);
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    const LayerBufs& b = layer_bufs_[l];
    const LayerOffsets& o = dev_layers_[l];
    // FFN branch: dffn = d(FFN output)/d(xn2) applied to dcur
    if (!cfg_.is_moe(l)) {
      mark(PROF_DENSE_FFN);
      ffn_down_backward(dffn_, false, gb + o.dense_w1, gb + o.dense_w3, gb + o.dense_w2,
                        dcur_bf_, b.xn2, b.fa, b.fact, wb + o.dense_w1, wb + o.dense_w3,
                        wb + o.dense_w2, dh, true);
    } else {
      mark(PROF_ROUTING);
      combine_rows_backward<float, bf16>(dyp_, dgates_, dcur, b.yp, b.gates, b.pos, N, k, d, st);
      permute_rows<bf16>(xp_, b.xn2, b.pos, N, k, d, st);  // recomputed, not stored
      mark(PROF_EXPERTS);
      if (host_experts_)
        host_experts_backward(l);
      else
        expert_ffn_backward(dxp_, ge + o.expert_w1, glu ? ge + o.expert_w3 : nullptr,
                            ge + o.expert_w2, dyp_, xp_, b.ea, b.eb, b.eact, we + o.expert_w1,
                            glu ? we + o.expert_w3 : nullptr, we + o.expert_w2, b.bounds, N * k,
                            E, d, h, kind, dA_, dB_, st);
      const size_t wsz = (size_t)d * h, asz = (size_t)N * h;
      mark(PROF_DENSE_FFN);
      if (S == 0) cudaCheck(cudaMemsetAsync(dffn_, 0, Nd * sizeof(float), st));
      for (int s = 0; s < S; ++s)
        ffn_down_backward(dffn_, s > 0, gb + o.shared_w1 + s * wsz,
                          glu ? gb + o.shared_w3 + s * wsz : nullptr, gb + o.shared_w2 + s * wsz,
                          dcur_bf_, b.xn2, b.fa + s * (glu ? 2 : 1) * asz, b.fact + s * asz,
                          wb + o.shared_w1 + s * wsz, glu ? wb + o.shared_w3 + s * wsz : nullptr,
                          wb + o.shared_w2 + s * wsz, h, glu);
      mark(PROF_ROUTING);
      scatter_add_rows<float, bf16>(dffn_, dxp_, b.pos, N, k, d, st);
      router_backward(dlogits_r_, dgates_, b.probs, b.idx, b.gates, b.aux_coef, N, E, k, st);
      matmul(gb + o.router, b.xn2_f, dlogits_r_, d, N, E, true, false, true, st);
      matmul(dffn_, dlogits_r_, pb + o.router, N, E, d, false, true, true, st);
    }
    // dmid = d loss / d h = dcur + RMSNorm backward of dffn
    mark(PROF_NORM);
    // dmid = dcur + RMSNorm backward of dffn, and its bf16 copy (the Wo GEMM operand)
    rmsnorm_backward_fused<float>(dmid_, tmp_bf_, gb + o.ffn_g, dffn_, b.h, pb + o.ffn_g,
                                  b.rstd2, dcur, N, d, norm_scratch_, st);
    // attention block (dy in dy_bf_; dffn_ is reused for dxn)
    mark(PROF_ATTN_GEMM);
    matmul(gb + o.wo, b.y_bf, tmp_bf_, d, N, d, true, false, true, st);
    matmul(dy_bf_, tmp_bf_, wb + o.wo, N, d, d, false, true, false, st);
    mark(PROF_ATTENTION);
    attention_backward_bf16<bf16>(dq_, dk_, dv_, dy_bf_, b.y_bf, b.q, b.k, b.v, b.lse, batch_, seq_,
                                  H, hd, attn_scratch_, st);
    rope_backward2<bf16>(dq_, dk_, batch_, seq_, H, hd, st);
    const bf16* dqkv[3] = {dq_, dk_, dv_};
    const size_t wqkv[3] = {o.wq, o.wk, o.wv};
    mark(PROF_ATTN_GEMM);
    for (int i = 0; i < 3; ++i) {
      matmul(gb + wqkv[i], b.xn, dqkv[i], d, N, d, true, false, true, st);
      matmul(dffn_, dqkv[i], wb + wqkv[i], N, d, d, false, true, i > 0, st);
    }
    mark(PROF_NORM);
    // dnext = dmid + RMSNorm backward of dxn; bf16 copy for the next layer's FFN backward
    rmsnorm_backward_fused<float>(dnext, l > 0 ? dcur_bf_ : nullptr, gb + o.attn_g, dffn_, b.x, pb + o.attn_g,
                                  b.rstd1, dmid_, N, d, norm_scratch_, st);
    std::swap(dcur, dnext);
  }
  mark(PROF_EMBED);
  embedding_backward(gb + d_embed_, dcur, tok_, N, d, st);
}

void CudaModel::ffn_up(bf16* ab, bf16* act, const bf16* x, const bf16* w1, const bf16* w3,
                       int f, bool glu) {
  const int N = tokens_, d = cfg_.d_model;
  cudaStream_t st = stream_;
  if (glu) {
    interleave_cols(wcat_, w1, w3, d, f, st);
    matmul(ab, x, wcat_, N, d, 2 * f, false, false, false, st);
  } else {
    matmul(ab, x, w1, N, d, f, false, false, false, st);
  }
  ffn_act_forward(act, ab, N, f, glu, st);
}

void CudaModel::ffn_down_backward(float* dx, bool dx_acc, float* gw1, float* gw3, float* gw2,
                                  const bf16* dy, const bf16* x, const bf16* ab, const bf16* act,
                                  const bf16* w1, const bf16* w3, const bf16* w2, int f,
                                  bool glu) {
  const int N = tokens_, d = cfg_.d_model;
  cudaStream_t st = stream_;
  bf16* dact = dB_;  // [N, f]
  matmul(dact, dy, w2, N, d, f, false, true, false, st);          // dact = dy W2^T
  matmul(gw2, act, dy, f, N, d, true, false, true, st);           // dW2 += act^T dy
  ffn_act_backward(dab_, dact, ab, N, f, glu, st);                // [da | db]
  if (glu) {
    interleave_cols(wcat_, w1, w3, d, f, st);
    matmul(dx, dab_, wcat_, N, 2 * f, d, false, true, dx_acc, st);  // da W1^T + db W3^T
    matmul(dwcat_, x, dab_, d, N, 2 * f, true, false, false, st);   // x^T [da | db]
    deinterleave_add(gw1, gw3, dwcat_, d, f, st);
  } else {
    matmul(dx, dab_, w1, N, f, d, false, true, dx_acc, st);
    matmul(gw1, x, dab_, d, N, f, true, false, true, st);
  }
}

void CudaModel::mark(int what) {
  if (!profiling_ || capturing_) return;
  if (events_.size() <= marks_.size()) {
    cudaEvent_t e;
    cudaCheck(cudaEventCreate(&e));
    events_.push_back(e);
  }
  cudaCheck(cudaEventRecord(events_[marks_.size()], stream_));
  marks_.push_back(what);
}

std::vector<std::pair<std::string, double>> CudaModel::profile_ms() const {
  static const char* names[PROF_COUNT] = {"embedding",    "rmsnorm",   "attn GEMMs (cuBLASLt)",
                                          "rope+attention", "dense FFN + shared experts",
                                          "router+permute+combine", "routed experts",
                                          "head + cross-entropy", "adds/conversions",
                                          "grad zero/norm + AdamW"};
  std::vector<std::pair<std::string, double>> r;
  for (int i = 0; i < PROF_COUNT; ++i) r.emplace_back(names[i], prof_ms_[i]);
  return r;
}

void CudaModel::optimizer_step() {
  mark(PROF_OPTIM);
  launch_grad_norm();
  launch_adamw(loss_ + 3);
}

void CudaModel::launch_grad_norm() {
  cudaStream_t st = stream_;
  for (int a = 0; a < 2; ++a)
    sum_squares_partial(partials_ + a * kSumSqBlocks, g_[a], dsize_[a], st);
  grad_clip_finish(loss_ + 2, loss_ + 3, partials_, 2 * kSumSqBlocks, hyper_ + 4, st);
}

void CudaModel::launch_adamw(const float* gscale) {
  cudaStream_t st = stream_;
  for (const Range& r : ranges_)
    if (!(host_experts_ && r.arena == P_EX))  // (host experts: stepped by their executor)
      adamw_update_scaled(p_[r.arena] + r.offset, g_[r.arena] + r.offset,
                          m_[r.arena] + r.offset, v_[r.arena] + r.offset, r.size, hyper_,
                          r.decay, beta1, beta2, eps, gscale, w_[r.arena] + r.offset, st);
}

double CudaModel::read_loss() {
  mark(PROF_END);
  cudaCheck(cudaMemcpyAsync(loss_host_, loss_, 2 * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  if (!marks_.empty()) {  // profiling: attribute the time between marks
    for (size_t i = 0; i + 1 < marks_.size(); ++i) {
      float ms = 0;
      cudaCheck(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      prof_ms_[marks_[i]] += ms;
    }
    marks_.clear();
  }
  last_ce_ = loss_host_[0];
  last_aux_ = loss_host_[1];
  return last_ce_ + last_aux_;
}

double CudaModel::last_grad_norm() const {
  float v = 0;
  cudaCheck(cudaStreamSynchronize(stream_));
  cudaCheck(cudaMemcpy(&v, loss_ + 2, sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

std::vector<int64_t> CudaModel::expert_counts() const {
  const int E = cfg_.n_experts;
  std::vector<int64_t> c;
  std::vector<int32_t> h(E);
  cudaCheck(cudaStreamSynchronize(stream_));
  for (int l = cfg_.dense_layers; l < cfg_.n_layers; ++l) {
    cudaCheck(cudaMemcpy(h.data(), layer_bufs_[l].counts, E * sizeof(int32_t), cudaMemcpyDeviceToHost));
    c.insert(c.end(), h.begin(), h.end());
  }
  return c;
}

double CudaModel::forward_loss(const int32_t* inputs, const int32_t* targets) {
  upload_tokens(inputs, targets);
  forward(false);
  return read_loss();
}

double CudaModel::forward_backward(const int32_t* inputs, const int32_t* targets) {
  upload_tokens(inputs, targets);
  forward(true);
  backward();
  return read_loss();
}

double CudaModel::step(const int32_t* inputs, const int32_t* targets, float lr, float grad_clip,
                       float wd) {
  upload_tokens(inputs, targets);
  // the step's scalars go to the device (read there by the clip and AdamW kernels)
  stage_step_scalars(lr, wd);
  hyper_host_[4] = grad_clip;
  cudaCheck(cudaMemcpyAsync(hyper_, hyper_host_, 8 * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  if (!use_graph_ || graph_eager_steps_ == 0) {
    train_body();
    if (use_graph_) ++graph_eager_steps_;
  } else {
    if (!graph_exec_) {
      capturing_ = true;
      cudaCheck(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
      train_body();
      cudaCheck(cudaStreamEndCapture(stream_, &graph_));
      capturing_ = false;
      cudaCheck(cudaGraphInstantiate(&graph_exec_, graph_, 0));
    }
    cudaCheck(cudaGraphLaunch(graph_exec_, stream_));
  }
  return read_loss();
}

void CudaModel::train_body() {
  forward(true);
  backward();
  optimizer_step();
}

}  // namespace px::cuda
