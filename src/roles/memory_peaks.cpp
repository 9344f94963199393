// defines: peak_rss_bytes, gather_memory_peaks
#include "roles/memory_peaks.hpp"

#include <fstream>
#include <string>

#include "parallel/wait_deadline.hpp"  // defines: WaitScope
#include "util/heap_counter.hpp"       // defines: heap_peak_bytes

namespace px {

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

MemoryPeaks gather_memory_peaks(MPI_Comm world, CommStats& stats) {
  int rank = 0, size = 0;
  mpiCheck(MPI_Comm_rank(world, &rank));
  mpiCheck(MPI_Comm_size(world, &size));
  const int64_t mine[2] = {heap_peak_bytes(), peak_rss_bytes()};
  std::vector<int64_t> all(rank == 0 ? 2 * (size_t)size : 0);
  {
    WaitScope ws("MPI_Gather (memory peaks)", "", size);
    mpiCheck(MPI_Gather(mine, 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, 0, world));
  }
  MemoryPeaks p;
  if (rank != 0) {
    stats.add(Tier::CONTROL, (int64_t)sizeof mine);
    return p;
  }
  for (int r = 0; r < size; ++r) {
    p.heap.push_back(all[2 * (size_t)r]);
    p.rss.push_back(all[2 * (size_t)r + 1]);
  }
  return p;
}

}  // namespace px
