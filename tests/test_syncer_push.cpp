// A syncer checks every push before it trusts it (sync/push_check.hpp): header fields in range,
// the unit is its own, the sender is the learner of that island and shard, the length matches
// the shard and its dtype (push_problem); then the decoded values (push_values_problem).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "config/config.hpp"      // defines: load_config
#include "model/param_layout.hpp" // defines: ParamLayout
#include "sync/codec.hpp"         // defines: encoded_bytes, encode, decode
#include "sync/fragments.hpp"     // defines: FragmentPlan
#include "sync/push_check.hpp"    // defines: push_problem, push_values_problem, PushHeader

using namespace px;

TEST(SyncerPush, MalformedPushesAreNamedAndAGoodOnePasses) {
  const Config cfg = load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml", {});
  const ParamLayout layout(cfg.model);
  const FragmentPlan plan(layout, 2);
  const Topology topo = Topology::make(2, 2, 1, 0, 4, 5);  // 2 islands x 2 ranks + 1 syncer
  const size_t n = plan.size(0);
  const size_t m = FragmentPlan::shard_begin(n, 2, 2) - FragmentPlan::shard_begin(n, 1, 2);
  auto make = [&](PushHeader h, long extra = 0) {
    std::vector<uint8_t> msg(sizeof h + encoded_bytes(WireDtype::INT8, m) + extra);
    std::memcpy(msg.data(), &h, sizeof h);
    return msg;
  };
  const PushHeader good{4, 100, (int64_t)m, 1, 0, 1, (int32_t)WireDtype::INT8};
  const int sender = topo.learner_rank(1, 1);
  auto problem = [&](const std::vector<uint8_t>& msg, int source = -1) {
    return push_problem(msg.data(), msg.size(), source < 0 ? sender : source, topo, plan, 0);
  };
  EXPECT_EQ(problem(make(good)), "");
  auto with = [&](auto change) {
    PushHeader h = good;
    change(h);
    return problem(make(h));
  };
  EXPECT_NE(with([](PushHeader& h) { h.island = 2; }).find("island 2"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.island = -1; }).find("island -1"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.fragment = 2; }).find("fragment 2"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.shard = 2; }).find("shard 2"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.dtype = 9; }).find("dtype 9"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.n = 3; }).find("n = 3"), std::string::npos);
  EXPECT_NE(with([](PushHeader& h) { h.tokens = -5; }).find("tokens -5"), std::string::npos);
  EXPECT_NE(problem(make(good, 1)).find("bytes"), std::string::npos);    // one byte too many
  EXPECT_NE(problem(make(good, -1)).find("bytes"), std::string::npos);   // one too few
  EXPECT_NE(problem(std::vector<uint8_t>(10)).find("header"), std::string::npos);
  EXPECT_NE(problem(make(good), topo.learner_rank(0, 1)).find("sent by rank"), std::string::npos);
  const Topology two_syncers = Topology::make(2, 2, 2, 0, 5, 6);
  const auto msg = make(good);  // unit 0 * 2 + 1 = 1 belongs to syncer 1
  EXPECT_NE(push_problem(msg.data(), msg.size(), sender, two_syncers, plan, 0).find("syncer 1"),
            std::string::npos);
}

// The decoded values of a push are checked too (fuzz_push: a bf16 push with the code 0xFFFF, NaN,
// at index 96 passed push_problem and made the global shard NaN): non-finite values and values
// past kOuterGradientBound are named with their index, whatever the dtype carried them.
TEST(SyncerPush, NonFiniteOrHugeValuesAreNamed) {
  const size_t m = 296;
  std::vector<float> v(m, 1e-3f);
  EXPECT_EQ(push_values_problem(v.data(), m), "");
  std::vector<uint8_t> bf16(encoded_bytes(WireDtype::BF16, m));
  encode(WireDtype::BF16, v.data(), m, bf16.data());
  bf16[2 * 96] = bf16[2 * 96 + 1] = 0xFF;
  std::vector<float> d(m);
  decode(WireDtype::BF16, bf16.data(), m, d.data());
  EXPECT_NE(push_values_problem(d.data(), m).find("nan at index 96"), std::string::npos);
  v[7] = INFINITY;
  EXPECT_NE(push_values_problem(v.data(), m).find("value inf at index 7"), std::string::npos);
  v[7] = 1e-3f;
  // an int8 block whose scale is the largest float decodes to finite but huge values
  std::vector<uint8_t> int8(encoded_bytes(WireDtype::INT8, m));
  encode(WireDtype::INT8, v.data(), m, int8.data());
  const float big = 3.4e38f;
  std::memcpy(int8.data(), &big, 4);
  decode(WireDtype::INT8, int8.data(), m, d.data());
  EXPECT_NE(push_values_problem(d.data(), m).find("at index 0"), std::string::npos);
  v[0] = -kOuterGradientBound;
  EXPECT_EQ(push_values_problem(v.data(), m), "");
}
