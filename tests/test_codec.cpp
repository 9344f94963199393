// Wire codecs of the backbone sync (src/sync/codec.hpp) and error feedback
// (src/sync/error_feedback.hpp): exact sizes, hand-computed rounding cases, per-element error
// bounds on random data of many shapes, decode_add, malformed input, and error feedback.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sync/codec.hpp"           // defines: encode, decode, decode_add, encoded_bytes, Block*
#include "sync/error_feedback.hpp"  // defines: ErrorFeedback

using px::WireDtype;

namespace {

constexpr WireDtype kAll[] = {WireDtype::FP32, WireDtype::BF16, WireDtype::INT8, WireDtype::FP4, WireDtype::TERNARY};
constexpr WireDtype kLossy[] = {WireDtype::BF16, WireDtype::INT8, WireDtype::FP4, WireDtype::TERNARY};
constexpr size_t kLengths[] = {1, 255, 256, 257, 1000, 4099};
constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

std::string name(WireDtype d) { return std::string(px::to_string(d)); }

enum class Data { NORMAL, HEAVY, EQUAL, TINY, SUBNORMAL, SPARSE };
constexpr Data kData[] = {Data::NORMAL, Data::HEAVY, Data::EQUAL, Data::TINY, Data::SUBNORMAL, Data::SPARSE};
const char* data_name(Data k) {
  switch (k) {
    case Data::NORMAL: return "normal";
    case Data::HEAVY: return "heavy";
    case Data::EQUAL: return "equal";
    case Data::TINY: return "tiny";
    case Data::SUBNORMAL: return "subnormal";
    case Data::SPARSE: return "sparse";
  }
  return "?";
}

// Fresh random data, never all zeros.
std::vector<float> make_data(Data k, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n);
  const float c = -0.37f - u(rng);
  for (size_t i = 0; i < n; ++i) {
    switch (k) {
      case Data::NORMAL: x[i] = g(rng); break;
      case Data::HEAVY: x[i] = g(rng) / std::max(std::fabs(g(rng)), 1e-3f); break;  // Cauchy-like
      case Data::EQUAL: x[i] = c; break;
      case Data::TINY: x[i] = 1e-30f * g(rng); break;
      case Data::SUBNORMAL: x[i] = 1e-39f * g(rng); break;  // mostly fp32 subnormals
      case Data::SPARSE: x[i] = u(rng) < 0.7f ? 0.0f : g(rng); break;
    }
  }
  if (std::all_of(x.begin(), x.end(), [](float v) { return v == 0.0f; })) x[n / 2] = 0.5f;
  return x;
}

// Wire bytes, with a guard after the encoded bytes to catch overruns.
constexpr size_t kGuard = 64;
std::vector<uint8_t> encode_vec(WireDtype d, const std::vector<float>& x, uint8_t fill = 0xA5) {
  std::vector<uint8_t> out(px::encoded_bytes(d, x.size()) + kGuard, fill);
  px::encode(d, x.data(), x.size(), out.data());
  return out;
}
std::vector<float> decode_vec(WireDtype d, const std::vector<uint8_t>& w, size_t n) {
  std::vector<float> out(n, std::numeric_limits<float>::quiet_NaN());
  px::decode(d, w.data(), n, out.data());
  return out;
}

size_t block_bytes(WireDtype d) {
  switch (d) {
    case WireDtype::INT8: return sizeof(px::BlockInt8);
    case WireDtype::FP4: return sizeof(px::BlockFp4);
    case WireDtype::TERNARY: return sizeof(px::BlockTernary);
    default: return 0;
  }
}
// The fp32 scale of block b, read from the wire.
float wire_scale(WireDtype d, const std::vector<uint8_t>& w, size_t b) {
  float s;
  std::memcpy(&s, w.data() + b * block_bytes(d), 4);
  return s;
}

