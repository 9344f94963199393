// Full-precision expert views (experts.view = "full", src/model/full_view.hpp): exact sizes,
// bit-exact copies and round trips for swiglu and relu2 experts, and malformed buffers (each
// rejection names what is wrong).
#include <gtest/gtest.h>

#include "random_data.hpp"  // defines: randn_vec

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "model/full_view.hpp"  // defines: FullExpertView, full_view_from_master, full_expert_*_wire

namespace {

using px::FullExpertView;
using px::cpu::EXPERT_ACT_RELU2;
using px::cpu::EXPERT_ACT_SWIGLU;

// Runs fn, expects std::invalid_argument whose message contains `part`.
template <class Fn>
void expect_invalid(Fn fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected std::invalid_argument with '" << part << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(FullView, CopiesTheMasterBitForBitAndRoundTrips) {
  const int d = 12, h = 7;
  for (auto kind : {EXPERT_ACT_SWIGLU, EXPERT_ACT_RELU2}) {
    const bool glu = kind == EXPERT_ACT_SWIGLU;
    auto w1 = px::test::randn_vec<float>((size_t)d * h, 1), w3 = px::test::randn_vec<float>((size_t)d * h, 2),
         w2 = px::test::randn_vec<float>((size_t)h * d, 3);
    w1[5] = -0.f;  // signed zero and a denormal travel as they are
    w2[3] = std::numeric_limits<float>::denorm_min();
    const FullExpertView v = px::full_view_from_master(w1.data(), glu ? w3.data() : nullptr, w2.data(), d, h, kind);
    const std::vector<uint8_t> wire = px::full_expert_to_wire(v);
    const size_t matrix = 16 + 4 * (size_t)d * h;
    EXPECT_EQ(wire.size(), 16 + (glu ? 3 : 2) * matrix);
    EXPECT_EQ(wire.size(), px::full_expert_wire_bytes(kind, d, h));
    EXPECT_EQ(v.memory_bytes(), (glu ? 3u : 2u) * 4 * d * h);
    const FullExpertView back = px::full_expert_from_wire(wire.data(), wire.size());
    EXPECT_EQ(px::full_expert_to_wire(back), wire);
    std::vector<float> o1(w1.size()), o3(w3.size(), 7.f), o2(w2.size());
    back.dequantize(o1.data(), glu ? o3.data() : nullptr, o2.data());
    EXPECT_EQ(std::memcmp(o1.data(), w1.data(), 4 * w1.size()), 0);
    EXPECT_EQ(std::memcmp(o2.data(), w2.data(), 4 * w2.size()), 0);
    if (glu) EXPECT_EQ(std::memcmp(o3.data(), w3.data(), 4 * w3.size()), 0);
    else EXPECT_EQ(o3[0], 7.f);  // relu2: W3 untouched
  }
}

TEST(FullView, MalformedBuffersAndBadArgumentsThrow) {
  const int d = 4, h = 3;
  auto w = px::test::randn_vec<float>((size_t)3 * d * h, 4);
  const FullExpertView v = px::full_view_from_master(w.data(), w.data() + d * h, w.data() + 2 * d * h, d, h,
                                                     EXPERT_ACT_SWIGLU);
  const std::vector<uint8_t> good = px::full_expert_to_wire(v);
  {
    auto b = good;
    b.pop_back();
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "expected " + std::to_string(good.size()));
  }
  {
    auto b = good;
    b.push_back(0);
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "expected " + std::to_string(good.size()));
  }
  {
    auto b = good;
    b[0] ^= 1;
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "bad magic (not a full expert)");
  }
  {
    auto b = good;
    b[16] ^= 1;  // W1's matrix header
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "W1: malformed buffer: bad magic");
  }
  {
    auto b = good;
    b[6] = 2;  // activation kind
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "activation kind 2");
  }
  {
    auto b = good;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(b.data() + b.size() - 4, &nan, 4);  // the last weight of W2
    expect_invalid([&] { px::full_expert_from_wire(b.data(), b.size()); }, "W2: malformed buffer: weight 11");
  }
  {
    FullExpertView bad = v;
    bad.w3.w[2] = std::numeric_limits<float>::infinity();
    expect_invalid([&] { px::full_expert_to_wire(bad); }, "weight 2 of a [4, 3] matrix");
  }
  expect_invalid([&] { px::full_view_from_master(w.data(), nullptr, w.data(), d, h, EXPERT_ACT_SWIGLU); },
                 "needs W3");
}
