// defines: SketchHome, expert_rows_gradient
#include "sketch/sketch_home.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace px {

SketchHome::SketchHome(int d, int h, px::cpu::ExpertAct act, SketchKey key, int max_rows,
                       int max_staleness, std::vector<HomeExpertSlot> slots)
    : d_model_(d), hidden_(h), act_kind_(act), max_rows_(max_rows), max_staleness_(max_staleness), table_(key),
      slots_(std::move(slots)), queued_(slots_.size()) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    const HomeExpertSlot& slot = slots_[i];
    if (!slot.W1 || !slot.W2 || !slot.dW1 || !slot.dW2 ||
        (act_kind_ == px::cpu::EXPERT_ACT_SWIGLU && (!slot.W3 || !slot.dW3)))
      throw std::invalid_argument("SketchHome: expert slot with a missing weight or gradient");
    slot_of_[table_.add(slot.moe_layer, slot.expert)] = (int)i;
  }
}

namespace {
// v's pointers moved from the bytes at `from` to the same bytes at `to`.
SketchView rebase(SketchView v, const uint8_t* from, const uint8_t* to) {
  for (const uint8_t** p : {&v.xs, &v.dys, &v.xq, &v.dyq}) *p = to + (*p - from);
  return v;
}
}  // namespace

SketchStatus SketchHome::receive(const uint8_t* bytes, size_t size, int64_t home_step) {
  SketchCheck check;
  check.d = d_model_;
  check.max_rows = max_rows_;
  check.home_step = home_step;
  check.max_staleness = max_staleness_;
  check.known_handle = [this](uint64_t h) { return slot_of_.count(h) > 0; };
  SketchView view;
  SketchStatus status = sketch_verify(bytes, size, check, &view);
  std::vector<float>& X = one_x_;
  std::vector<float>& dY = one_dy_;
  if (status == SketchStatus::OK) {
    sketch_unpack(view, X, dY);
    // a sketch that verifies can still hold values whose products overflow the gradient
    const auto out_of_bound = [](float v) { return !(std::fabs(v) <= kSketchValueBound); };
    if (std::any_of(X.begin(), X.end(), out_of_bound) || std::any_of(dY.begin(), dY.end(), out_of_bound))
      status = SketchStatus::NON_FINITE;
  }
  tally_.add(status);
  if (status != SketchStatus::OK) return status;
  const int slot = slot_of_.at(view.header.handle);
  Queued q{std::vector<uint8_t>(bytes, bytes + size), view, nullptr};
  q.base = q.bytes.data();
  q.view = rebase(view, bytes, q.base);
  queued_[slot].push_back(std::move(q));
  return status;
}

void expert_rows_gradient(const HomeExpertSlot& slot, const float* X, const float* dY, int rows,
                          int d, int h, px::cpu::ExpertAct act, ExpertRowsScratch& s) {
  const size_t x_values = (size_t)rows * d, h_values = (size_t)rows * h;
  s.y.resize(x_values);
  s.dx.resize(x_values);
  for (auto* b : {&s.a, &s.b, &s.act, &s.dact, &s.da, &s.db}) b->resize(h_values);
  const int32_t bounds[2] = {0, rows};
  px::cpu::expert_ffn_forward<float>(s.y.data(), s.a.data(), s.b.data(), s.act.data(), X, slot.W1,
                                     slot.W3, slot.W2, bounds, 1, d, h, act);
  px::cpu::expert_ffn_backward<float>(s.dx.data(), slot.dW1, slot.dW3, slot.dW2, dY, X,
                                      s.a.data(), s.b.data(), s.act.data(), slot.W1, slot.W3,
                                      slot.W2, bounds, 1, d, h, act, s.dact.data(), s.da.data(),
                                      s.db.data());
}

size_t SketchHome::queued_rows() const {
  size_t rows = 0;
  for (const auto& sketches : queued_)
    for (const Queued& q : sketches) rows += (size_t)q.view.header.n;
  return rows;
}

size_t SketchHome::accumulate() {
  size_t total = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (queued_.empty() || queued_[i].empty()) continue;
    // this expert's rows, decoded in arrival order
    slot_x_.clear();
    slot_dy_.clear();
    for (const Queued& q : queued_[i]) {
      sketch_unpack(rebase(q.view, q.base, q.bytes.data()), one_x_, one_dy_);
      slot_x_.insert(slot_x_.end(), one_x_.begin(), one_x_.end());
      slot_dy_.insert(slot_dy_.end(), one_dy_.begin(), one_dy_.end());
    }
    const int rows = (int)(slot_x_.size() / d_model_);
    if (rows == 0) continue;
    if (sink_)
      sink_((int)i, slot_x_.data(), slot_dy_.data(), rows);
    else
      expert_rows_gradient(slots_[i], slot_x_.data(), slot_dy_.data(), rows, d_model_, hidden_,
                           act_kind_, scratch_);
    total += rows;
    queued_[i].clear();
  }
  return total;
}

}  // namespace px
