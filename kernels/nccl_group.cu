// NcclGroup: NCCL (loaded at run time) with an id broadcast by the caller; a clear error without it.
#include "nccl_group.cuh"

#include <stdexcept>
#include <string>

#include "parallax_config.hpp"  // defines: PARALLAX_HAS_NCCL (when found)

#ifdef PARALLAX_HAS_NCCL
#include <dlfcn.h>
#include <nccl.h>
#endif

namespace px::cuda {

#ifdef PARALLAX_HAS_NCCL

namespace {

// NCCL's entry points, loaded at run time (dlopen of libnccl.so.2), so that the binary runs
// where NCCL is absent (the group falls back to host-staged MPI) and carries no 200 MB library.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string error;  // why it did not load ("" when loaded)
};

const NcclApi& nccl_api() {
  static const NcclApi api = [] {
    NcclApi a;
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      a.error = std::string("libnccl.so.2 not found (") + (e ? e : "?") + ")";
      return a;
    }
    a.get_unique_id = (decltype(a.get_unique_id))dlsym(lib, "ncclGetUniqueId");
    a.comm_init_rank = (decltype(a.comm_init_rank))dlsym(lib, "ncclCommInitRank");
    a.all_reduce = (decltype(a.all_reduce))dlsym(lib, "ncclAllReduce");
    a.comm_destroy = (decltype(a.comm_destroy))dlsym(lib, "ncclCommDestroy");
    a.error_string = (decltype(a.error_string))dlsym(lib, "ncclGetErrorString");
    if (!a.get_unique_id || !a.comm_init_rank || !a.all_reduce || !a.comm_destroy || !a.error_string)
      a.error = "libnccl.so.2 lacks an entry point (ncclGetUniqueId, ncclCommInitRank, "
                "ncclAllReduce, ncclCommDestroy, ncclGetErrorString)";
    return a;
  }();
  return api;
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + nccl_api().error_string(r));
}

}  // namespace

struct NcclGroup::Impl {
  ncclComm_t comm = nullptr;
};

std::string nccl_unavailable() {
  return nccl_api().error;
}

NcclGroup::NcclGroup(int rank, int size,
                     const std::function<void(void* id, int bytes)>& bcast_id)
    : impl_(std::make_unique<Impl>()) {
  const NcclApi& api = nccl_api();
  if (!api.error.empty()) throw std::runtime_error("NcclGroup: " + api.error);
  ncclUniqueId id{};
  if (rank == 0) nccl_check(api.get_unique_id(&id), "ncclGetUniqueId");
  bcast_id(&id, (int)sizeof(id));
  nccl_check(api.comm_init_rank(&impl_->comm, size, id, rank), "ncclCommInitRank");
}

NcclGroup::~NcclGroup() {
  if (impl_ && impl_->comm) nccl_api().comm_destroy(impl_->comm);
}

void NcclGroup::allreduce_sum(float* data, size_t n, cudaStream_t stream) {
  nccl_check(nccl_api().all_reduce(data, data, n, ncclFloat32, ncclSum, impl_->comm, stream),
             "ncclAllReduce");
  cudaCheck(cudaStreamSynchronize(stream));
}

#else  // no NCCL in this build

struct NcclGroup::Impl {};

std::string nccl_unavailable() { return "this build has no NCCL (nccl.h was not found beside CUDA)"; }

NcclGroup::NcclGroup(int, int, const std::function<void(void*, int)>&) {
  throw std::logic_error("NcclGroup: this build has no NCCL (PARALLAX_HAS_NCCL is off)");
}
NcclGroup::~NcclGroup() = default;
void NcclGroup::allreduce_sum(float*, size_t, cudaStream_t) {}

#endif

}  // namespace px::cuda
