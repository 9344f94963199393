// defines: ExpertViews, view_seed, lowrank_factors, set_lowrank_factors
#include "experts/expert_views.hpp"

#include "checkpoint/resume.hpp"  // defines: saved_topology

#include <cstring>

#include <fmt/format.h>
#include <stdexcept>
#include <string>

#include "model/expert_slices.hpp"        // defines: expert_offset, expert_act_of
#include "model/full_view.hpp"            // defines: full_view_from_master, full_expert_from_wire
#include "model/ternary_view.hpp"         // defines: ternary_view_from_master, ternary_expert_from_wire
#include "parallel/expert_placement.hpp"  // defines: expert_home
#include "parallel/pipeline_split.hpp"    // defines: PipelineSplit
#include "util/byte_reader.hpp"    // defines: take_field
#include "util/errors.hpp"         // defines: UserError
#include "util/hash_rng.hpp"              // defines: splitmix64

namespace px {

namespace {

template <class T>
T take(const uint8_t*& p, const uint8_t* end, const char* what) {
  return take_field<T>(p, end, "view message", what);
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

std::vector<uint8_t> view_message_part(const std::vector<uint8_t>& msg, MoeLayerRange layers) {
  const uint8_t *p = msg.data(), *end = msg.data() + msg.size();
  std::vector<uint8_t> out(4, 0);
  uint32_t kept = 0;
  const uint32_t n = take<uint32_t>(p, end, "the expert count");
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* entry = p;
    const int32_t m = take<int32_t>(p, end, "an expert id");
    take<int32_t>(p, end, "an expert id");
    const uint32_t len = take<uint32_t>(p, end, "an expert length");
    if ((size_t)(end - p) < len) throw std::invalid_argument("view message truncated in a view");
    p += len;
    if (!layers.holds(m)) continue;
    out.insert(out.end(), entry, p);
    ++kept;
  }
  std::memcpy(out.data(), &kept, 4);
  return out;
}

ExpertViews::ExpertViews(const Config& cfg, const Topology& topo, const ExpertSource& start)
    : cfg_(cfg), kind_(cfg.experts.view),
      held_(PipelineSplit(cfg).held_moe_layers(topo)) {
  const ModelConfig& mc = cfg.model;
  const int E = mc.n_experts;
  slot_.assign((size_t)mc.moe_layers() * E, -1);
  for (int m = held_.lo; m < held_.hi; ++m)
    for (int e = 0; e < E; ++e) {
      if (expert_home(topo, m, e, E) == topo.world_rank) continue;
      const float *W1, *W3, *W2;
      start.get(m, e, &W1, &W3, &W2);
      slot_[(size_t)m * E + e] = (int)ids_.size();
      ids_.push_back({m, e});
      if (kind_ == ViewKind::LOWRANK)
        lowrank_views_.push_back(lowrank_view_from_master(W1, W3, W2, mc.d_model, mc.expert_hidden,
                                               expert_act_of(mc), cfg.experts.surrogate_rank,
                                               view_seed(cfg, m, e, 0)));
      else if (kind_ == ViewKind::FULL)
        full_views_.push_back(full_view_from_master(W1, W3, W2, mc.d_model, mc.expert_hidden,
                                                    expert_act_of(mc)));
      else
        ternary_views_.push_back(ternary_view_from_master(W1, W3, W2, mc.d_model, mc.expert_hidden,
                                               expert_act_of(mc)));
    }
}

void ExpertViews::dequantize(int m, int e, float* W1, float* W3, float* W2) const {
  const int s = slot(m, e);
  if (s < 0) throw std::logic_error("ExpertViews::dequantize: expert homed here");
  if (kind_ == ViewKind::LOWRANK) lowrank_views_[s].dequantize(W1, W3, W2);
  else if (kind_ == ViewKind::FULL) full_views_[s].dequantize(W1, W3, W2);
  else ternary_views_[s].dequantize(W1, W3, W2);
}

void ExpertViews::set_from_master(int m, int e, const float* W1, const float* W3, const float* W2) {
  const int s = slot(m, e);
  if (s < 0 || kind_ == ViewKind::LOWRANK)
    throw std::logic_error("ExpertViews::set_from_master: not a ternary or full view");
  const ModelConfig& mc = cfg_.model;
  if (kind_ == ViewKind::FULL)
    full_views_[s] = full_view_from_master(W1, W3, W2, mc.d_model, mc.expert_hidden, expert_act_of(mc));
  else
    ternary_views_[s] = ternary_view_from_master(W1, W3, W2, mc.d_model, mc.expert_hidden, expert_act_of(mc));
}

int ExpertViews::every() const {
  return kind_ == ViewKind::LOWRANK ? cfg_.experts.surrogate_every : cfg_.experts.snapshot_every;
}

size_t ExpertViews::bytes() const {
  size_t b = 0;
  for (const auto& v : ternary_views_)
    for (const TernaryMatrix* m : {&v.w1, &v.w3, &v.w2}) b += 4 * (m->scale.size() + m->codes.size());
  for (const auto& v : lowrank_views_)
    for (const LowrankMatrix* m : {&v.w1, &v.w3, &v.w2}) b += 4 * (m->U.size() + m->V.size());
  for (const auto& v : full_views_) b += v.memory_bytes();
  return b;
}

std::vector<uint8_t> ExpertViews::wire_of(size_t s) const {
  if (kind_ == ViewKind::LOWRANK) return lowrank_expert_to_wire(lowrank_views_[s]);
  if (kind_ == ViewKind::FULL) return full_expert_to_wire(full_views_[s]);
  return ternary_expert_to_wire(ternary_views_[s]);
}

void ExpertViews::set_from_wire(size_t s, const uint8_t* p, size_t len) {
  if (kind_ == ViewKind::LOWRANK) lowrank_views_[s] = lowrank_expert_from_wire(p, len);
  else if (kind_ == ViewKind::FULL) full_views_[s] = full_expert_from_wire(p, len);
  else ternary_views_[s] = ternary_expert_from_wire(p, len);
}

void ExpertViews::apply(const uint8_t* bytes, size_t size) {
  const ModelConfig& mc = cfg_.model;
  const uint8_t *p = bytes, *end = bytes + size;
  const uint32_t n = take<uint32_t>(p, end, "the expert count");
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t m = take<int32_t>(p, end, "an expert id"), e = take<int32_t>(p, end, "an expert id");
    const uint32_t len = take<uint32_t>(p, end, "an expert length");
    const std::string who = fmt::format("({}, {})", m, e);
    if (m < 0 || m >= mc.moe_layers() || e < 0 || e >= mc.n_experts)
      throw std::invalid_argument("view message names expert " + who + " outside the model");
    const int s = slot(m, e);
    if (s < 0)
      throw std::invalid_argument("view message for expert " + who +
                                  (held_.holds(m) ? ", homed here" : ", of another pipeline stage's layers"));
    if ((size_t)(end - p) < len) throw std::invalid_argument("view message truncated in a view");
    if (kind_ == ViewKind::LOWRANK) {
      LowrankExpertView delta = lowrank_expert_from_wire(p, len);
      if (delta.d != mc.d_model || delta.h != mc.expert_hidden || delta.kind != expert_act_of(mc))
        throw std::invalid_argument("view delta of expert " + who + " has another shape or activation");
      lowrank_expert_add(lowrank_views_[s], delta);
    } else if (kind_ == ViewKind::FULL) {
      FullExpertView v = full_expert_from_wire(p, len);
      if (v.d != mc.d_model || v.h != mc.expert_hidden || v.kind != expert_act_of(mc))
        throw std::invalid_argument("view of expert " + who + " has another shape or activation");
      full_views_[s] = std::move(v);
    } else {
      TernaryExpertView v = ternary_expert_from_wire(p, len);
      if (v.d != mc.d_model || v.h != mc.expert_hidden || v.kind != expert_act_of(mc))
        throw std::invalid_argument("view of expert " + who + " has another shape or activation");
      ternary_views_[s] = std::move(v);
    }
    p += len;
  }
  if (p != end) throw std::invalid_argument("view message has trailing bytes");
}

std::vector<int32_t> ExpertViews::state() const {
  std::vector<int32_t> w;
  for (size_t s = 0; s < ids_.size(); ++s) {
    const std::vector<uint8_t> wire = wire_of(s);
    w.push_back(ids_[s].moe_layer);
    w.push_back(ids_[s].expert);
    w.push_back((int32_t)wire.size());
    const size_t o = w.size();
    w.resize(o + (wire.size() + 3) / 4, 0);
    std::memcpy(w.data() + o, wire.data(), wire.size());
  }
  return w;
}

int ExpertViews::set_state(const std::vector<int32_t>& w) {
  int set = 0;
  size_t i = 0;
  while (i < w.size()) {
    if (i + 3 > w.size()) throw std::invalid_argument("view state truncated");
    const int m = w[i], e = w[i + 1];
    const size_t len = (size_t)w[i + 2], words = (len + 3) / 4;
    if (i + 3 + words > w.size() || m < 0 || m >= cfg_.model.moe_layers() || e < 0 ||
        e >= cfg_.model.n_experts)
      throw std::invalid_argument("view state malformed");
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data() + i + 3);
    const int s = slot(m, e);
    if (s >= 0) {  // (an expert homed here now, after re-homing, is skipped)
      set_from_wire((size_t)s, p, len);
      ++set;
    }
    i += 3 + words;
  }
  return set;
}

