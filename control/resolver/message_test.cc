#include "control/resolver/message.h"

#include <gtest/gtest.h>

#include <random>

#include "control/resolver/test_util.h"

namespace tern::control::resolver {
namespace {

using namespace testing;

// A query as a client would send it, built with ldns.
std::vector<uint8_t> query(const char* qname, ldns_rr_type type, int edns_size = -1,
                           uint8_t version = 0, bool rd = true) {
  ldns_pkt* p = nullptr;
  ldns_pkt_query_new_frm_str(&p, qname, type, LDNS_RR_CLASS_IN, rd ? LDNS_RD : 0);
  ldns_pkt_set_id(p, 0xbeef);
  if (edns_size >= 0) {
    ldns_pkt_set_edns_udp_size(p, uint16_t(edns_size));
    ldns_pkt_set_edns_version(p, version);
    ldns_pkt_set_edns_do(p, true);  // forces the OPT even with odd sizes
  }
  std::vector<uint8_t> v = wire_of(p);
  ldns_pkt_free(p);
  return v;
}

dns::Pkt parse(const std::vector<uint8_t>& w) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&p, w.data(), w.size()), LDNS_STATUS_OK);
  return dns::Pkt(p);
}

TEST(ParseQuery, AcceptsPlainAndEdnsQueries) {
  Query q;
  ASSERT_EQ(parse_query(query("WwW.example.lab.", LDNS_RR_TYPE_A), q), Verdict::ok);
  EXPECT_EQ(q.id, 0xbeef);
  EXPECT_TRUE(q.rd);
  EXPECT_FALSE(q.edns);
  EXPECT_EQ(q.qname_wire, name("WwW.example.lab.").wire());
  ASSERT_EQ(parse_query(query("www.example.lab.", LDNS_RR_TYPE_AAAA, 4096), q), Verdict::ok);
  EXPECT_TRUE(q.edns);
  EXPECT_EQ(q.udp_size, 4096);
  EXPECT_TRUE(q.do_bit);
}

TEST(ParseQuery, UnreadableHeaderAndResponsesAreDropped) {
  Query q;
  auto w = query("a.lab.", LDNS_RR_TYPE_A);
  EXPECT_EQ(parse_query(std::span(w.data(), 11), q), Verdict::drop);
  w[2] |= 0x80;
  EXPECT_EQ(parse_query(w, q), Verdict::drop);
}

TEST(ParseQuery, Formerr) {
  Query q;
  auto w = query("a.lab.", LDNS_RR_TYPE_A);
  auto trunc = std::vector<uint8_t>(w.begin(), w.end() - 3);  // question cut short
  EXPECT_EQ(parse_query(trunc, q), Verdict::formerr);
  EXPECT_FALSE(q.has_question);
  auto two = w;
  two[5] = 2;  // qdcount 2
  EXPECT_EQ(parse_query(two, q), Verdict::formerr);
  auto zero = std::vector<uint8_t>(w.begin(), w.begin() + 12);
  zero[5] = 0;  // qdcount 0
  EXPECT_EQ(parse_query(zero, q), Verdict::formerr);
  auto an = w;
  an[7] = 1;  // an answer record in a query
  EXPECT_EQ(parse_query(an, q), Verdict::formerr);
  auto garbage = w;
  garbage.push_back(0);
  EXPECT_EQ(parse_query(garbage, q), Verdict::formerr);
}

TEST(ParseQuery, NotimpForOtherOpcodes) {
  Query q;
  auto w = query("a.lab.", LDNS_RR_TYPE_SOA);
  w[2] = uint8_t((w[2] & 0x87) | (5 << 3));  // UPDATE
  EXPECT_EQ(parse_query(w, q), Verdict::notimp);
  auto reply = error_reply(q, LDNS_RCODE_NOTIMPL, 1232);
  auto p = parse(reply);
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), LDNS_RCODE_NOTIMPL);
  EXPECT_EQ(ldns_pkt_get_opcode(p.get()), LDNS_PACKET_UPDATE);
  EXPECT_EQ(ldns_pkt_id(p.get()), 0xbeef);
}

TEST(ParseQuery, RefusedForZoneTransfersAndOtherClasses) {
  Query q;
  EXPECT_EQ(parse_query(query("lab.", LDNS_RR_TYPE_AXFR), q), Verdict::refused);
  auto w = query("version.bind.", LDNS_RR_TYPE_TXT);
  w[w.size() - 1] = 3;  // CH
  EXPECT_EQ(parse_query(w, q), Verdict::refused);
}

