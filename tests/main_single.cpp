// GoogleTest main for single-rank tests: MPI is initialised once (singleton mode)
// because the trainer and the HDF5 writers use MPI even on one rank.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  MPI_Init(&argc, &argv);
  int rc = RUN_ALL_TESTS();
  MPI_Finalize();
  return rc;
}
