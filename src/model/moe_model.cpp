// MoeModel: embedding -> layers (attention block, dense or MoE FFN) -> final norm -> head
// -> cross-entropy (+ aux loss). Forward saves activations; backward walks them in reverse.
#include "model/moe_model.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "model/bump_arena.hpp"  // defines: BumpArena
#include "model/param_init.hpp"  // defines: init_arena_range

namespace px {

using namespace px::cpu;

namespace {
int stage_end(const ModelConfig& cfg, const ModelMemory& mem) {
  return mem.layer_end < 0 ? cfg.n_layers : mem.layer_end;
}
}  // namespace

template <class T>
MoeModel<T>::MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem)
    : MoeModel(cfg, batch, seq, mem, SizesOnly{}) {
  backbone_.assign(span_[0].size(), 0);
  gbackbone_.assign(span_[0].size(), 0);
  if (mem.routed_arenas) {
    experts_.assign(span_[1].size(), 0);
    gexperts_.assign(span_[1].size(), 0);
  }
  router_bias_.assign((size_t)cfg.moe_layers() * cfg.n_experts, 0);
  acts_.assign(act_elems_, 0);
  iacts_.assign(iact_elems_, 0);
  BumpArena<T> rf(acts_);
  BumpArena<int32_t> ri(iacts_);
  plan_activations(rf, ri);
  cur_ = &slots_[0];
}

template <class T>
size_t MoeModel<T>::activation_bytes(const ModelConfig& cfg, int batch, int seq, ModelMemory mem) {
  MoeModel<T> m(cfg, batch, seq, mem, SizesOnly{});
  return m.act_elems_ * sizeof(T) + m.iact_elems_ * sizeof(int32_t);
}

template <class T>
MoeModel<T>::MoeModel(const ModelConfig& cfg, int batch, int seq, ModelMemory mem, SizesOnly)
    : cfg_(cfg), mem_(mem), layout_(cfg), batch_(batch), seq_(seq), lb_(mem.layer_begin),
      le_(stage_end(cfg, mem)) {
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS})
    span_[(int)a] = layout_.layers_span(a, lb_, le_);
  if (!mem.routed_arenas) span_[1] = {};
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
               h = cfg_.expert_hidden, dh = cfg_.dense_hidden;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  FfnActs<T> shared_routed{};  // one MoE layer's routed hidden activations, shared
  if (mem_.routed_arenas && mem_.recompute_experts && le_ > std::max(lb_, cfg_.dense_layers))
    shared_routed = {fa.take(N * k * h), glu ? fa.take(N * k * h) : nullptr, fa.take(N * k * h)};
  if (mem_.recompute_layers) {  // one dense and one MoE layer's activations, shared by all
    const bool dense = lb_ < std::min(le_, cfg_.dense_layers), moe = le_ > std::max(lb_, cfg_.dense_layers);
    if (dense) shared_layer_[0] = plan_layer(false, shared_routed, fa, ia);
    if (moe) shared_layer_[1] = plan_layer(true, shared_routed, fa, ia);
    recompute_out_ = fa.take(N * d);
  }
  if (le_ != cfg_.n_layers) stage_out_ = fa.take(N * d);
  slots_.resize(std::max(1, mem_.slots));
  for (SlotActs& slot : slots_) plan_slot(slot, shared_routed, fa, ia);
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
template <class A, class I>
LayerActs<T> MoeModel<T>::plan_layer(bool moe, FfnActs<T> shared_routed, A& fa, I& ia) {
  const size_t N = (size_t)batch_ * seq_, d = cfg_.d_model, E = cfg_.n_experts, k = cfg_.top_k,
               h = cfg_.expert_hidden, dh = cfg_.dense_hidden, S = cfg_.n_shared, H = cfg_.n_heads;
  const bool glu = cfg_.expert_act == ExpertActKind::SWIGLU;
  const size_t probs = (size_t)batch_ * H * seq_ * seq_;
  LayerActs<T> la{};
  la.attn.xn = fa.take(N * d);
  la.attn.rstd = fa.take(N);
  la.attn.q = fa.take(N * d);
  la.attn.k = fa.take(N * d);
  la.attn.v = fa.take(N * d);
  // (recomputed: no probabilities kept, the attention holds one head's at a time)
  la.attn.probs = recompute_probs() ? nullptr : fa.take(probs);
  la.attn.y = fa.take(N * d);
  la.h = fa.take(N * d);
  la.xn2 = fa.take(N * d);
  la.rstd2 = fa.take(N);
  if (!moe) {
    la.dense = {fa.take(N * dh), fa.take(N * dh), fa.take(N * dh)};
    return la;
  }
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
  return la;
}

