// The resolver against real (tiny) authoritative servers on loopback, port 53.
// Scenario style after Unbound's testdata: a hierarchy, then one behaviour per test.
#include "control/resolver/resolver.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <thread>

#include "control/resolver/auth_harness.h"
#include "control/resolver/test_util.h"

namespace tern::control::resolver {
namespace {

using namespace testing;

const char* kRoot = R"(
. 3600 IN SOA a.root.test. h.root.test. 1 1800 900 604800 300
. 3600 IN NS a.root.test.
a.root.test. 3600 IN A 127.53.0.1
test. 3600 IN NS ns.test.
ns.test. 3600 IN A 127.53.0.2
other. 3600 IN NS ns.other.
ns.other. 3600 IN A 127.53.0.5
)";
const char* kTest = R"(
test. 3600 IN SOA ns.test. h.test. 1 1800 900 604800 300
test. 3600 IN NS ns.test.
ns.test. 3600 IN A 127.53.0.2
example.test. 3600 IN NS ns1.example.test.
example.test. 3600 IN NS ns2.example.test.
ns1.example.test. 3600 IN A 127.53.0.3
ns2.example.test. 3600 IN A 127.53.0.4
glueless.test. 3600 IN NS ns.other.
)";
const char* kExample = R"(
example.test. 3600 IN SOA ns1.example.test. h.example.test. 1 1800 900 604800 60
example.test. 3600 IN NS ns1.example.test.
example.test. 3600 IN NS ns2.example.test.
ns1.example.test. 3600 IN A 127.53.0.3
ns2.example.test. 3600 IN A 127.53.0.4
www.example.test. 300 IN A 198.18.9.1
short.example.test. 1 IN A 198.18.9.2
popular.example.test. 2 IN A 198.18.9.7
alias.example.test. 300 IN CNAME www.example.test.
ext.example.test. 300 IN CNAME www.other.
old.example.test. 300 IN DNAME new.example.test.
host.new.example.test. 300 IN A 198.18.9.3
away.example.test. 300 IN DNAME other.
loop1.example.test. 300 IN CNAME loop2.example.test.
loop2.example.test. 300 IN CNAME loop1.example.test.
a.b.c.d.example.test. 300 IN A 198.18.9.4
)";
const char* kOther = R"(
other. 3600 IN SOA ns.other. h.other. 1 1800 900 604800 300
other. 3600 IN NS ns.other.
ns.other. 3600 IN A 127.53.0.5
www.other. 300 IN A 198.18.9.5
glueless.test. 3600 IN SOA ns.other. h.other. 1 1800 900 604800 300
glueless.test. 3600 IN NS ns.other.
www.glueless.test. 300 IN A 198.18.9.6
)";

// Every process gets its own 127.x.y.0/24 so that parallel runs (several build
// directories on one machine) never fight over port 53.
std::string net() {
  static std::string n = "127." + std::to_string(54 + (getpid() >> 8) % 64) + "." +
                         std::to_string(getpid() % 256) + ".";
  return n;
}
// Zone and hints text are written with 127.53.0.N; this moves them to net().
std::string at(std::string text) {
  for (size_t p; (p = text.find("127.53.0.")) != std::string::npos;) text.replace(p, 9, net());
  return text;
}

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::make_unique<AuthServer>(at("127.53.0.1"), at(kRoot));
    if (!root_->ok()) GTEST_SKIP() << "cannot bind " << at("127.53.0.1") << ":53 (" << root_->error() << "); needs root";
    test_ = std::make_unique<AuthServer>(at("127.53.0.2"), at(kTest));
    ex1_ = std::make_unique<AuthServer>(at("127.53.0.3"), at(kExample));
    ex2_ = std::make_unique<AuthServer>(at("127.53.0.4"), at(kExample));
    other_ = std::make_unique<AuthServer>(at("127.53.0.5"), at(kOther));
    for (auto* s : {test_.get(), ex1_.get(), ex2_.get(), other_.get()})
      ASSERT_TRUE(s->ok()) << s->error();
    std::string err;
    auto h = parse_hints(at(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.53.0.1\n"), "hints", err);
    ASSERT_TRUE(h) << err;
    cfg_.upstream_timeout_ms = 300;
    res_ = std::make_unique<Resolver>(loop_);
    res_->configure(cfg_, std::move(*h));
  }

  Answer resolve(const std::string& qname, ldns_rr_type t) {
    Answer out;
    bool got = false;
    out.rcode = 99;
    auto guard = loop_.after(std::chrono::seconds(10), [&] { loop_.stop(); });
    res_->resolve(Question{name(qname), uint16_t(t), 1}, [&](Answer& a) {
      out.rcode = a.rcode;
      out.stale = a.stale;
      for (auto& s : a.answer) out.answer.emplace_back(ldns_rr_list_clone(s.get()));
      for (auto& s : a.authority) out.authority.emplace_back(ldns_rr_list_clone(s.get()));
      got = true;
      loop_.stop();
    });
    if (!got) loop_.run();
    loop_.cancel(guard);
    EXPECT_TRUE(got) << "no answer for " << qname;
    return out;
  }

  static std::string answers(const Answer& a) {
    std::string s;
    for (auto& l : a.answer) s += text(l.get());
    return s;
  }

  EventLoop loop_;
  ResolverConfig cfg_;
  std::unique_ptr<Resolver> res_;
  std::unique_ptr<AuthServer> root_, test_, ex1_, ex2_, other_;
};

