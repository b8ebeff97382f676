#include "control/resolver/response.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <random>

#include "control/resolver/test_util.h"

namespace tern::control::resolver {
namespace {

using namespace testing;

ServerAddr addr(const char* ip, uint16_t port = 53) {
  ServerAddr a;
  auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin->sin_addr);
  a.len = sizeof(sockaddr_in);
  return a;
}

struct ReplyWire {
  std::vector<uint8_t> bytes;
};

class CheckReply : public ::testing::Test {
 protected:
  void SetUp() override {
    exp.id = 0x1234;
    exp.qname_wire = name("WwW.ExAmple.").wire();
    exp.qtype = LDNS_RR_TYPE_A;
    exp.qclass = 1;
    exp.server = addr("198.18.1.1");
    auto p = reply("WwW.ExAmple.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NOERROR,
                   {{"www.example. 60 IN A 198.18.9.9"}, {}, {}});
    ldns_pkt_set_id(p.get(), 0x1234);
    good = wire_of(p.get());
    from = addr("198.18.1.1");
  }
  Reject check(const std::vector<uint8_t>& w) {
    return check_reply(w, reinterpret_cast<const sockaddr*>(&from.ss), from.len, exp);
  }
  Expected exp;
  std::vector<uint8_t> good;
  ServerAddr from;
};

TEST_F(CheckReply, AcceptsMatchingReply) { EXPECT_EQ(check(good), Reject::none); }

TEST_F(CheckReply, RejectsWrongId) {
  good[1] ^= 1;
  EXPECT_EQ(check(good), Reject::id);
}

TEST_F(CheckReply, RejectsWrongSourceAddressOrPort) {
  from = addr("198.18.1.2");
  EXPECT_EQ(check(good), Reject::source);
  from = addr("198.18.1.1", 5353);
  EXPECT_EQ(check(good), Reject::source);
}

TEST_F(CheckReply, RejectsWrongQuestion) {
  exp.qtype = LDNS_RR_TYPE_AAAA;
  EXPECT_EQ(check(good), Reject::question);
  exp.qtype = LDNS_RR_TYPE_A;
  exp.qname_wire = name("www.example.org.").wire();
  EXPECT_NE(check(good), Reject::none);
}

TEST_F(CheckReply, CaseMattersOnlyWith0x20) {
  exp.qname_wire = name("www.example.").wire();
  EXPECT_EQ(check(good), Reject::none);
  exp.case_exact = true;
  EXPECT_EQ(check(good), Reject::question);
  exp.qname_wire = name("WwW.ExAmple.").wire();
  EXPECT_EQ(check(good), Reject::none);
}

TEST_F(CheckReply, RejectsQueriesAndRunts) {
  auto q = good;
  q[2] &= 0x7f;
  EXPECT_EQ(check(q), Reject::not_response);
  q.resize(10);
  EXPECT_EQ(check(q), Reject::too_short);
}

TEST(Classify, ReferralWithInBailiwickGlueOnly) {
  auto p = reply("www.example.lab.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NOERROR,
                 {{},
                  {"example.lab. 3600 IN NS ns1.example.lab.", "example.lab. 3600 IN NS ns.other.zz."},
                  {"ns1.example.lab. 3600 IN A 198.18.2.1",
                   "ns.other.zz. 3600 IN A 198.18.6.6"}});  // out of bailiwick of lab.
  auto c = classify(p.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("lab."), false);
  ASSERT_EQ(c.kind, Classified::referral);
  EXPECT_TRUE(c.cut.equals(name("example.lab.")));
  EXPECT_EQ(ldns_rr_list_rr_count(c.ns.get()), 2u);
  ASSERT_EQ(c.glue.size(), 1u);
  EXPECT_TRUE(dns::owner(ldns_rr_list_rr(c.glue[0].get(), 0)).equals(name("ns1.example.lab.")));
}

TEST(Classify, UpwardOrSidewaysReferralIsLame) {
  auto up = reply("www.example.lab.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NOERROR,
                  {{}, {". 3600 IN NS a.root."}, {}});
  EXPECT_EQ(classify(up.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("lab."), false).kind,
            Classified::lame);
  auto side = reply("www.example.lab.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NOERROR,
                    {{}, {"other.lab. 3600 IN NS ns.other.lab."}, {}});
  EXPECT_EQ(classify(side.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("lab."), false).kind,
            Classified::lame);
}

TEST(Classify, NonAuthoritativeAnswerIsLame) {
  auto p = reply("www.example.lab.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NOERROR,
                 {{"www.example.lab. 60 IN A 198.18.9.9"}, {}, {}});
  EXPECT_EQ(classify(p.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false)
                .kind,
            Classified::lame);
  // ... but a forwarder's (recursive) answer is exactly that.
  EXPECT_EQ(classify(p.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("lab."), true).kind,
            Classified::answer);
}

TEST(Classify, OutOfBailiwickAnswerRecordsAreIgnored) {
  // A server for example.lab. slips in a record for bank.zz.: it must not be used.
  auto p = reply("www.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NOERROR,
                 {{"www.example.lab. 60 IN CNAME bank.zz.", "bank.zz. 60 IN A 198.18.6.6"}, {}, {}});
  auto c = classify(p.get(), name("www.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  ASSERT_EQ(c.kind, Classified::cname);
  EXPECT_TRUE(c.next.equals(name("bank.zz.")));
  ASSERT_EQ(c.rrsets.size(), 1u);  // only the CNAME
  EXPECT_EQ(ldns_rr_get_type(ldns_rr_list_rr(c.rrsets[0].get(), 0)), LDNS_RR_TYPE_CNAME);
}

// Issue 15 item 11: a forwarder for corp. is trusted for corp. only. Its CNAME out of the
// zone is chased separately; records for other owners are dropped. forward-out-of-zone
// restores trust in everything it sends.
TEST(Classify, ForwarderIsTrustedForItsZoneOnly) {
  auto p = reply("www.corp.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NOERROR,
                 {{"www.corp. 60 IN CNAME cdn.bank.zz.", "cdn.bank.zz. 60 IN A 198.18.6.6",
                   "login.bank.zz. 60 IN A 198.18.6.7"},
                  {"bank.zz. 60 IN NS ns.evil.zz."},
                  {}});
  auto c = classify(p.get(), name("www.corp."), LDNS_RR_TYPE_A, name("corp."), true);
  ASSERT_EQ(c.kind, Classified::cname);
  EXPECT_TRUE(c.next.equals(name("cdn.bank.zz.")));
  ASSERT_EQ(c.rrsets.size(), 1u);  // only the CNAME, owned by corp.
  EXPECT_EQ(ldns_rr_get_type(ldns_rr_list_rr(c.rrsets[0].get(), 0)), LDNS_RR_TYPE_CNAME);

  c = classify(p.get(), name("www.corp."), LDNS_RR_TYPE_A, name("corp."), true, true);
  ASSERT_EQ(c.kind, Classified::answer);
  EXPECT_EQ(c.rrsets.size(), 2u);  // CNAME and the target's A

  // A negative answer for an out-of-zone owner carries no SOA from another zone.
  auto nx = reply("www.corp.", LDNS_RR_TYPE_A, false, LDNS_RCODE_NXDOMAIN,
                  {{"www.corp. 60 IN CNAME gone.bank.zz."},
                   {"bank.zz. 60 IN SOA ns.bank.zz. h.bank.zz. 1 1 1 1 1"},
                   {}});
  c = classify(nx.get(), name("www.corp."), LDNS_RR_TYPE_A, name("corp."), true);
  EXPECT_EQ(c.soa, nullptr);
  EXPECT_TRUE(c.next.equals(name("gone.bank.zz.")));
  EXPECT_NE(c.kind, Classified::nxdomain);
}

TEST(Classify, CnameChainInsideZoneIsComplete) {
  auto p = reply("a.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NOERROR,
                 {{"a.example.lab. 60 IN CNAME b.example.lab.",
                   "b.example.lab. 60 IN CNAME c.example.lab.",
                   "c.example.lab. 60 IN A 198.18.9.1"},
                  {},
                  {}});
  auto c = classify(p.get(), name("a.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  ASSERT_EQ(c.kind, Classified::answer);
  EXPECT_EQ(c.rrsets.size(), 3u);
  EXPECT_EQ(c.chain, 2u);
}

TEST(Classify, DnameSynthesizesCname) {
  auto p = reply("www.old.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NOERROR,
                 {{"old.example.lab. 300 IN DNAME new.example.lab.",
                   "www.old.example.lab. 0 IN CNAME www.new.example.lab.",
                   "www.new.example.lab. 60 IN A 198.18.9.2"},
                  {},
                  {}});
  auto c = classify(p.get(), name("www.old.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  ASSERT_EQ(c.kind, Classified::answer);
  ASSERT_EQ(c.rrsets.size(), 3u);
  EXPECT_EQ(ldns_rr_get_type(ldns_rr_list_rr(c.rrsets[0].get(), 0)), LDNS_RR_TYPE_DNAME);
  const ldns_rr* syn = ldns_rr_list_rr(c.rrsets[1].get(), 0);
  EXPECT_EQ(ldns_rr_get_type(syn), LDNS_RR_TYPE_CNAME);
  EXPECT_EQ(ldns_rr_ttl(syn), 300u);  // RFC 6672 §3.1: TTL of the DNAME
  EXPECT_TRUE(dns::Name::from_rdf(ldns_rr_rdf(syn, 0)).equals(name("www.new.example.lab.")));
}

TEST(Classify, DnameSubstitution) {
  dns::Name out;
  ASSERT_TRUE(dname_substitute(name("a.b.old.lab."), name("old.lab."), name("new.zz."), out));
  EXPECT_TRUE(out.equals(name("a.b.new.zz.")));
  EXPECT_FALSE(dname_substitute(name("old.lab."), name("old.lab."), name("new.zz."), out));
  // RFC 6672 §2.2: a result longer than 255 octets is YXDOMAIN.
  std::string longlabel(63, 'x');
  dns::Name target = name(longlabel + "." + longlabel + "." + longlabel + ".");
  EXPECT_FALSE(dname_substitute(name(longlabel + ".y.old.lab."), name("old.lab."), target, out));
}

TEST(Classify, NxdomainAndNodataCarrySoa) {
  auto nx = reply("nope.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NXDOMAIN,
                  {{}, {"example.lab. 3600 IN SOA ns1.example.lab. h.example.lab. 1 2 3 4 300"}, {}});
  auto c = classify(nx.get(), name("nope.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  EXPECT_EQ(c.kind, Classified::nxdomain);
  EXPECT_TRUE(c.soa);
  auto nd = reply("www.example.lab.", LDNS_RR_TYPE_MX, true, LDNS_RCODE_NOERROR,
                  {{}, {"example.lab. 3600 IN SOA ns1.example.lab. h.example.lab. 1 2 3 4 300"}, {}});
  c = classify(nd.get(), name("www.example.lab."), LDNS_RR_TYPE_MX, name("example.lab."), false);
  EXPECT_EQ(c.kind, Classified::nodata);
  EXPECT_TRUE(c.soa);
}

TEST(Classify, NxdomainAfterCnameNamesTheTarget) {
  auto p = reply("a.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NXDOMAIN,
                 {{"a.example.lab. 60 IN CNAME gone.example.lab."},
                  {"example.lab. 3600 IN SOA ns1.example.lab. h.example.lab. 1 2 3 4 300"},
                  {}});
  auto c = classify(p.get(), name("a.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  EXPECT_EQ(c.kind, Classified::nxdomain);
  EXPECT_TRUE(c.next.equals(name("gone.example.lab.")));
  EXPECT_EQ(c.rrsets.size(), 1u);
}

TEST(Classify, AnyTakesEveryRRsetAtTheName) {
  auto p = reply("www.example.lab.", LDNS_RR_TYPE_ANY, true, LDNS_RCODE_NOERROR,
                 {{"www.example.lab. 60 IN A 198.18.9.1", "www.example.lab. 60 IN TXT \"x\""}, {}, {}});
  auto c = classify(p.get(), name("www.example.lab."), LDNS_RR_TYPE_ANY, name("example.lab."), false);
  EXPECT_EQ(c.kind, Classified::answer);
  EXPECT_EQ(c.rrsets.size(), 2u);
}

TEST(Classify, ErrorsAreReported) {
  auto p = reply("a.example.lab.", LDNS_RR_TYPE_A, false, LDNS_RCODE_REFUSED, {{}, {}, {}});
  auto c = classify(p.get(), name("a.example.lab."), LDNS_RR_TYPE_A, name("example.lab."), false);
  EXPECT_EQ(c.kind, Classified::error);
  EXPECT_EQ(c.rcode, unsigned(LDNS_RCODE_REFUSED));
}

}  // namespace
}  // namespace tern::control::resolver

namespace tern::control::resolver {
namespace {

// Whatever parses as DNS, classify() handles without crashing (and without reading
// records outside the zone it was told about).
TEST(Classify, SurvivesMutatedReplies) {
  using namespace testing;
  auto p = reply("www.old.example.lab.", LDNS_RR_TYPE_A, true, LDNS_RCODE_NOERROR,
                 {{"old.example.lab. 300 IN DNAME new.example.lab.",
                   "www.old.example.lab. 0 IN CNAME www.new.example.lab.",
                   "www.new.example.lab. 60 IN A 198.18.9.2"},
                  {"example.lab. 3600 IN NS ns1.example.lab.",
                   "sub.example.lab. 3600 IN NS ns1.sub.example.lab."},
                  {"ns1.sub.example.lab. 3600 IN A 198.18.2.1"}});
  auto base = wire_of(p.get());
  std::mt19937 rng(99);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    auto w = base;
    for (int k = 0; k < 2; ++k) w[12 + rng() % (w.size() - 12)] = uint8_t(rng());
    ldns_pkt* m = nullptr;
    if (ldns_wire2pkt(&m, w.data(), w.size()) != LDNS_STATUS_OK) continue;
    dns::Pkt guard(m);
    ++parsed;
    for (const char* z : {".", "lab.", "example.lab."}) {
      auto c = classify(m, name("www.old.example.lab."), LDNS_RR_TYPE_A, name(z), false);
      for (auto& s : c.rrsets) ASSERT_GT(ldns_rr_list_rr_count(s.get()), 0u);
    }
  }
  EXPECT_GT(parsed, 1000);
}

}  // namespace
}  // namespace tern::control::resolver