template <class T>
template <class A, class I>
void MoeModel<T>::plan_slot(SlotActs& s, FfnActs<T> shared_routed, A& fa, I& ia) {
  const size_t N = (size_t)batch_ * seq_, d = cfg_.d_model, E = cfg_.n_experts, V = cfg_.vocab;
  s.layers.assign(cfg_.n_layers, LayerActs<T>{});
  for (int l = lb_; l < le_; ++l) {
    T* x = fa.take(N * d);
    const bool moe = cfg_.is_moe(l);
    LayerActs<T>& la = s.layers[l];
    la = mem_.recompute_layers ? shared_layer_[moe ? 1 : 0] : plan_layer(moe, shared_routed, fa, ia);
    la.x = x;
    // (recompute_layers: its own routing counts, which expert_counts reads)
    if (mem_.recompute_layers && moe) la.moe.bounds = ia.take(E + 1);
  }
  // (a stage before the last: its output is read right after each forward, one buffer for all)
  s.resid_out = le_ == cfg_.n_layers ? fa.take(N * d) : stage_out_;
  if (le_ == cfg_.n_layers) {
    s.xf = fa.take(N * d);
    s.rstdf = fa.take(N);
    s.logits = fa.take(N * V);
    s.dlogits = fa.take(N * V);
  }
}

template <class T>
void MoeModel<T>::init_params(uint64_t seed) {
  init_arena_range(layout_, Arena::BACKBONE, seed, span_[0].lo, span_[0].hi, backbone_.data());
  if (!experts_.empty())
    init_arena_range(layout_, Arena::EXPERTS, seed, span_[1].lo, span_[1].hi, experts_.data());
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
  if (lb_ != 0 || le_ != cfg_.n_layers)
    throw std::logic_error("MoeModel::forward: a pipeline stage runs forward_stage");
  cur_ = &slots_[0];
  cur_->B = B;
  cur_->Tn = Tn;
  return run_forward(inputs, targets);
}

template <class T>
void MoeModel<T>::backward() {
  run_backward(nullptr);
}

template <class T>
double MoeModel<T>::forward_stage(const int32_t* inputs, const int32_t* targets, int slot) {
  cur_ = &slots_[slot];
  cur_->B = batch_;
  cur_->Tn = seq_;
  return run_forward(inputs, targets);
}

template <class T>
void MoeModel<T>::backward_stage(int slot, const T* d_output) {
  cur_ = &slots_[slot];
  run_backward(d_output);
}

template <class T>
double MoeModel<T>::run_forward(const int32_t* inputs, const int32_t* targets) {
  if (experts_exec_) experts_exec_->use_slot((int)(cur_ - slots_.data()), true);
  if (lb_ == 0) embed_forward(inputs);
  last_aux_ = 0;
  layers_forward();
  if (le_ != cfg_.n_layers) return last_aux_;
  return head_forward(targets);
}

template <class T>
void MoeModel<T>::embed_forward(const int32_t* inputs) {
  const int N = cur_->B * cur_->Tn, d = cfg_.d_model;
  cur_->inputs.assign(inputs, inputs + N);
  const ArenaView<const T> bb = this->bb();
  T* x0 = cur_->layers[0].x;
  for (int n = 0; n < N; ++n)
    std::memcpy(x0 + (size_t)n * d, bb + (layout_.embed + (size_t)inputs[n] * d), sizeof(T) * d);
}

template <class T>
void MoeModel<T>::layers_forward() {
  int moe_l = std::max(0, lb_ - cfg_.dense_layers);
  for (int l = lb_; l < le_; ++l) {
    T* next = l + 1 < le_ ? cur_->layers[l + 1].x : cur_->resid_out;
    last_aux_ += layer_forward(l, cur_->layers[l], next, moe_l);
    if (cfg_.is_moe(l)) ++moe_l;
  }
}

