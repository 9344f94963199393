// defines: sketch_sample_rows, sketch_gather
#include "sketch/sketch_sample.hpp"

#include <algorithm>
#include <cmath>

#include "sketch/sketch_quant.hpp"  // defines: sketch_stream
#include "util/hash_rng.hpp"        // defines: uniform01

namespace px {

void sketch_sample_rows(SketchSample& out, const float* X, const float* dY, int cnt, int d,
                        int n, uint64_t seed, int step, int expert) {
  out.rows.clear();
  out.weight.clear();
  if (cnt <= n) {
    for (int t = 0; t < cnt; ++t) {
      out.rows.push_back(t);
      out.weight.push_back(1.f);
    }
    return;
  }
  std::vector<double> prefix(cnt);
  std::vector<float> w(cnt);
  double total = 0;
  for (int t = 0; t < cnt; ++t) {
    double sx = 0, sg = 0;
    for (int i = 0; i < d; ++i) {
      sx += (double)X[(size_t)t * d + i] * X[(size_t)t * d + i];
      sg += (double)dY[(size_t)t * d + i] * dY[(size_t)t * d + i];
    }
    w[t] = (float)(std::sqrt(sx) * std::sqrt(sg));
    total += w[t];
    prefix[t] = total;
  }
  const uint64_t stream = sketch_stream(seed, step, expert);
  for (int s = 0; s < n; ++s) {
    double u = uniform01(stream, (uint64_t)s);
    int t;
    float weight;
    if (total > 0) {
      t = (int)(std::lower_bound(prefix.begin(), prefix.end(), u * total) - prefix.begin());
      t = std::min(t, cnt - 1);
      weight = (float)(total / ((double)n * w[t]));
    } else {
      t = std::min(cnt - 1, (int)(u * cnt));
      weight = (float)cnt / (float)n;
    }
    out.rows.push_back(t);
    out.weight.push_back(weight);
  }
}

void sketch_gather(const SketchSample& sample, const float* X, const float* dY, int d,
                   std::vector<float>& Xs, std::vector<float>& dYs) {
  const size_t m = sample.rows.size();
  Xs.resize(m * d);
  dYs.resize(m * d);
  for (size_t s = 0; s < m; ++s) {
    const size_t r = (size_t)sample.rows[s] * d;
    for (int i = 0; i < d; ++i) {
      Xs[s * d + i] = X[r + i];
      dYs[s * d + i] = dY[r + i] * sample.weight[s];
    }
  }
}

}  // namespace px
