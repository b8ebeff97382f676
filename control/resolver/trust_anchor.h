// DNSSEC trust anchors (RFC 4033 §5, RFC 7958): DS or DNSKEY records in presentation
// format, one per line, as in /usr/share/dns/root.key or unbound's auto-trust-anchor-file.
// Comments start with ';' or '#'. Records for several zones may share one file.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/resolver/dns.h"

namespace tern::control::resolver {

struct TrustAnchor {
  dns::Name zone;
  dns::RrList rrs;  // DS and DNSKEY records for `zone`
};

// RFC 5011 automated updates: a trust anchor file is copied once into a managed file
// (under [server] state-dir), which from then on is the one read. Each time an anchored
// zone's DNSKEY RRset validates, observe() runs the RFC 5011 §4 state machine on its
// KSKs (SEP bit): a new one is "pending" from the first time it is seen and becomes a
// trust anchor after the add hold-down (§2.4.1) if still there; a KSK with the REVOKE bit
// (RFC 5011 §3) that signed the set stops being one. Pending keys and their first-seen
// times live in the managed file as comments, so a restart does not reset the hold-down.
class TrustAnchors {
 public:
  // Parses `text`; false with `err` ("line N: ...") when a line is not a DS or DNSKEY record.
  bool parse(std::string_view text, std::string& err);
  bool load(const std::string& path, std::string& err);
  // The deepest anchor at or above `name`; nullptr when none covers it.
  const TrustAnchor* find(const dns::Name& name) const;
  const std::vector<TrustAnchor>& all() const { return anchors_; }
  bool empty() const { return anchors_.empty(); }

  // Reads `managed` when it exists, else `shipped`, and then (re)writes `managed`.
  bool load_managed(const std::string& shipped, const std::string& managed, std::string& err);
  // RFC 5011 §4 on a DNSKEY RRset of `zone` that just validated (records, no RRSIGs);
  // `signers` are the keys whose signature over it verified. True when the anchors
  // changed; then the managed file was rewritten (`err` says why when it could not be).
  bool observe(const dns::Name& zone, const ldns_rr_list* dnskeys, const ldns_rr_list* signers,
               time_t now, uint32_t hold_down, std::string& err);
  // This copy follows RFC 5011 in memory only and never writes the managed file: with
  // several event loops each has its own copy, and only the first loop's persists.
  void stop_persisting() { managed_.clear(); }
  // Text of the managed file: trusted records, then `;pending EPOCH RECORD` lines.
  std::string render() const;
  size_t pending() const { return pending_.size(); }

 private:
  struct Pending {
    dns::Name zone;
    dns::Rr key;
    time_t first_seen = 0;
  };
  bool save(std::string& err) const;
  std::vector<TrustAnchor> anchors_;
  std::vector<Pending> pending_;
  std::string managed_;  // path of the managed file; empty: not managed
};

}  // namespace tern::control::resolver
