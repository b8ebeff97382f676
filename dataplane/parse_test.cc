// parse_query on crafted frames: every header variant, every drop and punt reason, and
// truncation at every offset never yields a query.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "parse.h"

#include <cstring>

#include "cache/cache.h"
#include "test_packets.h"

namespace tern::dp {
namespace {

using test::Bytes;
using test::QuerySpec;

using test::service;
using test::v6spec;

Counter parse(const Bytes& f, Query* out = nullptr) {
  Query q;
  Counter c = parse_query(f, service(), q);
  if (out) *out = q;
  return c;
}

// Rebuilds the frame with a different DNS payload: lengths and checksums consistent.
Bytes with_dns(const QuerySpec& s, Bytes dns) { return test::frame(s, dns); }

TEST(Parse, Ipv4QueryGivesOffsetsAndFields) {
  QuerySpec s;
  Query q;
  ASSERT_EQ(parse(test::query_frame(s), &q), Counter::query_ok);
  EXPECT_FALSE(q.v6);
  EXPECT_EQ(q.vlans, 0);
  EXPECT_EQ(q.l3, 14);
  EXPECT_EQ(q.l4, 34);
  EXPECT_EQ(q.dns, 42);
  EXPECT_EQ(q.qtype, 1);
  EXPECT_EQ(q.qclass, 1);
  EXPECT_EQ(q.qend, 12 + test::name_wire(s.qname).size() + 4);
  EXPECT_EQ(q.dns_len, q.qend);
  EXPECT_FALSE(q.edns);
  EXPECT_EQ(q.edns_size, 512);
}

TEST(Parse, Ipv6Query) {
  Query q;
  ASSERT_EQ(parse(test::query_frame(v6spec()), &q), Counter::query_ok);
  EXPECT_TRUE(q.v6);
  EXPECT_EQ(q.l4, 14 + 40);
  EXPECT_EQ(q.dns, 14 + 48);
}

TEST(Parse, VlanAndQinQ) {
  QuerySpec s;
  Query q;
  s.vlans = {100};
  ASSERT_EQ(parse(test::query_frame(s), &q), Counter::query_ok);
  EXPECT_EQ(q.vlans, 1);
  EXPECT_EQ(q.l3, 18);
  s = v6spec();
  s.vlans = {10, 20};
  ASSERT_EQ(parse(test::query_frame(s), &q), Counter::query_ok);
  EXPECT_EQ(q.vlans, 2);
  EXPECT_EQ(q.l3, 22);
  s.vlans = {1, 2, 3};
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_vlan_depth);
}

TEST(Parse, EdnsSizeDoAndOptions) {
  QuerySpec s;
  s.edns.present = true;
  s.edns.udp_size = 4096;
  s.edns.do_bit = true;
  Query q;
  ASSERT_EQ(parse(test::query_frame(s), &q), Counter::query_ok);
  EXPECT_TRUE(q.edns);
  EXPECT_TRUE(q.edns_do);
  EXPECT_EQ(q.edns_size, 4096);
  EXPECT_EQ(q.opt, q.qend);

  s.edns.udp_size = 100;  // RFC 6891 6.2.5: below 512 counts as 512
  s.edns.do_bit = false;
  ASSERT_EQ(parse(test::query_frame(s), &q), Counter::query_ok);
  EXPECT_EQ(q.edns_size, 512);
  EXPECT_FALSE(q.edns_do);

  s.edns.options = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};  // client cookie: fine
  EXPECT_EQ(parse(test::query_frame(s)), Counter::query_ok);
  s.edns.options = {0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 0};  // ECS
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_edns_ecs);
  s.edns.options = {0, 10, 0, 9, 1, 2};  // option longer than the rdata
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_dns_opt);
  s.edns.options = {};
  s.edns.version = 1;
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_edns_version);
}

