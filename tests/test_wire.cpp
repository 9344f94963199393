// The wire registry (src/wire/): MPI tag values and the layouts of the message headers, which
// are part of the wire and must never change.
#include <gtest/gtest.h>

#include <cstddef>
#include <set>

#include "wire/mpi_tags.hpp"       // defines: MpiTag, reply_tag
#include "wire/push_header.hpp"    // defines: PushHeader
#include "wire/sketch_bundle.hpp"  // defines: SketchBundleHeader, ExpertFlag

using namespace px;

TEST(WireTags, Values) {
  EXPECT_EQ(TAG_SKETCH, 60);
  EXPECT_EQ(TAG_SNAPSHOT, 61);
  EXPECT_EQ(TAG_ADAPTER, 62);
  EXPECT_EQ(TAG_DONE, 90);
  EXPECT_EQ(TAG_CKPT, 91);
  EXPECT_EQ(TAG_TICK, 92);
  EXPECT_EQ(TAG_PUSH, 100);
  EXPECT_EQ(TAG_REPLY, 1000);
  EXPECT_EQ(reply_tag(0), 1000);
  EXPECT_EQ(reply_tag(7), 1007);
  EXPECT_EQ(TAG_TEST_RING, 7);
  EXPECT_EQ(TAG_TEST_PROBE, 40);
  // the single tags are distinct
  const std::set<int> tags = {TAG_SKETCH, TAG_SNAPSHOT, TAG_ADAPTER, TAG_DONE, TAG_CKPT, TAG_TICK, TAG_PUSH, TAG_REPLY};
  EXPECT_EQ(tags.size(), 8u);
}

TEST(WireHeaders, PushHeaderLayout) {
  static_assert(sizeof(PushHeader) == 40);
  EXPECT_EQ(offsetof(PushHeader, step), 0u);
  EXPECT_EQ(offsetof(PushHeader, tokens), 8u);
  EXPECT_EQ(offsetof(PushHeader, n), 16u);
  EXPECT_EQ(offsetof(PushHeader, island), 24u);
  EXPECT_EQ(offsetof(PushHeader, fragment), 28u);
  EXPECT_EQ(offsetof(PushHeader, shard), 32u);
  EXPECT_EQ(offsetof(PushHeader, dtype), 36u);
}

TEST(WireHeaders, SketchBundleHeaderLayout) {
  static_assert(sizeof(SketchBundleHeader) == 24);
  EXPECT_EQ(offsetof(SketchBundleHeader, magic), 0u);
  EXPECT_EQ(offsetof(SketchBundleHeader, count), 4u);
  EXPECT_EQ(offsetof(SketchBundleHeader, step), 8u);
  EXPECT_EQ(offsetof(SketchBundleHeader, flags), 16u);
  EXPECT_EQ(offsetof(SketchBundleHeader, reserved), 20u);
  EXPECT_EQ(SketchBundleHeader{}.magic, 0x42535850u);
  EXPECT_EQ(EXPERT_FLAG_CHECKPOINT, 1u);
  EXPECT_EQ(EXPERT_FLAG_STOP, 2u);
}
