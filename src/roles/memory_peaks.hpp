#pragma once
// Peak memory of every rank, at the end of a run (issue: scale, "planner = measurement"): the
// peak of the C++ training heap (util/heap_counter) and the process's peak RSS (VmHWM), both
// gathered at world rank 0 in one small gather (tier control) that every role joins after its
// byte counts. metrics.h5: /memory/heap_peak_bytes and /memory/end_peak_rss_bytes [1, world].
#include <cstdint>
#include <vector>

#include "parallel/comm.hpp"  // defines: Comm

namespace px {

int64_t peak_rss_bytes();  // this process's VmHWM (0 where /proc is not there)

struct MemoryPeaks {
  std::vector<int64_t> heap, rss;  // [world] at world rank 0; empty on the others
};

// Collective over world.
MemoryPeaks gather_memory_peaks(Comm& world);

}  // namespace px
