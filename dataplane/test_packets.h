// Crafted frames for the fast path tests, built independently of parse.cc / answer.cc (own
// checksum code, own name encoding) so a shared mistake cannot make a test pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parse.h"

namespace tern::dp::test {

using Bytes = std::vector<uint8_t>;

struct EdnsSpec {
  bool present = false;
  uint16_t udp_size = 1232;
  bool do_bit = false;
  uint8_t version = 0;
  Bytes options;  // raw {code, len, data} triples
};

struct QuerySpec {
  bool v6 = false;
  std::vector<uint16_t> vlans;  // outermost first: TPIDs are 0x88A8 for the outer of two, else 0x8100
  std::string src = "198.18.0.100", dst = "198.18.0.53";  // IPv4 or IPv6 text
  uint16_t sport = 40000, dport = 53;
  uint16_t id = 0x1234;
  uint16_t flags = 0x0100;  // RD
  std::string qname = "www.Example.lab.";
  uint16_t qtype = 1, qclass = 1;
  EdnsSpec edns;
  bool udp_checksum = true;  // false: send 0 (IPv4 only legal)
};

Bytes name_wire(const std::string& dotted);  // "a.b." -> 1a1b0 (case kept)
Bytes dns_query(const QuerySpec&);           // DNS message only
// Ethernet + VLANs + IP + UDP around payload, checksums right.
Bytes frame(const QuerySpec&, const Bytes& dns_payload);
inline Bytes query_frame(const QuerySpec& s) { return frame(s, dns_query(s)); }

// A response for the cache: question as in s (lowercase is fine), one A/AAAA answer with ttl, the
// header flags given (QR is added), and an OPT with DO when s.edns.do_bit.
Bytes dns_response(const QuerySpec& s, uint32_t ttl, uint16_t flags, const Bytes& rdata, unsigned answers = 1);

// Independent verification.
uint16_t ref_checksum(const uint8_t* p, size_t n, uint32_t seed = 0);  // RFC 1071, big-endian words
bool ipv4_header_ok(const Bytes& f, size_t l3);
bool udp_checksum_ok(const Bytes& f, size_t l3, bool v6);
void fix_checksums(Bytes& f, size_t l3, bool v6);

// The lab's service addresses (198.18.0.53, 2001:2::53), and a client query over IPv6.
ServiceView service();
QuerySpec v6spec();
// Folded (not complemented) pseudo-header sum of the frame's UDP datagram: what TX offload wants.
uint16_t pseudo_header_fold(const Bytes& f, size_t l3, bool v6);  // recompute after a test edits a frame

}  // namespace tern::dp::test
