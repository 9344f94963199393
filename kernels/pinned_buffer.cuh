#pragma once
// PinnedBuffer<T>: page-locked host memory (cudaMallocHost) for the host-staged GPU paths, so
// that cudaMemcpyAsync to and from it is a real DMA on the stream (a pageable vector is copied
// through the driver's own bounce buffer first). Grows only; its contents are not kept across a
// growth (reserve_discard), as every user fills it right after.
#include <cstddef>
#include <utility>

#include "cuda_common.cuh"  // defines: cudaCheck

namespace px::cuda {

template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { release(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(cap_, o.cap_);
    return *this;
  }

  // Room for n elements; the old contents are gone if it grew. The caller makes sure no copy
  // on a stream still reads or writes the old memory.
  void reserve_discard(size_t n) {
    if (n > cap_) {
      release();
      cudaCheck(cudaMallocHost(&p_, n * sizeof(T)));
      cap_ = n;
    }
  }
  T* data() { return p_; }
  const T* data() const { return p_; }

 private:
  void release() {
    if (p_) cudaCheck(cudaFreeHost(p_));
    p_ = nullptr;
    cap_ = 0;
  }
  T* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace px::cuda
