// MoeModel: embedding -> layers (attention block, dense or MoE FFN) -> final norm -> head
// -> cross-entropy (+ aux loss). Forward saves activations; backward walks them in reverse.
#include "model/moe_model.hpp"

#include <algorithm>
#include <cstring>

#include "model/bump_arena.hpp"  // defines: BumpArena
#include "model/param_init.hpp"  // defines: init_arena_range

namespace px {

using namespace px::cpu;

template <class T>
MoeModel<T>::MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem)
    : cfg_(cfg), mem_(mem), layout_(cfg), batch_(batch), seq_(seq) {
  backbone_.assign(layout_.backbone_size, 0);
  gbackbone_.assign(layout_.backbone_size, 0);
  if (mem.routed_arenas) {
    experts_.assign(layout_.experts_size, 0);
    gexperts_.assign(layout_.experts_size, 0);
  }
  router_bias_.assign((size_t)cfg.moe_layers() * cfg.n_experts, 0);
  layer_acts_.resize(cfg.n_layers);
  BumpArena<T> cf;
  BumpArena<int32_t> ci;
  plan_activations(cf, ci);
  act_elems_ = cf.used();
  iact_elems_ = ci.used();
  acts_.assign(cf.used(), 0);
  iacts_.assign(ci.used(), 0);
  BumpArena<T> rf(acts_);
  BumpArena<int32_t> ri(iacts_);
  plan_activations(rf, ri);
}

template <class T>
size_t MoeModel<T>::activation_bytes(const ModelConfig& cfg, int batch, int seq, ModelMemory mem) {
  MoeModel<T> m(cfg, batch, seq, mem, SizesOnly{});
  return m.act_elems_ * sizeof(T) + m.iact_elems_ * sizeof(int32_t);
}

template <class T>
MoeModel<T>::MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem, SizesOnly)
    : cfg_(cfg), mem_(mem), layout_(cfg), batch_(batch), seq_(seq) {
  layer_acts_.resize(cfg.n_layers);
  BumpArena<T> cf;
  BumpArena<int32_t> ci;
  plan_activations(cf, ci);
  act_elems_ = cf.used();
  iact_elems_ = ci.used();
}

