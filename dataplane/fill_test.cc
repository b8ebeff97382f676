// The service thread's cache fill (offer_to_cache) on crafted frames from Linux, including what
// happens when the cache cannot allocate. No EAL, NIC or hugepages.
//
// This binary replaces the global allocation functions (all of them, so every new/delete pair
// stays malloc/free underneath, which sanitizers accept) to make allocations fail on demand: the
// cache's real insert path then throws std::bad_alloc exactly as it would under memory pressure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <new>

#include "exception.h"
#include "probe.h"
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
  q.qtype = v6 ? 28 : 1;
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
  PendingQueries pending{1024, 10000, 99};
  uint32_t now = 1000;
  uint64_t now_ms = 5'000'000;

  std::optional<SvcCounter> offer(const Bytes& f) { return offer_to_cache(f, svc, pending, now_ms, cache, now); }
  // The client's query passing to Linux (the service thread records it).
  PendingQueries::Noted punt(const QuerySpec& q) { return pending.note_query(test::query_frame(q), svc, now_ms); }
  size_t entries() const { return cache.stats().total.entries; }
};

TEST_F(Fill, AllocationFailureIsCountedAndTheServiceThreadCarriesOn) {
  const QuerySpec q = query_spec();
  const Bytes f = answer_frame(q);
  ASSERT_EQ(punt(q), PendingQueries::Noted::kRecorded);
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
  // Memory back: the next answer is stored, the cache is intact.
  punt(q);
  EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_inserted);
  EXPECT_EQ(cache.stats().total.entries, 1u);
  punt(q);
  EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_replaced);
}

TEST_F(Fill, NotAnAnswerIsNotCounted) {
  QuerySpec q = query_spec();
  EXPECT_EQ(offer(test::query_frame(q)), std::nullopt) << "client query: not from a service address";
  punt(q);
  EXPECT_EQ(offer(test::frame(answer_spec(q), test::dns_response(answer_spec(q), 300, 0x0380, {1, 2, 3, 4}))),
            SvcCounter::fill_skipped_tc);
}

// ---- only answers to queries the node received and punted fill the cache ----

TEST_F(Fill, AnswerNobodyAskedForIsSentButNeverCached) {
  // Another local daemon, a NATed container or forwarded traffic leaving from port 53 of a
  // service address: it looks exactly like the resolver's answer, but no client asked.
  for (bool v6 : {false, true}) {
    EXPECT_EQ(offer(answer_frame(query_spec(v6))), SvcCounter::fill_unmatched) << "v6=" << v6;
  }
  EXPECT_EQ(entries(), 0u);
}

TEST_F(Fill, AnswerToAPuntedQueryFillsOnceForV4AndV6) {
  for (bool v6 : {false, true}) {
    const QuerySpec q = query_spec(v6);
    ASSERT_EQ(punt(q), PendingQueries::Noted::kRecorded);
    EXPECT_EQ(punt(q), PendingQueries::Noted::kRefreshed) << "a retransmission is one query";
    EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_inserted) << v6;
    EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_unmatched) << "consumed by the first answer";
  }
}

TEST_F(Fill, EveryFieldOfTheQueryMustMatch) {
  QuerySpec q = query_spec();
  q.qname = "WwW.aLpHa.lab.";  // the answer's question may differ in case only (0x20)
  ASSERT_EQ(punt(q), PendingQueries::Noted::kRecorded);
  auto answer_with = [&](auto edit) {
    QuerySpec a = answer_spec(q);
    a.qname = "www.alpha.lab.";
    edit(a);
    return test::frame(a, test::dns_response(a, 300, 0x0180, {198, 18, 2, 1}));
  };
  struct Case {
    const char* what;
    std::function<void(QuerySpec&)> edit;
  };
  const Case wrong[] = {
      {"client port", [](QuerySpec& a) { a.dport = 40001; }},
      {"client address", [](QuerySpec& a) { a.dst = "198.18.0.101"; }},
      {"DNS ID", [](QuerySpec& a) { a.id = 0x1235; }},
      {"name", [](QuerySpec& a) { a.qname = "www.beta.lab."; }},
      {"type", [](QuerySpec& a) { a.qtype = 28; }},
      {"class", [](QuerySpec& a) { a.qclass = 3; }},
  };
  for (const Case& c : wrong) EXPECT_EQ(offer(answer_with(c.edit)), SvcCounter::fill_unmatched) << c.what;
  // From another service address than the one the client asked.
  svc.v4.push_back({198, 18, 0, 54});
  EXPECT_EQ(offer(answer_with([](QuerySpec& a) { a.src = "198.18.0.54"; })), SvcCounter::fill_unmatched);
  EXPECT_EQ(entries(), 0u);
  EXPECT_EQ(offer(answer_with([](QuerySpec&) {})), SvcCounter::fill_inserted) << "the real answer still fills";
}

TEST_F(Fill, PendingQueriesExpire) {
  const QuerySpec q = query_spec();
  punt(q);
  now_ms += 10001;
  EXPECT_EQ(offer(answer_frame(q)), SvcCounter::fill_unmatched);
  EXPECT_EQ(entries(), 0u);
}

TEST_F(Fill, TheTableIsBoundedAndAFloodOnlyEvictsTheOldest) {
  ASSERT_EQ(pending.capacity(), 1024u);
  const QuerySpec first = query_spec();
  punt(first);
  unsigned evicted = 0;
  for (unsigned i = 0; i < 20 * 1024; ++i) {
    QuerySpec f = query_spec();
    f.src = "198.18." + std::to_string(10 + i / 250) + "." + std::to_string(i % 250);
    f.sport = static_cast<uint16_t>(1024 + i);
    f.qname = "flood" + std::to_string(i) + ".lab.";
    now_ms += 1;  // ages strictly increase: the oldest in a set is well defined
    evicted += punt(f) == PendingQueries::Noted::kEvicted;
  }
  EXPECT_GE(evicted, 20u * 1024 - 1024);
  EXPECT_EQ(offer(answer_frame(first)), SvcCounter::fill_unmatched) << "the oldest went first";
  QuerySpec last = query_spec();
  last.src = "198.18.0.200";
  punt(last);
  EXPECT_EQ(offer(answer_frame(last)), SvcCounter::fill_inserted);
}

// The readiness probe's query is recorded like a client's, so its answer (to the probe MAC)
// still fills the cache, and the next probe of the name is a hit.
TEST_F(Fill, TheReadinessProbesAnswerStillFills) {
  ProbeSource src;
  ProbeQuery pq;
  ASSERT_EQ(wire::name_from_text("probe.lab", pq.name, &pq.name_len), wire::Status::ok);
  pq.qtype = 1;
  pq.id = 0x4242;
  pq.sport = 50000;
  pq.dst = {198, 18, 0, 53};
  uint8_t buf[512];
  const size_t n = build_probe_frame(buf, src, pq);
  ASSERT_GT(n, 0u);
  ASSERT_EQ(pending.note_query({buf, n}, svc, now_ms), PendingQueries::Noted::kRecorded);
  QuerySpec a;
  a.src = "198.18.0.53";
  a.dst = "198.18.255.254";
  a.sport = 53;
  a.dport = 50000;
  a.id = 0x4242;
  a.qname = "probe.lab.";
  EXPECT_EQ(offer(test::frame(a, test::dns_response(a, 60, 0x0180, {198, 18, 7, 7}))), SvcCounter::fill_inserted);
}

}  // namespace
}  // namespace tern::dp