TEST(ParseQuery, BadversForEdnsVersionAboveZero) {
  Query q;
  ASSERT_EQ(parse_query(query("a.lab.", LDNS_RR_TYPE_A, 1232, 1), q), Verdict::badvers);
  auto p = parse(error_reply(q, 0, 1232, true));
  // RFC 6891 §6.1.3: BADVERS = 16, i.e. extended RCODE 1 with header RCODE 0; OPT version 0.
  EXPECT_EQ(ldns_pkt_get_rcode(p.get()), 0);
  EXPECT_EQ(ldns_pkt_edns_extended_rcode(p.get()), 1);
  EXPECT_EQ(ldns_pkt_edns_version(p.get()), 0);
}

TEST(UdpLimit, FollowsClientEdnsAndOurs) {
  Query q;
  EXPECT_EQ(udp_limit(q, 1232), 512u);
  q.edns = true;
  q.udp_size = 4096;
  EXPECT_EQ(udp_limit(q, 1232), 1232u);
  q.udp_size = 800;
  EXPECT_EQ(udp_limit(q, 1232), 800u);
  q.udp_size = 100;
  EXPECT_EQ(udp_limit(q, 1232), 512u);
}

Answer big_answer(int n) {
  Answer a;
  dns::RrList l(ldns_rr_list_new());
  for (int i = 0; i < n; ++i)
    ldns_rr_list_push_rr(l.get(), rr("big.lab. 60 IN TXT \"" + std::string(200, 'a' + char(i % 26)) + "\""));
  a.answer.push_back(std::move(l));
  return a;
}

TEST(AnswerReply, EchoesEdnsWithOurSizeAndNoOptWithoutIt) {
  Query q;
  ASSERT_EQ(parse_query(query("BiG.lab.", LDNS_RR_TYPE_TXT, 4096), q), Verdict::ok);
  bool tc = false;
  auto p = parse(answer_reply(q, big_answer(1), 1232, udp_limit(q, 1232), tc));
  EXPECT_FALSE(tc);
  EXPECT_EQ(ldns_pkt_edns_udp_size(p.get()), 1232);
  EXPECT_TRUE(ldns_pkt_ra(p.get()));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 1);
  // The answer owner echoes the client's spelling.
  EXPECT_EQ(dns::owner(ldns_rr_list_rr(ldns_pkt_answer(p.get()), 0)).wire(), q.qname_wire);

  ASSERT_EQ(parse_query(query("big.lab.", LDNS_RR_TYPE_TXT), q), Verdict::ok);
  auto w = answer_reply(q, big_answer(1), 1232, udp_limit(q, 1232), tc);
  EXPECT_EQ(w[11], 0);  // arcount 0: no OPT when the client sent none
}

TEST(AnswerReply, DnssecRecordsOnlyForDoAndAdForDoOrAd) {
  Query q;
  ASSERT_EQ(parse_query(query("www.lab.", LDNS_RR_TYPE_A, 1232), q), Verdict::ok);
  q.do_bit = false;  // query() sets DO to force the OPT
  Answer a;
  a.sec = Security::secure;
  a.answer.push_back(rrset({"www.lab. 60 IN A 198.18.3.1",
                            "www.lab. 60 IN RRSIG A 13 2 60 20300101000000 20200101000000 1 lab. AAAA"}));
  bool tc = false;
  auto p = parse(answer_reply(q, a, 1232, 1232, tc));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 1) << "RRSIG without DO (RFC 4035 3.2.1)";
  EXPECT_FALSE(ldns_pkt_ad(p.get())) << "neither DO nor AD in the query";
  q.do_bit = true;
  p = parse(answer_reply(q, a, 1232, 1232, tc));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 2);
  EXPECT_TRUE(ldns_pkt_ad(p.get()));
  q.do_bit = false;
  q.ad = true;
  EXPECT_TRUE(ldns_pkt_ad(parse(answer_reply(q, a, 1232, 1232, tc)).get()));
  a.sec = Security::insecure;
  EXPECT_FALSE(ldns_pkt_ad(parse(answer_reply(q, a, 1232, 1232, tc)).get()));
}

TEST(AnswerReply, ExtendedDnsErrorWithEdns) {
  Query q;
  ASSERT_EQ(parse_query(query("www.bogus.lab.", LDNS_RR_TYPE_A, 1232), q), Verdict::ok);
  Answer a;
  a.rcode = LDNS_RCODE_SERVFAIL;
  a.ede = 6;
  bool tc = false;
  auto w = answer_reply(q, a, 1232, 1232, tc);
  // OPT is last: ... rdlen 6, option 15, length 2, INFO-CODE 6 (RFC 8914 §2).
  ASSERT_GE(w.size(), 8u);
  std::vector<uint8_t> tail(w.end() - 8, w.end());
  EXPECT_EQ(tail, (std::vector<uint8_t>{0, 6, 0, 15, 0, 2, 0, 6}));
  ASSERT_EQ(parse_query(query("www.bogus.lab.", LDNS_RR_TYPE_A), q), Verdict::ok);
  w = answer_reply(q, a, 1232, 1232, tc);
  EXPECT_EQ(w[11], 0) << "no OPT, so no EDE, for a client without EDNS";
}

