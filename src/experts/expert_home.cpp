// defines: ExpertHome, run_sketch_key
#include "experts/expert_home.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include <map>

#include "checkpoint/resume.hpp"  // defines: saved_topology
#include "model/expert_slices.hpp"  // defines: expert_offset, expert_act_of
#include "model/full_view.hpp"     // defines: full_view_from_master, full_expert_to_wire
#include "model/ternary_view.hpp"  // defines: ternary_view_from_master, ternary_expert_*_wire
#include "experts/expert_views.hpp"   // defines: view_seed, lowrank_factors
#include "experts/home_device.hpp"  // defines: make_home_device
#include "util/byte_reader.hpp"    // defines: take_field
#include "util/errors.hpp"         // defines: UserError
#include "util/hash_rng.hpp"       // defines: splitmix64

namespace px {

namespace {

template <class T>
T take(const uint8_t*& p, const uint8_t* end, const char* what) {
  return take_field<T>(p, end, "adapter delta message", what);
}

}  // namespace

SketchKey run_sketch_key(const Config& cfg) {
  const uint64_t s = (uint64_t)cfg.train.seed;
  return {splitmix64(s ^ 0x50584b45595f305bull), splitmix64(s ^ 0x50584b45595f315bull)};
}

ExpertHome::ExpertHome(const Config& cfg, const ParamLayout& layout, std::vector<ExpertId> owned,
                       const ExpertSource& start)
    : cfg_(cfg), layout_(layout), owned_(std::move(owned)), d_(cfg.model.d_model),
      h_(cfg.model.expert_hidden), swiglu_(cfg.model.expert_act == ExpertActKind::SWIGLU),
      native_(cfg.experts.ternary_native), per_((size_t)(swiglu_ ? 3 : 2) * d_ * h_),
      masters_(owned_.size() * per_), grads_(owned_.size() * per_, 0.f),
      m_(owned_.size() * per_, 0.f), v_(owned_.size() * per_, 0.f),
      forward_(native_ ? owned_.size() * per_ : 0),
      sketches_(d_, h_, expert_act_of(cfg.model), run_sketch_key(cfg), cfg.sketch.tokens,
                cfg.sketch.max_staleness, make_slots()) {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    float* dst = masters_.data() + i * per_;
    const float *W1, *W3, *W2;
    start.get(owned_[i].moe_layer, owned_[i].expert, &W1, &W3, &W2);
    std::memcpy(dst, W1, wsz * 4);
    if (swiglu_) std::memcpy(dst + wsz, W3, wsz * 4);
    std::memcpy(dst + per_ - wsz, W2, wsz * 4);
    if (cfg.experts.view == ViewKind::LOWRANK)  // the islands fit the same surrogate at start
      surrogates_.push_back(lowrank_view_from_master(
          dst, swiglu_ ? dst + wsz : (const float*)nullptr, dst + per_ - wsz, d_, h_,
          expert_act_of(cfg.model), cfg.experts.surrogate_rank,
          view_seed(cfg, owned_[i].moe_layer, owned_[i].expert, 0)));
  }
  refresh_forward();
  device_ = make_home_device(cfg, owned_.size(),
                             {masters_.data(), grads_.data(), m_.data(), v_.data(),
                              masters_.size(), make_slots()});
  // the state lives there from now on (the "cpu" device: these vectors); the sketches'
  // rows go there
  device_->upload(masters_.data(), grads_.data(), m_.data(), v_.data());
  sketches_.set_row_sink([this](int slot, const float* X, const float* dY, int rows) {
    device_->accumulate_rows(slot, X, dY, rows);
  });
}

size_t ExpertHome::arena_off(int i, int which) const {
  return expert_offset(cfg_.model, layout_, owned_[i].moe_layer, owned_[i].expert, which);
}

std::vector<HomeExpertSlot> ExpertHome::make_slots() {
  std::vector<HomeExpertSlot> slots;
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    // the home recomputes a sketch's gradient with the weights the islands computed with
    float* w = (native_ ? forward_.data() : masters_.data()) + i * per_;
    float* g = grads_.data() + i * per_;
    slots.push_back({owned_[i].moe_layer, owned_[i].expert, w, swiglu_ ? w + wsz : nullptr,
                     w + per_ - wsz, g, swiglu_ ? g + wsz : nullptr, g + per_ - wsz});
  }
  return slots;
}

