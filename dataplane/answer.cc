// Checksums are built from parts instead of re-reading the finished frame: what the answer keeps
// (addresses, ports, ID, question) is summed before anything is written, the new header words are
// summed from registers, and only the freshly rendered sections are read back. Re-reading bytes
// just written with narrower stores costs a failed store-to-load forward per word (measured: a
// third of finish_frame's time before this).
#include "answer.h"

#include <bit>
#include <cstring>

#include "wire/wire.h"

namespace tern::dp {
namespace {

using wire::load16;
using wire::store16;

constexpr size_t kOptLen = 11;  // root owner, TYPE, CLASS, TTL, RDLEN, no options

// RFC 6891 6.1.2: OPT with our payload size, extended rcode 0, version 0, DO echoed (RFC 3225 3).
constexpr uint8_t kOpt[2][kOptLen] = {
    {0, 0, 41, kOurUdpSize >> 8, kOurUdpSize & 0xFF, 0, 0, 0x00, 0, 0, 0},
    {0, 0, 41, kOurUdpSize >> 8, kOurUdpSize & 0xFF, 0, 0, 0x80, 0, 0, 0},
};

// A 16-bit wire value as a native-order word of the memory sum (see csum_acc).
inline uint64_t nat16(uint16_t v) {
  const uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  uint16_t w;
  std::memcpy(&w, b, 2);
  return w;
}

// Sum of n bytes that sit at an odd (odd=true) or even offset of the checksummed region: a chunk
// summed on its own and starting at an odd offset contributes its sum byte-swapped (RFC 1071 2(B)).
inline uint64_t csum_at(const uint8_t* p, size_t n, bool odd) {
  const uint16_t s = csum_fold(csum_acc(0, p, n));
  return odd ? static_cast<uint16_t>(s << 8 | s >> 8) : s;
}

struct Kept {
  uint64_t udp_sum;          // addresses (pseudo-header), ports, DNS ID, question; folded to 16 bits
  uint64_t addr_sum;         // addresses alone (for the offload pseudo-header), folded to 16 bits
  uint16_t ip_cksum, ip_len, ip_frag, ip_ttl_proto;  // IPv4 words before the rewrite (host order)
};

// One's complement negation of a 16-bit word of the sum (RFC 1624 2: ~m).
inline uint64_t neg16(uint64_t w) { return static_cast<uint16_t>(~w); }

// What the answer keeps of the query's checksummed bytes. With a query checksum that was verified
// (parse_query, or the NIC: RTE_MBUF_F_RX_L4_CKSUM_GOOD), that sum is already in the frame: the
// checksum is the complement of the sum of every other word, so subtracting the words the answer
// rewrites (RFC 1624 eqn. 3) leaves addresses + ports + ID + question without reading the question
// again. IPv4 queries may carry no checksum (0, RFC 768): those are summed from the bytes.
Kept keep_sums(const uint8_t* f, const Query& q, bool offload) {
  Kept k{};
  const uint8_t* ip = f + q.l3;
  if (q.v6) {
    k.addr_sum = csum_fold(csum_acc(0, ip + 8, 32));
  } else {
    uint64_t a;
    std::memcpy(&a, ip + 12, 8);
    k.addr_sum = csum_fold(a);  // one word of the 64-bit sum (see csum_acc); a swap keeps the sum
    k.ip_cksum = load16(ip + 10);
    k.ip_len = load16(ip + 2);
    k.ip_frag = load16(ip + 6);
    k.ip_ttl_proto = load16(ip + 8);
  }
  if (offload) return k;  // the NIC sums the datagram: only the pseudo-header is needed
  const uint8_t* udp = f + q.l4;
  const uint8_t* dns = f + q.dns;
  uint16_t ck;
  std::memcpy(&ck, udp + 6, 2);
  if (ck != 0) {
    // parse_query accepted the query: qdcount 1, ancount and nscount 0, arcount 1 with an OPT (the
    // only record after the question) or 0; the UDP length appears twice (pseudo-header, header).
    uint64_t s = neg16(ck);
    s += neg16(nat16(17)) + 2 * neg16(nat16(static_cast<uint16_t>(q.dns_len + 8))) + neg16(nat16(q.hdr_flags)) + neg16(nat16(1)) +
         neg16(nat16(q.edns ? 1 : 0));
    if (q.dns_len > q.qend) s += neg16(csum_at(dns + q.qend, q.dns_len - q.qend, (8 + q.qend) & 1));
    k.udp_sum = csum_fold(s);
    return k;
  }
  uint64_t s = csum_acc(k.addr_sum, udp, 4);  // ports
  s = csum_acc(s, dns, 2);                    // ID
  // The question starts 20 bytes into the datagram: even, so it chains.
  k.udp_sum = csum_fold(csum_acc(s, dns + wire::kHeaderSize, q.qend - wire::kHeaderSize));
  return k;
}

void swap_bytes(uint8_t* a, uint8_t* b, size_t n) {
  uint8_t t[16];
  std::memcpy(t, a, n);
  std::memcpy(a, b, n);
  std::memcpy(b, t, n);
}

// Writes the DNS header words, our OPT, then Ethernet, IP and UDP headers around a DNS payload of
// dns_len bytes (sections, if any, already rendered after the question; body_sum is their sum).
size_t finish_frame(uint8_t* f, const Query& q, const Kept& k, uint16_t flags, uint16_t an, uint16_t ns,
                    uint16_t ar, size_t dns_len, uint64_t body_sum, AnswerOpts o) {
  uint8_t* dns = f + q.dns;
  store16(dns + wire::kOffFlags, flags);
  store16(dns + wire::kOffQdcount, 1);
  store16(dns + wire::kOffAncount, an);
  store16(dns + wire::kOffNscount, ns);
  store16(dns + wire::kOffArcount, ar);
  uint64_t sum = k.udp_sum + body_sum + nat16(flags) + nat16(1) + nat16(an) + nat16(ns) + nat16(ar);
  if (q.edns) {
    const size_t at = dns_len - kOptLen;
    std::memcpy(dns + at, kOpt[q.edns_do], kOptLen);
    sum += csum_at(kOpt[q.edns_do], kOptLen, (8 + at) & 1);
  }

  swap_bytes(f, f + 6, 6);  // MACs; VLAN tags stay as they are
  uint8_t* ip = f + q.l3;
  uint8_t* udp = f + q.l4;
  const uint16_t ulen = static_cast<uint16_t>(8 + dns_len);
  swap_bytes(udp, udp + 2, 2);
  store16(udp + 4, ulen);
  const uint64_t pseudo = k.addr_sum + nat16(17) + nat16(ulen);
  if (q.v6) {
    swap_bytes(ip + 8, ip + 24, 16);
    store16(ip + 4, ulen);  // RFC 8200 3: payload length (extension headers were punted)
    ip[7] = kReplyTtl;
  } else {
    swap_bytes(ip + 12, ip + 16, 4);
    // Options were punted (IHL is 5); not a fragment; our TTL. Header checksum updated
    // incrementally from the verified one (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
    const uint16_t len = static_cast<uint16_t>(20 + ulen);
    const uint16_t ttl_proto = static_cast<uint16_t>(kReplyTtl << 8 | (k.ip_ttl_proto & 0xFF));
    store16(ip + 2, len);
    store16(ip + 6, 0);
    store16(ip + 8, ttl_proto);
    if (o.cksum_offload) {
      store16(ip + 10, 0);
    } else {
      uint32_t s = static_cast<uint16_t>(~k.ip_cksum);
      s += static_cast<uint16_t>(~k.ip_len) + uint32_t{len};
      s += static_cast<uint16_t>(~k.ip_frag) + 0u;
      s += static_cast<uint16_t>(~k.ip_ttl_proto) + uint32_t{ttl_proto};
      s = (s & 0xFFFF) + (s >> 16);
      s = (s & 0xFFFF) + (s >> 16);
      store16(ip + 10, static_cast<uint16_t>(~s));
    }
  }
  uint16_t c;
  if (o.cksum_offload) {
    c = csum_fold(pseudo);  // DPDK TX offload contract: pseudo-header sum, not complemented
  } else {
    // pseudo-header + UDP header (ports kept in udp_sum, length, checksum 0) + DNS message.
    c = static_cast<uint16_t>(~csum_fold(sum + nat16(17) + 2 * nat16(ulen)));
    if (c == 0) c = 0xFFFF;  // RFC 768: a computed 0 is sent as all ones (0 means "none" over IPv4)
  }
  (void)pseudo;
  std::memcpy(udp + 6, &c, 2);
  return q.dns + dns_len;
}

uint16_t reply_flags(const Query& q) {
  // ID untouched; QR set; opcode, RD and CD copied (RFC 1035 4.1.1, RFC 4035 3.2.2).
  return static_cast<uint16_t>(wire::kFlagQR |
                               (q.hdr_flags & (wire::kOpcodeMask | wire::kFlagRD | wire::kFlagCD)));
}

}  // namespace

size_t build_answer(uint8_t* f, size_t cap, const Query& q, const cache::Entry& e, uint32_t now_s,
                    bool stale, AnswerOpts o, bool* truncated) {
  const size_t opt_len = q.edns ? kOptLen : 0;
  const size_t full = q.qend + e.sections_len() + opt_len;
  uint16_t flags = reply_flags(q) | wire::kFlagRA | (e.flags() & wire::kFlagAA) | e.rcode();
  // RFC 4035 3.2.3 / RFC 6840 5.8: AD only when the data was validated and the client asked for it
  // (DO or AD set in the query).
  if ((e.flags() & wire::kFlagAD) && (q.edns_do || (q.hdr_flags & wire::kFlagAD))) flags |= wire::kFlagAD;
  const uint16_t ar_opt = q.edns ? 1 : 0;

  if (full <= answer_limit(q)) {
    if (q.dns + full > cap) return 0;
    const Kept k = keep_sums(f, q, o.cksum_offload);
    uint8_t* sec = f + q.dns + q.qend;
    const size_t n = cache::Cache::render(e, now_s, stale, {sec, e.sections_len()});
    if (n != e.sections_len()) return 0;
    *truncated = false;
    // Sections start 8 + qend bytes into the datagram: odd when the question has an odd length.
    // Summed from the entry (render only read it) and corrected for each aged TTL, reading back
    // just the 4-byte TTLs render stored, so no load straddles a fresh store.
    const bool odd = q.qend & 1;
    // A 32-bit word is a sum of its two 16-bit halves (2^32 = 1 modulo 2^16 - 1); one at an odd
    // offset of the sections is rotated by 8, as its bytes sit in the other halves of the words.
    const uint8_t* src = e.sections().data();
    uint64_t body = csum_fold(csum_acc(0, src, n));
    const size_t n_ttls = e.ttl_count();  // a sum of three header fields: once, not per record
    for (size_t i = 0; i < n_ttls; ++i) {
      const uint16_t at = e.ttl_offset(i);
      uint32_t now_ttl, was;
      std::memcpy(&now_ttl, sec + at, 4);  // same width as render's store: forwarded
      std::memcpy(&was, src + at, 4);
      const unsigned r = (at & 1) * 8;
      body += std::rotl(now_ttl, r) + uint64_t{~std::rotl(was, r)};
    }
    body = csum_fold(body);
    if (odd) body = static_cast<uint16_t>(body << 8 | body >> 8);
    return finish_frame(f, q, k, flags, e.ancount(), e.nscount(), static_cast<uint16_t>(e.arcount() + ar_opt),
                        full, body, o);
  }
  // RFC 1035 4.2.1 / RFC 2181 9: does not fit the client's buffer: TC=1 and no records, so the client
  // retries over TCP (which the exception path carries to the resolver). The OPT stays (RFC 6891 7):
  // it tells the client our size.
  if (q.dns + q.qend + opt_len > cap) return 0;
  *truncated = true;
  return finish_frame(f, q, keep_sums(f, q, o.cksum_offload), flags | wire::kFlagTC, 0, 0, ar_opt, q.qend + opt_len, 0, o);
}

size_t build_refused(uint8_t* f, size_t cap, const Query& q, AnswerOpts o) {
  const size_t opt_len = q.edns ? kOptLen : 0;
  if (q.dns + q.qend + opt_len > cap) return 0;
  return finish_frame(f, q, keep_sums(f, q, o.cksum_offload), reply_flags(q) | wire::kRcodeRefused, 0, 0, q.edns ? 1 : 0,
                      q.qend + opt_len, 0, o);
}

size_t build_truncated(uint8_t* f, size_t cap, const Query& q, bool refused, AnswerOpts o) {
  const size_t opt_len = q.edns ? kOptLen : 0;
  if (q.dns + q.qend + opt_len > cap) return 0;
  const uint16_t flags = static_cast<uint16_t>(reply_flags(q) | wire::kFlagTC |
                                               (refused ? wire::kRcodeRefused : wire::kFlagRA));
  return finish_frame(f, q, keep_sums(f, q, o.cksum_offload), flags, 0, 0, q.edns ? 1 : 0, q.qend + opt_len, 0, o);
}

}  // namespace tern::dp
