#pragma once
// Which GPU a rank uses (one GPU per rank): its rank among the ranks of its node, from the
// launcher's environment, modulo the node's visible devices.
#include <functional>
#include <string>

namespace px {

// The node-local rank: OMPI_COMM_WORLD_LOCAL_RANK (Open MPI), SLURM_LOCALID (srun),
// MPI_LOCALRANKID (MPICH / Intel MPI): the first of these that is set
// and a non-negative integer; 0 when none is (one rank per node, or a plain run).
// getenv: the environment lookup (std::getenv; tests pass their own).
int local_rank_from_env(const std::function<const char*(const char*)>& getenv);
// The device of local rank `local` among `devices` visible ones (devices > 0).
inline int device_for_local_rank(int local, int devices) { return local % devices; }

}  // namespace px