TEST(Parse, NotOursGoesToLinux) {
  QuerySpec s;
  s.dst = "198.18.0.54";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_not_ours);
  s = QuerySpec{};
  s.dport = 5353;
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_not_ours);
  s = v6spec();
  s.dst = "2001:2::54";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_not_ours);

  Bytes arp = test::query_frame(QuerySpec{});
  arp[12] = 0x08;
  arp[13] = 0x06;
  EXPECT_EQ(parse(arp), Counter::punt_not_ip);

  Bytes tcp = test::query_frame(QuerySpec{});
  tcp[14 + 9] = 6;
  test::fix_checksums(tcp, 14, false);
  EXPECT_EQ(parse(tcp), Counter::punt_not_udp);

  Bytes icmp6 = test::query_frame(v6spec());
  icmp6[14 + 6] = 58;
  EXPECT_EQ(parse(icmp6), Counter::punt_not_udp);
  Bytes hbh = test::query_frame(v6spec());
  hbh[14 + 6] = 0;  // hop-by-hop options
  EXPECT_EQ(parse(hbh), Counter::punt_ipv6_ext);
}

TEST(Parse, Ipv4RulesRfc1812) {
  const Bytes good = test::query_frame(QuerySpec{});
  Bytes f = good;
  f[14 + 10] ^= 1;
  EXPECT_EQ(parse(f), Counter::drop_ipv4_checksum);

  f = good;
  f[14] = 0x55;  // version 5
  test::fix_checksums(f, 14, false);
  EXPECT_EQ(parse(f), Counter::drop_ipv4_header);
  f = good;
  f[14] = 0x44;  // IHL 4
  EXPECT_EQ(parse(f), Counter::drop_ipv4_header);
  f = good;
  f[14 + 3] += 1;  // total length beyond the frame
  test::fix_checksums(f, 14, false);
  EXPECT_EQ(parse(f), Counter::drop_ipv4_header);

  f = good;
  f[14 + 6] = 0x20;  // MF
  test::fix_checksums(f, 14, false);
  EXPECT_EQ(parse(f), Counter::punt_ipv4_fragment);
  f = good;
  f[14 + 6] = 0;
  f[14 + 7] = 8;  // offset 64
  test::fix_checksums(f, 14, false);
  EXPECT_EQ(parse(f), Counter::punt_ipv4_fragment);

  // Options: IHL 6 with one NOP word; the rest of the frame shifts by 4.
  f = good;
  f[14] = 0x46;
  f.insert(f.begin() + 34, {1, 1, 1, 0});
  f[14 + 3] += 4;
  test::fix_checksums(f, 14, false);
  EXPECT_EQ(parse(f), Counter::punt_ipv4_options);

  QuerySpec s;
  s.src = "255.255.255.255";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_ipv4_source);
  s.src = "224.0.0.1";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_ipv4_source);
  s.src = "127.0.0.1";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_ipv4_source);

  // Ethernet padding after the IP datagram is allowed (minimum frame size).
  f = good;
  f.resize(f.size() + 20, 0);
  EXPECT_EQ(parse(f), Counter::query_ok);
}

TEST(Parse, Ipv6Rules) {
  const Bytes good = test::query_frame(v6spec());
  Bytes f = good;
  f[14] = 0x40;
  EXPECT_EQ(parse(f), Counter::drop_ipv6_header);
  f = good;
  f[14 + 5] += 1;  // payload length beyond the frame
  EXPECT_EQ(parse(f), Counter::drop_ipv6_header);
  QuerySpec s = v6spec();
  s.src = "ff02::1";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_ipv6_source);
  s.src = "::";
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_ipv6_source);
}

TEST(Parse, UdpChecksumAndLength) {
  QuerySpec s;
  Bytes f = test::query_frame(s);
  f.back() ^= 0x20;  // payload changed, checksum not
  EXPECT_EQ(parse(f), Counter::drop_udp_checksum);
  s.udp_checksum = false;  // RFC 768: zero = no checksum, IPv4 only
  EXPECT_EQ(parse(test::query_frame(s)), Counter::query_ok);

  QuerySpec s6 = v6spec();
  f = test::query_frame(s6);
  f[14 + 40 + 6] = f[14 + 40 + 7] = 0;  // RFC 8200 8.1: zero checksum is invalid over IPv6
  EXPECT_EQ(parse(f), Counter::drop_udp_checksum);
  f = test::query_frame(s6);
  f[14 + 40 + 6] ^= 0xFF;
  EXPECT_EQ(parse(f), Counter::drop_udp_checksum);

  // Checksums the NIC verified (RX offload) are not summed again; the rest still are, and a zero
  // UDP checksum over IPv6 stays invalid whatever the NIC says.
  f = test::query_frame(QuerySpec{});
  f[14 + 10] ^= 1;
  f[34 + 6] ^= 1;
  Query q;
  EXPECT_EQ(parse_query(f, service(), q, RxVerified{true, true}), Counter::query_ok);
  EXPECT_EQ(parse_query(f, service(), q, RxVerified{true, false}), Counter::drop_udp_checksum);
  EXPECT_EQ(parse_query(f, service(), q, RxVerified{false, true}), Counter::drop_ipv4_checksum);
  f = test::query_frame(s6);
  f[14 + 40 + 6] = f[14 + 40 + 7] = 0;
  EXPECT_EQ(parse_query(f, service(), q, RxVerified{true, true}), Counter::drop_udp_checksum);

  f = test::query_frame(QuerySpec{});
  f[34 + 5] += 1;  // UDP length beyond the IP payload
  EXPECT_EQ(parse(f), Counter::drop_udp_header);
  s = QuerySpec{};
  s.sport = 0;
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_udp_header);
}

