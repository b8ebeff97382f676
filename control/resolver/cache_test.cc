#include "control/resolver/cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <sstream>
#include <thread>
#include <vector>

#include "control/resolver/test_util.h"

namespace tern::control::resolver {
namespace {

using namespace testing;

const char* kSoa = "example.lab. 3600 IN SOA ns1.example.lab. h.example.lab. 1 2 3 4 300";

TEST(NegativeTtl, IsMinOfSoaTtlAndMinimum) {  // RFC 2308 §5
  dns::Rr a(rr("example.lab. 3600 IN SOA ns. h. 1 2 3 4 300"));
  EXPECT_EQ(negative_ttl(a.get()), 300u);
  dns::Rr b(rr("example.lab. 60 IN SOA ns. h. 1 2 3 4 300"));
  EXPECT_EQ(negative_ttl(b.get()), 60u);
}

TEST(Cache, NegativeEntriesUseSoaTtlCappedByConfig) {
  CacheLimits lim;
  lim.neg_ttl_cap = 120;
  Cache c(lim);
  auto soa = rrset({kSoa});
  c.put_negative(name("nope.example.lab."), LDNS_RR_TYPE_A, EntryKind::nxdomain, soa.get(), 0);
  auto e = c.get(name("NOPE.example.lab."), LDNS_RR_TYPE_AAAA, EntryKind::nxdomain, 1000);
  ASSERT_NE(e, nullptr);  // NXDOMAIN holds for every type
  EXPECT_EQ(e->ttl, 120u);
  c.put_negative(name("www.example.lab."), LDNS_RR_TYPE_MX, EntryKind::nodata, soa.get(), 0);
  EXPECT_NE(c.get(name("www.example.lab."), LDNS_RR_TYPE_MX, EntryKind::nodata, 1000), nullptr);
  EXPECT_EQ(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::nodata, 1000), nullptr);
  // RFC 2308 §5: no SOA, no negative caching.
  c.put_negative(name("x.example.lab."), LDNS_RR_TYPE_A, EntryKind::nxdomain, nullptr, 0);
  EXPECT_EQ(c.get(name("x.example.lab."), LDNS_RR_TYPE_A, EntryKind::nxdomain, 0), nullptr);
}

TEST(Cache, LookupShortcutsFollowEntries) {
  // The owners filter, the DNAME tallies and the stale counter behind assemble()'s
  // shortcuts must track every insert, replacement, expiry, eviction and flush.
  CacheLimits lim;
  Cache c(lim);
  EXPECT_FALSE(c.any_dname());
  auto d = rrset({"old.example.lab. 60 IN DNAME new.example.lab."});
  ASSERT_TRUE(c.put_rrset(d.get(), Trust::answer_auth, 0));
  ASSERT_TRUE(c.put_rrset(d.get(), Trust::answer_auth, 0));  // replaced, counted once
  EXPECT_TRUE(c.any_dname());
  EXPECT_TRUE(c.may_have_dname(3));
  EXPECT_FALSE(c.may_have_dname(2));
  EXPECT_NE(c.get(name("OLD.example.lab."), LDNS_RR_TYPE_DNAME, EntryKind::rrset, 1000), nullptr);
  EXPECT_EQ(c.flush(name("old.example.lab."), false), 1u);
  EXPECT_FALSE(c.any_dname());
  EXPECT_FALSE(c.may_have_dname(3));

  auto a = rrset({"www.example.lab. 60 IN A 192.0.2.1"});
  ASSERT_TRUE(c.put_rrset(a.get(), Trust::answer_auth, 0));
  uint64_t seen = c.stale_seen();
  EXPECT_NE(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 1000), nullptr);
  EXPECT_EQ(c.stale_seen(), seen);
  // Expired but servable stale: counted, so a stale pass is worth doing.
  EXPECT_EQ(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 61000), nullptr);
  EXPECT_EQ(c.stale_seen(), seen + 1);
  EXPECT_NE(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 61000, true),
            nullptr);
  // A resized filter is rebuilt from the entries.
  lim.max_bytes = 1u << 20;
  c.set_limits(lim);
  EXPECT_NE(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 61000, true),
            nullptr);
  c.flush_all();
  EXPECT_EQ(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0, true), nullptr);
  ASSERT_TRUE(c.put_rrset(a.get(), Trust::answer_auth, 0));
  EXPECT_NE(c.get(name("www.example.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0), nullptr);
}

TEST(Cache, TtlFloorAndCapApply) {
  CacheLimits lim;
  lim.ttl_floor = 30;
  lim.ttl_cap = 100;
  Cache c(lim);
  auto lo = rrset({"a.lab. 5 IN A 198.18.9.1"});
  auto hi = rrset({"b.lab. 100000 IN A 198.18.9.2"});
  c.put_rrset(lo.get(), Trust::answer_auth, 0);
  c.put_rrset(hi.get(), Trust::answer_auth, 0);
  EXPECT_EQ(c.get(name("a.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0)->ttl, 30u);
  EXPECT_EQ(c.get(name("b.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0)->ttl, 100u);
  auto out = Cache::with_ttl(*c.get(name("b.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 40000), 40000, 0);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(out.get(), 0)), 60u);
}

TEST(Cache, GlueNeverReplacesAuthoritativeData) {  // RFC 2181 §5.4.1
  Cache c(CacheLimits{});
  auto auth = rrset({"ns1.lab. 3600 IN A 198.18.9.1"});
  auto glue = rrset({"ns1.lab. 3600 IN A 198.18.6.6"});
  EXPECT_TRUE(c.put_rrset(auth.get(), Trust::answer_auth, 0));
  EXPECT_FALSE(c.put_rrset(glue.get(), Trust::additional, 0));
  auto e = c.get(name("ns1.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0);
  EXPECT_EQ(text(e->rrs.get()), text(auth.get()));
  // Once expired, anything fresh wins.
  EXPECT_TRUE(c.put_rrset(glue.get(), Trust::additional, 3600 * 1000 + 1));
}

TEST(Cache, StaleOnlyWithinWindowAndWhenAsked) {
  CacheLimits lim;
  lim.stale_window = 100;
  Cache c(lim);
  auto a = rrset({"a.lab. 10 IN A 198.18.9.1"});
  c.put_rrset(a.get(), Trust::answer_auth, 0);
  EXPECT_EQ(c.get(name("a.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 20000), nullptr);
  auto e = c.get(name("a.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 20000, true);
  ASSERT_NE(e, nullptr);
  auto out = Cache::with_ttl(*e, 20000, 30);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(out.get(), 0)), 30u);  // RFC 8767 §4 stale TTL
  EXPECT_EQ(c.get(name("a.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 200000, true), nullptr);
}

TEST(Cache, BoundedByBytesEvictingLeastRecentlyUsed) {
  CacheLimits lim;
  lim.max_bytes = 4000;
  Cache c(lim, 1);  // one shard: LRU is exact within a shard
  for (int i = 0; i < 100; ++i) {
    std::string line = "n";  // appended, not operator+: GCC 12 -Wrestrict false positive
    line.append(std::to_string(i)).append(".lab. 60 IN A 198.18.9.1");
    auto a = rrset({line});
    c.put_rrset(a.get(), Trust::answer_auth, 0);
    // Keep n0 hot: it must survive.
    c.get(name("n0.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0);
  }
  EXPECT_LE(c.bytes(), lim.max_bytes);
  EXPECT_GT(c.evictions(), 0u);
  EXPECT_NE(c.get(name("n0.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0), nullptr);
  EXPECT_EQ(c.get(name("n1.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0), nullptr);
  EXPECT_NE(c.get(name("n99.lab."), LDNS_RR_TYPE_A, EntryKind::rrset, 0), nullptr);
}

TEST(Cache, FlushNameOrSubtree) {
  Cache c(CacheLimits{});
  for (auto t : {"a.example.lab. 60 IN A 198.18.9.1", "b.a.example.lab. 60 IN A 198.18.9.2",
                 "example.lab. 60 IN A 198.18.9.3", "xa.example.lab. 60 IN A 198.18.9.4"}) {
    auto s = rrset({t});
    c.put_rrset(s.get(), Trust::answer_auth, 0);
  }
  EXPECT_EQ(c.flush(name("a.example.lab."), true), 2u);
  EXPECT_EQ(c.entries(), 2u);
  EXPECT_EQ(c.flush(name("example.lab."), false), 1u);
  std::ostringstream dump;
  c.dump(dump, 0);
  EXPECT_NE(dump.str().find("xa.example.lab."), std::string::npos);
}


// RFC 8020: an NXDOMAIN covers every name below it, not the name's siblings or parents.
TEST(Cache, NxdomainAboveFindsTheClosestCachedCut) {
  Cache c(CacheLimits{});
  auto soa = rrset({kSoa});
  EXPECT_EQ(c.nxdomain_above(name("a.nx.example.lab."), 0), nullptr);  // none cached
  c.put_negative(name("nx.example.lab."), LDNS_RR_TYPE_A, EntryKind::nxdomain, soa.get(), 0);
  auto e = c.nxdomain_above(name("A.b.NX.example.lab."), 1000);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->kind, EntryKind::nxdomain);
  EXPECT_EQ(c.nxdomain_above(name("nx.example.lab."), 1000), nullptr);  // proper ancestors only
  EXPECT_EQ(c.nxdomain_above(name("a.nx2.example.lab."), 1000), nullptr);
  EXPECT_EQ(c.nxdomain_above(name("example.lab."), 1000), nullptr);
  // Expired (negative TTL 300 s): no cut, unless stale data may be served.
  EXPECT_EQ(c.nxdomain_above(name("a.nx.example.lab."), 301000), nullptr);
  EXPECT_NE(c.nxdomain_above(name("a.nx.example.lab."), 301000, true), nullptr);
  c.flush_all();
  EXPECT_EQ(c.nxdomain_above(name("a.nx.example.lab."), 1000), nullptr);
}

// Loops read and write one cache at once: writers store names whose A record encodes the
// name, readers check every hit is whole and is the one asked for, a third thread flushes
// and evicts. Under ThreadSanitizer (a -fsanitize=thread build) this also proves the
// locking; here it proves no torn or crossed entries and the byte bound.
TEST(Cache, ConcurrentReadersWritersAndFlushesStayConsistent) {
  CacheLimits lim;
  lim.max_bytes = 256u << 10;  // small: eviction runs all along
  Cache c(lim);
  constexpr int kNames = 2000;
  std::vector<dns::Name> names;
  std::vector<dns::RrList> sets;
  for (int i = 0; i < kNames; ++i) {
    std::string owner = "n";  // appended, not operator+: GCC 12 -Wrestrict false positive
    owner.append(std::to_string(i)).append(".lab.");
    names.push_back(name(owner));
    std::string line = owner;
    line.append(" 60 IN A 198.18.").append(std::to_string(i / 250)).append(".").append(
        std::to_string(i % 250));
    sets.push_back(rrset({line}));
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> hits{0}, bad{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w)
    ts.emplace_back([&, w] {
      for (int round = 0; !stop; ++round)
        for (int i = w; i < kNames; i += 2) c.put_rrset(sets[size_t(i)].get(), Trust::answer_auth, 0);
    });
  for (int r = 0; r < 2; ++r)
    ts.emplace_back([&, r] {
      while (!stop)
        for (int i = r; i < kNames; i += 3) {
          auto e = c.get(names[size_t(i)], LDNS_RR_TYPE_A, EntryKind::rrset, 1000);
          if (!e) continue;
          ++hits;
          dns::RrList l = Cache::with_ttl(*e, 1000, 0);
          if (ldns_rr_list_rr_count(l.get()) != 1 ||
              !dns::owner(ldns_rr_list_rr(l.get(), 0)).equals(names[size_t(i)]) ||
              ldns_rdf_compare(ldns_rr_rdf(ldns_rr_list_rr(l.get(), 0), 0),
                               ldns_rr_rdf(ldns_rr_list_rr(sets[size_t(i)].get(), 0), 0)) != 0)
            ++bad;
        }
    });
  ts.emplace_back([&] {
    for (int i = 0; !stop; ++i) {
      if (i % 50 == 0) c.flush_all();
      else c.flush(names[size_t(i % kNames)], false);
      c.entries();
      c.bytes();
      std::this_thread::yield();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : ts) t.join();
  std::printf("concurrent cache: %llu hits checked, %llu evictions\n",
              static_cast<unsigned long long>(hits.load()), static_cast<unsigned long long>(c.evictions()));
  EXPECT_GT(hits.load(), 0u);
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_LE(c.bytes(), lim.max_bytes);
  EXPECT_GT(c.evictions(), 0u);
}

}  // namespace
}  // namespace tern::control::resolver
