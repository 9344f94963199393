// defines: ExpertViews, view_seed, lowrank_factors, set_lowrank_factors
#include "sync/expert_views.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "model/expert_slices.hpp"        // defines: expert_offset, expert_act_of
#include "model/ternary_view.hpp"         // defines: ternary_view_from_master, ternary_expert_from_wire
#include "parallel/expert_placement.hpp"  // defines: expert_home
#include "util/hash_rng.hpp"              // defines: splitmix64

namespace px {

namespace {

template <class T>
T take(const uint8_t*& p, const uint8_t* end, const char* what) {
  if ((size_t)(end - p) < sizeof(T))
    throw std::invalid_argument(std::string("view message truncated in ") + what);
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

template <class Fn>
void for_each_matrix(std::vector<LowrankExpertView>& views, Fn fn) {
  for (auto& v : views)
    for (LowrankMatrix* m : {&v.w1, &v.w3, &v.w2})
      if (m->rank > 0) fn(*m);
}

}  // namespace

uint64_t view_seed(const Config& cfg, int moe_layer, int expert, int64_t step) {
  return splitmix64(splitmix64((uint64_t)cfg.train.seed ^ 0x766965775f736565ull) ^
                    ((uint64_t)step << 32 | (uint64_t)moe_layer << 16 | (uint64_t)expert));
}

std::vector<float> lowrank_factors(const std::vector<LowrankExpertView>& views) {
  std::vector<float> f;
  for_each_matrix(const_cast<std::vector<LowrankExpertView>&>(views), [&](LowrankMatrix& m) {
    f.insert(f.end(), m.U.begin(), m.U.end());
    f.insert(f.end(), m.V.begin(), m.V.end());
  });
  return f;
}

void set_lowrank_factors(std::vector<LowrankExpertView>& views, const std::vector<float>& f) {
  size_t o = 0;
  for_each_matrix(views, [&](LowrankMatrix& m) {
    if (o + m.U.size() + m.V.size() > f.size())
      throw std::invalid_argument("low-rank factors: fewer values than the surrogates hold");
    std::copy(f.begin() + o, f.begin() + o + m.U.size(), m.U.begin());
    o += m.U.size();
    std::copy(f.begin() + o, f.begin() + o + m.V.size(), m.V.begin());
    o += m.V.size();
  });
  if (o != f.size()) throw std::invalid_argument("low-rank factors: more values than the surrogates hold");
}

ExpertViews::ExpertViews(const Config& cfg, const ParamLayout& layout, const Topology& topo,
                         float* experts_arena)
    : cfg_(cfg), layout_(layout), lowrank_(cfg.experts.view == ViewKind::LOWRANK) {
  const ModelConfig& mc = cfg.model;
  const int E = mc.n_experts;
  slot_.assign((size_t)mc.moe_layers() * E, -1);
  for (int m = 0; m < mc.moe_layers(); ++m)
    for (int e = 0; e < E; ++e) {
      if (expert_home(topo, m, e, E) == topo.world_rank) continue;
      float* W1 = experts_arena + expert_offset(mc, layout, m, e, 0);
      float* W3 = mc.expert_act == ExpertActKind::SWIGLU
                      ? experts_arena + expert_offset(mc, layout, m, e, 1) : nullptr;
      float* W2 = experts_arena + expert_offset(mc, layout, m, e, 2);
      if (lowrank_) {
        slot_[(size_t)m * E + e] = (int)lr_.size();
        lr_.push_back(lowrank_view_from_master((const float*)W1, (const float*)W3, (const float*)W2,
                                               mc.d_model, mc.expert_hidden, expert_act_of(mc),
                                               cfg.experts.surrogate_rank, view_seed(cfg, m, e, 0)));
        lr_.back().dequantize(W1, W3, W2);
      } else {
        slot_[(size_t)m * E + e] = 0;
        ternary_view_from_master((const float*)W1, (const float*)W3, (const float*)W2, mc.d_model,
                                 mc.expert_hidden, expert_act_of(mc))
            .dequantize(W1, W3, W2);
      }
    }
}

void ExpertViews::rehome(const Topology& old, float* experts_arena) {
  const ModelConfig& mc = cfg_.model;
  for (int m = 0; m < mc.moe_layers(); ++m)
    for (int e = 0; e < mc.n_experts; ++e) {
      if (slot_[(size_t)m * mc.n_experts + e] < 0 || expert_home(old, m, e, mc.n_experts) != old.world_rank)
        continue;
      float* W1 = experts_arena + expert_offset(mc, layout_, m, e, 0);
      float* W3 = mc.expert_act == ExpertActKind::SWIGLU ? experts_arena + expert_offset(mc, layout_, m, e, 1)
                                                         : nullptr;
      float* W2 = experts_arena + expert_offset(mc, layout_, m, e, 2);
      ternary_view_from_master((const float*)W1, (const float*)W3, (const float*)W2, mc.d_model,
                               mc.expert_hidden, expert_act_of(mc))
          .dequantize(W1, W3, W2);
    }
}

int ExpertViews::every() const {
  return lowrank_ ? cfg_.experts.surrogate_every : cfg_.experts.snapshot_every;
}

void ExpertViews::apply(const uint8_t* bytes, size_t size, float* experts_arena) {
  const ModelConfig& mc = cfg_.model;
  const uint8_t *p = bytes, *end = bytes + size;
  const uint32_t n = take<uint32_t>(p, end, "the expert count");
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t m = take<int32_t>(p, end, "an expert id"), e = take<int32_t>(p, end, "an expert id");
    const uint32_t len = take<uint32_t>(p, end, "an expert length");
    const std::string who = "(" + std::to_string(m) + ", " + std::to_string(e) + ")";
    if (m < 0 || m >= mc.moe_layers() || e < 0 || e >= mc.n_experts)
      throw std::invalid_argument("view message names expert " + who + " outside the model");
    const int slot = slot_[(size_t)m * mc.n_experts + e];
    if (slot < 0) throw std::invalid_argument("view message for expert " + who + ", homed here");
    if ((size_t)(end - p) < len) throw std::invalid_argument("view message truncated in a view");
    float* W1 = experts_arena + expert_offset(mc, layout_, m, e, 0);
    float* W3 = mc.expert_act == ExpertActKind::SWIGLU ? experts_arena + expert_offset(mc, layout_, m, e, 1)
                                                       : nullptr;
    float* W2 = experts_arena + expert_offset(mc, layout_, m, e, 2);
    if (lowrank_) {
      LowrankExpertView delta = lowrank_expert_from_wire(p, len);
      if (delta.d != mc.d_model || delta.h != mc.expert_hidden || delta.kind != expert_act_of(mc))
        throw std::invalid_argument("view delta of expert " + who + " has another shape or activation");
      lowrank_expert_add(lr_[slot], delta);
      lr_[slot].dequantize(W1, W3, W2);
    } else {
      TernaryExpertView v = ternary_expert_from_wire(p, len);
      if (v.d != mc.d_model || v.h != mc.expert_hidden || v.kind != expert_act_of(mc))
        throw std::invalid_argument("view of expert " + who + " has another shape or activation");
      v.dequantize(W1, W3, W2);
    }
    p += len;
  }
  if (p != end) throw std::invalid_argument("view message has trailing bytes");
}

}  // namespace px
