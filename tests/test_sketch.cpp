// Sketches on the CPU (src/sketch/): the fp8 e4m3 and bf16 element codes against a brute-force
// nearest-value search, SipHash-2-4 against the reference vectors, the wire format's round
// trip and error bounds for every dtype, every kind of rejection (single-byte corruption,
// truncation, shape, handle, staleness, non-finite values, random garbage), and the importance
// sampler's unbiasedness.
#include <gtest/gtest.h>

#include "random_data.hpp"  // defines: randn_vec

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "sketch/sketch_handle.hpp"  // defines: siphash24, sketch_handle, SketchHandleTable
#include "sketch/sketch_quant.hpp"   // defines: fp8_e4m3_encode/decode, bf16_encode_rne
#include "sketch/sketch_sample.hpp"  // defines: sketch_sample_rows, sketch_gather
#include "wire/sketch_wire.hpp"    // defines: sketch_encode, sketch_verify, sketch_unpack

using namespace px;

namespace {

constexpr SketchElem kElems[] = {SKETCH_INT8, SKETCH_FP8, SKETCH_BF16};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  return px::test::randn_vec<float>(n, seed, scale);
}

// The finite e4m3 values, by code (0x7F and 0xFF are NaN).
std::vector<std::pair<uint8_t, float>> e4m3_table() {
  std::vector<std::pair<uint8_t, float>> t;
  for (int c = 0; c < 256; ++c)
    if ((c & 0x7F) != 0x7F) t.push_back({(uint8_t)c, fp8_e4m3_decode((uint8_t)c)});
  return t;
}

// Brute force: the nearest finite e4m3 value to v (saturating), ties to the even code.
uint8_t e4m3_nearest(float v) {
  static const auto table = e4m3_table();
  double best = INFINITY;
  uint8_t code = 0;
  for (auto [c, x] : table) {
    if (std::signbit(x) != std::signbit(v) && x != 0.f) continue;
    if ((c == 0x80) != (bool)std::signbit(v) && x == 0.f) continue;  // zero keeps v's sign
    double err = std::fabs((double)x - (double)v);
    if (err < best || (err == best && (c & 1) == 0)) best = err, code = c;
  }
  return code;
}

SketchCheck check_for(int d, int max_rows) {
  SketchCheck c;
  c.d = d;
  c.max_rows = max_rows;
  c.home_step = 10;
  c.max_staleness = 4;
  return c;
}

std::vector<uint8_t> small_sketch(SketchElem t, int n = 3, int d = 8, int64_t step = 10) {
  auto X = randn((size_t)n * d, 11), G = randn((size_t)n * d, 12, 0.01f);
  std::vector<uint8_t> bytes;
  sketch_encode(bytes, SketchMeta{0x1234, step, 5, t}, X.data(), G.data(), n, d);
  return bytes;
}

}  // namespace

// ---- element codes -----------------------------------------------------------------------

TEST(SketchFp8, KnownCodesAndExactRoundTrip) {
  EXPECT_EQ(fp8_e4m3_decode(0x00), 0.f);
  EXPECT_EQ(fp8_e4m3_decode(0x01), std::ldexp(1.f, -9));   // smallest subnormal
  EXPECT_EQ(fp8_e4m3_decode(0x08), std::ldexp(1.f, -6));   // smallest normal
  EXPECT_EQ(fp8_e4m3_decode(0x38), 1.f);
  EXPECT_EQ(fp8_e4m3_decode(0x3C), 1.5f);
  EXPECT_EQ(fp8_e4m3_decode(0x7E), 448.f);
  EXPECT_EQ(fp8_e4m3_decode(0xFE), -448.f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_decode(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_decode(0xFF)));
  for (auto [c, x] : e4m3_table()) EXPECT_EQ(fp8_e4m3_encode(x), c) << "code " << (int)c;
}

TEST(SketchFp8, RoundsToNearestEvenAndSaturates) {
  auto table = e4m3_table();
  std::vector<float> probes;
  // every midpoint between neighbouring positive values (the ties), and a hair either side
  std::vector<float> pos;
  for (auto [c, x] : table)
    if (c < 0x80) pos.push_back(x);
  std::sort(pos.begin(), pos.end());
  for (size_t i = 0; i + 1 < pos.size(); ++i) {
    float mid = 0.5f * (pos[i] + pos[i + 1]);
    for (float p : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f)})
      probes.insert(probes.end(), {p, -p});
  }
  std::mt19937 g(7);
  std::uniform_real_distribution<float> lg(-14.f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    float v = std::exp2(lg(g));
    probes.insert(probes.end(), {v, -v});
  }
  int checked = 0;
  for (float v : probes) {
    ASSERT_EQ(fp8_e4m3_encode(v), e4m3_nearest(v)) << "v = " << v;
    ++checked;
  }
  EXPECT_GT(checked, 40000);
  EXPECT_EQ(fp8_e4m3_encode(464.f), 0x7E);  // the tie above 448 saturates
  EXPECT_EQ(fp8_e4m3_encode(1e30f), 0x7E);
  EXPECT_EQ(fp8_e4m3_encode(-INFINITY), 0xFE);
  EXPECT_EQ(fp8_e4m3_encode(NAN) & 0x7F, 0x7F);
}