TEST_F(ResolverTest, IteratesFromTheRootWithMinimisedQueries) {
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NOERROR));
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos) << answers(a);
  // RFC 9156: the root saw only "test.", never the full name.
  EXPECT_TRUE(root_->saw("test./A"));
  EXPECT_FALSE(root_->saw("www.example.test./A"));
  // Cached: no further upstream queries.
  int before = root_->queries + test_->queries + ex1_->queries + ex2_->queries;
  a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NOERROR));
  EXPECT_EQ(before, root_->queries + test_->queries + ex1_->queries + ex2_->queries);
}

TEST_F(ResolverTest, MinimisationWalksEmptyNonTerminals) {
  Answer a = resolve("a.b.c.d.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.4"), std::string::npos) << answers(a);
}

TEST_F(ResolverTest, WithoutMinimisationSendsTheFullName) {
  cfg_.qname_minimisation = false;
  std::string err;
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_TRUE(root_->saw("www.example.test./A"));
}

TEST_F(ResolverTest, CnameInZoneAndAcrossZones) {
  Answer a = resolve("alias.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("CNAME"), std::string::npos);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos) << answers(a);
  a = resolve("ext.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.answer.size(), 2u) << answers(a);
  EXPECT_NE(answers(a).find("198.18.9.5"), std::string::npos) << answers(a);
}

TEST_F(ResolverTest, DnameIsFollowedWithSynthesizedCname) {
  Answer a = resolve("host.old.example.test.", LDNS_RR_TYPE_A);
  std::string s = answers(a);
  EXPECT_NE(s.find("DNAME"), std::string::npos) << s;
  EXPECT_NE(s.find("host.old.example.test.\t300\tIN\tCNAME\thost.new.example.test."), std::string::npos) << s;
  EXPECT_NE(s.find("198.18.9.3"), std::string::npos) << s;
}

TEST_F(ResolverTest, DnameIntoAnotherZoneKeepsTheDname) {
  Answer a = resolve("www.away.example.test.", LDNS_RR_TYPE_A);
  std::string s = answers(a);
  EXPECT_NE(s.find("DNAME"), std::string::npos) << s;
  EXPECT_NE(s.find("198.18.9.5"), std::string::npos) << s;
  a = resolve("nx.away.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NXDOMAIN));
  EXPECT_NE(answers(a).find("DNAME"), std::string::npos) << answers(a);
}

TEST_F(ResolverTest, CnameLoopEndsInServfail) {
  Answer a = resolve("loop1.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_SERVFAIL));
  EXPECT_GT(res_->stats().chain_too_long, 0u);
}

TEST_F(ResolverTest, NegativeAnswersCarrySoaAndAreCached) {
  Answer a = resolve("nope.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NXDOMAIN));
  ASSERT_EQ(a.authority.size(), 1u);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(a.authority[0].get(), 0)), 60u);  // SOA MINIMUM
  int before = ex1_->queries + ex2_->queries;
  a = resolve("nope.example.test.", LDNS_RR_TYPE_AAAA);  // NXDOMAIN covers every type
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NXDOMAIN));
  EXPECT_EQ(before, ex1_->queries + ex2_->queries);
  a = resolve("www.example.test.", LDNS_RR_TYPE_MX);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NOERROR));
  EXPECT_TRUE(a.answer.empty());
  EXPECT_EQ(a.authority.size(), 1u);
}

