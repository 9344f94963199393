// The wire registry (src/wire/): MPI tag values and the layouts of the message headers, which
// are part of the wire and must never change; the splitting of a sketch bundle.
#include <gtest/gtest.h>

#include <bit>
#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "wire/bf16.hpp"           // defines: bf16_encode_rne, bf16_encode_saturate, bf16_decode
#include "wire/mpi_tags.hpp"       // defines: MpiTag, reply_tag
#include "wire/push_header.hpp"    // defines: PushHeader
#include "wire/sketch_bundle.hpp"  // defines: SketchBundleHeader, ExpertFlag, parse_sketch_bundle
#include "wire/trit_pack.hpp"      // defines: TritWriter, trit_byte, kTritTable, trit_bytes

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

// A bundle splits into its header and its sketches, as the sender framed them; every truncation,
// a bad magic, a count past the bytes and trailing bytes are refused with a message naming the
// sender (the splitter never reads past the buffer: tests/fuzz/fuzz_bundle.cpp).
TEST(WireBundle, SplitsAndRefusesMalformedBundles) {
  SketchBundleHeader hd;
  hd.count = 2;
  hd.step = 42;
  hd.flags = EXPERT_FLAG_STOP;
  std::vector<uint8_t> b(sizeof hd);
  std::memcpy(b.data(), &hd, sizeof hd);
  const std::vector<std::vector<uint8_t>> sketches = {{1, 2, 3}, {}};
  for (const auto& s : sketches) {
    const uint32_t n = (uint32_t)s.size();
    b.insert(b.end(), (const uint8_t*)&n, (const uint8_t*)&n + 4);
    b.insert(b.end(), s.begin(), s.end());
  }
  const SketchBundle got = parse_sketch_bundle(b.data(), b.size(), 3);
  EXPECT_EQ(got.header.step, 42);
  EXPECT_EQ(got.header.flags, (uint32_t)EXPERT_FLAG_STOP);
  ASSERT_EQ(got.sketches.size(), 2u);
  EXPECT_EQ(std::vector<uint8_t>(got.sketches[0].begin(), got.sketches[0].end()), sketches[0]);
  EXPECT_TRUE(got.sketches[1].empty());
  auto refused = [&](const std::vector<uint8_t>& bytes, const std::string& needle) {
    try {
      parse_sketch_bundle(bytes.data(), bytes.size(), 3);
      ADD_FAILURE() << needle << ": accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("from rank 3"), std::string::npos) << e.what();
    }
  };
  for (size_t len = 0; len < b.size(); ++len)
    refused(std::vector<uint8_t>(b.begin(), b.begin() + len), len < sizeof hd ? "shorter than its header" : "truncated");
  auto longer = b;
  longer.push_back(0);
  refused(longer, "1 trailing bytes");
  auto magic = b;
  magic[0] ^= 1;
  refused(magic, "bad magic");
  auto more = b;
  const uint32_t count = 0xFFFFFFFFu;
  std::memcpy(more.data() + 4, &count, 4);
  refused(more, "truncated in sketch 2 of 4294967295");
  auto long_len = b;
  const uint32_t len = 0xFFFFFFFFu;
  std::memcpy(long_len.data() + sizeof hd, &len, 4);
  refused(long_len, "truncated in sketch 0 of 2");
}

// ---- the shared helpers against the copies they replaced --------------------------------------
// The two bf16 roundings (sketch codes, backbone codec) were two copies that differ for values
// that round past the largest bf16 (the codec saturates) and for NaN / inf (the codec never sees
// them; the sketch rule keeps NaN a quiet NaN). Each caller keeps its exact rule; these copies of
// the old code pin that down on random and special bit patterns.
namespace {

uint16_t old_sketch_bf16(float v) {  // sketch/sketch_quant.hpp before src/wire/bf16.hpp
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x40u);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return (uint16_t)(b >> 16);
}
uint16_t old_codec_bf16(float x) {  // sync/codec.cpp before src/wire/bf16.hpp
  uint32_t u = std::bit_cast<uint32_t>(x);
  uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  uint16_t h = static_cast<uint16_t>(rounded >> 16);
  if ((h & 0x7FFFu) == 0x7F80u) h = static_cast<uint16_t>((h & 0x8000u) | 0x7F7Fu);
  return h;
}

