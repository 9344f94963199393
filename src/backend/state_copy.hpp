#pragma once
// Copies of a learner's state between two host models (a staged device and its host copy):
// one arena's parameters, or everything a checkpoint holds (parameters, AdamW moments and
// step count, router bias).
#include <algorithm>

#include "model/moe_model.hpp"  // defines: MoeModel, Arena
#include "optim/adamw.hpp"      // defines: AdamW

namespace px {

inline void copy_arena(MoeModel<float>& from, MoeModel<float>& to, Arena a) {
  if (!from.params(a) || !to.params(a)) return;  // (mode parallax: no routed-expert arena)
  std::copy_n(from.params(a), from.arena_size(a), to.params(a));
}

// experts false: the expert arena's parameters and moments are left as they are.
inline void copy_state(MoeModel<float>& from, AdamW& from_opt, MoeModel<float>& to, AdamW& to_opt,
                       bool experts = true) {
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    if (a == Arena::EXPERTS && !experts) continue;
    copy_arena(from, to, a);
    to_opt.m(a) = from_opt.m(a);
    to_opt.v(a) = from_opt.v(a);
  }
  to.router_bias() = from.router_bias();
  to_opt.set_steps_taken(from_opt.steps_taken());
}

}  // namespace px
