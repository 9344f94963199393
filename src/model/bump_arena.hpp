#pragma once
// A two-pass bump allocator: call a layout function once with a counting arena (returns
// null pointers, sums the sizes), allocate once, then call it again with the real arena.
// Keeps "sized once from the config" without writing every size twice.
#include <cstddef>
#include <vector>

namespace px {

template <class T>
class BumpArena {
 public:
  BumpArena() = default;                        // counting mode
  explicit BumpArena(std::vector<T>& storage) : base_(storage.data()), cap_(storage.size()) {}
  T* take(size_t n) {
    T* p = base_ ? base_ + used_ : nullptr;
    used_ += n;
    return n ? p : nullptr;
  }
  size_t used() const { return used_; }

 private:
  T* base_ = nullptr;
  size_t cap_ = 0;
  size_t used_ = 0;
};

}  // namespace px