std::vector<uint32_t> bit_patterns() {
  std::vector<uint32_t> v = {0u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u,
                             0x7FFFFFFFu, 0xFFFFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F8000u, 0x7F7F7FFFu, 0x00000001u,
                             0x00008000u, 0x00018000u, 0x3F808000u, 0x3F818000u, 0x3F807FFFu};
  std::mt19937 rng(7);
  for (int i = 0; i < 1 << 20; ++i) {
    uint32_t u = rng();
    if (i % 4 == 1) u |= 0x7F800000u;                           // inf / NaN
    if (i % 4 == 2) u = (u & 0x8000FFFFu) | 0x7F7F0000u;        // near the largest bf16
    if (i % 8 == 3) u = (u & 0x8001FFFFu) | ((rng() % 2) << 15);  // ties, subnormals
    v.push_back(u);
  }
  return v;
}

}  // namespace

TEST(WireBf16, EachRuleMatchesTheCopyItReplaced) {
  int differ = 0;
  for (uint32_t u : bit_patterns()) {
    const float f = std::bit_cast<float>(u);
    ASSERT_EQ(bf16_encode_rne(f), old_sketch_bf16(f)) << std::hex << u;
    ASSERT_EQ(bf16_encode_saturate(f), old_codec_bf16(f)) << std::hex << u;
    ASSERT_EQ(std::bit_cast<uint32_t>(bf16_decode((uint16_t)(u >> 16))), u & 0xFFFF0000u);
    differ += bf16_encode_rne(f) != bf16_encode_saturate(f);
  }
  EXPECT_GT(differ, 0);  // the rules are not the same: both are kept
  // where they differ: overflow (and NaN / inf, which the codec refuses before rounding)
  EXPECT_EQ(bf16_encode_rne(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(bf16_encode_saturate(std::numeric_limits<float>::max()), 0x7F7F);
  EXPECT_EQ(bf16_encode_saturate(-std::numeric_limits<float>::max()), 0xFF7F);
  EXPECT_EQ(bf16_encode_rne(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  // and where they agree: every finite value that stays finite
  EXPECT_EQ(bf16_encode_rne(1.f), bf16_encode_saturate(1.f));
  EXPECT_EQ(bf16_encode_rne(-3.0e38f), bf16_encode_saturate(-3.0e38f));
}

namespace {

// ternary_view.cpp's packing before src/wire/trit_pack.hpp: running powers of 3.
std::vector<uint8_t> old_view_pack(const std::vector<int>& q) {
  std::vector<uint8_t> out;
  uint8_t byte = 0, pow3 = 1;
  size_t r = 0;
  for (int t : q) {
    byte = (uint8_t)(byte + (t + 1) * pow3);
    pow3 = (uint8_t)(pow3 * 3);
    if (++r == 5) {
      out.push_back(byte);
      byte = 0, pow3 = 1, r = 0;
    }
  }
  if (r) {
    for (; r < 5; ++r, pow3 = (uint8_t)(pow3 * 3)) byte = (uint8_t)(byte + pow3);
    out.push_back(byte);
  }
  return out;
}
// codec.cpp's packing: digits padded with 1, then groups of 5.
std::vector<uint8_t> old_codec_pack(const std::vector<int>& q) {
  std::vector<uint8_t> digit((q.size() + 4) / 5 * 5, 1), out;
  for (size_t k = 0; k < q.size(); ++k) digit[k] = (uint8_t)(q[k] + 1);
  for (size_t g = 0; g < digit.size() / 5; ++g) {
    const uint8_t* d = digit.data() + 5 * g;
    out.push_back((uint8_t)(d[0] + 3 * d[1] + 9 * d[2] + 27 * d[3] + 81 * d[4]));
  }
  return out;
}

}  // namespace

TEST(WireTrits, PackingMatchesBothCopies) {
  std::mt19937 rng(3);
  for (size_t n : {1, 2, 4, 5, 6, 9, 10, 11, 256, 1001}) {
    std::vector<int> q(n);
    for (int& t : q) t = (int)(rng() % 3) - 1;
    std::vector<uint8_t> got(trit_bytes(n), 0xEE);
    TritWriter w(got.data());
    for (int t : q) w.put(t);
    EXPECT_EQ(w.finish(), got.data() + got.size()) << n;
    EXPECT_EQ(got, old_view_pack(q)) << n;
    EXPECT_EQ(got, old_codec_pack(q)) << n;
    for (size_t k = 0; k < n; ++k) ASSERT_EQ(kTritTable[got[k / 5]][k % 5], q[k]) << n << " " << k;
  }
  for (int byte = 0; byte <= kMaxTritByte; ++byte) {  // the table inverts trit_byte
    uint8_t digit[5];
    for (int j = 0; j < 5; ++j) digit[j] = (uint8_t)(kTritTable[byte][j] + 1);
    EXPECT_EQ(trit_byte(digit), byte);
  }
  EXPECT_EQ(trit_bytes(0), 0u);
  EXPECT_EQ(trit_bytes(5), 1u);
  EXPECT_EQ(trit_bytes(6), 2u);
}
