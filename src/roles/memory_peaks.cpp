// defines: peak_rss_bytes, gather_memory_peaks
#include "roles/memory_peaks.hpp"

#include <fstream>
#include <string>

#include "util/heap_counter.hpp"       // defines: heap_peak_bytes

namespace px {

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

MemoryPeaks gather_memory_peaks(Comm& world) {
  const int64_t mine[2] = {heap_peak_bytes(), peak_rss_bytes()};
  std::vector<int64_t> all(world.rank() == 0 ? 2 * (size_t)world.size() : 0);
  world.gather(mine, (int)sizeof mine, all.data(), 0, Tier::CONTROL);
  MemoryPeaks p;
  if (world.rank() != 0) return p;
  for (int r = 0; r < world.size(); ++r) {
    p.heap.push_back(all[2 * (size_t)r]);
    p.rss.push_back(all[2 * (size_t)r + 1]);
  }
  return p;
}

}  // namespace px