template <class T>
template <class A, class I>
void MoeModel<T>::plan_activations(A& fa, I& ia) {
  const size_t N = (size_t)batch_ * seq_, d = cfg_.d_model, E = cfg_.n_experts, k = cfg_.top_k,
               h = cfg_.expert_hidden, dh = cfg_.dense_hidden, S = cfg_.n_shared,
               V = cfg_.vocab, H = cfg_.n_heads;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  const size_t probs = (size_t)batch_ * H * seq_ * seq_;
  T* shared_probs = mem_.recompute_attention ? fa.take(probs) : nullptr;  // one layer's, shared
  FfnActs<T> shared_routed{};  // one MoE layer's routed hidden activations, shared
  if (mem_.routed_arenas && mem_.recompute_experts && cfg_.moe_layers() > 0)
    shared_routed = {fa.take(N * k * h), glu ? fa.take(N * k * h) : nullptr, fa.take(N * k * h)};
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerActs<T>& la = layer_acts_[l];
    la = LayerActs<T>{};
    la.x = fa.take(N * d);
    la.attn.xn = fa.take(N * d);
    la.attn.rstd = fa.take(N);
    la.attn.q = fa.take(N * d);
    la.attn.k = fa.take(N * d);
    la.attn.v = fa.take(N * d);
    la.attn.probs = mem_.recompute_attention ? shared_probs : fa.take(probs);
    la.attn.y = fa.take(N * d);
    la.h = fa.take(N * d);
    la.xn2 = fa.take(N * d);
    la.rstd2 = fa.take(N);
    if (!cfg_.is_moe(l)) {
      la.dense = {fa.take(N * dh), fa.take(N * dh), fa.take(N * dh)};
    } else {
      MoeActs<T>& m = la.moe;
      m.logits = fa.take(N * E);
      m.probs = fa.take(N * E);
      m.gates = fa.take(N * k);
      m.idx = ia.take(N * k);
      m.bounds = ia.take(E + 1);
      m.pos = ia.take(N * k);
      m.row_token = ia.take(N * k);
      m.xp = fa.take(N * k * d);
      if (mem_.routed_arenas && mem_.recompute_experts)
        m.routed = shared_routed;
      else if (mem_.routed_arenas)  // (otherwise the routed experts' executor keeps their activations)
        m.routed = {fa.take(N * k * h), glu ? fa.take(N * k * h) : nullptr, fa.take(N * k * h)};
      m.yp = fa.take(N * k * d);
      m.shared = {fa.take(S * N * h), glu ? fa.take(S * N * h) : nullptr, fa.take(S * N * h)};
      m.aux_coef = fa.take(E);
    }
  }
  resid_out_ = fa.take(N * d);
  xf_ = fa.take(N * d);
  rstdf_ = fa.take(N);
  logits_ = fa.take(N * V);
  dlogits_ = fa.take(N * V);
  dres_[0] = fa.take(N * d);
  dres_[1] = fa.take(N * d);
  dmid_ = fa.take(N * d);
  dffn_ = fa.take(N * d);
  for (auto& p : scratch_.nd) p = fa.take(N * d);
  const size_t rows = std::max(N * k, N);
  for (auto& p : scratch_.rows_d) p = fa.take(rows * d);
  const size_t hid = std::max({N * k * h, N * dh, N * h});
  for (auto& p : scratch_.rows_h) p = fa.take(hid);
  scratch_.nk = fa.take(N * k);
  scratch_.ne = fa.take(N * E);
}

template <class T>
void MoeModel<T>::init_params(uint64_t seed) {
  init_arena_range(layout_, Arena::BACKBONE, seed, 0, backbone_.size(), backbone_.data());
  init_arena_range(layout_, Arena::EXPERTS, seed, 0, experts_.size(), experts_.data());
  std::fill(router_bias_.begin(), router_bias_.end(), (T)0);
}

template <class T>
MoeDims MoeModel<T>::moe_dims(int N) const {
  return MoeDims{N,
                 cfg_.d_model,
                 cfg_.n_experts,
                 cfg_.top_k,
                 cfg_.n_shared,
                 cfg_.expert_hidden,
                 cfg_.expert_act == ExpertActKind::SWIGLU ? EXPERT_ACT_SWIGLU : EXPERT_ACT_RELU2,
                 cfg_.balance == BalanceKind::AUX ? cfg_.aux_alpha : 0.0,
                 mem_.recompute_experts};
}

template <class T>
MoeContext<T> MoeModel<T>::moe_context(int moe_layer) const {
  MoeContext<T> c;
  c.moe_layer = moe_layer;
  c.global_tokens = global_tokens_;
  c.sum_stats = sum_stats_;
  c.experts = experts_exec_;
  c.drop_routed = drop_routed_;
  c.loss_scale = loss_scale_;
  return c;
}