TEST_F(ResolverTest, GluelessDelegationResolvesTheNsName) {
  Answer a = resolve("www.glueless.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.6"), std::string::npos) << answers(a);
  EXPECT_GT(res_->stats().glueless_lookups, 0u);
}

TEST_F(ResolverTest, LameServerIsSkipped) {
  ex1_->refuse = true;
  // Make the lame server look fastest so it is certainly asked first.
  dns::Rr a1(rr(at("x. 1 IN A 127.53.0.3")));
  for (int i = 0; i < 5; ++i) res_->infra().rtt(ServerAddr::from_rr(a1.get()), 1, 0);
  for (int i = 0; i < 4; ++i) {
    res_->cache().flush_all();
    Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
    EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
  }
  EXPECT_EQ(res_->stats().lame_servers, 1u);  // remembered: asked once, then avoided
  EXPECT_EQ(ex1_->queries, 1);
}

TEST_F(ResolverTest, DeadServerTimesOutAndTheOtherAnswers) {
  ex1_->dead = true;
  for (int i = 0; i < 4; ++i) {
    res_->cache().flush(name("www.example.test."), false);
    Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
    EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
  }
  // SRTT backoff: the dead server is asked at most once or twice, not every time.
  EXPECT_LE(ex1_->queries, 2);
  EXPECT_GE(ex2_->queries, 4);
}

TEST_F(ResolverTest, PerServerTalliesShowQueriesTimeoutsAndRefusals) {
  ex1_->dead = true;
  auto addr = [](const char* ip) {
    dns::Rr a(rr(at(std::string("x. 1 IN A ") + ip)));
    return ServerAddr::from_rr(a.get());
  };
  ServerAddr dead = addr("127.53.0.3"), live = addr("127.53.0.4");
  // Make the dead server look fastest so it is certainly asked first.
  for (int i = 0; i < 5; ++i) res_->infra().rtt(dead, 1, 0);
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);

  const Infra& inf = res_->infra();
  auto d = inf.find_tally(dead);
  auto l = inf.find_tally(live);
  ASSERT_TRUE(d && l);
  EXPECT_GE(d->queries, 1u);
  EXPECT_EQ(d->timeouts, d->queries);
  EXPECT_GE(l->queries, 1u);
  EXPECT_EQ(l->timeouts, 0u);
  for (uint64_t e : l->errors) EXPECT_EQ(e, 0u);
  EXPECT_EQ(ex2_->queries, int(l->queries));  // every query counted, as the server saw it

  // A refusing server is counted as such, and the counters survive the infra cache's
  // idle expiry (they are cumulative; only SRTT/RTO state is forgotten).
  ex1_->dead = false;
  ex1_->refuse = true;
  for (int i = 0; i < 6; ++i) {  // the refusing server looks fastest, so it is asked first
    res_->infra().rtt(dead, 1, 0);
    res_->infra().rtt(live, 200, 0);
  }
  res_->cache().flush_all();
  resolve("www.example.test.", LDNS_RR_TYPE_A);
  d = inf.find_tally(dead);  // a copy: read it again
  ASSERT_TRUE(d);
  EXPECT_EQ(d->errors[size_t(UpstreamError::refused)], 1u);
  uint64_t dq = d->queries;
  res_->infra().expire(res_->now() + 2 * 3600 * 1000);
  EXPECT_FALSE(inf.find(dead).has_value());
  d = inf.find_tally(dead);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->queries, dq);

  // The exported view: top servers by queries, the root and the live example server in it.
  auto top = inf.top(64);
  ASSERT_GE(top.size(), 3u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].queries, top[i].queries);
  EXPECT_EQ(inf.top(1).size(), 1u);
}

TEST_F(ResolverTest, TruncatedReplyIsRetriedOverTcp) {
  ex1_->tc_udp = true;
  ex2_->tc_udp = true;
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
  EXPECT_GE(ex1_->tcp_queries + ex2_->tcp_queries, 1);
}

