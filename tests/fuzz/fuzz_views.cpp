// libFuzzer target: one expert of a view message as a learner receives it (ExpertViews::apply):
// a ternary expert (ternary_expert_from_wire) replaces the view, a low-rank expert
// (lowrank_expert_from_wire) is a delta added to the current low-rank view (lowrank_expert_add);
// a malformed one, or a delta whose sum with the view is past the weight bound, is a
// std::invalid_argument, the receiver's documented answer (the view is then unchanged). An accepted view
// of the learner's shape must re-encode to the same bytes (the wire form is canonical), and its
// dense weights and its expert forward on a bounded input must be finite.
#include <optional>
#include <stdexcept>
#include <vector>

#include "fuzz_receivers.hpp"      // defines: ViewFixture, kD, kH, kAct, PX_FUZZ_REQUIRE
#include "model/lowrank_view.hpp"  // defines: lowrank_expert_from_wire, lowrank_expert_add
#include "model/ternary_view.hpp"  // defines: ternary_expert_from_wire
#include "ops/cpu/cpu_ops.hpp"     // defines: expert_ffn_forward

using namespace px;

namespace {

// The view's dense weights are within the weight bound, its forward on the fixture's input finite.
template <class View>
void check_usable(const View& v, const std::vector<float>& x) {
  std::vector<float> w1((size_t)fuzz::kD * fuzz::kH), w3(w1.size()), w2(w1.size());
  v.dequantize(w1.data(), w3.data(), w2.data());
  for (const auto* w : {&w1, &w3, &w2})
    PX_FUZZ_REQUIRE(fuzz::all_within(*w, kViewWeightBound), "an accepted view dequantizes to weights out of bounds");
  const int rows = fuzz::kRows;
  std::vector<float> y((size_t)rows * fuzz::kD), a((size_t)rows * fuzz::kH), b(a.size()), act(a.size());
  const int32_t bounds[2] = {0, rows};
  cpu::expert_ffn_forward<float>(y.data(), a.data(), b.data(), act.data(), x.data(), w1.data(), w3.data(), w2.data(),
                                 bounds, 1, fuzz::kD, fuzz::kH, fuzz::kAct);
  PX_FUZZ_REQUIRE(fuzz::all_finite(y), "an accepted view gives a non-finite expert output on a bounded input");
}

template <class View>
bool learner_shape(const View& v) {
  return v.d == fuzz::kD && v.h == fuzz::kH && v.kind == fuzz::kAct;
}

// The parsed message, or nothing when the parser refused it.
template <class View, class Parse>
std::optional<View> parse(Parse parse_fn, const uint8_t* data, size_t size) {
  try {
    return parse_fn(data, size);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fuzz::ViewFixture fx;
  const std::vector<uint8_t> bytes(data, data + size);
  // past the parsers nothing may throw: the learner has accepted the message
  if (const auto v = parse<TernaryExpertView>(ternary_expert_from_wire, data, size)) {
    PX_FUZZ_REQUIRE(ternary_expert_to_wire(*v) == bytes, "an accepted ternary view does not re-encode to its bytes");
    if (learner_shape(*v)) check_usable(*v, fx.x);
  }
  if (const auto delta = parse<LowrankExpertView>(lowrank_expert_from_wire, data, size)) {
    PX_FUZZ_REQUIRE(lowrank_expert_to_wire(*delta) == bytes, "an accepted low-rank delta does not re-encode to its bytes");
    if (!learner_shape(*delta)) return 0;
    LowrankExpertView view = fx.lowrank;
    try {
      lowrank_expert_add(view, *delta);
    } catch (const std::invalid_argument&) {  // a sum past the weight bound: refused, view unchanged
      PX_FUZZ_REQUIRE(lowrank_expert_to_wire(view) == lowrank_expert_to_wire(fx.lowrank), "a refused delta changed the view");
      return 0;
    }
    check_usable(view, fx.x);
    lowrank_expert_to_wire(view);  // what the learner's next checkpoint writes
  }
  return 0;
}
