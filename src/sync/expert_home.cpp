// defines: ExpertHome, apply_snapshot, run_sketch_key
#include "sync/expert_home.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "model/ternary_view.hpp"  // defines: ternary_view_from_master, ternary_expert_*_wire
#include "ops/cpu/cpu_ops.hpp"     // defines: adamw_update
#include "optim/adamw.hpp"         // defines: AdamWConfig (betas, eps)
#include "util/hash_rng.hpp"       // defines: splitmix64

namespace px {

namespace {

cpu::ExpertAct act_of(const ModelConfig& mc) {
  return mc.expert_act == ExpertActKind::SWIGLU ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
}

// Offsets of routed expert e of MoE layer m: W1, W3, W2 (which = 0, 1, 2) in an experts arena.
size_t expert_offset(const ModelConfig& mc, const ParamLayout& layout, int m, int e, int which) {
  const LayerOffsets& L = layout.layers[mc.dense_layers + m];
  const size_t wsz = (size_t)mc.d_model * mc.expert_hidden;
  const size_t base = which == 0 ? L.expert_w1 : which == 1 ? L.expert_w3 : L.expert_w2;
  return base + (size_t)e * wsz;
}

template <class T>
T take(const uint8_t*& p, const uint8_t* end, const char* what) {
  if ((size_t)(end - p) < sizeof(T))
    throw std::invalid_argument(std::string("snapshot message truncated in ") + what);
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

}  // namespace

SketchKey run_sketch_key(const Config& cfg) {
  const uint64_t s = (uint64_t)cfg.train.seed;
  return {splitmix64(s ^ 0x50584b45595f305bull), splitmix64(s ^ 0x50584b45595f315bull)};
}

ExpertHome::ExpertHome(const Config& cfg, const ParamLayout& layout, std::vector<ExpertId> owned,
                       const float* experts_arena)
    : cfg_(cfg), layout_(layout), owned_(std::move(owned)), d_(cfg.model.d_model),
      h_(cfg.model.expert_hidden), swiglu_(cfg.model.expert_act == ExpertActKind::SWIGLU),
      per_((size_t)(swiglu_ ? 3 : 2) * d_ * h_), masters_(owned_.size() * per_),
      grads_(owned_.size() * per_, 0.f), m_(owned_.size() * per_, 0.f),
      v_(owned_.size() * per_, 0.f),
      sketches_(d_, h_, act_of(cfg.model), run_sketch_key(cfg), cfg.sketch.tokens,
                cfg.sketch.max_staleness, make_slots()) {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    float* dst = masters_.data() + i * per_;
    std::memcpy(dst, experts_arena + arena_off((int)i, 0), wsz * 4);
    if (swiglu_) std::memcpy(dst + wsz, experts_arena + arena_off((int)i, 1), wsz * 4);
    std::memcpy(dst + per_ - wsz, experts_arena + arena_off((int)i, 2), wsz * 4);
  }
}

size_t ExpertHome::arena_off(int i, int which) const {
  return expert_offset(cfg_.model, layout_, owned_[i].moe_layer, owned_[i].expert, which);
}

std::vector<HomeExpertSlot> ExpertHome::make_slots() {
  std::vector<HomeExpertSlot> slots;
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    float* w = masters_.data() + i * per_;
    float* g = grads_.data() + i * per_;
    slots.push_back({owned_[i].moe_layer, owned_[i].expert, w, swiglu_ ? w + wsz : nullptr,
                     w + per_ - wsz, g, swiglu_ ? g + wsz : nullptr, g + per_ - wsz});
  }
  return slots;
}

void ExpertHome::add_local_grads(const float* grads_arena) {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    float* g = grads_.data() + i * per_;
    const int parts = swiglu_ ? 3 : 2;
    for (int k = 0; k < parts; ++k) {
      const int which = k == parts - 1 ? 2 : k;
      const float* src = grads_arena + arena_off((int)i, which);
      float* dst = g + (size_t)k * wsz;
      for (size_t j = 0; j < wsz; ++j) dst[j] += src[j];
    }
  }
}

