// Probes of the MPI test machinery (main_mpi.cpp); both are registered WILL_FAIL, i.e. the
// ctest test passes only when the run fails. Run each with its --gtest_filter only.
//  - Probe.OneRankFails (np 3): only rank 1 fails an EXPECT. A main that returned rank 0's
//    result would pass; the all-reduced failure flag must fail the run.
//  - Probe.Deadlock (np 2, PX_MPI_TEST_TIMEOUT=3): rank 0 waits in a barrier that rank 1 never
//    joins (it sleeps 30 s); the watchdog must abort the job after 3 s.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <thread>

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

TEST(Probe, OneRankFails) {
  const int rank = world_rank();
  EXPECT_NE(rank, 1) << "deliberate failure on rank 1 only";
  MPI_Barrier(MPI_COMM_WORLD);  // the other ranks carry on normally
}

TEST(Probe, Deadlock) {
  if (world_rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(30));
  else MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
