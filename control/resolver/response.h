// What an upstream answer means to the iterator. Pure functions over parsed packets so
// that every rule here is unit-tested without sockets.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/resolver/dns.h"
#include "control/resolver/hints.h"

namespace tern::control::resolver {

// What a reply must match to be accepted (spoofing resistance, RFC 5452 §4 and §9.1).
struct Expected {
  uint16_t id = 0;
  std::string qname_wire;  // exactly as sent (case matters when case_exact)
  uint16_t qtype = 0, qclass = 1;
  bool case_exact = false;  // 0x20 on
  ServerAddr server;
};

enum class Reject { none, source, too_short, not_response, id, question };
// Checks a raw reply before parsing: source address/port, QR, ID, question.
Reject check_reply(std::span<const uint8_t> wire, const sockaddr* from, socklen_t fromlen,
                   const Expected& exp);
const char* reject_text(Reject r);

// Classification of a parsed reply to a query for (qname, qtype) sent to a server of
// `zone`. Only records in bailiwick (owner at or below `zone`) are used. With `forwarder`
// the upstream is a recursive resolver for the forward zone `zone` (its answers need no
// AA); its records are still held to that zone, so a forwarder for corp. cannot fill the
// cache for bank.example. A chain that leaves the zone is chased on its own. Only with
// `any_owner` ([recursion] forward-out-of-zone) is every record a forwarder sends used.
struct Classified {
  enum Kind {
    answer,    // `rrsets` ends with the RRset for the final name (after any chain)
    cname,     // chain leaves this zone or is incomplete: chase `next`
    referral,  // delegation to `cut`: `ns` and in-bailiwick `glue`
    nxdomain,  // `next` (the final chain name) does not exist; `soa` when given
    nodata,    // `next` exists, no data of qtype; `soa` when given
    lame,      // server is not authoritative for zone (non-AA answer, upward referral...)
    error,     // rcode other than NOERROR/NXDOMAIN (rcode says which)
  } kind = error;
  unsigned rcode = 0;
  std::vector<dns::RrList> rrsets;  // answer-section RRsets in chain order (CNAME/DNAME/final)
  dns::Name next;
  dns::RrList soa;
  dns::Name cut;
  dns::RrList ns;
  std::vector<dns::RrList> glue;
  // NSEC/NSEC3 records of the authority section with their RRSIGs (also appended to `soa`
  // for negative answers): the validator's denial and wildcard proofs.
  dns::RrList denial;
  unsigned chain = 0;  // CNAME/DNAME steps inside this reply
  bool aa = false;
};

Classified classify(const ldns_pkt* reply, const dns::Name& qname, uint16_t qtype,
                    const dns::Name& zone, bool forwarder, bool any_owner = false);

// RFC 6672 §2.2: substitute the DNAME owner suffix of `name` with its target.
// False when the result would exceed 255 octets (the answer is then YXDOMAIN).
bool dname_substitute(const dns::Name& name, const dns::Name& owner, const dns::Name& target,
                      dns::Name& out);
// A CNAME RR synthesized from a DNAME for `name` (TTL of the DNAME, RFC 6672 §3.1).
dns::Rr synthesize_cname(const ldns_rr* dname, const dns::Name& name, const dns::Name& target);

}  // namespace tern::control::resolver
