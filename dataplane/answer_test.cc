// build_answer / build_refused on crafted frames, checked byte by byte against an independent
// reading of the result (own checksum code, own offsets).
#include "answer.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "test_packets.h"

namespace tern::dp {
namespace {

using test::Bytes;
using test::QuerySpec;

uint16_t g16(const Bytes& b, size_t o) { return static_cast<uint16_t>(b[o] << 8 | b[o + 1]); }
uint32_t g32(const Bytes& b, size_t o) { return uint32_t{g16(b, o)} << 16 | g16(b, o + 2); }

using test::service;
using test::v6spec;

constexpr uint32_t kStoredAt = 1000;

struct Fixture : ::testing::Test {
  cache::Cache cache{cache::Config{}, 42};
  cache::ReaderId reader = cache.register_reader();
  ~Fixture() override { cache.unregister_reader(reader); }

  // Stores a response for s (name lowercased, as a resolver would normally echo the case it was
  // asked, but the cache must not care), rdata an A or AAAA.
  void store(QuerySpec s, uint32_t ttl, uint16_t flags, unsigned answers = 1) {
    for (char& c : s.qname) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const Bytes rdata = s.qtype == 28   ? Bytes(16, 0x20)
                        : s.qtype == 16 ? Bytes{2, 'o', 'k'}  // TXT: odd length, so TTLs land at odd offsets
                                        : Bytes{198, 18, 1, 1};
    auto r = cache.insert_response(test::dns_response(s, ttl, flags, rdata, answers), kStoredAt);
    ASSERT_TRUE(r.stored()) << cache::to_string(r.reason) << " " << wire::to_string(r.wire_status);
  }

  // Parses frame f, looks it up, answers in place into a buffer of cap bytes.
  struct Result {
    Bytes out;
    Query q;
    bool truncated = false;
    size_t len = 0;
  };
  Result answer(const Bytes& f, uint32_t now, size_t cap = 2048, AnswerOpts o = {}) {
    Result r;
    EXPECT_EQ(parse_query(f, service(), r.q), Counter::query_ok);
    cache::Key k;
    size_t end;
    const uint8_t flags = static_cast<uint8_t>((r.q.edns_do ? cache::kKeyDO : 0) |
                                               ((r.q.hdr_flags & wire::kFlagCD) ? cache::kKeyCD : 0));
    EXPECT_EQ(cache::make_key(cache.hasher(), {f.data() + r.q.dns, r.q.dns_len}, 12, flags, k, &end),
              wire::Status::ok);
    const cache::Lookup l = cache.lookup(reader, k, now, true);
    EXPECT_NE(l.kind, cache::Lookup::kMiss);
    if (l.kind == cache::Lookup::kMiss) return r;
    r.out = f;
    r.out.resize(std::max(cap, f.size()));
    r.len = build_answer(r.out.data(), cap, r.q, *l.entry, now, l.kind == cache::Lookup::kStale, o,
                         &r.truncated);
    r.out.resize(r.len);
    return r;
  }
};

void expect_swapped_and_checksummed(const Bytes& in, const Bytes& out, const Query& q) {
  ASSERT_GE(out.size(), q.dns + 12u);
  EXPECT_TRUE(std::equal(in.begin(), in.begin() + 6, out.begin() + 6)) << "dst MAC -> src MAC";
  EXPECT_TRUE(std::equal(in.begin() + 6, in.begin() + 12, out.begin())) << "src MAC -> dst MAC";
  EXPECT_TRUE(std::equal(in.begin() + 12, in.begin() + q.l3, out.begin() + 12)) << "VLAN tags kept";
  const size_t l3 = q.l3, l4 = q.l4;
  if (q.v6) {
    EXPECT_TRUE(std::equal(in.begin() + l3 + 8, in.begin() + l3 + 24, out.begin() + l3 + 24));
    EXPECT_TRUE(std::equal(in.begin() + l3 + 24, in.begin() + l3 + 40, out.begin() + l3 + 8));
    EXPECT_EQ(g16(out, l3 + 4), out.size() - l4);
  } else {
    EXPECT_EQ(g32(out, l3 + 12), g32(in, l3 + 16));
    EXPECT_EQ(g32(out, l3 + 16), g32(in, l3 + 12));
    EXPECT_EQ(g16(out, l3 + 2), out.size() - l3);
    EXPECT_TRUE(test::ipv4_header_ok(out, l3));
  }
  EXPECT_EQ(g16(out, l4), g16(in, l4 + 2));
  EXPECT_EQ(g16(out, l4 + 2), g16(in, l4));
  EXPECT_EQ(g16(out, l4 + 4), out.size() - l4);
  EXPECT_TRUE(test::udp_checksum_ok(out, l3, q.v6));
  EXPECT_EQ(g16(out, q.dns), g16(in, q.dns)) << "ID kept";
  EXPECT_TRUE(std::equal(in.begin() + q.dns + 12, in.begin() + q.dns + q.qend, out.begin() + q.dns + 12))
      << "question exactly as the client sent it";
}

TEST_F(Fixture, Ipv4HitAgesTtlAndKeepsTheClientsCase) {
  QuerySpec s;
  s.qname = "wWw.ExAmPlE.lAb.";
  store(s, 300, 0x0180);
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt + 10);
  ASSERT_GT(r.len, 0u);
  EXPECT_FALSE(r.truncated);
  expect_swapped_and_checksummed(in, r.out, r.q);
  const size_t d = r.q.dns;
  EXPECT_EQ(g16(r.out, d + 2), 0x8180) << "QR RD RA, NOERROR";
  EXPECT_EQ(g16(r.out, d + 6), 1);
  EXPECT_EQ(g16(r.out, d + 10), 0) << "no OPT: client sent none";
  const size_t rr = d + r.q.qend;
  EXPECT_EQ(g16(r.out, rr), 0xC00C);
  EXPECT_EQ(g32(r.out, rr + 6), 290u) << "TTL aged by 10 s";
  EXPECT_EQ(r.out.size(), rr + 16);
  EXPECT_EQ(r.out[r.q.l3 + 8], kReplyTtl);
}

TEST_F(Fixture, Ipv6QinQEdnsDoEchoedWithOpt) {
  QuerySpec s = v6spec();
  s.vlans = {100, 200};
  s.qtype = 28;
  s.edns.present = true;
  s.edns.do_bit = true;
  s.edns.udp_size = 4096;
  s.edns.options = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};
  store(s, 60, 0x01A0);  // RD RA AD
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt);
  ASSERT_GT(r.len, 0u);
  expect_swapped_and_checksummed(in, r.out, r.q);
  const size_t d = r.q.dns;
  EXPECT_EQ(g16(r.out, d + 2), 0x81A0) << "AD kept: client sent DO";
  EXPECT_EQ(g16(r.out, d + 10), 1) << "our OPT";
  const size_t opt = r.out.size() - 11;
  EXPECT_EQ(r.out[opt], 0);
  EXPECT_EQ(g16(r.out, opt + 1), 41);
  EXPECT_EQ(g16(r.out, opt + 3), kOurUdpSize);
  EXPECT_EQ(g16(r.out, opt + 7), 0x8000) << "DO echoed";
  EXPECT_EQ(g16(r.out, opt + 9), 0) << "no options (the client's cookie is not echoed by the cache)";
}