template <class T>
double MoeModel<T>::forward(const int32_t* inputs, const int32_t* targets, int B, int Tn) {
  cur_B_ = B;
  cur_T_ = Tn;
  const int N = B * Tn, d = cfg_.d_model, V = cfg_.vocab, E = cfg_.n_experts;
  inputs_copy_.assign(inputs, inputs + N);
  const T* bb = backbone_.data();
  const T* ex = experts_.empty() ? nullptr : experts_.data();
  const AttnDims ad{B, Tn, cfg_.n_heads, cfg_.head_dim(), mem_.recompute_attention};
  const MoeDims md = moe_dims(N);
  // embedding
  T* x0 = layer_acts_[0].x;
  for (int n = 0; n < N; ++n)
    std::memcpy(x0 + (size_t)n * d, bb + layout_.embed + (size_t)inputs[n] * d, sizeof(T) * d);
  last_aux_ = 0;
  int moe_l = 0;
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerActs<T>& acts = layer_acts_[l];
    const LayerOffsets& offsets = layout_.layers[l];
    T* next = l + 1 < cfg_.n_layers ? layer_acts_[l + 1].x : resid_out_;
    attention_block_forward(acts.h, acts.attn, acts.x, bb + offsets.attn_g, bb + offsets.wq,
                            bb + offsets.wk, bb + offsets.wv, bb + offsets.wo, ad);
    rmsnorm_forward(acts.xn2, acts.rstd2, acts.h, bb + offsets.ffn_g, N, d);
    if (!cfg_.is_moe(l)) {
      ffn_forward(next, acts.dense, acts.xn2, bb + offsets.dense_w1, bb + offsets.dense_w3,
                  bb + offsets.dense_w2, N, d, cfg_.dense_hidden, EXPERT_ACT_SWIGLU);
    } else {
      const bool glu = md.kind == EXPERT_ACT_SWIGLU, sh = cfg_.n_shared > 0;
      const T* bias = cfg_.balance == BalanceKind::BIAS ? router_bias_.data() + (size_t)moe_l * E
                                                        : nullptr;
      moe_forward(next, acts.moe, acts.xn2, bb + offsets.router, sh ? bb + offsets.shared_w1 : nullptr,
                  sh && glu ? bb + offsets.shared_w3 : nullptr, sh ? bb + offsets.shared_w2 : nullptr,
                  ex ? ex + offsets.expert_w1 : nullptr, ex && glu ? ex + offsets.expert_w3 : nullptr,
                  ex ? ex + offsets.expert_w2 : nullptr, bias, md,
                  moe_context(moe_l), scratch_.nd[5]);
      last_aux_ += acts.moe.aux_loss;
      ++moe_l;
    }
    for (size_t i = 0; i < (size_t)N * d; ++i) next[i] += acts.h[i];
  }
  rmsnorm_forward(xf_, rstdf_, resid_out_, bb + layout_.final_g, N, d);
  matmul(logits_, xf_, bb + layout_.head, N, d, V, false, false, false);
  if (!targets) return 0;
  const double Ng = global_tokens_ > 0 ? global_tokens_ : N;
  last_ce_ = cross_entropy(dlogits_, logits_, targets, N, V, (T)(loss_scale_ / Ng)) * N / Ng;
  return last_ce_ + last_aux_;
}

