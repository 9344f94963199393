// defines: heap_bytes, heap_peak_bytes, heap_reset_peak, and the replaced operator new / delete
#include "util/heap_counter.hpp"

#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace px {

namespace {

std::atomic<int64_t> g_live{0}, g_peak{0};

void counted(void* p) {
  const int64_t now = g_live.fetch_add((int64_t)malloc_usable_size(p), std::memory_order_relaxed) +
                      (int64_t)malloc_usable_size(p);
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void* allocate(std::size_t n, std::size_t align, bool nothrow) {
  if (n == 0) n = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) p = std::malloc(n);
  else if (posix_memalign(&p, align, n) != 0) p = nullptr;
  if (!p) {
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  counted(p);
  return p;
}

void release(void* p) {
  if (!p) return;
  g_live.fetch_sub((int64_t)malloc_usable_size(p), std::memory_order_relaxed);
  std::free(p);
}

}  // namespace

int64_t heap_bytes() { return g_live.load(std::memory_order_relaxed); }
int64_t heap_peak_bytes() { return g_peak.load(std::memory_order_relaxed); }
void heap_reset_peak() { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

}  // namespace px

// the replaced global allocation functions (every form that allocates, and every delete)
void* operator new(std::size_t n) { return px::allocate(n, 0, false); }
void* operator new[](std::size_t n) { return px::allocate(n, 0, false); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return px::allocate(n, 0, true); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return px::allocate(n, 0, true); }
void* operator new(std::size_t n, std::align_val_t a) { return px::allocate(n, (std::size_t)a, false); }
void* operator new[](std::size_t n, std::align_val_t a) { return px::allocate(n, (std::size_t)a, false); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return px::allocate(n, (std::size_t)a, true);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return px::allocate(n, (std::size_t)a, true);
}
void operator delete(void* p) noexcept { px::release(p); }
void operator delete[](void* p) noexcept { px::release(p); }
void operator delete(void* p, std::size_t) noexcept { px::release(p); }
void operator delete[](void* p, std::size_t) noexcept { px::release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { px::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { px::release(p); }
void operator delete(void* p, std::align_val_t) noexcept { px::release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { px::release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { px::release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { px::release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { px::release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { px::release(p); }