// Checksums are assembled from parts; questions of even and odd length and records of odd length
// put the sections, the aged TTLs and the OPT at both byte parities.
TEST_F(Fixture, ChecksumsRightForEveryParity) {
  for (const char* name : {"ab.lab.", "abc.lab.", "A.b.C.lab.", "Xy.Lab."}) {
    for (uint16_t qtype : {1, 16}) {
      for (bool v6 : {false, true}) {
        for (bool edns : {false, true}) {
          QuerySpec s = v6 ? v6spec() : QuerySpec{};
          s.qname = name;
          s.qtype = qtype;
          s.edns.present = edns;
          store(s, 60, 0x0180, 3);
          const Bytes in = test::query_frame(s);
          SCOPED_TRACE(std::string(name) + " qtype " + std::to_string(qtype) + (v6 ? " v6" : " v4") +
                       (edns ? " edns" : ""));
          for (uint32_t age : {0u, 7u, 300u}) {  // fresh, aged, stale
            Result r = answer(in, kStoredAt + age);
            ASSERT_GT(r.len, 0u);
            expect_swapped_and_checksummed(in, r.out, r.q);
          }
        }
      }
    }
  }
}

// The UDP checksum of an answer is derived from the query's verified checksum (RFC 1624); a query
// without one (0, IPv4 only) has its kept bytes summed instead. Both must give the same answer, byte
// for byte, at every parity of the question and of a client OPT carrying options.
TEST_F(Fixture, ChecksumFromTheQuerysEqualsTheOneSummedFromBytes) {
  for (const char* name : {"ab.lab.", "abc.lab.", "A.b.C.lab."}) {
    for (uint16_t qtype : {1, 16}) {
      for (int edns = 0; edns < 4; ++edns) {
        QuerySpec s;
        s.qname = name;
        s.qtype = qtype;
        s.edns.present = edns > 0;
        s.edns.do_bit = edns == 3;
        if (edns >= 2) s.edns.options = {0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9};  // odd length
        store(s, 60, 0x0180, 3);
        SCOPED_TRACE(std::string(name) + " qtype " + std::to_string(qtype) + " edns " + std::to_string(edns));
        const Bytes with = test::query_frame(s);
        s.udp_checksum = false;
        const Bytes without = test::query_frame(s);
        ASSERT_NE(g16(with, 14 + 20 + 6), 0);
        ASSERT_EQ(g16(without, 14 + 20 + 6), 0);
        for (uint32_t age : {0u, 7u, 300u}) {
          for (bool offload : {false, true}) {
            Result a = answer(with, kStoredAt + age, 2048, {offload});
            Result b = answer(without, kStoredAt + age, 2048, {offload});
            ASSERT_GT(a.len, 0u);
            EXPECT_EQ(a.out, b.out);
            if (!offload) expect_swapped_and_checksummed(with, a.out, a.q);
          }
        }
      }
    }
  }
}