// The per-element error bound of codec.hpp for value v in a block of scale s.
double error_bound(WireDtype d, float v, float s) {
  const double a = std::fabs(static_cast<double>(v)), S = s;
  switch (d) {
    case WireDtype::FP32: return 0.0;
    case WireDtype::BF16: return std::max(a * 0x1p-8, 0x1p-134);
    case WireDtype::INT8: return S / 254.0 + S * 0x1p-24 + kDenormMin;  // + rounding of the decoded fp32
    case WireDtype::FP4: return std::max(a / 3.0, S * 0x1p-7) * (1.0 + 0x1p-20) + kDenormMin;
    case WireDtype::TERNARY: return std::max(S / 2.0, a - S) * (1.0 + 0x1p-20) + kDenormMin;
  }
  return 0.0;
}

// Checks decoded y against x for dtype d (wire w gives the block scales). Returns failures.
int check_decoded(WireDtype d, const std::vector<float>& x, const std::vector<float>& y, const std::vector<uint8_t>& w,
                  const std::string& ctx) {
  int bad = 0;
  const size_t n = x.size();
  for (size_t start = 0, b = 0; start < n; start += px::kWireBlock, ++b) {
    const size_t r = std::min(px::kWireBlock, n - start);
    float s = 0.0f;
    if (block_bytes(d)) {
      s = wire_scale(d, w, b);
      double amax = 0, asum = 0;
      for (size_t i = start; i < start + r; ++i) {
        amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
        asum += std::fabs(static_cast<double>(x[i]));
      }
      if (d == WireDtype::TERNARY) {
        const double mean = asum / static_cast<double>(r);
        EXPECT_NEAR(s, mean, mean * 1e-6) << ctx << " block " << b << ": scale is not the absmean";
      } else {
        EXPECT_EQ(s, static_cast<float>(amax)) << ctx << " block " << b << ": scale is not the absmax";
      }
    }
    for (size_t i = start; i < start + r && bad < 5; ++i) {
      const double err = std::fabs(static_cast<double>(y[i]) - x[i]);
      bool ok = std::isfinite(y[i]) && err <= error_bound(d, x[i], s);
      if (d == WireDtype::FP32) ok = std::bit_cast<uint32_t>(y[i]) == std::bit_cast<uint32_t>(x[i]);
      if (d == WireDtype::BF16) ok = ok && (std::bit_cast<uint32_t>(y[i]) & 0xFFFFu) == 0;
      if (d == WireDtype::FP4) {
        // Independent reference: nearest of s * {0, 2^-6 .. 2^0} in linear value, ties up.
        const double a = std::fabs(static_cast<double>(x[i])) / s;
        int best = 0;  // 0 = zero, k = 1..7 = 2^(k-7)
        double best_err = a;
        for (int k = 1; k <= 7; ++k) {
          double e = std::fabs(a - std::ldexp(1.0, k - 7));
          if (e <= best_err) best = k, best_err = e;
        }
        float mag = best ? s * std::ldexp(1.0f, best - 7) : 0.0f;
        float want = (x[i] < 0 && best) ? -mag : mag;
        ok = ok && y[i] == want;
      }
      if (d == WireDtype::TERNARY) {
        const bool in_set = y[i] == 0.0f || y[i] == s || y[i] == -s;
        const bool sign_ok = y[i] == 0.0f || (y[i] > 0) == (x[i] > 0);
        const double ratio = s > 0 ? std::fabs(static_cast<double>(x[i])) / s : 0.0;
        const bool rule_ok = (ratio > 0.5 + 1e-6 && y[i] != 0.0f) || (ratio < 0.5 - 1e-6 && y[i] == 0.0f) ||
                             std::fabs(ratio - 0.5) <= 1e-6;
        ok = ok && in_set && sign_ok && rule_ok;
      }
      if (!ok) {
        ++bad;
        ADD_FAILURE() << ctx << " i=" << i << " x=" << x[i] << " decoded=" << y[i] << " err=" << err
                      << " bound=" << error_bound(d, x[i], s) << " scale=" << s;
      }
    }
  }
  return bad;
}

}  // namespace