TEST(AnswerReply, TruncatesToEmptyAnswerWhenTooBig) {
  Query q;
  ASSERT_EQ(parse_query(query("big.lab.", LDNS_RR_TYPE_TXT), q), Verdict::ok);
  bool tc = false;
  auto w = answer_reply(q, big_answer(3), 1232, udp_limit(q, 1232), tc);  // > 512
  EXPECT_TRUE(tc);
  auto p = parse(w);
  EXPECT_TRUE(ldns_pkt_tc(p.get()));
  EXPECT_EQ(ldns_pkt_ancount(p.get()), 0);
  EXPECT_EQ(ldns_pkt_qdcount(p.get()), 1);
  // With EDNS 1232 the same answer fits.
  ASSERT_EQ(parse_query(query("big.lab.", LDNS_RR_TYPE_TXT, 1232), q), Verdict::ok);
  answer_reply(q, big_answer(3), 1232, udp_limit(q, 1232), tc);
  EXPECT_FALSE(tc);
  // ...but not when we advertise less than the client.
  answer_reply(q, big_answer(3), 512, udp_limit(q, 512), tc);
  EXPECT_TRUE(tc);
  // Over TCP nothing of this size truncates.
  answer_reply(q, big_answer(30), 1232, 65535, tc);
  EXPECT_FALSE(tc);
}

// The reply as ldns_pkt2wire() renders it (what answer_reply() did before it rendered
// by hand): the hand renderer must produce the same bytes, compression included.
std::vector<uint8_t> ldns_reference(const Query& q, const Answer& a, uint16_t our_size) {
  ldns_pkt* p = ldns_pkt_new();
  dns::Pkt guard(p);
  ldns_pkt_set_id(p, q.id);
  ldns_pkt_set_qr(p, true);
  ldns_pkt_set_rd(p, q.rd);
  ldns_pkt_set_ra(p, true);
  ldns_pkt_set_cd(p, q.cd);
  ldns_pkt_set_opcode(p, LDNS_PACKET_QUERY);
  ldns_pkt_set_rcode(p, uint8_t(a.rcode & 0x0f));
  ldns_rr* question = ldns_rr_new();
  ldns_rr_set_owner(question, ldns_dname_new_frm_data(uint16_t(q.qname_wire.size()),
                                                      q.qname_wire.data()));
  ldns_rr_set_type(question, ldns_rr_type(q.qtype));
  ldns_rr_set_class(question, ldns_rr_class(q.qclass));
  ldns_rr_set_question(question, true);
  ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, question);
  for (auto& s : a.answer)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
      ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, ldns_rr_clone(ldns_rr_list_rr(s.get(), i)));
  for (auto& s : a.authority)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
      ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, ldns_rr_clone(ldns_rr_list_rr(s.get(), i)));
  if (q.edns) {
    ldns_pkt_set_edns_udp_size(p, our_size);
    ldns_pkt_set_edns_version(p, 0);
    ldns_pkt_set_edns_do(p, q.do_bit);
    ldns_pkt_set_edns_extended_rcode(p, uint8_t(a.rcode >> 4));
  }
  return wire_of(p);
}

