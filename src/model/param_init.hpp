#pragma once
// The run's initial parameters (DESIGN §2): matrices normal(0, std) (std 0.02, output
// projections 0.02 / sqrt(2 L)), norm gains 1. Counter-based: element i of an arena is a
// function of (seed, arena, i) alone, never of the draws before it, so every role computes
// just the slices it holds (a learner its backbone, a syncer its fragment shards, a home its
// experts) and no role builds the whole model to start from it.
#include <cstddef>
#include <cstdint>

#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {

// Writes elements [lo, hi) of arena a's initial values to out[0, hi - lo).
template <class T>
void init_arena_range(const ParamLayout& layout, Arena a, uint64_t seed, size_t lo, size_t hi, T* out);

}  // namespace px