// ---- sizes ---------------------------------------------------------------------------------

TEST(CodecSize, MatchesTheDocumentedFormulas) {
  auto cdiv = [](size_t a, size_t b) { return (a + b - 1) / b; };
  std::vector<size_t> ns;
  for (size_t n = 0; n <= 1300; ++n) ns.push_back(n);
  for (size_t n : {4099ul, 65536ul, 1000000ul, 1048576ul, 1048577ul}) ns.push_back(n);
  for (size_t n : ns) {
    EXPECT_EQ(px::encoded_bytes(WireDtype::FP32, n), 4 * n);
    EXPECT_EQ(px::encoded_bytes(WireDtype::BF16, n), 2 * n);
    EXPECT_EQ(px::encoded_bytes(WireDtype::INT8, n), n + 4 * cdiv(n, 256)) << n;
    EXPECT_EQ(px::encoded_bytes(WireDtype::FP4, n), cdiv(n, 2) + 4 * cdiv(n, 256)) << n;
    size_t tern = 0;  // per block: 4 + ceil(r/5)
    for (size_t s = 0; s < n; s += 256) tern += 4 + cdiv(std::min<size_t>(256, n - s), 5);
    EXPECT_EQ(px::encoded_bytes(WireDtype::TERNARY, n), tern) << n;
  }
  EXPECT_EQ(px::encoded_bytes(WireDtype::TERNARY, 256), 56u);
  EXPECT_EQ(px::encoded_bytes(WireDtype::TERNARY, 257), 61u);
  EXPECT_NEAR(px::compression_ratio(WireDtype::FP4, 1 << 20), 1024.0 / 132.0, 1e-12);
}

// Every byte of [0, encoded_bytes) is written (deterministically), none after it.
TEST(CodecSize, WritesExactlyEncodedBytes) {
  std::mt19937 rng(1);
  for (WireDtype d : kAll)
    for (size_t n : kLengths) {
      auto x = make_data(Data::NORMAL, n, rng);
      auto a = encode_vec(d, x, 0xA5), b = encode_vec(d, x, 0x5A);
      const size_t nb = px::encoded_bytes(d, n);
      EXPECT_TRUE(std::equal(a.begin(), a.begin() + nb, b.begin())) << name(d) << " n=" << n << ": unwritten bytes";
      EXPECT_TRUE(std::all_of(a.begin() + nb, a.end(), [](uint8_t v) { return v == 0xA5; })) << name(d) << " n=" << n << ": overrun";
    }
}

// ---- hand-computed cases of each rounding rule ----------------------------------------------

TEST(CodecRounding, Bf16IsRoundToNearestEvenAndSaturates) {
  const std::vector<float> x = {1.0f + 0x1p-8f,          // tie -> even (1.0)
                                1.0f + 3 * 0x1p-8f,      // tie -> even (1 + 2^-6)
                                -(1.0f + 0x1p-8f + 0x1p-20f),  // above the tie -> -(1 + 2^-7)
                                std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(), 0.0f, 0x1p-133f, 0x1p-140f};
  auto y = decode_vec(WireDtype::BF16, encode_vec(WireDtype::BF16, x), x.size());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 1.0f + 0x1p-6f);
  EXPECT_EQ(y[2], -(1.0f + 0x1p-7f));
  EXPECT_EQ(std::bit_cast<uint32_t>(y[3]), 0x7F7F0000u);  // largest finite bf16, not inf
  EXPECT_EQ(std::bit_cast<uint32_t>(y[4]), 0xFF7F0000u);
  EXPECT_EQ(y[5], 0.0f);
  EXPECT_EQ(y[6], 0x1p-133f);  // the smallest bf16 subnormal
  EXPECT_EQ(y[7], 0.0f);       // below half of it
  EXPECT_LE(std::fabs(y[3] - x[3]) / x[3], 0x1p-8);
}

