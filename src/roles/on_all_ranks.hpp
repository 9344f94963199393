#pragma once
// Runs fn on every rank of world (its traffic counted in tier control); when it throws UserError on any rank, every rank throws the
// message of the lowest failing rank (so none is left waiting in a collective and rank 0
// prints it).
#include <mpi.h>

#include <string>

#include "parallel/comm.hpp"  // defines: Comm (counted, tier control)

#include "util/errors.hpp"  // defines: UserError

namespace px {

template <class Fn>
void on_all_ranks(Comm& world, Fn fn) {
  std::string err;
  try {
    fn();
  } catch (const UserError& e) {
    err = e.what();
  }
  int64_t first = err.empty() ? world.size() : world.rank();
  world.allreduce_min(&first, 1, Tier::CONTROL);
  if (first == world.size()) return;
  int64_t n = (int64_t)err.size();
  world.bcast(&n, sizeof n, (int)first, Tier::CONTROL);
  err.resize((size_t)n);
  world.bcast(err.data(), n, (int)first, Tier::CONTROL);
  throw UserError(err);
}

}  // namespace px
