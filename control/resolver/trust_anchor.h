// DNSSEC trust anchors (RFC 4033 §5, RFC 7958): DS or DNSKEY records in presentation
// format, one per line, as in /usr/share/dns/root.key or unbound's auto-trust-anchor-file.
// Comments start with ';' or '#'. Records for several zones may share one file.
#pragma once

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

class TrustAnchors {
 public:
  // Parses `text`; false with `err` ("line N: ...") when a line is not a DS or DNSKEY record.
  bool parse(std::string_view text, std::string& err);
  bool load(const std::string& path, std::string& err);
  // The deepest anchor at or above `name`; nullptr when none covers it.
  const TrustAnchor* find(const dns::Name& name) const;
  const std::vector<TrustAnchor>& all() const { return anchors_; }
  bool empty() const { return anchors_.empty(); }

 private:
  std::vector<TrustAnchor> anchors_;
};

}  // namespace tern::control::resolver