TEST(CodecRounding, Int8IsHalfEvenOnAbsmaxGrid) {
  const std::vector<float> x = {127.0f, 0.5f, 1.5f, -0.5f, 2.5f, -126.6f, -2.5f};  // step = 127/127 = 1
  auto w = encode_vec(WireDtype::INT8, x);
  ASSERT_EQ(px::encoded_bytes(WireDtype::INT8, x.size()), 4 + x.size());
  EXPECT_EQ(wire_scale(WireDtype::INT8, w, 0), 127.0f);
  const int8_t want[] = {127, 0, 2, 0, 2, -127, -2};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(static_cast<int8_t>(w[4 + i]), want[i]) << i;
  auto y = decode_vec(WireDtype::INT8, w, x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], static_cast<float>(want[i])) << i;
}

TEST(CodecRounding, Fp4IsE3M0NearestTiesUp) {
  const std::vector<float> x = {1.0f, 0.75f, 0.7499f, 0x1p-7f, 0.99f * 0x1p-7f, -0.3f, -1.0f};
  auto w = encode_vec(WireDtype::FP4, x);
  ASSERT_EQ(px::encoded_bytes(WireDtype::FP4, x.size()), 4u + 4u);
  EXPECT_EQ(wire_scale(WireDtype::FP4, w, 0), 1.0f);
  // nibbles: 7 (2^0), 7 (0.75 ties up), 6 (2^-1), 1 (2^-7 ties up to 2^-6), 0, 8|5 (-2^-2), 8|7 (-1)
  EXPECT_EQ(w[4], 0x77);
  EXPECT_EQ(w[5], 0x16);
  EXPECT_EQ(w[6], 0xD0);
  EXPECT_EQ(w[7], 0x0F);  // odd count: high nibble 0
  auto y = decode_vec(WireDtype::FP4, w, x.size());
  const float want[] = {1.0f, 1.0f, 0.5f, 0x1p-6f, 0.0f, -0.25f, -1.0f};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], want[i]) << i;
}

TEST(CodecRounding, TernaryIsAbsmeanFiveTritsPerByte) {
  const std::vector<float> x = {2.0f, -2.0f, 1.0f, 0.4f, 0.0f, 0.6f, -0.5f};
  auto w = encode_vec(WireDtype::TERNARY, x);
  ASSERT_EQ(px::encoded_bytes(WireDtype::TERNARY, x.size()), 4u + 2u);
  double sum = 0;
  for (float v : x) sum += std::fabs(static_cast<double>(v));
  const float s = static_cast<float>(sum / x.size());  // 6.5/7 = 0.9286: threshold 0.4643
  EXPECT_EQ(wire_scale(WireDtype::TERNARY, w, 0), s);
  // q = +1 -1 +1 0 0 | +1 -1 (pad 0 0 0); digits q+1, little digit first
  EXPECT_EQ(w[4], 2 + 0 * 3 + 2 * 9 + 1 * 27 + 1 * 81);
  EXPECT_EQ(w[5], 2 + 0 * 3 + 1 * 9 + 1 * 27 + 1 * 81);
  auto y = decode_vec(WireDtype::TERNARY, w, x.size());
  const float want[] = {s, -s, s, 0.0f, 0.0f, s, -s};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], want[i]) << i;
}

// ---- bounds on random data ------------------------------------------------------------------

TEST(CodecRoundTrip, ErrorWithinBoundEveryDtypeShapeAndLength) {
  std::mt19937 rng(12345);
  for (WireDtype d : kAll)
    for (Data k : kData)
      for (size_t n : kLengths) {
        auto x = make_data(k, n, rng);
        auto w = encode_vec(d, x);
        auto y = decode_vec(d, w, n);
        std::string ctx = name(d) + "/" + data_name(k) + "/n=" + std::to_string(n);
        EXPECT_EQ(check_decoded(d, x, y, w, ctx), 0) << ctx;
      }
}

