#pragma once
// A data-parallel group's device-side all-reduce over NCCL (one GPU per rank), for the island
// tier's per-step gradient sum (backend/device_learner). Compiled when CMake found nccl.h
// beside the CUDA toolkit (PARALLAX_HAS_NCCL); libnccl.so.2 is loaded at run time (dlopen),
// so a binary without it on its library path still runs, host-staged. No MPI here: the caller
// broadcasts NCCL's unique id from rank 0 with bcast_id (an MPI_Bcast of `bytes` bytes).
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "cuda_common.cuh"  // defines: cudaStream_t

namespace px::cuda {

class NcclGroup {
 public:
  // Collective over the group's `size` ranks (each passes its rank).
  NcclGroup(int rank, int size, const std::function<void(void* id, int bytes)>& bcast_id);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  // In place: data[0..n) = the sum over the group's ranks (fp32), on `stream`; returns after
  // the sum is complete (synchronises the stream).
  void allreduce_sum(float* data, size_t n, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Why NCCL cannot be used here ("" when it can): this build has no nccl.h
// (PARALLAX_HAS_NCCL off), or libnccl.so.2 is not on the library path at run time.
std::string nccl_unavailable();

}  // namespace px::cuda