TEST(Parse, DnsHeaderRules) {
  QuerySpec s;
  s.flags = 0x8100;  // QR=1
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_dns_response);
  s.flags = 0x2000 | 0x0100;  // opcode NOTIFY
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_dns_opcode);

  Bytes dns = test::dns_query(QuerySpec{});
  dns[5] = 2;  // qdcount 2
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_counts);
  dns = test::dns_query(QuerySpec{});
  dns[7] = 1;  // ancount 1
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_counts);
  dns = test::dns_query(QuerySpec{});
  dns[5] = 0;  // qdcount 0
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_counts);
  dns = test::dns_query(QuerySpec{});
  dns[11] = 1;  // arcount 1 but no record
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_opt);
  dns = test::dns_query(QuerySpec{});
  dns.push_back(0);  // trailing byte
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_trailing);

  s = QuerySpec{};
  s.qclass = 3;  // CH: the resolver answers version.bind and friends
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_dns_shape);
  s = QuerySpec{};
  s.qtype = 252;  // AXFR
  EXPECT_EQ(parse(test::query_frame(s)), Counter::punt_dns_shape);
}

TEST(Parse, MalformedNames) {
  QuerySpec s;
  s.qname = std::string(64, 'a') + ".lab.";  // label > 63
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_dns_name);
  s.qname.clear();
  for (int i = 0; i < 50; ++i) s.qname += "abcd.";  // 251 + 1 > 255? 50 * 5 + 1 = 251: fits
  EXPECT_EQ(parse(test::query_frame(s)), Counter::query_ok);
  s.qname = "abcdef." + s.qname;  // 258 octets
  EXPECT_EQ(parse(test::query_frame(s)), Counter::drop_dns_name);

  // Compression pointer in the question, pointing at itself (a loop) and at the header.
  Bytes dns = test::dns_query(QuerySpec{});
  dns.resize(12);
  for (uint8_t b : {0xC0, 0x0C, 0, 1, 0, 1}) dns.push_back(b);
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_name);
  dns[13] = 0x00;
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_name);
  dns[12] = 0x40;  // obsolete extended label type
  EXPECT_EQ(parse(with_dns(QuerySpec{}, dns)), Counter::drop_dns_name);
}

// Cutting the DNS message anywhere (with consistent IP/UDP lengths) is a drop, never a query.
TEST(Parse, TruncatedDnsAtEveryOffsetIsDropped) {
  for (bool v6 : {false, true}) {
    QuerySpec s = v6 ? v6spec() : QuerySpec{};
    s.edns.present = true;
    s.edns.options = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};
    const Bytes dns = test::dns_query(s);
    for (size_t cut = 0; cut < dns.size(); ++cut) {
      const Counter c = parse(with_dns(s, Bytes(dns.begin(), dns.begin() + static_cast<long>(cut))));
      EXPECT_EQ(kind_of(c), CounterKind::kDrop) << "cut at " << cut << ": " << name_of(c);
    }
  }
}