void ExpertViews::save(ParallelCheckpointWriter& w) {
  const std::vector<int32_t> st = state();
  w.add("views/state", as_span(st));
  const std::vector<int64_t> n = {(int64_t)st.size()};
  w.add("views/state_words", as_span(n));
}

void ExpertViews::load(const StateReader& r) {
  const ViewKind saved = r.saved_config().experts.view;
  if (saved != kind_)
    throw UserError(fmt::format("{}: its views are experts.view = \"{}\"; resume with that view, "
                                "not \"{}\"", r.path(), to_string(saved), to_string(kind_)));
  const size_t n = (size_t)r.read<int64_t>("views/state_words", 1)[0];
  set_state(r.read<int32_t>("views/state", n));
  if (r.rehoming()) views_of_old_masters(r);
}

void ExpertViews::views_of_old_masters(const StateReader& r) {
  const ModelConfig& mc = r.saved_config().model;
  const auto mine = experts_homed_at(saved_topology(r.path(), r.rank()), r.rank(),
                                     mc.moe_layers(), mc.n_experts);
  if (mine.empty()) return;
  const size_t wsz = (size_t)mc.d_model * mc.expert_hidden;
  const bool glu = mc.expert_act == ExpertActKind::SWIGLU;
  const size_t per = (glu ? 3 : 2) * wsz;
  const auto masters = r.read<float>("home/masters", mine.size() * per);
  for (size_t i = 0; i < mine.size(); ++i)
    if (remote(mine[i].moe_layer, mine[i].expert)) {
      const float* w = masters.data() + i * per;
      set_from_master(mine[i].moe_layer, mine[i].expert, w, glu ? w + wsz : nullptr, w + per - wsz);
    }
}

}  // namespace px