TEST(SketchBf16, RoundsToNearestEven) {
  EXPECT_EQ(bf16_encode_rne(1.f), 0x3F80);
  EXPECT_EQ(bf16_encode_rne(1.f + std::ldexp(1.f, -8)), 0x3F80);       // tie -> even
  EXPECT_EQ(bf16_encode_rne(1.f + 3 * std::ldexp(1.f, -8)), 0x3F82);   // tie -> even (up)
  EXPECT_EQ(bf16_encode_rne(std::nextafter(1.f + std::ldexp(1.f, -8), 2.f)), 0x3F81);
  auto v = randn(10000, 3, 100.f);
  for (float x : v) {
    float y = bf16_decode(bf16_encode_rne(x));
    ASSERT_LE(std::fabs(y - x), std::ldexp(std::fabs(x), -8)) << x;
  }
}

// ---- handles -------------------------------------------------------------------------------

TEST(SketchHandle, SipHashReferenceVectors) {
  // Aumasson & Bernstein, SipHash paper appendix A / the reference vectors: key 00..0f.
  SketchKey key{0x0706050403020100ull, 0x0F0E0D0C0B0A0908ull};
  uint8_t msg[64];
  for (int i = 0; i < 64; ++i) msg[i] = (uint8_t)i;
  EXPECT_EQ(siphash24(key, msg, 0), 0x726fdb47dd0e0e31ull);
  EXPECT_EQ(siphash24(key, msg, 1), 0x74f839c593dc67fdull);
  EXPECT_EQ(siphash24(key, msg, 8), 0x93f5f5799a932462ull);
  EXPECT_EQ(siphash24(key, msg, 15), 0xa129ca6149be45e5ull);
  EXPECT_EQ(siphash24(key, msg, 63), 0x958a324ceb064572ull);
}

TEST(SketchHandle, TableMapsHandlesBackAndKeysMatter) {
  SketchHandleTable table(SketchKey{1, 2});
  for (int l = 0; l < 24; ++l)
    for (int e = 0; e < 64; ++e) table.add(l, e);
  EXPECT_EQ(table.size(), 24u * 64u);
  uint64_t h = sketch_handle(SketchKey{1, 2}, 7, 33);
  ASSERT_TRUE(table.find(h).has_value());
  EXPECT_EQ(*table.find(h), std::make_pair(7, 33));
  EXPECT_NE(h, sketch_handle(SketchKey{1, 3}, 7, 33));
  EXPECT_FALSE(table.find(sketch_handle(SketchKey{1, 3}, 7, 33)).has_value());
}

// ---- wire format ---------------------------------------------------------------------------

TEST(SketchWire, RoundTripWithinTheCodeBoundsForEveryDtype) {
  const int n = 17, d = 40;
  auto X = randn((size_t)n * d, 21), G = randn((size_t)n * d, 22);
  for (int r = 0; r < n; ++r)  // rows from 1e-4 to 1e4 in magnitude
    for (int i = 0; i < d; ++i) {
      X[(size_t)r * d + i] *= std::pow(10.f, -4.f + 8.f * r / (n - 1));
      G[(size_t)r * d + i] *= std::pow(10.f, 4.f - 8.f * r / (n - 1));
    }
  for (int i = 0; i < d; ++i) X[3 * d + i] = 0.f;  // an all-zero row
  for (SketchElem t : kElems) {
    std::vector<uint8_t> bytes;
    sketch_encode(bytes, SketchMeta{99, 12, 3, t}, X.data(), G.data(), n, d);
    ASSERT_EQ(bytes.size(), 48u + 8u * n + 2u * n * d * sketch_elem_bytes(t));
    SketchView view;
    SketchCheck c = check_for(d, n);
    c.home_step = 12;
    ASSERT_EQ(sketch_verify(bytes.data(), bytes.size(), c, &view), SketchStatus::OK);
    EXPECT_EQ(view.header.handle, 99u);
    EXPECT_EQ(view.header.step, 12);
    EXPECT_EQ(view.header.source_rank, 3);
    std::vector<float> Xd, Gd;
    sketch_unpack(view, Xd, Gd);
    for (auto [src, dec] : {std::pair{&X, &Xd}, std::pair{&G, &Gd}})
      for (int r = 0; r < n; ++r) {
        float amax = 0;
        for (int i = 0; i < d; ++i) amax = std::fmax(amax, std::fabs((*src)[(size_t)r * d + i]));
        for (int i = 0; i < d; ++i) {
          float v = (*src)[(size_t)r * d + i], y = (*dec)[(size_t)r * d + i];
          float bound = t == SKETCH_INT8  ? 0.5f * amax / 127.f * 1.0001f
                        : t == SKETCH_FP8 ? std::fmax(std::ldexp(std::fabs(v), -4),
                                                      std::ldexp(amax / 448.f, -10)) * 1.0001f
                                          : std::ldexp(std::fabs(v), -8);
          ASSERT_LE(std::fabs(y - v), bound) << "dtype " << (int)t << " row " << r << " col " << i;
        }
      }
  }
}

