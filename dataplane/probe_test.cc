// The probe's frames on plain bytes: what the control thread injects is a query the fast path's own
// parser accepts, and only the answer to that very probe is taken as its reply. The probe's trip
// through the worker loop is in worker_test.cc (it needs the EAL).
#include "probe.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "parse.h"
#include "test_packets.h"
#include "wire/wire.h"

namespace tern::dp {
namespace {

using test::Bytes;

ProbeQuery query(bool v6, const char* name = "www.Alpha.lab", uint16_t qtype = 28) {
  ProbeQuery q;
  EXPECT_EQ(wire::name_from_text(name, q.name, &q.name_len), wire::Status::ok);
  q.qtype = qtype;
  q.id = 0xbeef;
  q.sport = 50123;
  q.v6 = v6;
  if (v6)
    inet_pton(AF_INET6, "2001:2::53", q.dst.data());
  else
    inet_pton(AF_INET, "198.18.0.53", q.dst.data());
  q.dst_mac = {0x02, 0, 0, 0, 0, 0x53};
  return q;
}

using test::service;

TEST(ProbeFrame, IsAQueryTheFastPathParserAccepts) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const ProbeSource src;
    const ProbeQuery q = query(v6);
    Bytes f(512);
    const size_t len = build_probe_frame(f, src, q);
    ASSERT_GT(len, 0u);
    f.resize(len);
    Query pq;
    // No checksum offload flags: parse_query verifies both checksums itself.
    ASSERT_EQ(parse_query(f, service(), pq), Counter::query_ok);
    EXPECT_EQ(pq.v6, v6);
    EXPECT_EQ(pq.qtype, 28);
    EXPECT_TRUE(pq.edns);
    EXPECT_FALSE(pq.edns_do);
    EXPECT_EQ(pq.hdr_flags, wire::kFlagRD);
    EXPECT_TRUE(test::udp_checksum_ok(f, 14, v6)) << "independent checksum check";
    if (!v6) {
      EXPECT_TRUE(test::ipv4_header_ok(f, 14));
    }
    EXPECT_EQ(0, std::memcmp(f.data(), q.dst_mac.data(), 6)) << "to the node MAC";
    EXPECT_EQ(0, std::memcmp(f.data() + 6, src.mac.data(), 6)) << "from the probe MAC";
    EXPECT_EQ(0, std::memcmp(f.data() + 14 + (v6 ? 8 : 12), v6 ? src.v6.data() : src.v4.data(), v6 ? 16 : 4));
  }
  Bytes small(60);
  EXPECT_EQ(build_probe_frame(small, ProbeSource{}, query(false)), 0u) << "too small a buffer is refused";
}

// What the resolver sends back through Linux: service address:53 -> probe source:sport.
Bytes reply(const ProbeQuery& q, uint16_t id, uint16_t dport, uint16_t flags, unsigned answers) {
  test::QuerySpec s;
  s.v6 = q.v6;
  s.src = q.v6 ? "2001:2::53" : "198.18.0.53";
  s.dst = q.v6 ? "2001:2::ffff:fffe" : "198.18.255.254";
  s.sport = 53;
  s.dport = dport;
  s.id = id;
  s.qname = "www.alpha.lab.";
  s.qtype = q.qtype;
  return test::frame(s, test::dns_response(s, 60, flags, q.v6 ? Bytes(16, 1) : Bytes{1, 2, 3, 4}, answers));
}

TEST(ProbeReply, OnlyTheAnswerToThisProbeMatches) {
  const ProbeSource src;
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const ProbeQuery q = query(v6);
    ProbeReply r;
    ASSERT_TRUE(match_probe_reply(reply(q, q.id, q.sport, 0x0180, 2), src, q, r));
    EXPECT_EQ(r.rcode, 0);
    EXPECT_EQ(r.ancount, 2);
    ASSERT_TRUE(match_probe_reply(reply(q, q.id, q.sport, 0x0183, 0), src, q, r));
    EXPECT_EQ(rcode_text(r.rcode), "NXDOMAIN");
    EXPECT_FALSE(match_probe_reply(reply(q, q.id + 1, q.sport, 0x0180, 1), src, q, r)) << "an older probe's ID";
    EXPECT_FALSE(match_probe_reply(reply(q, q.id, q.sport + 1, 0x0180, 1), src, q, r)) << "an older probe's port";
    ProbeQuery other = q;
    other.v6 = !v6;
    EXPECT_FALSE(match_probe_reply(reply(q, q.id, q.sport, 0x0180, 1), src, other, r)) << "other family";
    Bytes f = reply(q, q.id, q.sport, 0x0180, 1);
    f.resize(f.size() - 30);
    EXPECT_FALSE(match_probe_reply(f, src, q, r)) << "UDP length beyond the frame";
  }
  // The probe itself (a query, QR=0) coming back is not an answer.
  const ProbeQuery q = query(false);
  Bytes f(512);
  f.resize(build_probe_frame(f, src, q));
  ProbeReply r;
  EXPECT_FALSE(match_probe_reply(f, src, q, r));
}

TEST(ProbeVerb, TypesByMnemonicAndRfc3597) {
  uint16_t t = 0;
  EXPECT_TRUE(parse_qtype("aaaa", t));
  EXPECT_EQ(t, 28);
  EXPECT_TRUE(parse_qtype("SOA", t));
  EXPECT_EQ(t, 6);
  EXPECT_TRUE(parse_qtype("TYPE65", t));
  EXPECT_EQ(t, 65);
  EXPECT_FALSE(parse_qtype("TYPE", t));
  EXPECT_FALSE(parse_qtype("TYPE70000", t));
  EXPECT_FALSE(parse_qtype("BOGUS", t));
}

}  // namespace
}  // namespace tern::dp
