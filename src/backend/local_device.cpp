// defines: local_rank_from_env
#include "backend/local_device.hpp"

#include <cstdlib>

namespace px {

int local_rank_from_env(const std::function<const char*(const char*)>& getenv) {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const char* v = getenv(name);
    if (!v || !*v) continue;
    char* end = nullptr;
    const long r = std::strtol(v, &end, 10);
    if (*end == '\0' && r >= 0 && r < (1L << 30)) return (int)r;
  }
  return 0;
}

}  // namespace px