size_t ExpertHome::index_of(int moe_layer, int expert) const {
  for (size_t i = 0; i < owned_.size(); ++i)
    if (owned_[i].moe_layer == moe_layer && owned_[i].expert == expert) return i;
  throw std::invalid_argument("expert (" + std::to_string(moe_layer) + ", " +
                              std::to_string(expert) + ") is not homed here");
}

void ExpertHome::add_expert_grad(int moe_layer, int expert, const float* dW1, const float* dW3,
                                 const float* dW2) {
  const size_t wsz = (size_t)d_ * h_, i = index_of(moe_layer, expert);
  device_->add_grad(i * per_, dW1, wsz);
  if (swiglu_) device_->add_grad(i * per_ + wsz, dW3, wsz);
  device_->add_grad(i * per_ + per_ - wsz, dW2, wsz);
}

void ExpertHome::update(double lr, double divisor) {
  sketches_.accumulate();  // (the rows' gradients go to the home device)
  // no gradient arrived (e.g. a worker under the adapter signal): no step, so weight decay
  // does not shrink masters that nothing trains
  if (owned_.empty() || !device_->any_grad()) return;
  const double ss = device_->scale_grads_sum_squares((float)(1.0 / divisor));
  const double clip = cfg_.train.grad_clip, norm = std::sqrt(ss);
  if (!std::isfinite(norm)) {  // a diverging island's contribution: the update is skipped
    ++skipped_updates_;
    device_->zero_grads();
    return;
  }
  ++steps_;
  const float wd = (float)cfg_.train.weight_decay;
  if (clip > 0 && norm > clip) device_->scale_grads((float)(clip / norm));
  // (SGD: the "cpu" home device only, the config checks)
  if (cfg_.train.optimizer == OptimizerKind::SGD) device_->sgd_step((float)lr, wd);
  else device_->adamw_step((float)lr, wd, steps_);  // optim/adamw.cpp's per-tensor loop
  device_->zero_grads();
  device_->download(masters_.data(), nullptr, nullptr, nullptr);  // the host copy
  refresh_forward();
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
    const size_t i = index_of(m, e);
    if (r < 1 || tok < 0)
      throw std::invalid_argument("adapter delta for expert (" + std::to_string(m) + ", " +
                                  std::to_string(e) + ") with rank " + std::to_string(r) +
                                  " and " + std::to_string(tok) + " tokens");
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
  refresh_forward();
}

void ExpertHome::refresh_forward() {
  if (!native_) return;
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const float* w = masters_.data() + i * per_;
    float* f = forward_.data() + i * per_;
    const TernaryExpertView view = ternary_view_from_master(w, swiglu_ ? w + wsz : nullptr,
                                                            w + per_ - wsz, d_, h_,
                                                            expert_act_of(cfg_.model));
    view.dequantize(f, swiglu_ ? f + wsz : nullptr, f + per_ - wsz);
  }
}

void ExpertHome::forward_weights(int moe_layer, int expert, const float** W1, const float** W3,
                                 const float** W2) const {
  const size_t wsz = (size_t)d_ * h_;
  const float* w = forward_of(index_of(moe_layer, expert));
  *W1 = w;
  *W3 = swiglu_ ? w + wsz : nullptr;
  *W2 = w + per_ - wsz;
}

void ExpertHome::write_forward_weights(float* experts_arena) const {
  const size_t wsz = (size_t)d_ * h_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const float* w = forward_of(i);
    std::memcpy(experts_arena + arena_off((int)i, 0), w, wsz * 4);
    if (swiglu_) std::memcpy(experts_arena + arena_off((int)i, 1), w + wsz, wsz * 4);
    std::memcpy(experts_arena + arena_off((int)i, 2), w + per_ - wsz, wsz * 4);
  }
}

