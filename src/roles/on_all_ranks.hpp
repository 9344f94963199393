#pragma once
// Runs fn on every rank of world; when it throws UserError on any rank, every rank throws the
// message of the lowest failing rank (so none is left waiting in a collective and rank 0
// prints it).
#include <mpi.h>

#include <string>

#include "util/errors.hpp"  // defines: UserError

namespace px {

template <class Fn>
void on_all_ranks(MPI_Comm world, Fn fn) {
  std::string err;
  try {
    fn();
  } catch (const UserError& e) {
    err = e.what();
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  int mine = err.empty() ? size : rank, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first == size) return;
  int n = (int)err.size();
  MPI_Bcast(&n, 1, MPI_INT, first, world);
  err.resize(n);
  MPI_Bcast(err.data(), n, MPI_CHAR, first, world);
  throw UserError(err);
}

}  // namespace px
