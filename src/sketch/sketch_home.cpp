// defines: SketchHome
#include "sketch/sketch_home.hpp"

#include <stdexcept>

namespace px {

SketchHome::SketchHome(int d, int h, px::cpu::ExpertAct act, SketchKey key, int max_rows,
                       int max_staleness, std::vector<HomeExpertSlot> slots)
    : d_(d), h_(h), act_(act), max_rows_(max_rows), max_staleness_(max_staleness), table_(key),
      slots_(std::move(slots)), X_(slots_.size()), dY_(slots_.size()) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    const HomeExpertSlot& s = slots_[i];
    if (!s.W1 || !s.W2 || !s.dW1 || !s.dW2 ||
        (act_ == px::cpu::EXPERT_ACT_SWIGLU && (!s.W3 || !s.dW3)))
      throw std::invalid_argument("SketchHome: expert slot with a missing weight or gradient");
    slot_of_[table_.add(s.moe_layer, s.expert)] = (int)i;
  }
}

SketchStatus SketchHome::receive(const uint8_t* bytes, size_t size, int64_t home_step) {
  SketchCheck check;
  check.d = d_;
  check.max_rows = max_rows_;
  check.home_step = home_step;
  check.max_staleness = max_staleness_;
  check.known_handle = [this](uint64_t h) { return slot_of_.count(h) > 0; };
  SketchView view;
  SketchStatus st = sketch_verify(bytes, size, check, &view);
  tally_.add(st);
  if (st != SketchStatus::OK) return st;
  const int slot = slot_of_.at(view.header.handle);
  std::vector<float> X, dY;
  sketch_unpack(view, X, dY);
  X_[slot].insert(X_[slot].end(), X.begin(), X.end());
  dY_[slot].insert(dY_[slot].end(), dY.begin(), dY.end());
  return st;
}

size_t SketchHome::queued_rows() const {
  size_t r = 0;
  for (const auto& x : X_) r += x.size() / d_;
  return r;
}

size_t SketchHome::accumulate() {
  size_t total = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const int rows = (int)(X_[i].size() / d_);
    if (rows == 0) continue;
    const HomeExpertSlot& s = slots_[i];
    const size_t rd = (size_t)rows * d_, rh = (size_t)rows * h_;
    Y_.resize(rd);
    dX_.resize(rd);
    for (auto* b : {&A_, &B_, &act_buf_, &dact_, &dA_, &dB_}) b->resize(rh);
    const int32_t bounds[2] = {0, rows};
    px::cpu::expert_ffn_forward<float>(Y_.data(), A_.data(), B_.data(), act_buf_.data(),
                                       X_[i].data(), s.W1, s.W3, s.W2, bounds, 1, d_, h_, act_);
    px::cpu::expert_ffn_backward<float>(dX_.data(), s.dW1, s.dW3, s.dW2, dY_[i].data(),
                                        X_[i].data(), A_.data(), B_.data(), act_buf_.data(),
                                        s.W1, s.W3, s.W2, bounds, 1, d_, h_, act_, dact_.data(),
                                        dA_.data(), dB_.data());
    total += rows;
    X_[i].clear();
    dY_[i].clear();
  }
  return total;
}

}  // namespace px
