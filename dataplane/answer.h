// Stage 3 of the fast path: turn the received query frame into its answer, in the same buffer.
//
// Works on bytes: `f` is the frame as parsed into `q`, `cap` the bytes usable from f (frame +
// tailroom). Only the DNS payload length changes, so headers stay where they are: Ethernet (MACs
// swapped, VLAN tags kept), IP (addresses swapped, lengths, TTL/hop limit 64, IPv4 checksum), UDP
// (ports swapped, length, checksum). The question is left exactly as the client sent it (letter case,
// RFC 5452 / "0x20"), the cached sections follow it, then our OPT when the client sent one.
// Returns the new frame length, 0 when the answer does not fit in cap (the caller punts).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cache/cache.h"
#include "parse.h"

namespace tern::dp {

inline constexpr uint16_t kOurUdpSize = 1232;  // DNS flag day 2020: no fragmentation on common paths
inline constexpr uint8_t kReplyTtl = 64;

struct AnswerOpts {
  bool cksum_offload = false;  // leave the IPv4 header checksum 0 and seed the UDP checksum with the
                               // pseudo-header sum, as DPDK's TX checksum offload expects
};

// Answer from a cache entry (fresh or stale; Cache::render ages the TTLs). Sets *truncated when
// the sections did not fit the client's buffer and a TC=1 answer with empty sections was built.
size_t build_answer(uint8_t* f, size_t cap, const Query& q, const cache::Entry& e, uint32_t now_s,
                    bool stale, AnswerOpts o, bool* truncated);

// REFUSED (RFC 8906 3.1.3.2 "REFUSED ... policy") for a client outside the allow list: question
// kept, no sections, OPT echoed when the client sent one.
size_t build_refused(uint8_t* f, size_t cap, const Query& q, AnswerOpts o);

// RRL slip (rrl.h): a rate-limited response sent as TC=1 with no records (RFC 1035 4.2.1 / RFC 2181
// 9), so a real client behind the limited prefix retries over TCP. refused: the REFUSED it replaces
// (rcode REFUSED), else the answer it replaces (NOERROR, RA). Question and OPT as build_refused.
size_t build_truncated(uint8_t* f, size_t cap, const Query& q, bool refused, AnswerOpts o);

// The payload size limit for q's answer: 512 without EDNS (RFC 1035 4.2.1), with EDNS the smaller
// of the client's size and ours (RFC 6891 6.2.5).
inline size_t answer_limit(const Query& q) {
  if (!q.edns) return 512;
  return q.edns_size < kOurUdpSize ? q.edns_size : kOurUdpSize;
}

}  // namespace tern::dp