TEST_F(ResolverTest, EdnsFormerrFallsBackToPlainDns) {
  ex1_->formerr_edns = true;
  ex2_->formerr_edns = true;
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
  EXPECT_GE(res_->stats().edns_fallbacks, 1u);
}

TEST_F(ResolverTest, ForgedRepliesAreIgnored) {
  for (auto* s : {root_.get(), test_.get(), ex1_.get(), ex2_.get()}) s->spoof_first = true;
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
  EXPECT_GE(res_->upstream_stats().rejected, 3u);
}

TEST_F(ResolverTest, Use0x20StillResolves) {
  cfg_.use_0x20 = true;
  std::string err;
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.1"), std::string::npos);
}

TEST_F(ResolverTest, ServeStaleWhenAllServersFail) {
  Answer a = resolve("short.example.test.", LDNS_RR_TYPE_A);
  ASSERT_NE(answers(a).find("198.18.9.2"), std::string::npos);
  ex1_->dead = true;
  ex2_->dead = true;
  usleep(1200 * 1000);  // the 1 s TTL runs out
  loop_.refresh_now();
  a = resolve("short.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NOERROR));
  EXPECT_TRUE(a.stale);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(a.answer[0].get(), 0)), 30u);
  // Without serve-stale the same failure is a SERVFAIL.
  cfg_.cache.serve_stale = false;
  std::string err;
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  res_->cache().flush(name("short.example.test."), false);
  a = resolve("short.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_SERVFAIL));
}

TEST_F(ResolverTest, PopularEntryNearExpiryIsPrefetched) {
  resolve("popular.example.test.", LDNS_RR_TYPE_A);
  Answer a;
  Question q{name("popular.example.test."), LDNS_RR_TYPE_A, 1};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(res_->lookup(q, a));  // popular
  EXPECT_EQ(res_->stats().prefetches, 0u);
  usleep(1850 * 1000);  // into the last 10% of the 2 s TTL
  loop_.refresh_now();
  int before = ex1_->queries + ex2_->queries;
  ASSERT_TRUE(res_->lookup(q, a));  // still answered from cache...
  EXPECT_EQ(res_->stats().prefetches, 1u);  // ...and refreshed in the background
  auto guard = loop_.after(std::chrono::milliseconds(300), [&] { loop_.stop(); });
  loop_.run();
  loop_.cancel(guard);
  EXPECT_EQ(ex1_->queries + ex2_->queries, before + 1);
  ASSERT_TRUE(res_->lookup(q, a));
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(a.answer[0].get(), 0)), 2u);  // fresh again
}

TEST_F(ResolverTest, StubZoneIteratesBelowItsListedServers) {
  Route r;
  r.zone = name("example.test.");
  dns::Rr a(rr(at("x. 1 IN A 127.53.0.4")));
  r.servers.push_back(ServerAddr::from_rr(a.get()));
  cfg_.stub.push_back(r);
  std::string err;
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  Answer ans = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(ans).find("198.18.9.1"), std::string::npos) << answers(ans);
  EXPECT_EQ(root_->queries + test_->queries + ex1_->queries, 0);  // only the stub server
  EXPECT_GE(ex2_->queries, 1);
  EXPECT_EQ(ex2_->rd_queries, 0);  // authoritative servers are asked with RD=0
}

TEST_F(ResolverTest, ForwardZoneSendsRecursionDesired) {
  // Forward "fwd.test." to the example servers... which answer only as authorities;
  // use the other server, which is authoritative for glueless.test, as "upstream".
  Route r;
  r.zone = name("glueless.test.");
  std::string err;
  auto h = parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err);
  ServerAddr up;
  {
    dns::Rr a(rr(at("x. 1 IN A 127.53.0.5")));
    up = ServerAddr::from_rr(a.get());
  }
  r.servers.push_back(up);
  cfg_.forward.push_back(r);
  res_->configure(cfg_, std::move(*h));
  Answer a = resolve("www.glueless.test.", LDNS_RR_TYPE_A);
  EXPECT_NE(answers(a).find("198.18.9.6"), std::string::npos);
  EXPECT_EQ(root_->queries, 0);  // never iterated
  EXPECT_EQ(other_->rd_queries, other_->queries.load());
  EXPECT_GE(other_->rd_queries, 1);
}