template <class T>
double MoeModel<T>::layer_forward(int l, LayerActs<T>& acts, T* next, int moe_l) {
  const int B = cur_->B, Tn = cur_->Tn, N = B * Tn, d = cfg_.d_model, E = cfg_.n_experts;
  const ArenaView<const T> bb = this->bb(), ex = this->ex();
  const AttnDims ad{B, Tn, cfg_.n_heads, cfg_.head_dim(), recompute_probs()};
  const MoeDims md = moe_dims(N);
  const LayerOffsets& offsets = layout_.layers[l];
  attention_block_forward(acts.h, acts.attn, acts.x, bb + offsets.attn_g, bb + offsets.wq,
                          bb + offsets.wk, bb + offsets.wv, bb + offsets.wo, ad);
  rmsnorm_forward(acts.xn2, acts.rstd2, acts.h, bb + offsets.ffn_g, N, d);
  double aux = 0;
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
    aux = acts.moe.aux_loss;
  }
  for (size_t i = 0; i < (size_t)N * d; ++i) next[i] += acts.h[i];
  return aux;
}

template <class T>
double MoeModel<T>::head_forward(const int32_t* targets) {
  const int N = cur_->B * cur_->Tn, d = cfg_.d_model, V = cfg_.vocab;
  const ArenaView<const T> bb = this->bb();
  rmsnorm_forward(cur_->xf, cur_->rstdf, cur_->resid_out, bb + layout_.final_g, N, d);
  matmul(cur_->logits, cur_->xf, bb + layout_.head, N, d, V, false, false, false);
  if (!targets) return 0;
  const double Ng = global_tokens_ > 0 ? global_tokens_ : N;
  last_ce_ = cross_entropy(cur_->dlogits, cur_->logits, targets, N, V, (T)(loss_scale_ / Ng)) * N / Ng;
  return last_ce_ + last_aux_;
}

template <class T>
void MoeModel<T>::run_backward(const T* d_output) {
  if (experts_exec_) experts_exec_->use_slot((int)(cur_ - slots_.data()), false);
  T* dcur = nullptr;
  if (le_ == cfg_.n_layers) {
    dcur = head_backward();
  } else {
    const size_t n = (size_t)cur_->B * cur_->Tn * cfg_.d_model;
    std::copy_n(d_output, n, dres_[0]);
    dcur = dres_[0];
  }
  dcur = layers_backward(dcur);
  if (lb_ == 0) embed_backward(dcur);
  dinput_ = dcur;
}

template <class T>
T* MoeModel<T>::head_backward() {
  const int N = cur_->B * cur_->Tn, d = cfg_.d_model, V = cfg_.vocab;
  const ArenaView<const T> bb = this->bb();
  const ArenaView<T> gb = this->gb();
  matmul(gb + layout_.head, cur_->xf, cur_->dlogits, d, N, V, true, false, true);
  matmul(dmid_, cur_->dlogits, bb + layout_.head, N, V, d, false, true, false);
  rmsnorm_backward(dres_[0], gb + layout_.final_g, dmid_, cur_->resid_out, bb + layout_.final_g,
                   cur_->rstdf, N, d);
  return dres_[0];
}

template <class T>
T* MoeModel<T>::layers_backward(T* dcur) {
  const int B = cur_->B, Tn = cur_->Tn, N = B * Tn, d = cfg_.d_model;
  const ArenaView<const T> bb = this->bb(), ex = this->ex();
  const ArenaView<T> gb = this->gb(), ge = this->ge();
  const AttnDims ad{B, Tn, cfg_.n_heads, cfg_.head_dim(), recompute_probs()};
  const MoeDims md = moe_dims(N);
  const bool glu = md.kind == EXPERT_ACT_SWIGLU, sh = cfg_.n_shared > 0;
  T* dnext = dcur == dres_[0] ? dres_[1] : dres_[0];
  int moe_l = std::max(0, le_ - cfg_.dense_layers);
  for (int l = le_ - 1; l >= lb_; --l) {
    LayerActs<T>& acts = cur_->layers[l];
    const LayerOffsets& offsets = layout_.layers[l];
    // (recompute_layers: the shared activations become layer l's again)
    if (mem_.recompute_layers) layer_forward(l, acts, recompute_out_, moe_l - (cfg_.is_moe(l) ? 1 : 0));
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
  return dcur;
}

template <class T>
void MoeModel<T>::embed_backward(const T* dx) {
  const int N = cur_->B * cur_->Tn, d = cfg_.d_model;
  T* gemb = gb() + layout_.embed;
  for (int n = 0; n < N; ++n) {
    T* row = gemb + (size_t)cur_->inputs[n] * d;
    const T* g = dx + (size_t)n * d;
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
    const int32_t* b = cur_->layers[l].moe.bounds;  // (null outside the stage)
    for (int e = 0; e < E; ++e) c.push_back(b ? b[e + 1] - b[e] : 0);
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
