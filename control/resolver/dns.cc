#include "control/resolver/dns.h"

#include <cctype>

namespace tern::control::dns {

std::string lower(std::string_view wire) {
  std::string out(wire);
  for (auto& c : out) c = char(fold(uint8_t(c)));
  return out;
}

Name Name::from_rdf(const ldns_rdf* r) {
  Name n;
  if (r && ldns_rdf_get_type(r) == LDNS_RDF_TYPE_DNAME && ldns_rdf_size(r) > 0)
    n.wire_.assign(reinterpret_cast<const char*>(ldns_rdf_data(r)), ldns_rdf_size(r));
  return n;
}

bool Name::from_wire(std::string_view w, Name& out) {
  // RFC 1035 §3.1: labels of 1..63 octets, total at most 255 octets, ends with the root.
  if (w.empty() || w.size() > 255) return false;
  size_t i = 0;
  while (i < w.size()) {
    uint8_t len = uint8_t(w[i]);
    if (len == 0) {
      if (i + 1 != w.size()) return false;
      out.wire_.assign(w);
      return true;
    }
    if (len > 63 || i + 1 + len >= w.size()) return false;
    i += 1 + len;
  }
  return false;
}

bool Name::from_text(std::string_view text, Name& out) {
  std::string s(text);
  if (s.empty()) return false;
  ldns_rdf* r = ldns_dname_new_frm_str(s.c_str());
  if (!r) return false;
  out = from_rdf(r);
  ldns_rdf_deep_free(r);
  return true;
}

std::string Name::key() const { return lower(wire_); }

std::string Name::text() const {
  if (is_root()) return ".";
  Rdf r = rdf();
  char* s = ldns_rdf2str(r.get());
  std::string out = s ? s : "";
  free(s);
  return out;
}

Rdf Name::rdf() const { return Rdf(ldns_dname_new_frm_data(uint16_t(wire_.size()), wire_.data())); }

unsigned Name::labels() const {
  unsigned n = 0;
  for (size_t i = 0; i < wire_.size() && wire_[i] != 0; i += 1 + uint8_t(wire_[i])) ++n;
  return n;
}

Name Name::parent() const {
  if (is_root()) return *this;
  Name p;
  p.wire_ = wire_.substr(1 + uint8_t(wire_[0]));
  return p;
}

Name Name::suffix(unsigned nlabels) const {
  unsigned total = labels();
  Name n = *this;
  for (unsigned i = nlabels; i < total; ++i) n = n.parent();
  return n;
}

bool Name::equals(const Name& o) const {
  if (wire_.size() != o.wire_.size()) return false;
  return equal_folded(reinterpret_cast<const uint8_t*>(wire_.data()),
                      reinterpret_cast<const uint8_t*>(o.wire_.data()), wire_.size());
}

bool Name::under(const Name& zone) const {
  if (zone.wire_.size() > wire_.size()) return false;
  // Walk label boundaries so "xexample." is not under "example.".
  size_t i = 0;
  while (wire_.size() - i > zone.wire_.size()) i += 1 + uint8_t(wire_[i]);
  if (wire_.size() - i != zone.wire_.size()) return false;
  return equal_folded(reinterpret_cast<const uint8_t*>(wire_.data()) + i,
                      reinterpret_cast<const uint8_t*>(zone.wire_.data()), zone.wire_.size());
}

Name owner(const ldns_rr* rr) { return Name::from_rdf(ldns_rr_owner(rr)); }

std::string type_text(uint16_t type) {
  char* s = ldns_rr_type2str(ldns_rr_type(type));
  std::string out = s ? s : "TYPE" + std::to_string(type);
  free(s);
  return out;
}

std::string rcode_text(unsigned rcode) {
  static const char* names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",
                                "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
                                "NOTZONE"};
  if (rcode < sizeof names / sizeof names[0]) return names[rcode];
  return "RCODE" + std::to_string(rcode);
}

namespace {

// owner(a).key() == owner(b).key(), without building either.
bool same_owner(const ldns_rr* a, const ldns_rr* b) {
  auto wire = [](const ldns_rr* rr, size_t& len) -> const uint8_t* {
    static const uint8_t root = 0;
    const ldns_rdf* o = ldns_rr_owner(rr);
    if (!o || ldns_rdf_get_type(o) != LDNS_RDF_TYPE_DNAME || ldns_rdf_size(o) == 0) {
      len = 1;
      return &root;
    }
    len = ldns_rdf_size(o);
    return ldns_rdf_data(o);
  };
  size_t la = 0, lb = 0;
  const uint8_t* x = wire(a, la);
  const uint8_t* y = wire(b, lb);
  return la == lb && equal_folded(x, y, la);
}

}  // namespace

std::vector<RrList> group_rrsets(const ldns_rr_list* rrs) {
  std::vector<RrList> sets;
  if (!rrs) return sets;
  for (size_t i = 0; i < ldns_rr_list_rr_count(rrs); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(rrs, i);
    size_t j = 0;
    for (; j < sets.size(); ++j) {
      const ldns_rr* first = ldns_rr_list_rr(sets[j].get(), 0);
      if (ldns_rr_get_type(first) == ldns_rr_get_type(rr) &&
          ldns_rr_get_class(first) == ldns_rr_get_class(rr) && same_owner(first, rr))
        break;
    }
    if (j == sets.size()) sets.emplace_back(ldns_rr_list_new());
    ldns_rr_list_push_rr(sets[j].get(), ldns_rr_clone(rr));
  }
  return sets;
}

}  // namespace tern::control::dns