TEST(CodecRoundTrip, AllZerosDecodeToZeros) {
  for (WireDtype d : kAll)
    for (size_t n : kLengths) {
      std::vector<float> x(n, 0.0f);
      auto y = decode_vec(d, encode_vec(d, x), n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(y[i], 0.0f) << name(d) << " n=" << n << " i=" << i;
    }
}

TEST(CodecRoundTrip, TernaryRelativeL2BelowOneOnGaussian) {
  std::mt19937 rng(7);
  for (size_t n : {256ul, 1000ul, 4099ul, 65536ul}) {
    auto x = make_data(Data::NORMAL, n, rng);
    auto y = decode_vec(WireDtype::TERNARY, encode_vec(WireDtype::TERNARY, x), n);
    double e2 = 0, x2 = 0;
    for (size_t i = 0; i < n; ++i) e2 += (double(y[i]) - x[i]) * (double(y[i]) - x[i]), x2 += double(x[i]) * x[i];
    const double rel = std::sqrt(e2 / x2);
    EXPECT_LT(rel, 1.0) << n;
    if (n == 65536) std::printf("[codec] ternary relative L2 error on N(0,1), n=%zu: %.4f\n", n, rel);
  }
}

// Relative L2 error of each dtype on gaussian data (printed for the report; bounded loosely).
TEST(CodecRoundTrip, RelativeL2OnGaussian) {
  std::mt19937 rng(8);
  const size_t n = 1 << 16;
  auto x = make_data(Data::NORMAL, n, rng);
  const double limit[] = {0.0, 0x1p-8, 0.01, 0.25, 0.7};
  for (WireDtype d : kAll) {
    auto y = decode_vec(d, encode_vec(d, x), n);
    double e2 = 0, x2 = 0;
    for (size_t i = 0; i < n; ++i) e2 += (double(y[i]) - x[i]) * (double(y[i]) - x[i]), x2 += double(x[i]) * x[i];
    const double rel = std::sqrt(e2 / x2);
    std::printf("[codec] %-7s relative L2 error on N(0,1): %.3e\n", name(d).c_str(), rel);
    EXPECT_LE(rel, limit[static_cast<int>(d)]) << name(d);
  }
}

TEST(CodecDecodeAdd, EqualsDecodeThenFma) {
  std::mt19937 rng(99);
  std::normal_distribution<float> g;
  for (WireDtype d : kAll)
    for (size_t n : kLengths) {
      auto x = make_data(Data::HEAVY, n, rng);
      auto w = encode_vec(d, x);
      auto y = decode_vec(d, w, n);
      std::vector<float> acc(n);
      for (auto& a : acc) a = g(rng);
      auto want = acc;
      const float weight = 0.37f;
      for (size_t i = 0; i < n; ++i) want[i] = std::fma(weight, y[i], want[i]);
      px::decode_add(d, w.data(), n, acc.data(), weight);
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(acc[i]), std::bit_cast<uint32_t>(want[i])) << name(d) << " n=" << n << " i=" << i;
      // weight 1 into zeros is decode itself
      std::vector<float> z(n, 0.0f);
      px::decode_add(d, w.data(), n, z.data(), 1.0f);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(z[i], y[i]) << name(d) << " n=" << n << " i=" << i;
    }
}

// ---- invalid input --------------------------------------------------------------------------

TEST(CodecInvalid, NonFiniteInputThrowsNamingTheIndex) {
  std::mt19937 rng(3);
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (WireDtype d : kAll)
    for (size_t idx : {0ul, 300ul, 999ul})
      for (float b : bad) {
        auto x = make_data(Data::NORMAL, 1000, rng);
        x[idx] = b;
        std::vector<uint8_t> out(px::encoded_bytes(d, x.size()));
        try {
          px::encode(d, x.data(), x.size(), out.data());
          ADD_FAILURE() << name(d) << ": no throw for " << b << " at " << idx;
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("index " + std::to_string(idx)), std::string::npos) << e.what();
        }
      }
}

