#include "control/resolver/trust_anchor.h"

#include <fstream>
#include <sstream>

namespace tern::control::resolver {

bool TrustAnchors::parse(std::string_view text, std::string& err) {
  std::vector<TrustAnchor> out;
  std::istringstream in{std::string(text)};
  std::string line;
  for (unsigned n = 1; std::getline(in, line); ++n) {
    // ';' starts a comment in presentation format (RFC 1035 §5.1); base64 never holds one.
    if (auto c = line.find(';'); c != std::string::npos) line.resize(c);
    size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    ldns_rr* raw = nullptr;
    if (ldns_rr_new_frm_str(&raw, line.c_str() + b, 3600, nullptr, nullptr) != LDNS_STATUS_OK ||
        !raw) {
      err = "line " + std::to_string(n) + ": not a DNS record in presentation format";
      return false;
    }
    dns::Rr rr(raw);
    auto t = ldns_rr_get_type(rr.get());
    if (t != LDNS_RR_TYPE_DS && t != LDNS_RR_TYPE_DNSKEY) {
      err = "line " + std::to_string(n) + ": a trust anchor is a DS or DNSKEY record, not " +
            dns::type_text(uint16_t(t));
      return false;
    }
    dns::Name zone = dns::owner(rr.get());
    TrustAnchor* ta = nullptr;
    for (auto& a : out)
      if (a.zone.equals(zone)) ta = &a;
    if (!ta) {
      out.push_back({zone, dns::RrList(ldns_rr_list_new())});
      ta = &out.back();
    }
    ldns_rr_list_push_rr(ta->rrs.get(), rr.release());
  }
  anchors_ = std::move(out);
  return true;
}

bool TrustAnchors::load(const std::string& path, std::string& err) {
  std::ifstream f(path);
  if (!f) {
    err = "cannot read " + path;
    return false;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  if (!parse(ss.str(), err)) {
    err = path + ": " + err;
    return false;
  }
  if (anchors_.empty()) {
    err = path + ": no DS or DNSKEY record";
    return false;
  }
  return true;
}

const TrustAnchor* TrustAnchors::find(const dns::Name& name) const {
  const TrustAnchor* best = nullptr;
  for (const auto& a : anchors_)
    if (name.under(a.zone) && (!best || a.zone.labels() > best->zone.labels())) best = &a;
  return best;
}

}  // namespace tern::control::resolver
