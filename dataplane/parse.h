// Stage 1 of the fast path: classify one received frame and, when it is a DNS query for us,
// produce a validated view of it.
//
// Every length that comes from the wire is checked here, once (STYLE.md rule 4); answer.cc and the
// worker only use the offsets in Query. Works on plain bytes so the unit tests and the fuzzer need
// no NIC, no mbuf and no EAL.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "counters.h"

namespace tern::dp {

// The service addresses (those Linux has on the exception interface), copied into each worker at
// housekeeping: the hot path compares against this flat copy, never against shared memory.
struct ServiceView {
  static constexpr size_t kMax = 32;  // per family; more are ignored (see ServiceAddrs in worker.h)
  uint8_t n4 = 0, n6 = 0;
  uint8_t v4[kMax][4] = {};
  uint8_t v6[kMax][16] = {};

  bool has_v4(const uint8_t* a) const {
    for (unsigned i = 0; i < n4; ++i)
      if (std::memcmp(v4[i], a, 4) == 0) return true;
    return false;
  }
  bool has_v6(const uint8_t* a) const {
    for (unsigned i = 0; i < n6; ++i)
      if (std::memcmp(v6[i], a, 16) == 0) return true;
    return false;
  }

  // The readiness probe's source addresses (probe.h): only the node itself sends from them, so a
  // NIC frame carrying one, or a service address, as its source is spoofed.
  uint8_t probe4[4] = {}, probe6[16] = {};
  bool has_probe = false;
  bool own_source_v4(const uint8_t* a) const {
    return (has_probe && std::memcmp(probe4, a, 4) == 0) || has_v4(a);
  }
  bool own_source_v6(const uint8_t* a) const {
    return (has_probe && std::memcmp(probe6, a, 16) == 0) || has_v6(a);
  }
};

// Validated view of a DNS query frame. Offsets are from the start of the frame.
struct Query {
  uint16_t l3 = 0;        // IPv4 or IPv6 header (after Ethernet and 0..2 VLAN tags)
  uint16_t l4 = 0;        // UDP header
  uint16_t dns = 0;       // DNS header
  uint16_t dns_len = 0;   // DNS message length, from the UDP length
  uint16_t qend = 0;      // offset of the byte after QCLASS, relative to dns; on a DNS-shaped punt
                          // nonzero only when the whole message was walked (a REFUSED can be built)
  uint16_t opt = 0;       // offset of the OPT RR relative to dns (0: no EDNS)
  uint16_t qtype = 0, qclass = 0;
  uint16_t hdr_flags = 0;  // DNS header flags word as received (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode)
  uint16_t edns_size = 0;  // requestor's UDP payload size (RFC 6891 6.2.3), 512 when it said less
  bool v6 = false;
  bool edns = false;
  bool edns_do = false;    // DO bit (RFC 3225)
  uint8_t vlans = 0;
};

// Checksums the NIC already verified (DPDK RX offload: RTE_MBUF_F_RX_IP_CKSUM_GOOD,
// RTE_MBUF_F_RX_L4_CKSUM_GOOD); those are not summed again. Anything else is verified here.
struct RxVerified {
  bool ip_cksum = false;
  bool l4_cksum = false;
};

// Who put the frame on the worker's path: the NIC (anyone), or the node itself (the readiness probe,
// which is sent from the probe source on purpose).
enum class Origin : uint8_t { kWire, kNode };

// Returns Counter::query_ok with `out` filled, or the punt/drop reason (kind_of() tells which).
// kWire: any IP frame whose source is the probe source or a service address is dropped
// (drop_spoofed_source), whatever it carries: only the node sends from those.
Counter parse_query(std::span<const uint8_t> frame, const ServiceView& svc, Query& out, RxVerified hw = {},
                    Origin origin = Origin::kWire);

// What a punted frame is, for the exception path's budgets (proto::PuntBudgets, proto/policy.h), in
// priority order: the first three keep a reserve of the exception ring.
enum class PuntClass : uint8_t { kArpNd, kResolverReply, kRouting, kDnsTcp, kQuery, kOther };
inline constexpr size_t kPuntClasses = 6;

// Classifies a frame for Linux from its headers (Ethernet, up to two VLAN tags, IPv4/IPv6, ICMPv6
// type or TCP/UDP ports; every length checked here). kQuery: UDP to port 53 of a service address.
// own_source: set when the frame's IP source is the probe source or a service address (a spoofed
// frame from the wire: parse_query's drop_spoofed_source, for frames it does not see).
PuntClass classify_punt(std::span<const uint8_t> frame, const ServiceView& svc, bool* own_source = nullptr);

// The parser's punt verdicts for a UDP query to port 53 of a service address that the fast path
// leaves to the resolver: the allow list applies to them as to any query.
constexpr bool dns_shaped_punt(Counter v) {
  return v == Counter::punt_dns_opcode || v == Counter::punt_dns_shape || v == Counter::punt_edns_version ||
         v == Counter::punt_edns_ecs;
}

// Internet checksum (RFC 1071). The sum is taken over bytes as they lie in memory (byte-order
// independent, RFC 1071 2(B)), so the folded value is stored back with memcpy, no swapping.
// Every chunk but the last must have an even length.
inline uint64_t csum_acc(uint64_t acc, const uint8_t* p, size_t n) {
  // 64-bit native loads with end-around carry (RFC 1071 4.2): 2^64 = 1 modulo 2^16 - 1, so a 64-bit
  // one's complement sum folds to the same 16-bit sum, with a quarter of the additions.
  auto add = [&acc](uint64_t w) {
    acc += w;
    acc += acc < w;
  };
  while (n >= 16) {
    uint64_t a, b;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + 8, 8);
    add(a);
    add(b);
    p += 16;
    n -= 16;
  }
  if (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    add(w);
    p += 8;
    n -= 8;
  }
  if (n >= 4) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    add(w);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    add(w);
    p += 2;
    n -= 2;
  }
  if (n) {
    uint8_t pad[2] = {p[0], 0};  // odd length: pad with a zero octet (RFC 768)
    uint16_t w;
    std::memcpy(&w, pad, 2);
    add(w);
  }
  return acc;
}

// Adding a word to itself rotated by half its width leaves, in the upper half, the end-around
// carry sum of its halves: the carry out of the lower half is exactly the carry the upper half
// needs, and the upper sum cannot overflow again. 0 only for 0 (a nonzero sum stays nonzero).
inline uint16_t csum_fold(uint64_t acc) {
  const uint32_t s = static_cast<uint32_t>((acc + std::rotr(acc, 32)) >> 32);
  return static_cast<uint16_t>((s + std::rotr(s, 16)) >> 16);
}

}  // namespace tern::dp