// Issue 15 item 8: glue must not send tern-control to addresses on the do-not-query list.
// The example.test servers stand in for such addresses (every test server is on loopback,
// so the real default list would refuse them all; the default itself is checked in
// config_test). Glue (ns1/ns2 in the test. referral) and cached NS addresses are refused.
TEST_F(ResolverTest, DoNotQueryListKeepsGlueFromPointingAnywhere) {
  std::string err;
  Prefix ns1 = *parse_prefix(at("127.53.0.3"), err), ns2 = *parse_prefix(at("127.53.0.4"), err);
  cfg_.do_not_query = {ns1, ns2};
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  Answer a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_SERVFAIL));
  EXPECT_EQ(ex1_->queries + ex2_->queries, 0) << "a listed address was queried";
  EXPECT_GE(res_->stats().do_not_query, 2u);
  EXPECT_GE(test_->queries, 1);  // test. itself (not listed) was asked: glue came from it

  // A server the operator named is exempt: a stub zone at a listed address is asked.
  Route r;
  r.zone = name("example.test.");
  dns::Rr rr4(rr(at("x. 1 IN A 127.53.0.4")));
  r.servers.push_back(ServerAddr::from_rr(rr4.get()));
  cfg_.stub.push_back(r);
  res_->configure(cfg_, *parse_hints(at(". 1 NS a.root.test.\na.root.test. 1 A 127.53.0.1\n"), "h", err));
  a = resolve("short.example.test.", LDNS_RR_TYPE_A);  // www's SERVFAIL is cached
  EXPECT_NE(answers(a).find("198.18.9.2"), std::string::npos) << answers(a);

  // IPv4-mapped IPv6 glue reaches the same addresses: refused as IPv4.
  Prefix mapped_only = *parse_prefix(at("127.53.0.5"), err);
  EXPECT_TRUE([&] {
    ServerAddr m;
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&m.ss);
    s6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ("::ffff:" + at("127.53.0.5")).c_str(), &s6->sin6_addr);
    return mapped_only.contains(reinterpret_cast<const sockaddr*>(&m.ss));
  }());
}

TEST(ResolverPrepare, DoNotQueryAddsTheNodesOwnAddresses) {
  std::string hints = "/tmp/tern-prepare-test-" + std::to_string(getpid()) + ".hints";
  std::ofstream(hints) << ". 3600000 NS a.root.test.\na.root.test. 3600000 A 198.18.0.1\n";
  Config c;
  c.root_hints = hints;
  std::string err;
  c.listen = {*parse_endpoint("198.18.0.53:53", 53, err), *parse_endpoint("[2001:2::53]:53", 53, err)};
  c.health_probe_source = {*parse_prefix("198.18.255.254/32", err)};
  c.do_not_query = {*parse_prefix("169.254.0.0/16", err)};
  ResolverConfig rc;
  Hints h;
  ASSERT_EQ(prepare(c, rc, h), std::nullopt);
  std::vector<std::string> got;
  for (const auto& p : rc.do_not_query) got.push_back(p.text);
  EXPECT_EQ(got, (std::vector<std::string>{"169.254.0.0/16", "198.18.0.53/32", "2001:2::53/128",
                                           "198.18.255.254/32"}));
  c.do_not_query_own = false;
  ASSERT_EQ(prepare(c, rc, h), std::nullopt);
  EXPECT_EQ(rc.do_not_query.size(), 1u);
  unlink(hints.c_str());
}


// RFC 8020: once nope.example.test is known not to exist, nothing below it exists either;
// the cache says so without asking the zone's servers again.
TEST_F(ResolverTest, NxdomainCutAnswersNamesBelowFromTheCache) {
  Answer a = resolve("nope.example.test.", LDNS_RR_TYPE_A);
  ASSERT_EQ(a.rcode, unsigned(LDNS_RCODE_NXDOMAIN));
  int before = ex1_->queries + ex2_->queries;
  a = resolve("deep.under.nope.example.test.", LDNS_RR_TYPE_AAAA);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NXDOMAIN));
  ASSERT_EQ(a.authority.size(), 1u);  // the SOA of the cut, with its negative TTL
  EXPECT_EQ(ldns_rr_get_type(ldns_rr_list_rr(a.authority[0].get(), 0)), LDNS_RR_TYPE_SOA);
  EXPECT_EQ(before, ex1_->queries + ex2_->queries);
  EXPECT_EQ(res_->stats().nxdomain_cut, 1u);
  // A sibling is not covered: it is asked.
  a = resolve("www.example.test.", LDNS_RR_TYPE_A);
  EXPECT_EQ(a.rcode, unsigned(LDNS_RCODE_NOERROR));
  EXPECT_GT(ex1_->queries + ex2_->queries, before);
}

