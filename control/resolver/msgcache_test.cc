#include "control/resolver/msgcache.h"

#include <gtest/gtest.h>

#include "control/resolver/test_util.h"

namespace tern::control::resolver {
namespace {

using namespace testing;

Query make_query(const char* qname, uint16_t id, bool edns) {
  Query q;
  q.id = id;
  q.rd = true;
  q.has_question = true;
  q.qname_wire = name(qname).wire();
  q.qtype = LDNS_RR_TYPE_A;
  q.qclass = 1;
  q.edns = edns;
  q.udp_size = 1232;
  return q;
}

std::vector<uint8_t> build(const Query& q, unsigned rcode, uint32_t ttl) {
  Answer a;
  a.rcode = rcode;
  a.answer.push_back(rrset({"www.lab. " + std::to_string(ttl) + " IN A 198.18.3.1"}));
  bool tc = false;
  return answer_reply(q, a, 1232, 65535, tc);
}

dns::Pkt parse(const std::vector<uint8_t>& w) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&p, w.data(), w.size()), LDNS_STATUS_OK);
  return dns::Pkt(p);
}

TEST(MsgCache, HitIsPatchedForTheAskingClient) {
  MsgCache mc;
  Query first = make_query("www.lab.", 1, true);
  mc.store(first, build(first, 0, 100), 0);
  Query q = make_query("WWW.Lab.", 0x4242, false);
  std::vector<uint8_t> out;
  ASSERT_TRUE(mc.answer(q, 1232, 512, 10500, out));
  auto p = parse(out);
  EXPECT_EQ(ldns_pkt_id(p.get()), 0x4242);
  EXPECT_EQ(out[11], 0);  // no OPT: this client sent none
  EXPECT_EQ(dns::owner(ldns_rr_list_rr(ldns_pkt_question(p.get()), 0)).wire(), q.qname_wire);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(p.get()), 0)), 90u);  // aged 10 s
  q.edns = true;
  ASSERT_TRUE(mc.answer(q, 1232, 1232, 10500, out));
  p = parse(out);
  EXPECT_EQ(ldns_pkt_edns_udp_size(p.get()), 1232);
}

TEST(MsgCache, KeyedOnDoAndCdWithAdForClientsThatAsk) {
  // A CD=1 answer may hold data that failed validation: never for a CD=0 client. A DO=1
  // answer carries RRSIGs: never for a DO=0 client. AD follows RFC 6840 §5.7 per hit.
  MsgCache mc;
  Query cd = make_query("www.lab.", 1, true);
  cd.cd = true;
  mc.store(cd, build(cd, 0, 100), 0);
  Query plain = make_query("www.lab.", 2, true);
  std::vector<uint8_t> out;
  EXPECT_FALSE(mc.answer(plain, 1232, 1232, 1000, out)) << "CD=1 entry served to CD=0";
  Query dnssec = make_query("www.lab.", 3, true);
  dnssec.do_bit = true;
  EXPECT_FALSE(mc.answer(dnssec, 1232, 1232, 1000, out));
  mc.store(plain, build(plain, 0, 100), 0, /*secure=*/true);
  ASSERT_TRUE(mc.answer(plain, 1232, 1232, 1000, out));
  EXPECT_EQ(out[3] & 0x20, 0) << "no DO, no AD in the query: no AD";
  Query ad = plain;
  ad.ad = true;
  ASSERT_TRUE(mc.answer(ad, 1232, 1232, 1000, out));
  EXPECT_EQ(out[3] & 0x20, 0x20) << "AD=1 in the query of a secure answer";
}

TEST(MsgCache, ExpiresAtNinetyPercentAndKeepsOnlyFinalAnswers) {
  MsgCache mc;
  Query q = make_query("www.lab.", 1, false);
  mc.store(q, build(q, 0, 100), 0);
  std::vector<uint8_t> out;
  EXPECT_TRUE(mc.answer(q, 1232, 512, 89000, out));
  EXPECT_FALSE(mc.answer(q, 1232, 512, 90000, out));  // the last 10% goes to the RRset cache
  mc.store(q, build(q, LDNS_RCODE_SERVFAIL, 100), 0);
  EXPECT_FALSE(mc.answer(q, 1232, 512, 1000, out));
  auto tc = build(q, 0, 100);
  tc[2] |= 0x02;
  mc.store(q, tc, 0);
  EXPECT_FALSE(mc.answer(q, 1232, 512, 1000, out));
  // A reply that would not fit the client's limit is left to the slow path (TC).
  mc.store(q, build(q, 0, 100), 0);
  EXPECT_FALSE(mc.answer(q, 1232, 20, 1000, out));
}

std::string cold_name(int i) {
  std::string n = std::to_string(i);
  n.insert(0, 1, 'n');
  n.append(".lab.");
  return n;
}

TEST(MsgCache, HotEntrySurvivesAFloodOfColdOnes) {
  Query hot = make_query("www.lab.", 1, false);
  auto reply = build(hot, 0, 300);
  // Room for about ten answers of this size.
  MsgCache mc(10 * (reply.size() + 120));
  mc.store(hot, reply, 0);
  std::vector<uint8_t> out;
  for (int i = 0; i < 500; ++i) {
    Query q = make_query(cold_name(i).c_str(), 2, false);
    mc.store(q, build(q, 0, 300), 1000);
    ASSERT_TRUE(mc.answer(hot, 1232, 512, 1000, out)) << "hot entry evicted after " << i << " cold ones";
    if (i >= 10) {
      ASSERT_GE(mc.entries(), 5u) << "the cache emptied itself";
    }
  }
  EXPECT_LE(mc.entries(), 10u);
  EXPECT_GT(mc.evictions(), 400u);
  // The newest cold entry is there; the oldest ones made room.
  Query last = make_query(cold_name(499).c_str(), 3, false);
  EXPECT_TRUE(mc.answer(last, 1232, 512, 1000, out));
  Query first = make_query(cold_name(0).c_str(), 3, false);
  EXPECT_FALSE(mc.answer(first, 1232, 512, 1000, out));
}

TEST(MsgCache, WithoutHitsTheOldestGoesFirstAndShrinkingKeepsTheRest) {
  Query q0 = make_query(cold_name(0).c_str(), 1, false);
  auto reply = build(q0, 0, 300);
  MsgCache mc(4 * (reply.size() + 120));
  for (int i = 0; i < 6; ++i) {
    Query q = make_query(cold_name(i).c_str(), 1, false);
    mc.store(q, build(q, 0, 300), 0);
  }
  std::vector<uint8_t> out;
  EXPECT_FALSE(mc.answer(q0, 1232, 512, 0, out));
  for (int i = 2; i < 6; ++i) {
    Query q = make_query(cold_name(i).c_str(), 1, false);
    EXPECT_TRUE(mc.answer(q, 1232, 512, 0, out)) << cold_name(i);
  }
  // Storing the same question again replaces it, without growing the cache.
  size_t bytes = mc.bytes();
  Query q5 = make_query(cold_name(5).c_str(), 1, false);
  mc.store(q5, build(q5, 0, 300), 0);
  EXPECT_EQ(mc.bytes(), bytes);
  EXPECT_EQ(mc.entries(), 4u);
  // A smaller limit evicts down to it instead of emptying the cache.
  mc.set_max_bytes(2 * (reply.size() + 120));
  EXPECT_EQ(mc.entries(), 2u);
  EXPECT_LE(mc.bytes(), 2 * (reply.size() + 120));
}

}  // namespace
}  // namespace tern::control::resolver