void ExpertHome::update(double lr, double divisor) {
  sketches_.accumulate();
  const bool any = std::any_of(grads_.begin(), grads_.end(), [](float g) { return g != 0.f; });
  // no gradient arrived (e.g. a worker under the adapter signal): no step, so weight decay
  // does not shrink masters that nothing trains
  if (!any || owned_.empty()) return;
  ++steps_;
  const float inv = (float)(1.0 / divisor);
  double ss = 0;
  for (float& g : grads_) {
    g *= inv;
    ss += (double)g * g;
  }
  const double clip = cfg_.train.grad_clip, norm = std::sqrt(ss);
  if (clip > 0 && norm > clip) {
    const float s = (float)(clip / norm);
    for (float& g : grads_) g *= s;
  }
  const float wd = (float)cfg_.train.weight_decay;
  if (cfg_.train.optimizer == OptimizerKind::SGD) {
    for (size_t i = 0; i < masters_.size(); ++i)
      masters_[i] -= (float)lr * (grads_[i] + wd * masters_[i]);
  } else {
    // the per-tensor loop of AdamW (optim/adamw.cpp): the same element operations
    AdamWConfig ac;
    const size_t wsz = (size_t)d_ * h_;
    for (size_t o = 0; o < masters_.size(); o += wsz)
      cpu::adamw_update(masters_.data() + o, grads_.data() + o, m_.data() + o, v_.data() + o,
                        wsz, (float)lr, (float)ac.beta1, (float)ac.beta2, (float)ac.eps, wd,
                        steps_);
  }
  std::fill(grads_.begin(), grads_.end(), 0.f);
}

void ExpertHome::fold_deltas(const uint8_t* bytes, size_t size) {
  if (delta_sum_.empty()) {
    delta_sum_.assign(masters_.size(), 0.0);
    delta_tok_.assign(owned_.size(), 0);
  }
  const uint8_t *p = bytes, *end = bytes + size;
  const uint32_t n = take<uint32_t>(p, end, "the delta count");
  const size_t wsz = (size_t)d_ * h_;
  std::vector<float> A, B, D(wsz);
  for (uint32_t c = 0; c < n; ++c) {
    const int32_t m = take<int32_t>(p, end, "an expert id"), e = take<int32_t>(p, end, "an expert id");
    const int64_t tok = take<int64_t>(p, end, "a token count");
    const int32_t r = take<int32_t>(p, end, "a rank");
    size_t i = 0;
    while (i < owned_.size() && !(owned_[i].moe_layer == m && owned_[i].expert == e)) ++i;
    if (i == owned_.size() || r < 1 || tok < 0)
      throw std::invalid_argument("adapter delta for expert (" + std::to_string(m) + ", " +
                                  std::to_string(e) + ") that is not homed here, or a bad rank");
    const int parts = swiglu_ ? 3 : 2;
    for (int k = 0; k < parts; ++k) {
      const bool down = k == parts - 1;  // W2 [h, d]
      const int in = down ? h_ : d_, out = down ? d_ : h_;
      A.resize((size_t)in * r);
      B.resize((size_t)r * out);
      if ((size_t)(end - p) < 4 * (A.size() + B.size()))
        throw std::invalid_argument("adapter delta message truncated");
      std::memcpy(A.data(), p, 4 * A.size());
      std::memcpy(B.data(), p + 4 * A.size(), 4 * B.size());
      p += 4 * (A.size() + B.size());
      cpu::matmul(D.data(), A.data(), B.data(), in, r, out, false, false, false);
      double* dst = delta_sum_.data() + i * per_ + (size_t)k * wsz;
      for (size_t j = 0; j < wsz; ++j) dst[j] += (double)tok * D[j];
    }
    delta_tok_[i] += tok;
  }
  if (p != end) throw std::invalid_argument("adapter delta message has trailing bytes");
}

void ExpertHome::apply_deltas() {
  if (delta_sum_.empty()) return;
  for (size_t i = 0; i < owned_.size(); ++i) {
    if (delta_tok_[i] > 0) {
      const double inv = 1.0 / (double)delta_tok_[i];
      for (size_t j = 0; j < per_; ++j) masters_[i * per_ + j] += (float)(delta_sum_[i * per_ + j] * inv);
    }
    delta_tok_[i] = 0;
  }
  std::fill(delta_sum_.begin(), delta_sum_.end(), 0.0);
}