// fetches-per-zone = 1: while one query to example.test's (dead) servers is in flight, a
// second resolution in that zone is refused at once with SERVFAIL, counted; the zone never
// has two queries in flight.
TEST_F(ResolverTest, FetchesPerZoneRefusesQueriesBeyondTheLimit) {
  resolve("www.example.test.", LDNS_RR_TYPE_A);  // learn the delegation first
  ResolverConfig c = cfg_;
  c.fetches_per_zone = 1;
  c.retries = 1;
  std::string err;
  auto h = parse_hints(at(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.53.0.1\n"), "hints", err);
  ASSERT_TRUE(h) << err;
  res_->configure(c, std::move(*h));
  ex1_->dead = true;
  ex2_->dead = true;
  unsigned first = 99, second = 99;
  int done = 0;
  auto guard = loop_.after(std::chrono::seconds(10), [&] { loop_.stop(); });
  res_->resolve(Question{name("a.example.test."), LDNS_RR_TYPE_A, 1}, [&](Answer& a) {
    first = a.rcode;
    if (++done == 2) loop_.stop();
  });
  res_->resolve(Question{name("b.example.test."), LDNS_RR_TYPE_A, 1}, [&](Answer& a) {
    second = a.rcode;
    if (++done == 2) loop_.stop();
  });
  EXPECT_EQ(second, unsigned(LDNS_RCODE_SERVFAIL));  // refused before anything was sent
  if (done < 2) loop_.run();
  loop_.cancel(guard);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(first, unsigned(LDNS_RCODE_SERVFAIL));  // the dead servers time out
  EXPECT_EQ(res_->stats().fetches_zone_dropped, 1u);
  EXPECT_EQ(res_->shared().fetches.zone_peak(), 1u);
  EXPECT_EQ(res_->shared().fetches.zone_in_flight(name("example.test.").key()), 0u);
}

// Two event loops share one cache: the second loop's identical question waits for the
// first loop's fetch and sends nothing upstream.
TEST_F(ResolverTest, IdenticalQuestionOnAnotherLoopJoinsTheFirstFetch) {
  auto shared = std::make_shared<Shared>();
  shared->loops = 2;
  std::string err;
  EventLoop loop_b;
  Resolver a(loop_, shared), b(loop_b, shared);
  for (Resolver* r : {&a, &b}) {
    auto h = parse_hints(at(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.53.0.1\n"), "hints", err);
    ASSERT_TRUE(h) << err;
    r->configure(cfg_, std::move(*h));
  }
  Question q{name("www.example.test."), LDNS_RR_TYPE_A, 1};
  std::string got_a, got_b;
  // Both asked before either loop runs: b finds a's fetch in flight.
  a.resolve(q, [&](Answer& x) {
    for (auto& l : x.answer) got_a += text(l.get());
    loop_.stop();
  });
  b.resolve(q, [&](Answer& x) {  // runs on loop_b's thread
    for (auto& l : x.answer) got_b += text(l.get());
    loop_b.stop();
  });
  EXPECT_EQ(b.stats().joined_other_loop, 1u);
  std::thread tb([&] {
    auto guard = loop_b.after(std::chrono::seconds(10), [&] { loop_b.stop(); });
    loop_b.run();
    loop_b.cancel(guard);
  });
  auto guard = loop_.after(std::chrono::seconds(10), [&] { loop_.stop(); });
  loop_.run();
  loop_.cancel(guard);
  tb.join();
  EXPECT_NE(got_a.find("198.18.9.1"), std::string::npos) << got_a;
  EXPECT_EQ(got_a, got_b);
  EXPECT_EQ(b.upstream_stats().udp_sent, 0u);
  EXPECT_EQ(ex1_->queries + ex2_->queries, 1);  // one fetch for both loops
  EXPECT_EQ(shared->joins.owned(), 0u);
}

}  // namespace
}  // namespace tern::control::resolver
