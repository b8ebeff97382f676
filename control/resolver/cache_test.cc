#include "control/resolver/cache.h"

#include <gtest/gtest.h>

#include <sstream>

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

}  // namespace
}  // namespace tern::control::resolver
