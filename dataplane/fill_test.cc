// The service thread's cache fill (offer_to_cache) on crafted frames from Linux, including what
// happens when the cache cannot allocate. No EAL, NIC or hugepages.
//
// This binary replaces the global allocation functions (all of them, so every new/delete pair
// stays malloc/free underneath, which sanitizers accept) to make allocations fail on demand: the
// cache's real insert path then throws std::bad_alloc exactly as it would under memory pressure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>

#include "exception.h"
#include "test_packets.h"

namespace {
thread_local bool t_fail_allocs = false;

void* alloc_or_throw(std::size_t n, std::size_t align) {
  if (t_fail_allocs) throw std::bad_alloc();
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                              : std::malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
void* alloc_or_null(std::size_t n, std::size_t align) noexcept {
  try {
    return alloc_or_throw(n, align);
  } catch (...) {
    return nullptr;
  }
}
}  // namespace

void* operator new(std::size_t n) { return alloc_or_throw(n, 0); }
void* operator new[](std::size_t n) { return alloc_or_throw(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return alloc_or_throw(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return alloc_or_throw(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return alloc_or_null(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return alloc_or_null(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return alloc_or_null(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return alloc_or_null(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace tern::dp {
namespace {

using test::Bytes;
using test::QuerySpec;

ServiceAddrSet service() {
  ServiceAddrSet s;
  s.v4.push_back({198, 18, 0, 53});
  s.v6.push_back({0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53});
  return s;
}

// The client's query as the worker punted it, and the resolver's answer as Linux sends it back.
QuerySpec query_spec(bool v6 = false) {
  QuerySpec q = v6 ? test::v6spec() : QuerySpec{};
  q.qname = "www.alpha.lab.";
  return q;
}
QuerySpec answer_spec(const QuerySpec& q) {
  QuerySpec a = q;
  std::swap(a.src, a.dst);
  std::swap(a.sport, a.dport);
  return a;
}
Bytes answer_frame(const QuerySpec& q, uint32_t ttl = 300) {
  const QuerySpec a = answer_spec(q);
  return test::frame(a, test::dns_response(a, ttl, 0x0180, q.v6 ? Bytes(16, 1) : Bytes{198, 18, 2, 1}));
}

struct Fill : ::testing::Test {
  cache::Cache cache{cache::Config{}, 7};
  ServiceAddrSet svc = service();
  uint32_t now = 1000;

  std::optional<SvcCounter> offer(const Bytes& f) { return offer_to_cache(f, svc, cache, now); }
};

TEST_F(Fill, AllocationFailureIsCountedAndTheServiceThreadCarriesOn) {
  const QuerySpec q = query_spec();
  const Bytes f = answer_frame(q);
  std::optional<SvcCounter> v;
  t_fail_allocs = true;  // nothing in this test allocates until it is cleared
  try {
    v = offer(f);
  } catch (...) {
    t_fail_allocs = false;
    FAIL() << "offer_to_cache threw";
  }
  t_fail_allocs = false;
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, SvcCounter::fill_failed_nomem);
  EXPECT_EQ(cache.stats().total.entries, 0u);
  // Memory back: the same answer is stored, the cache is intact.
  EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_inserted);
  EXPECT_EQ(cache.stats().total.entries, 1u);
  EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_replaced);
}

TEST_F(Fill, NotAnAnswerIsNotCounted) {
  QuerySpec q = query_spec();
  EXPECT_EQ(offer(test::query_frame(q)), std::nullopt) << "client query: not from a service address";
  EXPECT_EQ(offer(test::frame(answer_spec(q), test::dns_response(answer_spec(q), 300, 0x0380, {1, 2, 3, 4}))),
            SvcCounter::fill_skipped_tc);
}

}  // namespace
}  // namespace tern::dp
