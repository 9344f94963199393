#pragma once
// Merging islands' outer gradients (DESIGN §5): token-weighted mean, or radial-directional
// averaging (RDA: the merged norm is the weighted mean of the norms, the direction the
// normalised weighted mean of unit directions), per tensor; embeddings always mean. Then the
// outer Nesterov step.
#include <cstddef>
#include <vector>

#include "sync/fragments.hpp"  // defines: FragmentPlan

namespace px {

// out[0, hi-lo) = merge of deltas[i][0, hi-lo) with weights w (sum 1), for fragment f's
// flat range [lo, hi). rda: per tensor piece (mean for mean_only pieces).
void merge_outer(const FragmentPlan& plan, int f, size_t lo, size_t hi,
                 const std::vector<const float*>& deltas, const std::vector<double>& w, bool rda,
                 float* out);

// Nesterov outer step on n values (PyTorch SGD(nesterov) form):
//   m = mu m + g;  theta -= lr (g + mu m).
void outer_nesterov(float* theta, float* mom, const float* g, size_t n, double lr, double mu);

}  // namespace px