TEST(CodecInvalid, MalformedPayloadThrows) {
  std::vector<float> x(300, 0.25f);
  x[7] = -1.0f;
  for (WireDtype d : {WireDtype::INT8, WireDtype::FP4, WireDtype::TERNARY}) {
    std::vector<float> y(x.size());
    for (float s : {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      auto w = encode_vec(d, x);
      std::memcpy(w.data() + block_bytes(d), &s, 4);  // second block's scale
      EXPECT_THROW(px::decode(d, w.data(), x.size(), y.data()), std::invalid_argument) << name(d) << " scale " << s;
    }
  }
  auto w = encode_vec(WireDtype::TERNARY, x);
  w[4 + 3] = 243;
  std::vector<float> y(x.size());
  EXPECT_THROW(px::decode(WireDtype::TERNARY, w.data(), x.size(), y.data()), std::invalid_argument);
}

// ---- error feedback -------------------------------------------------------------------------

namespace {

// A biased input: per group of 4, one ±1 and three copies of a small constant `c` that every
// lossy-by-block dtype rounds to zero on its own (int8 half step 1/254, fp4 2^-7, ternary s/2).
std::vector<float> biased_input(size_t n, float c) {
  std::vector<float> x(n, c);
  for (size_t i = 0; i < n; i += 4) x[i] = (i / 4) % 3 == 0 ? -1.0f : 1.0f;
  return x;
}

// Runs T steps of EF (or of the plain codec when ef = false) on the same x. Checks at every step
// that residual == (x + old residual) - decoded bit for bit and within the one-step bound.
// Returns sum_t decoded_t (double) and fills `last_v` (x + residual of the last step).
std::vector<double> run_ef(WireDtype d, const std::vector<float>& x, int T, bool ef, px::ErrorFeedback& fb,
                           std::vector<float>& last_v, std::vector<uint8_t>& last_w) {
  const size_t n = x.size();
  std::vector<double> sum(n, 0.0);
  std::vector<uint8_t> w(px::encoded_bytes(d, n));
  std::vector<float> y(n);
  int bad = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<float> v(n);
    if (ef) {
      for (size_t i = 0; i < n; ++i) v[i] = x[i] + fb.residual()[i];
      fb.encode(d, x.data(), w.data());
    } else {
      v = x;
      px::encode(d, x.data(), n, w.data());
    }
    px::decode(d, w.data(), n, y.data());
    for (size_t i = 0; i < n; ++i) sum[i] += y[i];
    if (!ef) continue;
    for (size_t i = 0; i < n && bad < 5; ++i) {
      const float r = fb.residual()[i];
      const float s = block_bytes(d) ? wire_scale(d, w, i / px::kWireBlock) : 0.0f;
      if (std::bit_cast<uint32_t>(r) != std::bit_cast<uint32_t>(v[i] - y[i]) || !(std::fabs(r) <= error_bound(d, v[i], s))) {
        ++bad;
        ADD_FAILURE() << name(d) << " step " << t << " i=" << i << " residual " << r << " != v - decoded " << v[i] - y[i]
                      << " or above bound " << error_bound(d, v[i], s);
      }
    }
    last_v = v;
    last_w = w;
  }
  return sum;
}

}  // namespace

