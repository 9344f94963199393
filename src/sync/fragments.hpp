#pragma once
// Backbone fragments (DESIGN §5, Streaming DiLoCo): the parameters are split into F strided
// groups of layers (layer l -> fragment l mod F; the embedding goes with fragment 0, the final
// norm and head with fragment F-1), synced at staggered steps: fragment f at the steps t > 0
// with t mod H == (f * H / F) mod H. Inside an island, local rank r of R handles shard r
// of every fragment: elements [r*n/R, (r+1)*n/R) of the fragment's flattened parameters.
// In mode "diloco" the routed experts travel with their layer's fragment; in mode "parallax"
// (with_experts = false) they are not part of the backbone: their homes own them.
#include <cstdint>
#include <string>
#include <vector>

#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {

struct FragmentPiece {
  Arena arena;
  size_t offset;  // in the arena's storage (origin - the held span's lo)
  size_t origin;  // in the layout's arena
  size_t size;
  size_t flat;    // first element of the piece in the fragment's flattened order
  bool mean_only; // embeddings: always merged by mean (never RDA)
};

class FragmentPlan {
 public:
  // held: the span of each arena the model holds (a pipeline stage: its layers'; null: the
  // whole arenas); the tensors outside are left out and the offsets count from span.lo.
  FragmentPlan(const ParamLayout& layout, int fragments, bool with_experts = true,
               const ArenaSpan* held = nullptr);
  int count() const { return (int)frags_.size(); }
  size_t size(int f) const { return sizes_[f]; }
  const std::vector<FragmentPiece>& pieces(int f) const { return frags_[f]; }
  // Fragment `fragment` of `fragments` syncs after `step`, every `every` (sync.backbone_every, H) steps.
  static bool due(int fragment, int64_t step, int every, int fragments) {
    return step > 0 && step % every == ((int64_t)fragment * every / fragments) % every;
  }
  // First element of shard `shard` of `shards` of n elements.
  static size_t shard_begin(size_t n, int shard, int shards) { return n * shard / shards; }
  // Copies fragment f's flat elements [lo, hi) out of / into the two arenas (scatter: a null
  // arena's pieces are skipped).
  void gather(int f, size_t lo, size_t hi, const float* const arenas[2], float* out) const;
  void scatter(int f, size_t lo, size_t hi, const float* in, float* const arenas[2]) const;
  // Fragment f's flat elements [lo, hi) of the run's initial parameters (train.seed = seed),
  // computed for that range alone (a syncer's shards, without the whole model).
  void initial(const ParamLayout& layout, uint64_t seed, int f, size_t lo, size_t hi, float* out) const;
  // Calls fn(piece_lo, piece_hi, mean_only) for the parts of [lo, hi) that lie in one tensor,
  // in fragment-flat coordinates (for per-tensor merge rules such as RDA).
  template <class Fn>
  void for_each_tensor(int f, size_t lo, size_t hi, Fn fn) const {
    for (const FragmentPiece& piece : frags_[f]) {
      const size_t begin = std::max(lo, piece.flat), end = std::min(hi, piece.flat + piece.size);
      if (begin < end) fn(begin, end, piece.mean_only);
    }
  }

 private:
  std::vector<std::vector<FragmentPiece>> frags_;
  std::vector<size_t> sizes_;
};

}  // namespace px
