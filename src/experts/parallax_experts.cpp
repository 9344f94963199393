// defines: ParallaxExperts
#include "experts/parallax_experts.hpp"

#include "model/expert_slices.hpp"          // defines: expert_act_of
#include "ops/cpu/cpu_ops.hpp"              // defines: expert_ffn_forward, expert_ffn_backward
#include "parallel/expert_placement.hpp"    // defines: expert_home
#include "parallel/pipeline_split.hpp"      // defines: PipelineSplit
#include "sketch/sketch_sample.hpp"         // defines: sketch_sample_rows, sketch_gather
#include "wire/sketch_wire.hpp"             // defines: sketch_encode
#include "experts/expert_home.hpp"             // defines: run_sketch_key
#include "util/hash_rng.hpp"                // defines: splitmix64

namespace px {

namespace {
// One set of routed activations for all layers and slots: each backward recomputes its layer's
// (train.recompute = "experts") or runs after the forward of its layer again ("layers").
bool shared_set(const Config& cfg) {
  return cfg.train.recompute == RecomputeKind::EXPERTS || cfg.train.recompute == RecomputeKind::LAYERS;
}
}  // namespace


double ParallaxExperts::buffer_bytes(const Config& cfg, int max_rows, int moe_layers, int slots) {
  const double rh = (double)max_rows * cfg.model.expert_hidden, dh = (double)cfg.model.d_model * cfg.model.expert_hidden;
  const bool swiglu = expert_act_of(cfg.model) == cpu::EXPERT_ACT_SWIGLU;
  const double sets = shared_set(cfg) ? 1 : (double)moe_layers * slots;
  return 4.0 * (sets * rh * (swiglu ? 3 : 2) + 3 * rh + 6 * dh);
}

ParallaxExperts::ParallaxExperts(const Config& cfg, const Topology& topo, MoeModel<float>& model,
                                 int max_rows, int slots)
    : cfg_(cfg), model_(model), my_rank_(topo.world_rank), n_experts_(cfg.model.n_experts),
      d_(cfg.model.d_model), h_(cfg.model.expert_hidden), data_part_((uint64_t)topo.data_part()),
      adapters_(cfg.experts.signal == ExpertSignalKind::ADAPTERS), key_(run_sketch_key(cfg)),
      held_(PipelineSplit(cfg).held_moe_layers(topo)) {
  const int M = cfg.model.moe_layers();
  for (int m = 0; m < M; ++m)
    for (int e = 0; e < n_experts_; ++e) home_.push_back(expert_home(topo, m, e, n_experts_));
  const size_t per_slot = (size_t)held_.count(), saves = per_slot * slots;
  micro_of_.assign(slots, 0);
  inputs_.assign(saves, nullptr);
  bounds_.assign(saves, std::vector<int32_t>(n_experts_ + 1, 0));
  const size_t rh = (size_t)max_rows * h_;
  recompute_ = cfg.train.recompute == RecomputeKind::EXPERTS;
  const size_t sets = shared_set(cfg) ? 1 : saves;
  pre_w1_.assign(sets, std::vector<float>(rh));
  pre_w3_.assign(sets, std::vector<float>(expert_act_of(cfg.model) == cpu::EXPERT_ACT_SWIGLU ? rh : 0));
  act_.assign(sets, std::vector<float>(rh));
  scratch1_.resize(rh);
  scratch2_.resize(rh);
  scratch3_.resize(rh);
  weight_grad_.resize(3 * (size_t)d_ * h_);
  view_weights_.resize(3 * (size_t)d_ * h_);
}

std::map<int, std::vector<std::vector<uint8_t>>> ParallaxExperts::take_outbox() {
  std::map<int, std::vector<std::vector<uint8_t>>> out;
  out.swap(outbox_);
  return out;
}

void ParallaxExperts::weights(int m, int e, const float** W1, const float** W3, const float** W2) {
  if (homed_here(m, e)) {
    home_src_->forward_weights(m, e, W1, W3, W2);
    return;
  }
  const size_t wsz = (size_t)d_ * h_;
  float *w1 = view_weights_.data(), *w3 = expert_act_of(cfg_.model) == cpu::EXPERT_ACT_SWIGLU ? view_weights_.data() + wsz : nullptr,
        *w2 = view_weights_.data() + 2 * wsz;
  views_->dequantize(m, e, w1, w3, w2);
  if (adapters_src_) adapters_src_->add_to(m, e, w1, w3, w2);
  *W1 = w1;
  *W3 = w3;
  *W2 = w2;
}

void ParallaxExperts::forward(int m, const float* xp, const int32_t* bounds, float* yp) {
  if (!views_) throw std::logic_error("ParallaxExperts: set_sources before the first forward");
  if (!held_.holds(m)) throw std::logic_error("ParallaxExperts: a MoE layer of another stage");
  inputs_[saved(m)] = xp;
  std::copy(bounds, bounds + n_experts_ + 1, bounds_[saved(m)].begin());
  const bool swiglu = expert_act_of(cfg_.model) == cpu::EXPERT_ACT_SWIGLU;
  for (int e = 0; e < n_experts_; ++e) {
    const int r0 = bounds[e], n = bounds[e + 1] - r0;
    if (n == 0) continue;
    const float *W1, *W3, *W2;
    weights(m, e, &W1, &W3, &W2);
    const int32_t seg[2] = {0, n};
    const size_t od = (size_t)r0 * d_, oh = (size_t)r0 * h_;
    const size_t a = set_of(m);
    cpu::expert_ffn_forward<float>(yp + od, pre_w1_[a].data() + oh, swiglu ? pre_w3_[a].data() + oh : nullptr,
                                   act_[a].data() + oh, xp + od, W1, W3, W2, seg, 1, d_, h_,
                                   expert_act_of(cfg_.model));
  }
}

void ParallaxExperts::backward(int m, const float* dyp, float* dxp) {
  const bool swiglu = expert_act_of(cfg_.model) == cpu::EXPERT_ACT_SWIGLU;
  const size_t wsz = (size_t)d_ * h_;
  const auto& bd = bounds_[saved(m)];
  const float* x = inputs_[saved(m)];
  const int micro = micro_of_[slot_];
  for (int e = 0; e < n_experts_; ++e) {
    const int r0 = bd[e], n = bd[e + 1] - r0;
    if (n == 0) continue;
    const float *W1, *W3, *W2;
    weights(m, e, &W1, &W3, &W2);
    const bool mine = homed_here(m, e);
    // weight gradients: of my masters, and with adapters the dense gradient of the view
    // (ExpertAdapters turns it into the adapters' gradients)
    const bool dense = (mine || adapters_) && sink_;
    const int32_t seg[2] = {0, n};
    const size_t od = (size_t)r0 * d_, oh = (size_t)r0 * h_;
    const size_t a = set_of(m);
    if (recompute_)  // this expert's activations again, as its forward computed them (dxp: the
      cpu::expert_ffn_forward<float>(dxp + od, pre_w1_[a].data() + oh,  // outputs' scratch, assigned below)
                                     swiglu ? pre_w3_[a].data() + oh : nullptr, act_[a].data() + oh,
                                     x + od, W1, W3, W2, seg, 1, d_, h_, expert_act_of(cfg_.model));
    if (dense) std::fill(weight_grad_.begin(), weight_grad_.end(), 0.f);
    float* g1 = weight_grad_.data();
    float* g3 = weight_grad_.data() + wsz;
    float* g2 = weight_grad_.data() + 2 * wsz;
    cpu::expert_ffn_backward<float>(
        dxp + od, dense ? g1 : nullptr, dense && swiglu ? g3 : nullptr, dense ? g2 : nullptr, dyp + od, x + od, pre_w1_[a].data() + oh,
        swiglu ? pre_w3_[a].data() + oh : nullptr, act_[a].data() + oh, W1, W3, W2, seg, 1, d_, h_,
        expert_act_of(cfg_.model), scratch1_.data(), scratch2_.data(), scratch3_.data());
    if (dense) sink_(m, e, g1, swiglu ? g3 : nullptr, g2);
    if (mine || !sketch_) continue;
    // a sketch of this expert's rows for its home (DESIGN §7)
    SketchSample sample;
    uint64_t seed = splitmix64((uint64_t)cfg_.train.seed ^ 0x736b65746368ull) + data_part_;
    if (micro > 0) seed = splitmix64(seed ^ (uint64_t)micro);  // (micro-batch 0: the stream of a whole batch)
    const int rows = (cfg_.sketch.tokens + micro_count_ - 1) / micro_count_;
    sketch_sample_rows(sample, x + od, dyp + od, n, d_, rows, seed, (int)step_,
                       m * n_experts_ + e);
    // a sketch every S = sketch_every steps stands for S steps of this source's signal
    for (float& w : sample.weight) w *= (float)cfg_.experts.sketch_every;
    sketch_gather(sample, x + od, dyp + od, d_, sampled_x_, sampled_dy_);
    SketchMeta meta{sketch_handle(key_, m, e), step_, my_rank_, (SketchElem)cfg_.sketch.dtype};
    auto& box = outbox_[home_of(m, e)];
    box.emplace_back();
    sketch_encode(box.back(), meta, sampled_x_.data(), sampled_dy_.data(), (int)sample.rows.size(), d_);
  }
}

}  // namespace px