// Cutting the frame anywhere (lengths now lie) never reads past it and never yields a query.
TEST(Parse, TruncatedFrameAtEveryOffset) {
  for (bool v6 : {false, true}) {
    QuerySpec s = v6 ? v6spec() : QuerySpec{};
    s.vlans = {7};
    s.edns.present = true;
    const Bytes f = test::query_frame(s);
    for (size_t cut = 0; cut < f.size(); ++cut) {
      // A heap copy of exactly `cut` bytes, so ASan builds catch any read past the end.
      std::unique_ptr<uint8_t[]> buf(new uint8_t[cut ? cut : 1]);
      std::copy(f.begin(), f.begin() + static_cast<long>(cut), buf.get());
      Query q;
      const Counter c = parse_query({buf.get(), cut}, service(), q);
      EXPECT_NE(c, Counter::query_ok) << "cut at " << cut;
    }
  }
}

// csum_fold against the textbook fold (RFC 1071 4.1: add the carries back until none is left), on
// the values where carries chain: all ones in either half, 0, multiples of 0xFFFF, and a sweep.
TEST(Checksum, FoldMatchesRepeatedCarryFolding) {
  auto textbook = [](uint64_t a) {
    while (a >> 16) a = (a & 0xFFFF) + (a >> 16);
    return static_cast<uint16_t>(a);
  };
  std::vector<uint64_t> v = {0, 1, 0xFFFF, 0x10000, 0x1FFFE, 0xFFFFFFFF, 0x100000000, 0xFFFF0000FFFF,
                             ~uint64_t{0}, ~uint64_t{0} - 1, 0xFFFFFFFF00000000, 0x00000001FFFFFFFF,
                             0xFFFFull * 0x10001, 0x8000000080000000};
  uint64_t x = 0x9E3779B97F4A7C15;
  for (int i = 0; i < 100000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v.push_back(x);
    v.push_back(x >> (i % 64));
  }
  for (uint64_t a : v) ASSERT_EQ(csum_fold(a), textbook(a)) << std::hex << a;
}

}  // namespace
}  // namespace tern::dp

namespace tern::dp {
namespace {

// The worker builds cache keys with make_key_validated, trusting parse_query's label walk.
// For every name parse_query accepts, that key must equal make_key's from the raw message:
// names of every length class (short, past 16 and 32 bytes, near 255), mixed case, with and
// without EDNS behind the question (the fold may read on into it).
TEST(Parse, ValidatedKeyEqualsMakeKey) {
  cache::Cache c(cache::Config{}, 42);
  std::vector<std::string> names = {"a.", "WWW.Example.LAB.", "x.y.z.", "Mixed-Case123.Zone-Z.lab."};
  std::string longname;
  for (int i = 0; i < 4; ++i) longname += std::string(60, static_cast<char>('A' + i)) + ".";
  names.push_back(longname);  // 4 x 61 + 1 = 245 bytes
  for (int len = 1; len <= 63; len += 7) names.push_back(std::string(static_cast<size_t>(len), 'Q') + ".lab.");
  for (const std::string& n : names) {
    for (bool edns : {false, true}) {
      QuerySpec s;
      s.qname = n;
      s.edns.present = edns;
      const Bytes f = test::query_frame(s);
      Query q;
      ASSERT_EQ(parse_query(f, service(), q), Counter::query_ok) << n;
      const uint8_t* dns = f.data() + q.dns;
      cache::Key a, b;
      size_t end;
      ASSERT_EQ(cache::make_key(c.hasher(), {dns, q.dns_len}, 12, 0, a, &end), wire::Status::ok) << n;
      cache::make_key_validated(c.hasher(), dns + 12, q.qend - 16u, q.dns_len - 12u, q.qtype, q.qclass, 0, b);
      EXPECT_EQ(a.hash, b.hash) << n;
      // As the worker calls it: free to read on into the buffer's tailroom (garbage here).
      Bytes roomy = f;
      roomy.resize(f.size() + 300, 'Z');
      cache::Key d;
      cache::make_key_validated(c.hasher(), roomy.data() + q.dns + 12, q.qend - 16u, roomy.size() - q.dns - 12,
                                q.qtype, q.qclass, 0, d);
      EXPECT_EQ(a.hash, d.hash) << n;
      EXPECT_EQ(0, std::memcmp(a.name, d.name, a.name_len)) << n;
      ASSERT_EQ(a.name_len, b.name_len) << n;
      EXPECT_EQ(0, std::memcmp(a.name, b.name, a.name_len)) << n;
      EXPECT_EQ(a.qtype, b.qtype);
      EXPECT_EQ(a.qclass, b.qclass);
      EXPECT_EQ(end, q.qend);
    }
  }
}

}  // namespace
}  // namespace tern::dp
