// Stage 1: frame -> validated Query, or the counter naming why not.
//
// Order matters: the cheap "is this ours at all" tests come first so that traffic for Linux (ARP,
// NDP, TCP, upstream answers to the resolver) is punted untouched, and only frames we are going to
// answer pay for checksum and DNS validation.
#include "parse.h"

namespace tern::dp {
namespace {

inline uint16_t ld16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

constexpr uint16_t kEthIPv4 = 0x0800, kEthIPv6 = 0x86DD, kEthVlan = 0x8100, kEthQinQ = 0x88A8;
constexpr uint8_t kProtoUDP = 17;
constexpr size_t kEthLen = 14, kVlanLen = 4, kIPv4Len = 20, kIPv6Len = 40, kUdpLen = 8, kDnsHdr = 12;
constexpr uint16_t kDnsQR = 0x8000;
constexpr uint16_t kTypeOPT = 41, kClassIN = 1, kOptECS = 8;

inline uint64_t csum_add(uint64_t acc, uint64_t w) {
  acc += w;
  return acc + (acc < w);
}

// RFC 1071: a valid header sums to 0xFFFF. The usual 20 bytes as three loads; options summed whole.
inline bool ipv4_header_sum_ok(const uint8_t* ip, unsigned ihl) {
  if (ihl != kIPv4Len) return csum_fold(csum_acc(0, ip, ihl)) == 0xFFFF;
  uint64_t a, b;
  uint32_t c;
  std::memcpy(&a, ip, 8);
  std::memcpy(&b, ip + 8, 8);
  std::memcpy(&c, ip + 16, 4);
  return csum_fold(csum_add(csum_add(a, b), c)) == 0xFFFF;
}

bool ipv6_ext_header(uint8_t nh) {
  // RFC 8200 4 and the IANA "IPv6 Extension Header Types" registry.
  switch (nh) {
    case 0: case 43: case 44: case 50: case 51: case 60: case 135: case 139: case 140: case 253: case 254:
      return true;
    default:
      return false;
  }
}

// Meta and transfer types the fast path never answers from the cache (RFC 6895 3.1): the resolver
// gives them whatever answer it gives (NOTIMP, REFUSED, FORMERR).
bool punted_qtype(uint16_t t) {
  return t == 0 || t == kTypeOPT || (t >= 249 && t <= 254);
}

Counter parse_dns(std::span<const uint8_t> msg, Query& q) {
  // RFC 1035 4.1.1: fixed 12-byte header.
  if (msg.size() < kDnsHdr) return Counter::drop_dns_short;
  const uint8_t* m = msg.data();
  const size_t n = msg.size();
  const uint16_t flags = ld16(m + 2);
  q.qend = 0;
  if (flags & kDnsQR) return Counter::drop_dns_response;
  if (((flags >> 11) & 0xF) != 0) return Counter::punt_dns_opcode;  // RFC 1035 4.1.1 OPCODE
  const uint16_t qd = ld16(m + 4), an = ld16(m + 6), ns = ld16(m + 8), ar = ld16(m + 10);
  if (qd != 1 || an != 0 || ns != 0) return Counter::drop_dns_counts;
  if (ar > 1) return Counter::punt_dns_shape;  // e.g. OPT + TSIG: the resolver's business

  // RFC 1035 3.1 / 4.1.2: QNAME as labels, each <= 63 octets, whole name <= 255 octets. A query's
  // question has nothing before it to point to, so a compression pointer is malformed; 0x40/0x80
  // label types are obsolete (RFC 6891 5).
  size_t off = kDnsHdr;
  for (;;) {
    if (off >= n) return Counter::drop_dns_name;
    const uint8_t len = m[off];
    if (len == 0) {
      ++off;
      break;
    }
    if (len & 0xC0) return Counter::drop_dns_name;
    off += 1u + len;
    if (off - kDnsHdr + 1 > 255) return Counter::drop_dns_name;
  }
  if (n - off < 4) return Counter::drop_dns_question;
  q.qtype = ld16(m + off);
  q.qclass = ld16(m + off + 2);
  off += 4;
  q.qend = static_cast<uint16_t>(off);
  q.hdr_flags = flags;
  q.edns = false;
  q.edns_do = false;
  q.edns_size = 512;
  q.opt = 0;

  if (ar == 1) {
    // RFC 6891 6.1.2: OPT owner is the root, then TYPE, CLASS = UDP size, TTL = ext-rcode, version,
    // DO + Z, RDLEN, RDATA as {code, length, data} options.
    if (off >= n) return Counter::drop_dns_opt;
    if (m[off] != 0) return q.qend = 0, Counter::punt_dns_shape;  // a single non-OPT record (e.g. TSIG)
    if (n - off < 11) return Counter::drop_dns_opt;
    if (ld16(m + off + 1) != kTypeOPT) return q.qend = 0, Counter::punt_dns_shape;
    const uint16_t udp_size = ld16(m + off + 3);
    const uint8_t version = m[off + 6];
    const uint16_t rdlen = ld16(m + off + 9);
    const size_t rdata = off + 11;
    if (n - rdata < rdlen) return Counter::drop_dns_opt;
    size_t o = rdata;
    bool ecs = false;
    while (o < rdata + rdlen) {
      if (rdata + rdlen - o < 4) return Counter::drop_dns_opt;
      const uint16_t code = ld16(m + o), olen = ld16(m + o + 2);
      o += 4;
      if (rdata + rdlen - o < olen) return Counter::drop_dns_opt;
      if (code == kOptECS) ecs = true;  // RFC 7871: answers vary by client subnet
      o += olen;
    }
    if (rdata + rdlen != n) return Counter::drop_dns_trailing;
    // The message is whole and walked: even the punts below leave a view REFUSED can be built on.
    q.opt = static_cast<uint16_t>(off);
    q.edns = true;
    q.edns_do = (m[off + 7] & 0x80) != 0;  // RFC 3225
    q.edns_size = udp_size < 512 ? 512 : udp_size;  // RFC 6891 6.2.5
    // RFC 6891 6.1.3: a version we do not implement gets BADVERS, which the resolver builds.
    if (version != 0) return Counter::punt_edns_version;
    if (ecs) return Counter::punt_edns_ecs;
  } else if (off != n) {
    return Counter::drop_dns_trailing;  // RFC 1035 4.1: the counts describe every byte
  }
  if (q.qclass != kClassIN || punted_qtype(q.qtype)) return Counter::punt_dns_shape;
  return Counter::query_ok;
}

}  // namespace

PuntClass classify_punt(std::span<const uint8_t> frame, const ServiceView& svc, bool* own_source) {
  if (own_source) *own_source = false;
  const uint8_t* f = frame.data();
  const size_t n = frame.size();
  if (n < kEthLen) return PuntClass::kOther;
  size_t off = 12;
  uint16_t type = ld16(f + off);
  for (int tags = 0; (type == kEthVlan || type == kEthQinQ) && tags < 2; ++tags) {
    if (n < off + 2 + kVlanLen) return PuntClass::kOther;
    off += kVlanLen;
    type = ld16(f + off);
  }
  off += 2;
  if (type == 0x0806) return PuntClass::kArpNd;  // RFC 826
  const uint8_t* ip = f + off;
  uint8_t proto;
  size_t l4;
  bool to_us;
  if (type == kEthIPv4) {
    if (n - off < kIPv4Len) return PuntClass::kOther;
    const unsigned ihl = (ip[0] & 0x0F) * 4u;
    if (ihl < kIPv4Len || n - off < ihl) return PuntClass::kOther;
    if (own_source) *own_source = svc.own_source_v4(ip + 12);
    if (ld16(ip + 6) & 0x1FFF) return PuntClass::kOther;  // a later fragment: no L4 header to classify
    proto = ip[9];
    l4 = off + ihl;
    to_us = svc.has_v4(ip + 16);
  } else if (type == kEthIPv6) {
    if (n - off < kIPv6Len) return PuntClass::kOther;
    if (own_source) *own_source = svc.own_source_v6(ip + 8);
    proto = ip[6];  // extension headers are not walked: such frames are "other"
    l4 = off + kIPv6Len;
    to_us = svc.has_v6(ip + 24);
  } else {
    return PuntClass::kOther;
  }
  constexpr uint8_t kTcp = 6, kIcmp6 = 58, kVrrp = 112;
  if (proto == kVrrp) return PuntClass::kRouting;  // RFC 5798
  if (proto == kIcmp6) {
    // RFC 4861 4: router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
    if (n < l4 + 1) return PuntClass::kOther;
    return f[l4] >= 133 && f[l4] <= 137 ? PuntClass::kArpNd : PuntClass::kOther;
  }
  if (proto != kTcp && proto != kProtoUDP) return PuntClass::kOther;
  if (n < l4 + 4) return PuntClass::kOther;
  const uint16_t sport = ld16(f + l4), dport = ld16(f + l4 + 2);
  if (proto == kTcp) {
    if (sport == 179 || dport == 179) return PuntClass::kRouting;  // BGP, RFC 4271
    if (to_us && sport == 53) return PuntClass::kResolverReply;
    if (to_us && dport == 53) return PuntClass::kDnsTcp;
    return PuntClass::kOther;
  }
  if (dport == 3784 || dport == 3785 || dport == 4784) return PuntClass::kRouting;  // BFD, RFC 5881/5883
  if (to_us && dport == 53) return PuntClass::kQuery;
  if (to_us && sport == 53 && dport >= 1024) return PuntClass::kResolverReply;
  return PuntClass::kOther;
}

Counter parse_query(std::span<const uint8_t> frame, const ServiceView& svc, Query& q, RxVerified hw, Origin origin) {
  const uint8_t* f = frame.data();
  const size_t n = frame.size();

  // IEEE 802.3 header, then at most two 802.1Q / 802.1ad tags (QinQ).
  if (n < kEthLen) return Counter::drop_eth_short;
  size_t off = 12;
  uint16_t type = ld16(f + off);
  uint8_t vlans = 0;
  while (type == kEthVlan || type == kEthQinQ) {
    if (vlans == 2) return Counter::drop_vlan_depth;
    if (n < off + 2 + kVlanLen) return Counter::drop_eth_short;
    off += kVlanLen;
    type = ld16(f + off);
    ++vlans;
  }
  off += 2;
  q.vlans = vlans;
  q.l3 = static_cast<uint16_t>(off);

  size_t l4, ip_end;
  const uint8_t* ip = f + off;
  q.qend = 0;
  if (type == kEthIPv4) {
    q.v6 = false;
    // RFC 1812 5.2.2: (1) length >= 20, (2) checksum, (3) version 4, (4) IHL >= 5,
    // (5) total length >= IHL * 4 and within the frame (Ethernet may pad short frames).
    if (n - off < kIPv4Len) return Counter::drop_ipv4_header;
    const unsigned ihl = (ip[0] & 0x0F) * 4u;
    if ((ip[0] >> 4) != 4 || ihl < kIPv4Len || n - off < ihl) return Counter::drop_ipv4_header;
    const uint16_t total = ld16(ip + 2);
    if (total < ihl || total > n - off) return Counter::drop_ipv4_header;
    if (!hw.ip_cksum && !ipv4_header_sum_ok(ip, ihl)) return Counter::drop_ipv4_checksum;
    // Before any punt: a spoofed probe source would reach the resolver as the node's own probe,
    // a spoofed service address as the node talking to itself.
    if (origin == Origin::kWire && svc.own_source_v4(ip + 12)) return Counter::drop_spoofed_source;
    // RFC 791 3.1: MF flag or a fragment offset means a fragment; reassembly is the kernel's job.
    if (ld16(ip + 6) & 0x3FFF) return Counter::punt_ipv4_fragment;
    if (ip[9] != kProtoUDP) return Counter::punt_not_udp;
    if (!svc.has_v4(ip + 16)) return Counter::punt_not_ours;
    if (ihl != kIPv4Len) return Counter::punt_ipv4_options;
    // RFC 1812 5.3.7: never answer a source we must not send to: 0/8, loopback, multicast and
    // 240/4 including the limited broadcast (an answer there would be a reflection).
    // TTL is not checked: RFC 1122 3.2.1.7, a host must not discard a datagram for a low TTL.
    const uint8_t s0 = ip[12];
    if (s0 == 0 || s0 == 127 || s0 >= 224) return Counter::drop_ipv4_source;
    q.v6 = false;
    l4 = off + ihl;
    ip_end = off + total;
  } else if (type == kEthIPv6) {
    q.v6 = true;
    // RFC 8200 3: version 6, payload length within the frame (0 = jumbogram, RFC 2675: not here).
    if (n - off < kIPv6Len || (ip[0] >> 4) != 6) return Counter::drop_ipv6_header;
    const uint16_t plen = ld16(ip + 4);
    if (plen == 0 || plen > n - off - kIPv6Len) return Counter::drop_ipv6_header;
    if (origin == Origin::kWire && svc.own_source_v6(ip + 8)) return Counter::drop_spoofed_source;
    const uint8_t nh = ip[6];
    if (nh != kProtoUDP) return ipv6_ext_header(nh) ? Counter::punt_ipv6_ext : Counter::punt_not_udp;
    if (!svc.has_v6(ip + 24)) return Counter::punt_not_ours;
    // RFC 4291 2.5.2/2.5.3/2.7: unspecified, loopback and multicast sources cannot be answered.
    static constexpr uint8_t kZero[16] = {};
    static constexpr uint8_t kLoop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (ip[8] == 0xFF || std::memcmp(ip + 8, kZero, 16) == 0 || std::memcmp(ip + 8, kLoop, 16) == 0)
      return Counter::drop_ipv6_source;
    q.v6 = true;
    l4 = off + kIPv6Len;
    ip_end = l4 + plen;
  } else {
    return Counter::punt_not_ip;
  }

  // RFC 768: UDP length covers header + data and must fit in the IP payload.
  if (ip_end - l4 < kUdpLen) return Counter::drop_udp_header;
  const uint8_t* udp = f + l4;
  if (ld16(udp + 2) != 53) return Counter::punt_not_ours;
  const uint16_t ulen = ld16(udp + 4);
  if (ulen < kUdpLen || ulen > ip_end - l4) return Counter::drop_udp_header;
  if (ld16(udp) == 0) return Counter::drop_udp_header;  // source port 0: nowhere to answer
  const uint16_t ck = ld16(udp + 6);
  if (ck == 0 && q.v6) return Counter::drop_udp_checksum;
  if (ck != 0 && !hw.l4_cksum) {
    // RFC 768 / RFC 8200 8.1: checksum over the pseudo-header and the UDP datagram; optional (0)
    // over IPv4 only. A computed sum of 0 is sent as 0xFFFF, so a valid datagram folds to 0xFFFF.
    // Pseudo-header: addresses, then zero + protocol and the UDP length as one 32-bit word.
    uint64_t acc;
    if (q.v6) {
      acc = csum_acc(0, ip + 8, 32);
    } else {
      std::memcpy(&acc, ip + 12, 8);
    }
    const uint8_t ph[4] = {0, kProtoUDP, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen)};
    uint32_t phw;
    std::memcpy(&phw, ph, 4);
    acc = csum_add(acc, phw);
    if (csum_fold(csum_acc(acc, udp, ulen)) != 0xFFFF) return Counter::drop_udp_checksum;
  }
  q.l4 = static_cast<uint16_t>(l4);
  q.dns = static_cast<uint16_t>(l4 + kUdpLen);
  q.dns_len = static_cast<uint16_t>(ulen - kUdpLen);
  return parse_dns(frame.subspan(q.dns, q.dns_len), q);
}

}  // namespace tern::dp
