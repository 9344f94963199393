#pragma once
// Island side on the CPU: which tokens of one expert's segment go into its sketch, with the
// reweighting of their output gradients (DESIGN §7; the rule of kernels/sketch_pack.cu):
//  - cnt <= n: every row, in order, weight 1;
//  - otherwise n i.i.d. draws with probability q_t = w_t / W, w_t = ||x_t|| * ||dy_t||,
//    W = sum_t w_t: draw s takes the first t whose prefix sum reaches u_s * W, with
//    u_s = uniform01(sketch_stream(seed, step, expert), s), and weight 1 / (n q_t); an
//    all-zero segment is drawn uniformly with weight cnt / n.
// Then sum_s weight_s x_s dy_s^T is an unbiased estimate of X^T dY (the expert's weight
// gradients are sums of such products), whatever the segment size.
#include <cstdint>
#include <vector>

namespace px {

struct SketchSample {
  std::vector<int> rows;       // rows of the segment, in draw order
  std::vector<float> weight;   // dY factor of each draw
};

// X, dY: the segment's cnt rows of d values.
void sketch_sample_rows(SketchSample& out, const float* X, const float* dY, int cnt, int d,
                        int n, uint64_t seed, int step, int expert);

// The sketch's X [m, d] and reweighted dY [m, d] rows, m = sample.rows.size().
void sketch_gather(const SketchSample& sample, const float* X, const float* dY, int d,
                   std::vector<float>& Xs, std::vector<float>& dYs);

}  // namespace px
