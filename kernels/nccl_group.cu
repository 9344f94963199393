// NcclGroup: NCCL's communicator from an id broadcast by the caller; a clear error without NCCL.
#include "nccl_group.cuh"

#include <stdexcept>
#include <string>

#include "parallax_config.hpp"  // defines: PARALLAX_HAS_NCCL (when found)

#ifdef PARALLAX_HAS_NCCL
#include <nccl.h>
#endif

namespace px::cuda {

#ifdef PARALLAX_HAS_NCCL

namespace {
void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}
}  // namespace

struct NcclGroup::Impl {
  ncclComm_t comm = nullptr;
};

bool nccl_built() { return true; }

NcclGroup::NcclGroup(int rank, int size,
                     const std::function<void(void* id, int bytes)>& bcast_id)
    : impl_(std::make_unique<Impl>()) {
  ncclUniqueId id{};
  if (rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  bcast_id(&id, (int)sizeof(id));
  nccl_check(ncclCommInitRank(&impl_->comm, size, id, rank), "ncclCommInitRank");
}

NcclGroup::~NcclGroup() {
  if (impl_ && impl_->comm) ncclCommDestroy(impl_->comm);
}

void NcclGroup::allreduce_sum(float* data, size_t n, cudaStream_t stream) {
  nccl_check(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, impl_->comm, stream),
             "ncclAllReduce");
  cudaCheck(cudaStreamSynchronize(stream));
}

#else  // no NCCL in this build

struct NcclGroup::Impl {};

bool nccl_built() { return false; }

NcclGroup::NcclGroup(int, int, const std::function<void(void*, int)>&) {
  throw std::logic_error("NcclGroup: this build has no NCCL (PARALLAX_HAS_NCCL is off)");
}
NcclGroup::~NcclGroup() = default;
void NcclGroup::allreduce_sum(float*, size_t, cudaStream_t) {}

#endif

}  // namespace px::cuda