void ExpertHome::write_masters(float* experts_arena) const {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const float* w = masters_.data() + i * per_;
    std::memcpy(experts_arena + arena_off((int)i, 0), w, wsz * 4);
    if (swiglu_) std::memcpy(experts_arena + arena_off((int)i, 1), w + wsz, wsz * 4);
    std::memcpy(experts_arena + arena_off((int)i, 2), w + per_ - wsz, wsz * 4);
  }
}

std::vector<uint8_t> ExpertHome::snapshot() const {
  std::vector<uint8_t> out(4);
  const uint32_t n = (uint32_t)owned_.size();
  std::memcpy(out.data(), &n, 4);
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const float* w = masters_.data() + i * per_;
    TernaryExpertView v = ternary_view_from_master(w, swiglu_ ? w + wsz : (const float*)nullptr,
                                                   w + per_ - wsz, d_, h_, act_of(cfg_.model));
    std::vector<uint8_t> wire = ternary_expert_to_wire(v);
    const int32_t head[2] = {owned_[i].moe_layer, owned_[i].expert};
    const uint32_t bytes = (uint32_t)wire.size();
    const size_t o = out.size();
    out.resize(o + 12 + wire.size());
    std::memcpy(out.data() + o, head, 8);
    std::memcpy(out.data() + o + 8, &bytes, 4);
    std::memcpy(out.data() + o + 12, wire.data(), wire.size());
  }
  return out;
}

void apply_snapshot(const uint8_t* bytes, size_t size, const ModelConfig& mc,
                    const ParamLayout& layout, float* experts_arena) {
  const uint8_t *p = bytes, *end = bytes + size;
  const uint32_t n = take<uint32_t>(p, end, "the expert count");
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t m = take<int32_t>(p, end, "an expert id"), e = take<int32_t>(p, end, "an expert id");
    const uint32_t len = take<uint32_t>(p, end, "an expert length");
    if (m < 0 || m >= mc.moe_layers() || e < 0 || e >= mc.n_experts)
      throw std::invalid_argument("snapshot message names expert (" + std::to_string(m) + ", " +
                                  std::to_string(e) + ") outside the model");
    if ((size_t)(end - p) < len) throw std::invalid_argument("snapshot message truncated in a view");
    TernaryExpertView v = ternary_expert_from_wire(p, len);
    if (v.d != mc.d_model || v.h != mc.expert_hidden || v.kind != act_of(mc))
      throw std::invalid_argument("snapshot view of expert (" + std::to_string(m) + ", " +
                                  std::to_string(e) + ") has another shape or activation");
    float* W3 = v.kind == cpu::EXPERT_ACT_SWIGLU ? experts_arena + expert_offset(mc, layout, m, e, 1)
                                                 : nullptr;
    v.dequantize(experts_arena + expert_offset(mc, layout, m, e, 0), W3,
                 experts_arena + expert_offset(mc, layout, m, e, 2));
    p += len;
  }
  if (p != end) throw std::invalid_argument("snapshot message has trailing bytes");
}

}  // namespace px

namespace px {
void apply_initial_views(const Config& cfg, const ParamLayout& layout, const Topology& topo,
                         float* experts_arena) {
  const ModelConfig& mc = cfg.model;
  const bool swiglu = mc.expert_act == ExpertActKind::SWIGLU;
  for (int m = 0; m < mc.moe_layers(); ++m)
    for (int e = 0; e < mc.n_experts; ++e) {
      if (expert_home(topo, m, e, mc.n_experts) == topo.world_rank) continue;
      float* W1 = experts_arena + expert_offset(mc, layout, m, e, 0);
      float* W3 = swiglu ? experts_arena + expert_offset(mc, layout, m, e, 1) : nullptr;
      float* W2 = experts_arena + expert_offset(mc, layout, m, e, 2);
      ternary_view_from_master(W1, (const float*)W3, W2, mc.d_model, mc.expert_hidden, act_of(mc))
          .dequantize(W1, W3, W2);
    }
}
}  // namespace px
