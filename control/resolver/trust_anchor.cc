#include "control/resolver/trust_anchor.h"

#include <filesystem>
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

namespace tern::control::resolver {
namespace {

constexpr uint16_t kSep = 0x0001, kRevoke = 0x0080;  // DNSKEY flags, RFC 4034 §2.1.1, RFC 5011 §3

uint16_t flags_of(const ldns_rr* k) { return ldns_rdf2native_int16(ldns_rr_rdf(k, 0)); }

// The same key, ignoring TTL (and the REVOKE bit, which changes the key tag: RFC 5011 §3).
bool same_key(const ldns_rr* a, const ldns_rr* b) {
  if (ldns_rr_get_type(a) != LDNS_RR_TYPE_DNSKEY || ldns_rr_get_type(b) != LDNS_RR_TYPE_DNSKEY)
    return false;
  if (ldns_rdf_compare(ldns_rr_rdf(a, 2), ldns_rr_rdf(b, 2)) != 0) return false;  // algorithm
  return ldns_rdf_compare(ldns_rr_rdf(a, 3), ldns_rr_rdf(b, 3)) == 0;             // public key
}

std::string rr_text(const ldns_rr* rr) {
  char* s = ldns_rr2str(rr);
  std::string out = s ? s : "";
  free(s);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

bool TrustAnchors::load_managed(const std::string& shipped, const std::string& managed,
                                std::string& err) {
  std::ifstream f(managed);
  std::string text;
  if (f) {
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  if (text.empty()) {
    if (!load(shipped, err)) return false;
  } else if (!parse(text, err)) {
    err = managed + ": " + err;
    return false;
  }
  pending_.clear();
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(";pending ", 0) != 0) continue;
    std::istringstream l(line.substr(9));
    long long when = 0;
    std::string rest;
    l >> when;
    std::getline(l, rest);
    if (auto c = rest.find(';'); c != std::string::npos) rest.resize(c);  // ldns's {id = ...}
    rest.erase(0, rest.find_first_not_of(" \t"));
    ldns_rr* raw = nullptr;
    if (ldns_rr_new_frm_str(&raw, rest.c_str(), 3600, nullptr, nullptr) != LDNS_STATUS_OK || !raw)
      continue;  // a damaged pending line only restarts that key's hold-down
    dns::Rr rr(raw);
    pending_.push_back({dns::owner(rr.get()), std::move(rr), time_t(when)});
  }
  if (anchors_.empty()) {
    err = (text.empty() ? shipped : managed) + ": no DS or DNSKEY record";
    return false;
  }
  managed_ = managed;
  std::string werr;
  save(werr);  // not writable (a read-only state-dir): the anchors still hold, updates do not persist
  return true;
}

std::string TrustAnchors::render() const {
  std::string out =
      "; tern-control's managed trust anchors (RFC 5011). Rewritten by tern-control; delete\n"
      "; the file to start again from [dnssec] trust-anchor-file.\n";
  for (const auto& a : anchors_)
    for (size_t i = 0; i < ldns_rr_list_rr_count(a.rrs.get()); ++i)
      out += rr_text(ldns_rr_list_rr(a.rrs.get(), i)) + "\n";
  for (const auto& p : pending_)
    out += ";pending " + std::to_string(static_cast<long long>(p.first_seen)) + " " +
           rr_text(p.key.get()) + "\n";
  return out;
}

bool TrustAnchors::save(std::string& err) const {
  if (managed_.empty()) return true;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(managed_).parent_path(), ec);
  std::string tmp = managed_ + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << render();
    if (!o.flush()) {
      err = "cannot write " + tmp;
      return false;
    }
  }
  std::filesystem::rename(tmp, managed_, ec);  // atomic: a crash leaves the old file whole
  if (ec) {
    err = "cannot replace " + managed_ + ": " + ec.message();
    return false;
  }
  return true;
}

bool TrustAnchors::observe(const dns::Name& zone, const ldns_rr_list* dnskeys,
                           const ldns_rr_list* signers, time_t now, uint32_t hold_down,
                           std::string& err) {
  TrustAnchor* ta = nullptr;
  for (auto& a : anchors_)
    if (a.zone.equals(zone)) ta = &a;
  if (!ta) return false;
  bool changed = false;
  auto trusted = [&](const ldns_rr* k) {
    for (size_t i = 0; i < ldns_rr_list_rr_count(ta->rrs.get()); ++i) {
      const ldns_rr* t = ldns_rr_list_rr(ta->rrs.get(), i);
      if (same_key(t, k)) return true;
      if (ldns_rr_get_type(t) == LDNS_RR_TYPE_DS && ldns_rr_compare_ds(t, k)) return true;
    }
    return false;
  };
  // §2.1 Revocation: a revoked KSK that signed the set itself is no anchor any more.
  for (size_t i = 0; i < ldns_rr_list_rr_count(signers); ++i) {
    const ldns_rr* k = ldns_rr_list_rr(signers, i);
    if (!(flags_of(k) & kRevoke)) continue;
    ldns_rr_list* keep = ldns_rr_list_new();
    for (size_t j = 0; j < ldns_rr_list_rr_count(ta->rrs.get()); ++j) {
      ldns_rr* t = ldns_rr_list_rr(ta->rrs.get(), j);
      if (same_key(t, k)) {
        ldns_rr_free(t);
        changed = true;
      } else {
        ldns_rr_list_push_rr(keep, t);
      }
    }
    ldns_rr_list_free(ta->rrs.release());  // the records moved to `keep` or were freed
    ta->rrs.reset(keep);
  }
  // §4: AddPend -> Valid after the hold-down; keys that went away leave AddPend.
  for (auto it = pending_.begin(); it != pending_.end();) {
    bool present = false;
    for (size_t i = 0; i < ldns_rr_list_rr_count(dnskeys); ++i)
      present |= same_key(ldns_rr_list_rr(dnskeys, i), it->key.get());
    if (it->zone.equals(zone) && !present) {
      it = pending_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (size_t i = 0; i < ldns_rr_list_rr_count(dnskeys); ++i) {
    const ldns_rr* k = ldns_rr_list_rr(dnskeys, i);
    if (ldns_rr_get_type(k) != LDNS_RR_TYPE_DNSKEY) continue;
    uint16_t fl = flags_of(k);
    if (!(fl & kSep) || (fl & kRevoke) || trusted(k)) continue;
    Pending* p = nullptr;
    for (auto& x : pending_)
      if (x.zone.equals(zone) && same_key(x.key.get(), k)) p = &x;
    if (!p) {
      pending_.push_back({zone, dns::Rr(ldns_rr_clone(k)), now});
      changed = true;
    } else if (now - p->first_seen >= time_t(hold_down)) {
      ldns_rr_list_push_rr(ta->rrs.get(), ldns_rr_clone(k));
      for (auto it = pending_.begin(); it != pending_.end(); ++it)
        if (&*it == p) {
          pending_.erase(it);
          break;
        }
      changed = true;
    }
  }
  if (changed) save(err);
  return changed;
}

}  // namespace tern::control::resolver
