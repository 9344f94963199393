#pragma once
// The training heap, measured (issue: scale, "planner = measurement"): this program replaces
// the global operator new / delete with ones that count the bytes they hand out (glibc's
// usable size of each block), so that the peak of live C++ allocations of a rank (every
// parameter arena, gradient, moment, activation, view, message buffer) can be set beside
// what `parallax plan` predicts. Allocations by C code (MPI, HDF5, OpenMP, CUDA) are not
// counted: the process's peak RSS is beside it in the metrics.
#include <cstdint>

namespace px {

int64_t heap_bytes();       // live bytes allocated by operator new now
int64_t heap_peak_bytes();  // their maximum since the start (or the last reset)
void heap_reset_peak();     // peak := now

}  // namespace px