// (a) EF transmits a biased small signal the codec alone rounds to zero: the transmitted sum
// tracks the true sum within one step's quantization error of v_T = x + residual_{T-1}, while
// without EF the gap grows linearly in T. For INT8/FP4 that bound is ~1/254 resp. 2^-7 of the
// block absmax; for TERNARY (absmean scale) the residual of the ±1 entries first grows until the
// scale catches up (|v| up to ~4 here, residual ~3) and then stays there: bounded, not linear.
TEST(CodecErrorFeedback, TransmitsBiasedSmallValuesAndStaysBounded) {
  const size_t n = 1000;
  const float c = 1e-3f;
  const auto x = biased_input(n, c);
  for (WireDtype d : {WireDtype::INT8, WireDtype::FP4, WireDtype::TERNARY}) {
    double worst_at[3] = {0, 0, 0};
    const int Ts[3] = {500, 2000, 8000};
    for (int k = 0; k < 3; ++k) {
      const int T = Ts[k];
      px::ErrorFeedback fb(n), unused(n);
      std::vector<float> v, vn;
      std::vector<uint8_t> w, wn;
      auto with = run_ef(d, x, T, true, fb, v, w);
      auto without = run_ef(d, x, T, false, unused, vn, wn);
      double worst_ef = 0, worst_plain = 0, worst_small = 0;
      for (size_t i = 0; i < n; ++i) {
        const double truth = static_cast<double>(T) * x[i];
        const double gap = std::fabs(with[i] - truth);
        // |sum decoded - sum x| = |residual_T| <= one-step bound of v_T, plus fp32 rounding of x + r.
        const float s = wire_scale(d, w, i / px::kWireBlock);
        const double tol = error_bound(d, v[i], s) + T * 0x1p-24 * std::max(1.0, std::fabs(double(v[i])));
        EXPECT_LE(gap, tol) << name(d) << " T=" << T << " i=" << i;
        EXPECT_NEAR(with[i] - truth, -static_cast<double>(fb.residual()[i]), T * 0x1p-23) << name(d) << " i=" << i;
        worst_ef = std::max(worst_ef, gap);
        if (x[i] == c) {
          EXPECT_EQ(without[i], 0.0) << name(d) << ": the codec alone should drop " << c;
          worst_plain = std::max(worst_plain, std::fabs(without[i] - truth));
          worst_small = std::max(worst_small, gap);
        }
      }
      worst_at[k] = worst_ef;
      EXPECT_NEAR(worst_plain, T * c, T * c * 1e-6) << name(d) << ": without EF the error is T * c";
      EXPECT_LT(worst_ef, d == WireDtype::TERNARY ? 3.5 : 1.0 / 127) << name(d) << " T=" << T;
      std::printf("[codec] EF %-7s T=%4d: max |sum dec - sum x| with EF %.3e (small entries %.3e), without EF %.3e\n",
                  name(d).c_str(), T, worst_ef, worst_small, worst_plain);
    }
    // No growth between T = 2000 and T = 8000 (the plain codec's gap grows 4x).
    EXPECT_LE(worst_at[2], 1.1 * worst_at[1] + 1e-5) << name(d);
  }
}

// (a') on fresh gaussian inputs every step: the same bound on the accumulated gap, every dtype.
TEST(CodecErrorFeedback, AccumulatedErrorBoundedOnRandomInputs) {
  std::mt19937 rng(5);
  const size_t n = 1000;
  const int T = 300;
  for (WireDtype d : kAll) {
    px::ErrorFeedback fb(n);
    std::vector<double> sx(n, 0.0), sd(n, 0.0);
    std::vector<uint8_t> w(px::encoded_bytes(d, n));
    std::vector<float> y(n), v(n);
    for (int t = 0; t < T; ++t) {
      auto x = make_data(t % 2 ? Data::HEAVY : Data::NORMAL, n, rng);
      for (size_t i = 0; i < n; ++i) v[i] = x[i] + fb.residual()[i];
      fb.encode(d, x.data(), w.data());
      px::decode(d, w.data(), n, y.data());
      for (size_t i = 0; i < n; ++i) sx[i] += x[i], sd[i] += y[i];
    }
    for (size_t i = 0; i < n; ++i) {
      const float s = block_bytes(d) ? wire_scale(d, w, i / px::kWireBlock) : 0.0f;
      const double tol = error_bound(d, v[i], s) + T * 0x1p-24 * 1e3;  // heavy tails reach ~1e3
      ASSERT_LE(std::fabs(sd[i] - sx[i]), tol) << name(d) << " i=" << i;
    }
    if (d == WireDtype::FP32)
      for (float r : fb.residual()) ASSERT_EQ(r, 0.0f);
  }
}