TEST(SketchWire, EveryFlippedByteAndEveryTruncationIsRejected) {
  for (SketchElem t : kElems) {
    auto bytes = small_sketch(t);
    const SketchCheck c = check_for(8, 64);
    ASSERT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::OK);
    for (size_t i = 0; i < bytes.size(); ++i)
      for (uint8_t mask : {0x01, 0x80}) {
        auto bad = bytes;
        bad[i] ^= mask;
        SketchStatus s = sketch_verify(bad.data(), bad.size(), c, nullptr);
        ASSERT_NE(s, SketchStatus::OK) << "byte " << i;
        if (i >= 8) ASSERT_EQ(s, SketchStatus::BAD_CHECKSUM) << "byte " << i;
      }
    for (size_t len = 0; len < bytes.size(); ++len)
      ASSERT_NE(sketch_verify(bytes.data(), len, c, nullptr), SketchStatus::OK) << len;
    auto longer = bytes;
    longer.push_back(0);
    EXPECT_EQ(sketch_verify(longer.data(), longer.size(), c, nullptr), SketchStatus::BAD_CHECKSUM);
  }
}

TEST(SketchWire, SemanticRejectionsWithAValidChecksum) {
  const int n = 3, d = 8;
  auto bytes = small_sketch(SKETCH_INT8, n, d, 10);
  SketchCheck c = check_for(d, 64);
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), check_for(16, 64), nullptr),
            SketchStatus::BAD_SHAPE);
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), check_for(d, 2), nullptr),
            SketchStatus::BAD_SHAPE);
  c.known_handle = [](uint64_t h) { return h == 0x9999; };
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::UNKNOWN_HANDLE);
  c.known_handle = [](uint64_t h) { return h == 0x1234; };
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::OK);
  // staleness: step 10 at home step 14 (max 4) is fine, at 15 it is stale; future steps pass
  c.home_step = 14;
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::OK);
  c.home_step = 15;
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::STALE);
  c.home_step = 2;
  EXPECT_EQ(sketch_verify(bytes.data(), bytes.size(), c, nullptr), SketchStatus::OK);

  // non-finite content, sealed with a correct checksum by sketch_wrap
  std::vector<float> ones(n, 1.f);
  std::vector<uint8_t> codes((size_t)n * d * 2, 0x10), out;
  auto wrap = [&](SketchElem t, std::vector<float> xs, std::vector<uint8_t> q) {
    sketch_wrap(out, SketchMeta{0x1234, 10, 0, t}, n, d, xs.data(), ones.data(), q.data(),
                codes.data());
    return sketch_verify(out.data(), out.size(), check_for(d, 64), nullptr);
  };
  EXPECT_EQ(wrap(SKETCH_INT8, ones, codes), SketchStatus::OK);
  EXPECT_EQ(wrap(SKETCH_INT8, {1.f, NAN, 1.f}, codes), SketchStatus::NON_FINITE);
  EXPECT_EQ(wrap(SKETCH_INT8, {1.f, INFINITY, 1.f}, codes), SketchStatus::NON_FINITE);
  EXPECT_EQ(wrap(SKETCH_INT8, {1.f, -1.f, 1.f}, codes), SketchStatus::NON_FINITE);
  auto nan_code = codes;
  nan_code[5] = 0x7F;
  EXPECT_EQ(wrap(SKETCH_FP8, ones, nan_code), SketchStatus::NON_FINITE);
  EXPECT_EQ(wrap(SKETCH_INT8, ones, nan_code), SketchStatus::OK);  // 0x7F is 127 in int8
  auto inf_bf16 = codes;
  inf_bf16[6] = 0x80, inf_bf16[7] = 0x7F;  // 0x7F80 = +inf
  EXPECT_EQ(wrap(SKETCH_BF16, ones, inf_bf16), SketchStatus::NON_FINITE);
  auto big_bf16 = codes;
  big_bf16[6] = 0x7F, big_bf16[7] = 0x7F;  // 0x7F7F: the largest finite bf16
  EXPECT_EQ(wrap(SKETCH_BF16, ones, big_bf16), SketchStatus::OK);
  EXPECT_EQ(wrap(SKETCH_BF16, {1.f, 4.f, 1.f}, big_bf16), SketchStatus::OK);  // row 0 has it
  EXPECT_EQ(wrap(SKETCH_BF16, {4.f, 1.f, 1.f}, big_bf16), SketchStatus::NON_FINITE);  // overflow
}