TEST_F(Fixture, AdOnlyWhenTheClientAskedForIt) {
  QuerySpec s;
  store(s, 60, 0x01A0);
  Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt);
  EXPECT_EQ(g16(r.out, r.q.dns + 2), 0x8180) << "no DO, no AD in the query: AD cleared";
  s.flags = 0x0120;  // RD + AD (RFC 6840 5.7)
  in = test::query_frame(s);
  r = answer(in, kStoredAt);
  EXPECT_EQ(g16(r.out, r.q.dns + 2), 0x81A0);
}

TEST_F(Fixture, CdCopiedAndKeyedSeparately) {
  QuerySpec s;
  s.flags = 0x0110;  // RD + CD
  store(s, 60, 0x0190);
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt);
  EXPECT_EQ(g16(r.out, r.q.dns + 2), 0x8190);
}

TEST_F(Fixture, TruncatedWhenTheAnswerExceedsTheClientsBuffer) {
  QuerySpec s;
  s.qtype = 28;
  store(s, 60, 0x0180, 30);  // 30 AAAA: 840 bytes of answer
  Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt);
  ASSERT_GT(r.len, 0u);
  EXPECT_TRUE(r.truncated);
  expect_swapped_and_checksummed(in, r.out, r.q);
  EXPECT_EQ(g16(r.out, r.q.dns + 2), 0x8380) << "TC set";
  EXPECT_EQ(g16(r.out, r.q.dns + 6), 0);
  EXPECT_EQ(r.out.size(), r.q.dns + r.q.qend);

  // With EDNS 512 the OPT stays on the TC answer; with EDNS 1232 the whole answer fits.
  s.edns.present = true;
  s.edns.udp_size = 512;
  store(s, 60, 0x0180, 30);
  in = test::query_frame(s);
  r = answer(in, kStoredAt);
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(g16(r.out, r.q.dns + 10), 1);
  EXPECT_EQ(r.out.size(), r.q.dns + r.q.qend + 11);
  expect_swapped_and_checksummed(in, r.out, r.q);

  s.edns.udp_size = 1232;
  in = test::query_frame(s);
  r = answer(in, kStoredAt);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(g16(r.out, r.q.dns + 6), 30);
  EXPECT_GT(r.out.size(), 512u + r.q.dns);
  expect_swapped_and_checksummed(in, r.out, r.q);
}

TEST_F(Fixture, NoRoomReturnsZeroAndLeavesTheFrameForThePunt) {
  QuerySpec s;
  store(s, 60, 0x0180);
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt, in.size());  // no tailroom at all: the answer is longer
  EXPECT_EQ(r.len, 0u);
}

TEST_F(Fixture, StaleAnswerGetsTheStaleTtl) {
  QuerySpec s;
  store(s, 60, 0x0180);
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt + 120);  // expired, within the stale window
  ASSERT_GT(r.len, 0u);
  EXPECT_EQ(g32(r.out, r.q.dns + r.q.qend + 6), cache.config().stale_answer_ttl);
}

TEST_F(Fixture, ChecksumOffloadLeavesPseudoHeaderSum) {
  QuerySpec s;
  store(s, 60, 0x0180);
  const Bytes in = test::query_frame(s);
  Result r = answer(in, kStoredAt, 2048, AnswerOpts{true});
  ASSERT_GT(r.len, 0u);
  EXPECT_EQ(g16(r.out, r.q.l3 + 10), 0) << "IPv4 checksum left to the NIC";
  EXPECT_EQ(g16(r.out, r.q.l4 + 6), test::pseudo_header_fold(r.out, r.q.l3, false))
      << "UDP checksum seeded with the pseudo-header sum (DPDK TX offload contract)";
}

TEST(Refused, KeepsQuestionAndOpt) {
  for (bool v6 : {false, true}) {
    QuerySpec s = v6 ? v6spec() : QuerySpec{};
    s.vlans = {5};
    s.edns.present = true;
    s.qname = "Outside.Lab.";
    const Bytes in = test::query_frame(s);
    Query q;
    ASSERT_EQ(parse_query(in, service(), q), Counter::query_ok);
    Bytes out = in;
    out.resize(2048);
    const size_t len = build_refused(out.data(), out.size(), q, {});
    ASSERT_GT(len, 0u);
    out.resize(len);
    expect_swapped_and_checksummed(in, out, q);
    EXPECT_EQ(g16(out, q.dns + 2), 0x8105) << "QR RD REFUSED";
    EXPECT_EQ(g16(out, q.dns + 6), 0);
    EXPECT_EQ(g16(out, q.dns + 10), 1);
    EXPECT_EQ(out.size(), q.dns + q.qend + 11);
  }
}

}  // namespace
}  // namespace tern::dp
