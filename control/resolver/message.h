// Client-facing message handling: validating a query (RFC 1035 §4.1, RFC 6891) and
// building the response with EDNS and truncation rules. Pure functions, no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "control/resolver/dns.h"
#include "control/resolver/resolver.h"

namespace tern::control::resolver {

struct Query {
  uint16_t id = 0;
  uint8_t opcode = 0;
  bool rd = false, cd = false, ad = false;  // AD in a query: RFC 6840 §5.7
  bool has_question = false;   // a question could be parsed (echoed in error replies)
  std::string qname_wire;      // as the client sent it (case preserved, RFC 1035 §2.3.3)
  uint16_t qtype = 0, qclass = 0;
  bool edns = false;           // OPT present (RFC 6891 §6.1.1)
  uint16_t udp_size = 0;       // the client's advertised payload size
  uint8_t edns_version = 0;
  bool do_bit = false;
};

// What to do with a datagram or TCP message, in the order the checks run.
enum class Verdict {
  ok,
  drop,     // unreadable header, or a response (QR=1): never answered (RFC 1035 §7.3)
  formerr,  // malformed question/OPT, qdcount != 1, records where none belong
  notimp,   // opcode other than QUERY
  refused,  // zone transfers and classes we do not serve
  badvers,  // EDNS version > 0 (RFC 6891 §6.1.3)
};
Verdict parse_query(std::span<const uint8_t> wire, Query& q);

// The UDP payload limit for the reply: min(client, ours), never below 512; 512 without
// EDNS (RFC 6891 §6.2.3 and §6.2.5, RFC 1035 §4.2.1).
size_t udp_limit(const Query& q, uint16_t our_size);

// A reply with only a header, the question (when parsed) and OPT (when the client sent
// one). For Verdict::badvers the extended RCODE is 16 (BADVERS) with an OPT of version 0.
std::vector<uint8_t> error_reply(const Query& q, unsigned rcode, uint16_t our_size,
                                 bool badvers = false);

// The answer for q: AD when a.sec is secure and the client set DO or AD (RFC 6840 §5.7);
// RRSIG/NSEC/NSEC3 only for DO=1 (RFC 4035 §3.2.1); a.ede as an EDE option (RFC 8914)
// when the client sent EDNS. When it exceeds `limit` the reply carries TC=1, the question and no
// records (RFC 7766 §4 / RFC 2181 §9: clients must retry over TCP, never use a partial set).
// `truncated` reports whether that happened.
std::vector<uint8_t> answer_reply(const Query& q, const Answer& a, uint16_t our_size,
                                  size_t limit, bool& truncated);

}  // namespace tern::control::resolver
