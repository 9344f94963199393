// Sketch packing: sampling contract, codes bit-identical to the CPU rules (int8, fp8, bf16),
// checksum, the wire round trip through a CPU home (sketch_wrap / sketch_verify /
// sketch_unpack), determinism, and unbiasedness of the importance-sampled estimate.
#include "test_util.hpp"

#include "wire/sketch_wire.hpp"  // defines: sketch_wrap, sketch_verify, sketch_unpack
#include "sketch_pack.cuh"         // defines: px::cuda::sketch_pack, sketch_checksum_cpu

using namespace px::test;

namespace {

struct Host {
  std::vector<uint8_t> xq, dyq;
  std::vector<float> xs, dys, w;
  std::vector<int32_t> row, count;
  std::vector<uint32_t> cs;
};

template <class T>
std::vector<T> dl(const T* p, size_t n) {
  std::vector<T> h(n);
  cudaCheck(cudaDeviceSynchronize());
  cudaCheck(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

Host fetch(const px::cuda::SketchBuffers& sb) {
  size_t slots = (size_t)sb.E * sb.n, codes = slots * sb.d * px::sketch_elem_bytes(sb.dtype);
  return {dl(sb.xq, codes), dl(sb.dyq, codes), dl(sb.xs, slots), dl(sb.dys, slots),
          dl(sb.weight, slots), dl(sb.row, slots), dl(sb.count, sb.E), dl(sb.checksum, sb.E)};
}

}  // namespace

// Codes of one row as the CPU rules make them (sketch_quant.hpp).
static std::vector<uint8_t> cpu_row_codes(const std::vector<float>& v, px::SketchElem t, float* scale) {
  float amax = 0.f;
  for (float x : v) amax = std::fmax(amax, std::fabs(x));
  *scale = px::sketch_row_scale(amax, t);
  std::vector<uint8_t> q(v.size() * px::sketch_elem_bytes(t));
  for (size_t i = 0; i < v.size(); ++i) px::sketch_encode_elem(v[i], *scale, t, q.data(), (int)i);
  return q;
}

namespace px {
// gtest would print the uint8_t enum as a character.
void PrintTo(SketchElem t, std::ostream* os) { *os << (t == SKETCH_INT8 ? "int8" : t == SKETCH_FP8 ? "fp8" : "bf16"); }
}  // namespace px

class CudaSketchDtype : public ::testing::TestWithParam<px::SketchElem> {};

TEST_P(CudaSketchDtype, PackMatchesCpuContract) {
  PX_SKIP_IF_NO_GPU();
  const px::SketchElem t = GetParam();
  const int d = 256, n = 64, eb = px::sketch_elem_bytes(t);
  std::vector<int> counts = {0, 3, 64, 500, 2000, 37};
  const int E = (int)counts.size();
  std::vector<int32_t> b(E + 1, 0);
  for (int e = 0; e < E; ++e) b[e + 1] = b[e] + counts[e];
  const int rows = b[E];
  auto X = randn((size_t)rows * d, 8000), G = randn((size_t)rows * d, 8001);
  auto sc = randu(rows, 8002, 0.05f, 3.f);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < d; ++i) G[(size_t)r * d + i] = 0.5f * X[(size_t)r * d + i] * sc[r] + 0.1f * G[(size_t)r * d + i];
  X = round_bf16(X);
  G = round_bf16(G);
  DBuf<bf16> gX(to_bf16(X)), gG(to_bf16(G));
  DBuf<int32_t> gb(b);
  auto sb = px::cuda::sketch_alloc(E, n, d, rows, t);
  cudaCheck(cudaMemset(sb.xq, 0xFF, (size_t)E * n * d * eb));
  cudaCheck(cudaMemset(sb.xs, 0xFF, (size_t)E * n * 4));
  px::cuda::sketch_pack(sb, gX.p, gG.p, gb.p, rows, E, d, n, 42, 7);
  cudaCheck(cudaGetLastError());
  Host h = fetch(sb);
  std::vector<float> x(d), g(d);
  for (int e = 0; e < E; ++e) {
    int cnt = counts[e];
    ASSERT_EQ(h.count[e], std::min(cnt, n));
    double tot = 0;
    for (int r = b[e]; r < b[e + 1]; ++r) {
      double sx = 0, sg = 0;
      for (int i = 0; i < d; ++i) sx += X[(size_t)r * d + i] * X[(size_t)r * d + i], sg += G[(size_t)r * d + i] * G[(size_t)r * d + i];
      tot += std::sqrt(sx) * std::sqrt(sg);
    }
    for (int s = 0; s < h.count[e]; ++s) {
      size_t slot = (size_t)e * n + s;
      int r = h.row[slot];
      ASSERT_GE(r, b[e]);
      ASSERT_LT(r, b[e + 1]);
      if (cnt <= n) {
        ASSERT_EQ(r, b[e] + s);
        ASSERT_EQ(h.w[slot], 1.f);
      } else {
        double sx = 0, sg = 0;
        for (int i = 0; i < d; ++i) sx += X[(size_t)r * d + i] * X[(size_t)r * d + i], sg += G[(size_t)r * d + i] * G[(size_t)r * d + i];
        double qt = std::sqrt(sx) * std::sqrt(sg) / tot;
        EXPECT_NEAR(h.w[slot] * n * qt, 1.0, 1e-4);
      }
      // codes bit-identical to the CPU rules, for X and the reweighted dY
      float s_ref;
      for (int i = 0; i < d; ++i) x[i] = X[(size_t)r * d + i];
      auto q = cpu_row_codes(x, t, &s_ref);
      ASSERT_EQ(s_ref, h.xs[slot]);
      ASSERT_EQ(0, std::memcmp(q.data(), h.xq.data() + slot * d * eb, (size_t)d * eb));
      for (int i = 0; i < d; ++i) g[i] = G[(size_t)r * d + i] * h.w[slot];
      q = cpu_row_codes(g, t, &s_ref);
      ASSERT_EQ(s_ref, h.dys[slot]);
      ASSERT_EQ(0, std::memcmp(q.data(), h.dyq.data() + slot * d * eb, (size_t)d * eb));
    }
    size_t o = (size_t)e * n;
    uint32_t cs = px::cuda::sketch_checksum_cpu(h.xq.data() + o * d * eb, h.dyq.data() + o * d * eb,
                                                h.xs.data() + o, h.dys.data() + o, h.w.data() + o,
                                                h.row.data() + o, h.count[e], d, eb);
    EXPECT_EQ(cs, h.cs[e]) << "expert " << e;
    // through the wire to a CPU home: verified, and decoded within the code's error bound
    std::vector<uint8_t> wire;
    px::sketch_wrap(wire, px::SketchMeta{1000u + e, 7, 0, t}, h.count[e], d, h.xs.data() + o,
                    h.dys.data() + o, h.xq.data() + o * d * eb, h.dyq.data() + o * d * eb);
    px::SketchCheck check;
    check.d = d;
    check.max_rows = n;
    check.home_step = 7;
    px::SketchView view;
    ASSERT_EQ(px::sketch_verify(wire.data(), wire.size(), check, &view), px::SketchStatus::OK);
    std::vector<float> Xd, Gd;
    px::sketch_unpack(view, Xd, Gd);
    for (int s = 0; s < h.count[e]; ++s)
      for (int i = 0; i < d; ++i) {
        float v = X[(size_t)h.row[o + s] * d + i], y = Xd[(size_t)s * d + i];
        float bound = t == px::SKETCH_INT8 ? 0.5f * h.xs[o + s] * 1.001f
                      : t == px::SKETCH_FP8 ? std::fmax(std::ldexp(std::fabs(v), -4), std::ldexp(h.xs[o + s], -10)) * 1.001f
                                            : std::ldexp(std::fabs(v), -8);
        ASSERT_LE(std::fabs(y - v), bound);
      }
  }
  // determinism: same seed and step -> same sketch; another step -> other rows.
  px::cuda::sketch_pack(sb, gX.p, gG.p, gb.p, rows, E, d, n, 42, 7);
  Host h2 = fetch(sb);
  EXPECT_EQ(h.cs, h2.cs);
  EXPECT_EQ(h.row, h2.row);
  px::cuda::sketch_pack(sb, gX.p, gG.p, gb.p, rows, E, d, n, 42, 8);
  Host h3 = fetch(sb);
  EXPECT_NE(std::vector<int32_t>(h.row.begin() + 4 * n, h.row.begin() + 5 * n),
            std::vector<int32_t>(h3.row.begin() + 4 * n, h3.row.begin() + 5 * n));
  px::cuda::sketch_free(sb);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaSketchDtype,
                         ::testing::Values(px::SKETCH_INT8, px::SKETCH_FP8, px::SKETCH_BF16),
                         [](const auto& info) { return ::testing::PrintToString(info.param); });

TEST(CudaSketch, ImportanceSampledEstimateIsUnbiased) {
  PX_SKIP_IF_NO_GPU();
  const int d = 64, n = 32, rows = 1500, E = 1;
  std::vector<int32_t> b = {0, rows};
  auto X = randn((size_t)rows * d, 8100), G = randn((size_t)rows * d, 8101);
  auto sc = randu(rows, 8102, 0.1f, 4.f);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < d; ++i) G[(size_t)r * d + i] = X[(size_t)r * d + i] * sc[r] + 0.3f * G[(size_t)r * d + i];
  X = round_bf16(X);
  G = round_bf16(G);
  // statistic: sum_t <x_t, 1> <dy_t, 1> (a projection of X^T dY)
  auto proj = [&](const float* v) { double s = 0; for (int i = 0; i < d; ++i) s += v[i]; return s; };
  double exact = 0;
  for (int r = 0; r < rows; ++r) exact += proj(&X[(size_t)r * d]) * proj(&G[(size_t)r * d]);
  DBuf<bf16> gX(to_bf16(X)), gG(to_bf16(G));
  DBuf<int32_t> gb(b);
  auto sb = px::cuda::sketch_alloc(E, n, d, rows);
  double acc = 0;
  const int reps = 200;
  for (int t = 0; t < reps; ++t) {
    px::cuda::sketch_pack(sb, gX.p, gG.p, gb.p, rows, E, d, n, 1000 + t, 1);
    auto row = dl(sb.row, n);
    auto w = dl(sb.weight, n);
    for (int s = 0; s < n; ++s)
      acc += proj(&X[(size_t)row[s] * d]) * proj(&G[(size_t)row[s] * d]) * w[s];
  }
  acc /= reps;
  EXPECT_NEAR(acc / exact, 1.0, 0.05) << "estimate " << acc << " exact " << exact;
  px::cuda::sketch_free(sb);
}