TEST(SketchWire, RandomGarbageIsRejectedWithoutCrashing) {
  std::mt19937 g(5);
  const SketchCheck c = check_for(8, 64);
  auto good = small_sketch(SKETCH_FP8);
  for (int trial = 0; trial < 3000; ++trial) {
    size_t len = g() % 300;
    std::vector<uint8_t> b(len);
    for (auto& x : b) x = (uint8_t)g();
    if (trial % 2 && len >= 48) std::memcpy(b.data(), good.data(), 8);  // right magic+version
    ASSERT_NE(sketch_verify(b.data(), b.size(), c, nullptr), SketchStatus::OK);
  }
  SketchTally tally;
  tally.add(SketchStatus::OK);
  tally.add(SketchStatus::OK);
  tally.add(SketchStatus::STALE);
  tally.add(SketchStatus::BAD_CHECKSUM);
  EXPECT_EQ(tally.rejected(), 2u);
  EXPECT_EQ(tally.summary(), "accepted 2, rejected 2 (bad_checksum 1, stale 1)");
}

// ---- sampling ----------------------------------------------------------------------------

TEST(SketchSample, SmallSegmentsAreTakenWhole) {
  auto X = randn(5 * 4, 1), G = randn(5 * 4, 2);
  SketchSample s;
  sketch_sample_rows(s, X.data(), G.data(), 5, 4, 8, 1, 1, 0);
  EXPECT_EQ(s.rows, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(s.weight, std::vector<float>(5, 1.f));
}

TEST(SketchSample, ImportanceSampledEstimateIsUnbiasedAndDeterministic) {
  const int cnt = 60, d = 6, n = 8;
  auto X = randn((size_t)cnt * d, 31), G = randn((size_t)cnt * d, 32);
  for (int r = 0; r < cnt; ++r)  // uneven importance, some rows zero
    for (int i = 0; i < d; ++i) {
      G[(size_t)r * d + i] *= (r % 7 == 0) ? 0.f : 0.1f + 0.2f * (r % 5);
    }
  std::vector<double> exact((size_t)d * d, 0.0), est((size_t)d * d, 0.0);
  for (int r = 0; r < cnt; ++r)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) exact[i * d + j] += (double)X[r * d + i] * G[r * d + j];
  const int reps = 4000;
  SketchSample s;
  std::vector<float> Xs, Gs;
  for (int t = 0; t < reps; ++t) {
    sketch_sample_rows(s, X.data(), G.data(), cnt, d, n, 77, t, 3);
    ASSERT_EQ((int)s.rows.size(), n);
    for (int r : s.rows) ASSERT_NE(r % 7, 0) << "a zero-importance row was drawn";
    sketch_gather(s, X.data(), G.data(), d, Xs, Gs);
    for (int k = 0; k < n; ++k)
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) est[i * d + j] += (double)Xs[k * d + i] * Gs[k * d + j] / reps;
  }
  double num = 0, den = 0;
  for (int i = 0; i < d * d; ++i) num += (est[i] - exact[i]) * (est[i] - exact[i]), den += exact[i] * exact[i];
  EXPECT_LT(std::sqrt(num / den), 0.05);
  SketchSample a, b, c;
  sketch_sample_rows(a, X.data(), G.data(), cnt, d, n, 77, 5, 3);
  sketch_sample_rows(b, X.data(), G.data(), cnt, d, n, 77, 5, 3);
  sketch_sample_rows(c, X.data(), G.data(), cnt, d, n, 77, 6, 3);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_NE(a.rows, c.rows);
}