template <class T>
void MoeModel<T>::backward() {
  const int B = cur_B_, Tn = cur_T_, N = B * Tn, d = cfg_.d_model, V = cfg_.vocab;
  const T* bb = backbone_.data();
  const T* ex = experts_.empty() ? nullptr : experts_.data();
  T* gb = gbackbone_.data();
  T* ge = gexperts_.empty() ? nullptr : gexperts_.data();
  const AttnDims ad{B, Tn, cfg_.n_heads, cfg_.head_dim(), mem_.recompute_attention};
  const MoeDims md = moe_dims(N);
  const bool glu = md.kind == EXPERT_ACT_SWIGLU, sh = cfg_.n_shared > 0;
  // head and final norm
  matmul(gb + layout_.head, xf_, dlogits_, d, N, V, true, false, true);
  matmul(dmid_, dlogits_, bb + layout_.head, N, V, d, false, true, false);
  T* dcur = dres_[0];
  T* dnext = dres_[1];
  rmsnorm_backward(dcur, gb + layout_.final_g, dmid_, resid_out_, bb + layout_.final_g, rstdf_, N,
                   d);
  int moe_l = cfg_.moe_layers();
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    const LayerActs<T>& acts = layer_acts_[l];
    const LayerOffsets& offsets = layout_.layers[l];
    if (!cfg_.is_moe(l)) {
      ffn_backward(dffn_, gb + offsets.dense_w1, gb + offsets.dense_w3, gb + offsets.dense_w2, dcur,
                   acts.dense, acts.xn2, bb + offsets.dense_w1, bb + offsets.dense_w3,
                   bb + offsets.dense_w2, N, d, cfg_.dense_hidden, EXPERT_ACT_SWIGLU, false, scratch_);
    } else {
      moe_backward(dffn_, gb + offsets.router, sh ? gb + offsets.shared_w1 : nullptr,
                   sh && glu ? gb + offsets.shared_w3 : nullptr, sh ? gb + offsets.shared_w2 : nullptr,
                   ge ? ge + offsets.expert_w1 : nullptr, ge && glu ? ge + offsets.expert_w3 : nullptr,
                   ge ? ge + offsets.expert_w2 : nullptr, dcur,
                   acts.moe, acts.xn2, bb + offsets.router, sh ? bb + offsets.shared_w1 : nullptr,
                   sh && glu ? bb + offsets.shared_w3 : nullptr, sh ? bb + offsets.shared_w2 : nullptr,
                   ex ? ex + offsets.expert_w1 : nullptr, ex && glu ? ex + offsets.expert_w3 : nullptr,
                   ex ? ex + offsets.expert_w2 : nullptr, md,
                   moe_context(--moe_l), scratch_);
    }
    rmsnorm_backward(dmid_, gb + offsets.ffn_g, dffn_, acts.h, bb + offsets.ffn_g, acts.rstd2, N, d);
    for (size_t i = 0; i < (size_t)N * d; ++i) dmid_[i] += dcur[i];
    attention_block_backward(dnext, gb + offsets.attn_g, gb + offsets.wq, gb + offsets.wk,
                             gb + offsets.wv, gb + offsets.wo, dmid_, acts.attn, acts.x,
                             bb + offsets.attn_g, bb + offsets.wq, bb + offsets.wk, bb + offsets.wv,
                             bb + offsets.wo, ad, scratch_);
    std::swap(dcur, dnext);
  }
  T* gemb = gb + layout_.embed;
  for (int n = 0; n < N; ++n) {
    T* row = gemb + (size_t)inputs_copy_[n] * d;
    const T* g = dcur + (size_t)n * d;
    for (int i = 0; i < d; ++i) row[i] += g[i];
  }
}

template <class T>
void MoeModel<T>::zero_grad() {
  std::fill(gbackbone_.begin(), gbackbone_.end(), (T)0);
  std::fill(gexperts_.begin(), gexperts_.end(), (T)0);
}

template <class T>
std::vector<int64_t> MoeModel<T>::expert_counts() const {
  const int E = cfg_.n_experts;
  std::vector<int64_t> c;
  c.reserve((size_t)cfg_.moe_layers() * E);
  for (int l = cfg_.dense_layers; l < cfg_.n_layers; ++l) {
    const int32_t* b = layer_acts_[l].moe.bounds;
    for (int e = 0; e < E; ++e) c.push_back(b[e + 1] - b[e]);
  }
  return c;
}

template <class T>
void MoeModel<T>::update_router_bias(const std::vector<int64_t>& c) {
  if (cfg_.balance != BalanceKind::BIAS) return;
  const int E = cfg_.n_experts;
  for (int m = 0; m < cfg_.moe_layers(); ++m) {
    double mean = 0;
    for (int e = 0; e < E; ++e) mean += (double)c[(size_t)m * E + e];
    mean /= E;
    for (int e = 0; e < E; ++e) {
      const double load = (double)c[(size_t)m * E + e];
      const double sgn = load < mean ? 1.0 : (load > mean ? -1.0 : 0.0);
      router_bias_[(size_t)m * E + e] += (T)(cfg_.bias_gamma * sgn);
    }
  }
}

template class MoeModel<float>;
template class MoeModel<double>;

}  // namespace px