std::vector<uint8_t> ExpertHome::view_message(int64_t step) {
  std::vector<uint8_t> out(4);
  const uint32_t n = (uint32_t)owned_.size();
  std::memcpy(out.data(), &n, 4);
  const size_t wsz = (size_t)d_ * h_;
  const ViewKind kind = cfg_.experts.view;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const float* w = masters_.data() + i * per_;
    const float* w3 = swiglu_ ? w + wsz : nullptr;
    std::vector<uint8_t> wire;
    if (kind == ViewKind::FULL) {
      wire = full_expert_to_wire(full_view_from_master(w, w3, w + per_ - wsz, d_, h_, expert_act_of(cfg_.model)));
    } else if (kind == ViewKind::LOWRANK) {
      const LowrankExpertView delta = lowrank_expert_delta(
          w, w3, w + per_ - wsz, surrogates_[i], cfg_.experts.update_rank,
          view_seed(cfg_, owned_[i].moe_layer, owned_[i].expert, step));
      lowrank_expert_add(surrogates_[i], delta);
      wire = lowrank_expert_to_wire(delta);
    } else {
      wire = ternary_expert_to_wire(
          ternary_view_from_master(w, w3, w + per_ - wsz, d_, h_, expert_act_of(cfg_.model)));
    }
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

void ExpertHome::save(ParallelCheckpointWriter& w) {
  device_->download(masters_.data(), grads_.data(), m_.data(), v_.data());
  w.add_borrowed("home/masters", as_span(masters_));
  w.add_borrowed("home/grad_sum", as_span(grads_));
  w.add_borrowed("home/m", as_span(m_));
  w.add_borrowed("home/v", as_span(v_));
  if (!surrogates_.empty()) w.add("home/surrogates", as_span(lowrank_factors(surrogates_)));
  const std::vector<int64_t> st = {step_, steps_, (int64_t)owned_.size()};
  w.add("home/step_updates_experts", as_span(st));
}

void ExpertHome::load(const StateReader& r) {
  if (r.rehoming()) load_rehomed(r);
  else load_own(r);
  device_->upload(masters_.data(), grads_.data(), m_.data(), v_.data());
}

void ExpertHome::load_own(const StateReader& r) {
  const auto st = r.read<int64_t>("home/step_updates_experts", 3);
  if (st[2] != (int64_t)owned_.size())
    throw UserError(fmt::format("{}: rank {} homed {} experts there, {} now", r.path(), r.rank(),
                                st[2], owned_.size()));
  // in place: the sketch home points into them
  for (auto [name, v] : {std::pair{"home/masters", &masters_}, {"home/grad_sum", &grads_},
                         {"home/m", &m_}, {"home/v", &v_}})
    r.read_into<float>(name, std::span<float>(*v));
  step_ = st[0];
  steps_ = (int)st[1];
  const size_t factors = lowrank_factors(surrogates_).size();
  if (factors) set_lowrank_factors(surrogates_, r.read<float>("home/surrogates", factors));
  refresh_forward();
}

void ExpertHome::load_rehomed(const StateReader& r) {
  const ModelConfig& mc = cfg_.model;
  step_ = r.read_of<int64_t>(0, "state/step_cursor_tokens_island_optsteps", 5)[0];
  struct OldHome {
    std::vector<float> masters, grads, m, v;
    std::vector<ExpertId> owned;
  };
  std::map<int, OldHome> olds;  // old home rank -> its arrays
  int steps = 0;
  const Topology old_topology = saved_topology(r.path(), 0);
  for (size_t i = 0; i < owned_.size(); ++i) {
    const ExpertId id = owned_[i];
    const int rank = expert_home(old_topology, id.moe_layer, id.expert, mc.n_experts);
    auto it = olds.find(rank);
    if (it == olds.end()) {
      OldHome o;
      o.owned = experts_homed_at(saved_topology(r.path(), rank), rank, mc.moe_layers(), mc.n_experts);
      const size_t n = o.owned.size() * per_;
      o.masters = r.read_of<float>(rank, "home/masters", n);
      o.grads = r.read_of<float>(rank, "home/grad_sum", n);
      o.m = r.read_of<float>(rank, "home/m", n);
      o.v = r.read_of<float>(rank, "home/v", n);
      steps = std::max(steps, (int)r.read_of<int64_t>(rank, "home/step_updates_experts", 3)[1]);
      it = olds.emplace(rank, std::move(o)).first;
    }
    const OldHome& o = it->second;
    const size_t j = (size_t)(std::find(o.owned.begin(), o.owned.end(), id) - o.owned.begin());
    for (auto [src, dst] : {std::pair{&o.masters, &masters_}, {&o.grads, &grads_}, {&o.m, &m_},
                            {&o.v, &v_}})
      std::copy(src->begin() + j * per_, src->begin() + (j + 1) * per_, dst->begin() + i * per_);
  }
  steps_ = steps;
  refresh_forward();
}

}  // namespace px
