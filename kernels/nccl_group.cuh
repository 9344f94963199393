#pragma once
// A data-parallel group's device-side all-reduce over NCCL (one GPU per rank), for the island
// tier's per-step gradient sum (backend/device_learner). Built only when CMake found NCCL
// beside the CUDA toolkit (PARALLAX_HAS_NCCL); no MPI here: the caller broadcasts NCCL's
// unique id from rank 0 with bcast_id (an MPI_Bcast of `bytes` bytes, in its own tier).
#include <cstddef>
#include <functional>
#include <memory>

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

// Whether this build has NCCL (PARALLAX_HAS_NCCL).
bool nccl_built();

}  // namespace px::cuda