// (b) the residual is exactly (x + old residual) - decoded; FP32 leaves it at zero.
TEST(CodecErrorFeedback, ResidualIsInputMinusDecodedExactly) {
  std::mt19937 rng(11);
  for (WireDtype d : kAll)
    for (size_t n : kLengths) {
      px::ErrorFeedback fb(n);
      std::vector<uint8_t> w(px::encoded_bytes(d, n));
      std::vector<float> y(n), v(n);
      for (int t = 0; t < 5; ++t) {
        auto x = make_data(kData[t % 6], n, rng);
        for (size_t i = 0; i < n; ++i) v[i] = x[i] + fb.residual()[i];
        fb.encode(d, x.data(), w.data());
        px::decode(d, w.data(), n, y.data());
        for (size_t i = 0; i < n; ++i) {
          const float want = d == WireDtype::FP32 ? 0.0f : v[i] - y[i];
          ASSERT_EQ(std::bit_cast<uint32_t>(fb.residual()[i]), std::bit_cast<uint32_t>(want))
              << name(d) << " n=" << n << " t=" << t << " i=" << i;
        }
        if (d == WireDtype::FP32)
          for (size_t i = 0; i < n; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(x[i]));
      }
    }
}

TEST(CodecErrorFeedback, NonFiniteThrowsAndKeepsResidual) {
  std::mt19937 rng(2);
  const size_t n = 700;
  for (WireDtype d : kLossy) {
    px::ErrorFeedback fb(n);
    std::vector<uint8_t> w(px::encoded_bytes(d, n));
    auto x = make_data(Data::NORMAL, n, rng);
    fb.encode(d, x.data(), w.data());
    const auto before = fb.residual();
    x[421] = std::numeric_limits<float>::infinity();
    try {
      fb.encode(d, x.data(), w.data());
      ADD_FAILURE() << name(d) << ": no throw";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("index 421"), std::string::npos) << e.what();
    }
    EXPECT_EQ(fb.residual(), before) << name(d);
  }
}

// ---- throughput (printed for the report) ----------------------------------------------------

TEST(CodecThroughput, OneMillionFloats) {
  std::mt19937 rng(1);
  const size_t n = 1 << 20;
  auto x = make_data(Data::NORMAL, n, rng);
  std::vector<float> y(n);
  const double mb = 4.0 * n / 1e6;  // MB of fp32 input
  using clk = std::chrono::steady_clock;
  for (WireDtype d : kAll) {
    std::vector<uint8_t> w(px::encoded_bytes(d, n));
    double best_enc = 1e30, best_dec = 1e30, best_add = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = clk::now();
      px::encode(d, x.data(), n, w.data());
      auto t1 = clk::now();
      px::decode(d, w.data(), n, y.data());
      auto t2 = clk::now();
      px::decode_add(d, w.data(), n, y.data(), 0.5f);
      auto t3 = clk::now();
      best_enc = std::min(best_enc, std::chrono::duration<double>(t1 - t0).count());
      best_dec = std::min(best_dec, std::chrono::duration<double>(t2 - t1).count());
      best_add = std::min(best_add, std::chrono::duration<double>(t3 - t2).count());
    }
    std::printf("[codec] %-7s n=2^20: %9zu B (ratio %6.3f)  encode %8.0f MB/s  decode %8.0f MB/s  decode_add %8.0f MB/s"
                "  enc+dec %8.0f MB/s\n",
                name(d).c_str(), w.size(), px::compression_ratio(d, n), mb / best_enc, mb / best_dec, mb / best_add,
                mb / (best_enc + best_dec));
    EXPECT_GT(best_enc, 0.0);
  }
}
