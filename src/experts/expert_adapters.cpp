// defines: ExpertAdapters
#include "experts/expert_adapters.hpp"

#include <cmath>
#include <cstring>

#include "ops/cpu/cpu_ops.hpp"  // defines: adapter_merge, adapter_backward, adamw_update
#include "optim/adamw.hpp"      // defines: AdamWConfig
#include "util/hash_rng.hpp"    // defines: splitmix64, uniform01

namespace px {

ExpertAdapters::ExpertAdapters(const Config& cfg, const Topology& topo)
    : cfg_(cfg), rank_(cfg.experts.adapter_rank) {
  const ModelConfig& mc = cfg.model;
  const int d = mc.d_model, h = mc.expert_hidden, E = mc.n_experts;
  const bool swiglu = mc.expert_act == ExpertActKind::SWIGLU;
  size_t off = 0;
  index_.assign((size_t)mc.moe_layers() * E, -1);
  for (int m = 0; m < mc.moe_layers(); ++m)
    for (int e = 0; e < E; ++e) {
      const int home = expert_home(topo, m, e, E);
      if (home == topo.world_rank) continue;
      std::vector<Mat> ms;
      auto add = [&](int in, int out) {
        ms.push_back({in, out, off, off + (size_t)in * rank_});
        off += (size_t)rank_ * (in + out);
      };
      add(d, h);
      if (swiglu) add(d, h);
      add(h, d);
      index_[(size_t)m * E + e] = (int)ids_.size();
      ids_.push_back({m, e});
      home_.push_back(home);
      mats_.push_back(std::move(ms));
    }
  params_.assign(off, 0.f);
  grads_.assign(off, 0.f);
  m_.assign(off, 0.f);
  v_.assign(off, 0.f);
  tokens_.assign(ids_.size(), 0);
  reset(0);
}

void ExpertAdapters::reset(int64_t cycle_step) {
  std::fill(params_.begin(), params_.end(), 0.f);
  std::fill(m_.begin(), m_.end(), 0.f);
  std::fill(v_.begin(), v_.end(), 0.f);
  std::fill(tokens_.begin(), tokens_.end(), 0);
  steps_ = 0;
  // A ~ normal(0, 1/in) (Box-Muller on the counter RNG), B = 0: the adapter starts at zero
  for (size_t i = 0; i < ids_.size(); ++i)
    for (size_t k = 0; k < mats_[i].size(); ++k) {
      const Mat& mt = mats_[i][k];
      const uint64_t s = splitmix64((uint64_t)cfg_.train.seed ^ splitmix64(
          ((uint64_t)cycle_step << 24) ^ ((uint64_t)ids_[i].moe_layer << 12) ^
          ((uint64_t)ids_[i].expert << 2) ^ k));
      const double sd = 1.0 / std::sqrt((double)mt.in);
      const size_t n = (size_t)mt.in * rank_;
      for (size_t j = 0; j < n; ++j) {
        const double u1 = uniform01(s, 2 * j), u2 = uniform01(s, 2 * j + 1);
        params_[mt.a + j] = (float)(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
      }
    }
}

void ExpertAdapters::add_to(int moe_layer, int expert, float* W1, float* W3, float* W2) const {
  const std::vector<Mat>& ms = mats_[index_[(size_t)moe_layer * cfg_.model.n_experts + expert]];
  float* W[3] = {W1, ms.size() == 3 ? W3 : W2, W2};
  for (size_t k = 0; k < ms.size(); ++k)
    cpu::matmul(W[k], params_.data() + ms[k].a, params_.data() + ms[k].b, ms[k].in, rank_, ms[k].out, false,
                false, true);
}

void ExpertAdapters::add_weight_grad(int moe_layer, int expert, const float* dW1,
                                     const float* dW3, const float* dW2) {
  const int i = index_[(size_t)moe_layer * cfg_.model.n_experts + expert];
  const std::vector<Mat>& ms = mats_[i];
  const float* dW[3] = {dW1, ms.size() == 3 ? dW3 : dW2, dW2};
  for (size_t k = 0; k < ms.size(); ++k)
    cpu::adapter_backward(grads_.data() + ms[k].a, grads_.data() + ms[k].b, dW[k], params_.data() + ms[k].a,
                          params_.data() + ms[k].b, ms[k].in, rank_, ms[k].out);
}

void ExpertAdapters::step(const std::vector<int64_t>& counts, double lr) {
  for (size_t i = 0; i < ids_.size(); ++i)
    tokens_[i] += counts[(size_t)ids_[i].moe_layer * cfg_.model.n_experts + ids_[i].expert];
  ++steps_;
  const AdamWConfig ac;
  cpu::adamw_update(params_.data(), grads_.data(), m_.data(), v_.data(), params_.size(), (float)lr,
                    (float)ac.beta1, (float)ac.beta2, (float)ac.eps, 0.f, steps_);
  std::fill(grads_.begin(), grads_.end(), 0.f);
}

void ExpertAdapters::drop_gradients() { std::fill(grads_.begin(), grads_.end(), 0.f); }

std::map<int, std::vector<uint8_t>> ExpertAdapters::take_deltas(int64_t step) {
  std::map<int, std::vector<uint8_t>> out;
  auto put = [](std::vector<uint8_t>& b, const void* p, size_t n) {
    const size_t o = b.size();
    b.resize(o + n);
    std::memcpy(b.data() + o, p, n);
  };
  for (size_t i = 0; i < ids_.size(); ++i) {
    auto& b = out[home_[i]];
    if (b.empty()) b.assign(4, 0);
    uint32_t count;
    std::memcpy(&count, b.data(), 4);
    ++count;
    std::memcpy(b.data(), &count, 4);
    const int32_t head[2] = {ids_[i].moe_layer, ids_[i].expert};
    put(b, head, 8);
    put(b, &tokens_[i], 8);
    const int32_t r = rank_;
    put(b, &r, 4);
    for (const Mat& mt : mats_[i]) put(b, params_.data() + mt.a, 4 * (size_t)rank_ * (mt.in + mt.out));
  }
  reset(step);
  return out;
}

void ExpertAdapters::save(ParallelCheckpointWriter& w) {
  w.add_borrowed("adapters/params", as_span(params_));
  w.add_borrowed("adapters/m", as_span(m_));
  w.add_borrowed("adapters/v", as_span(v_));
  w.add("adapters/tokens", as_span(tokens_));
  const std::vector<int64_t> st = {steps_};
  w.add("adapters/steps_in_cycle", as_span(st));
}

void ExpertAdapters::load(const StateReader& r) {
  for (auto [name, v] : {std::pair{"adapters/params", &params_}, {"adapters/m", &m_},
                         {"adapters/v", &v_}})
    *v = r.read<float>(name, v->size());
  tokens_ = r.read<int64_t>("adapters/tokens", tokens_.size());
  steps_ = (int)r.read<int64_t>("adapters/steps_in_cycle", 1)[0];
}

}  // namespace px