TEST(AnswerReply, RendersTheSameBytesAsLdns) {
  struct Case {
    const char* qname;
    ldns_rr_type type;
    std::vector<std::vector<std::string>> answer, authority;
    unsigned rcode;
  };
  std::vector<Case> cases = {
      {"WwW.Alpha.lab.", LDNS_RR_TYPE_A, {{"www.alpha.lab. 60 IN A 198.18.0.1",
                                           "www.alpha.lab. 60 IN A 198.18.0.2"}}, {}, 0},
      {"c1.alpha.lab.", LDNS_RR_TYPE_A,
       {{"c1.alpha.lab. 60 IN CNAME c2.ALPHA.lab."}, {"c2.alpha.lab. 60 IN CNAME www.beta.zz."},
        {"www.beta.zz. 30 IN A 198.18.0.9"}}, {}, 0},
      {"alpha.lab.", LDNS_RR_TYPE_MX,
       {{"alpha.lab. 60 IN MX 10 mx1.alpha.lab.", "alpha.lab. 60 IN MX 20 mx.other.zz."}}, {}, 0},
      {"nx.alpha.lab.", LDNS_RR_TYPE_AAAA, {},
       {{"alpha.lab. 300 IN SOA ns1.alpha.lab. hostmaster.alpha.lab. 1 2 3 4 300"}}, 3},
      {"alpha.lab.", LDNS_RR_TYPE_NS,
       {{"alpha.lab. 60 IN NS ns1.alpha.lab.", "alpha.lab. 60 IN NS ns2.alpha.lab."}}, {}, 0},
      {"d.alpha.lab.", LDNS_RR_TYPE_TXT,
       {{"alpha.lab. 60 IN DNAME beta.zz."}, {"d.alpha.lab. 60 IN CNAME d.beta.zz."},
        {"d.beta.zz. 60 IN TXT \"alpha.lab\" \"x\""}}, {}, 0},
      {"srv.alpha.lab.", LDNS_RR_TYPE_SRV,
       {{"srv.alpha.lab. 60 IN SRV 1 2 53 ns1.alpha.lab."}}, {}, 0},
      {".", LDNS_RR_TYPE_NS, {{". 60 IN NS a.root.lab."}}, {}, 0},
      {"bad.alpha.lab.", LDNS_RR_TYPE_A, {}, {}, 2},
  };
  for (const auto& c : cases) {
    Answer a;
    a.rcode = c.rcode;
    for (const auto& set : c.answer) {
      dns::RrList l(ldns_rr_list_new());
      for (const auto& t : set) ldns_rr_list_push_rr(l.get(), rr(t));
      a.answer.push_back(std::move(l));
    }
    for (const auto& set : c.authority) {
      dns::RrList l(ldns_rr_list_new());
      for (const auto& t : set) ldns_rr_list_push_rr(l.get(), rr(t));
      a.authority.push_back(std::move(l));
    }
    for (int edns : {-1, 4096}) {
      Query q;
      ASSERT_EQ(parse_query(query(c.qname, c.type, edns), q), Verdict::ok) << c.qname;
      bool tc = false;
      EXPECT_EQ(answer_reply(q, a, 1232, 65535, tc), ldns_reference(q, a, 1232))
          << c.qname << " edns " << edns;
      EXPECT_FALSE(tc);
    }
  }
  // Many RRs: compression across a long message.
  Query q;
  ASSERT_EQ(parse_query(query("many.alpha.lab.", LDNS_RR_TYPE_NS, 4096), q), Verdict::ok);
  Answer a;
  dns::RrList l(ldns_rr_list_new());
  for (int i = 0; i < 200; ++i)
    ldns_rr_list_push_rr(l.get(), rr("many.alpha.lab. 60 IN NS ns" + std::to_string(i) +
                                     (i % 2 ? ".alpha.lab." : ".Other.zz.")));
  a.answer.push_back(std::move(l));
  bool tc = false;
  EXPECT_EQ(answer_reply(q, a, 1232, 65535, tc), ldns_reference(q, a, 1232));
  dns::RrList l2(ldns_rr_list_new());
  for (int i = 0; i < 20; ++i)
    ldns_rr_list_push_rr(l2.get(), rr("late" + std::to_string(i) + ".many.alpha.lab. 60 IN CNAME x" +
                                      std::to_string(i % 3) + ".late.zz."));
  // Past 16384 octets no new suffix is remembered (pointers have 14 bits).
  a.answer.push_back(std::move(big_answer(100).answer[0]));
  a.answer.push_back(std::move(l2));
  EXPECT_EQ(answer_reply(q, a, 1232, 65535, tc), ldns_reference(q, a, 1232));
}

}  // namespace
}  // namespace tern::control::resolver

namespace tern::control::resolver {
namespace {

// Garbage from the wire never crashes the validator, and whatever it accepts as a
// question is one the reply builders can echo.
TEST(ParseQuery, SurvivesRandomAndMutatedInput) {
  std::mt19937 rng(12345);
  auto base = query("www.example.lab.", LDNS_RR_TYPE_A, 1232);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> w;
    if (i % 2) {
      w.resize(rng() % 64);
      for (auto& b : w) b = uint8_t(rng());
    } else {
      w = base;
      for (int k = 0; k < 3; ++k) w[rng() % w.size()] = uint8_t(rng());
      w.resize(rng() % (w.size() + 1));
    }
    Query q;
    Verdict v = parse_query(w, q);
    if (v == Verdict::drop) continue;
    auto r = error_reply(q, LDNS_RCODE_FORMERR, 1232, v == Verdict::badvers);
    ldns_pkt* p = nullptr;
    ASSERT_EQ(ldns_wire2pkt(&p, r.data(), r.size()), LDNS_STATUS_OK);
    ldns_pkt_free(p);
  }
}

}  // namespace
}  // namespace tern::control::resolver
