#include "control/resolver/response.h"

#include <cstring>

namespace tern::control::resolver {
namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }

// The RRsets of one section, minus anything out of bailiwick (owner not under zone).
std::vector<dns::RrList> in_zone(const ldns_rr_list* section, const dns::Name& zone, bool all) {
  std::vector<dns::RrList> out;
  for (auto& set : dns::group_rrsets(section)) {
    const ldns_rr* first = ldns_rr_list_rr(set.get(), 0);
    if (ldns_rr_get_class(first) != LDNS_RR_CLASS_IN) continue;
    if (all || dns::owner(first).under(zone)) out.push_back(std::move(set));
  }
  return out;
}

// dns::owner(rr).equals(name) without building the owner.
bool owner_is(const ldns_rr* rr, const dns::Name& name) {
  const ldns_rdf* o = ldns_rr_owner(rr);
  const std::string& w = name.wire();
  if (!o || ldns_rdf_get_type(o) != LDNS_RDF_TYPE_DNAME || ldns_rdf_size(o) == 0)
    return name.is_root();
  if (ldns_rdf_size(o) != w.size()) return false;
  return dns::equal_folded(ldns_rdf_data(o), reinterpret_cast<const uint8_t*>(w.data()), w.size());
}

dns::RrList* find(std::vector<dns::RrList>& sets, const dns::Name& name, uint16_t type) {
  for (auto& s : sets) {
    const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
    if (uint16_t(ldns_rr_get_type(rr)) == type && owner_is(rr, name)) return &s;
  }
  return nullptr;
}

}  // namespace

const char* reject_text(Reject r) {
  switch (r) {
    case Reject::none: return "accepted";
    case Reject::source: return "wrong source address or port";
    case Reject::too_short: return "shorter than a header and question";
    case Reject::not_response: return "QR bit clear";
    case Reject::id: return "wrong query ID";
    case Reject::question: return "question does not match";
  }
  return "?";
}

Reject check_reply(std::span<const uint8_t> w, const sockaddr* from, socklen_t fromlen,
                   const Expected& exp) {
  if (from && !exp.server.same(from, fromlen)) return Reject::source;
  // RFC 1035 §4.1.1 header (12 octets) + question name + type + class.
  if (w.size() < 12 + exp.qname_wire.size() + 4) return Reject::too_short;
  if (!(w[2] & 0x80)) return Reject::not_response;
  if (rd16(w.data()) != exp.id) return Reject::id;
  if (rd16(w.data() + 4) != 1) return Reject::question;
  const uint8_t* q = w.data() + 12;
  const auto* want = reinterpret_cast<const uint8_t*>(exp.qname_wire.data());
  size_t n = exp.qname_wire.size();
  if (exp.case_exact) {
    if (std::memcmp(q, want, n) != 0) return Reject::question;
  } else {
    std::string got(reinterpret_cast<const char*>(q), n);
    if (dns::lower(got) != dns::lower(exp.qname_wire)) return Reject::question;
  }
  if (rd16(q + n) != exp.qtype || rd16(q + n + 2) != exp.qclass) return Reject::question;
  return Reject::none;
}

bool dname_substitute(const dns::Name& name, const dns::Name& owner, const dns::Name& target,
                      dns::Name& out) {
  if (!name.under(owner) || name.equals(owner)) return false;
  const std::string& w = name.wire();
  std::string prefix = w.substr(0, w.size() - owner.wire().size());
  std::string res = prefix + target.wire();
  return dns::Name::from_wire(res, out);
}

dns::Rr synthesize_cname(const ldns_rr* dname, const dns::Name& name, const dns::Name& target) {
  ldns_rr* rr = ldns_rr_new();
  ldns_rr_set_owner(rr, name.rdf().release());
  ldns_rr_set_type(rr, LDNS_RR_TYPE_CNAME);
  ldns_rr_set_class(rr, ldns_rr_get_class(dname));
  ldns_rr_set_ttl(rr, ldns_rr_ttl(dname));
  ldns_rr_push_rdf(rr, target.rdf().release());
  return dns::Rr(rr);
}

namespace {

uint16_t covered(const ldns_rr* sig) {
  const ldns_rdf* t = ldns_rr_rrsig_typecovered(sig);
  return t ? uint16_t(ldns_rdf2rr_type(t)) : 0;
}

// RFC 4035 §3.1.1: the RRSIGs covering an RRset travel with it (appended after its records).
void append_sigs(ldns_rr_list* set, const ldns_rr_list* section) {
  if (!set || ldns_rr_list_rr_count(set) == 0) return;
  const ldns_rr* first = ldns_rr_list_rr(set, 0);
  uint16_t type = uint16_t(ldns_rr_get_type(first));
  if (type == LDNS_RR_TYPE_RRSIG) return;
  for (size_t i = 0; i < ldns_rr_list_rr_count(section); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(section, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_RRSIG || covered(rr) != type) continue;
    if (ldns_dname_compare(ldns_rr_owner(rr), ldns_rr_owner(first)) != 0) continue;
    ldns_rr_list_push_rr(set, ldns_rr_clone(rr));
  }
}

// The authority section's NSEC/NSEC3 records in bailiwick, each followed by its RRSIGs
// (RFC 4035 §3.1.3): what proves a denial or a wildcard expansion.
dns::RrList denial_records(const ldns_rr_list* section, const dns::Name& zone, bool all) {
  dns::RrList out(ldns_rr_list_new());
  for (auto& set : in_zone(section, zone, all)) {
    auto t = ldns_rr_get_type(ldns_rr_list_rr(set.get(), 0));
    if (t != LDNS_RR_TYPE_NSEC && t != LDNS_RR_TYPE_NSEC3) continue;
    append_sigs(set.get(), section);
    for (size_t i = 0; i < ldns_rr_list_rr_count(set.get()); ++i)
      ldns_rr_list_push_rr(out.get(), ldns_rr_clone(ldns_rr_list_rr(set.get(), i)));
  }
  return out;
}

Classified classify_records(const ldns_pkt* reply, const dns::Name& qname, uint16_t qtype,
                            const dns::Name& zone, bool forwarder, bool any_owner);

}  // namespace

Classified classify(const ldns_pkt* reply, const dns::Name& qname, uint16_t qtype,
                    const dns::Name& zone, bool forwarder, bool any_owner) {
  Classified c = classify_records(reply, qname, qtype, zone, forwarder, any_owner);
  // DNSSEC material rides along with what classify_records() picked (RFC 4035 §3.1):
  // RRSIGs with their RRsets, and the NSEC/NSEC3 proof of a negative answer after its SOA.
  for (auto& s : c.rrsets) append_sigs(s.get(), ldns_pkt_answer(reply));
  bool negative = c.kind == Classified::nxdomain || c.kind == Classified::nodata;
  if (negative || c.kind == Classified::answer || c.kind == Classified::cname)
    c.denial = denial_records(ldns_pkt_authority(reply), zone, forwarder && any_owner);
  if (c.soa) {
    append_sigs(c.soa.get(), ldns_pkt_authority(reply));
    if (negative && c.denial)
      for (size_t i = 0; i < ldns_rr_list_rr_count(c.denial.get()); ++i)
        ldns_rr_list_push_rr(c.soa.get(), ldns_rr_clone(ldns_rr_list_rr(c.denial.get(), i)));
  }
  return c;
}

namespace {

Classified classify_records(const ldns_pkt* reply, const dns::Name& qname, uint16_t qtype,
                            const dns::Name& zone, bool forwarder, bool any_owner) {
  const bool all = forwarder && any_owner;  // every owner name in scope
  Classified c;
  c.rcode = ldns_pkt_get_rcode(reply);
  c.aa = ldns_pkt_aa(reply);
  c.next = qname;
  if (c.rcode != LDNS_RCODE_NOERROR && c.rcode != LDNS_RCODE_NXDOMAIN) {
    c.kind = Classified::error;
    return c;
  }
  auto answer = in_zone(ldns_pkt_answer(reply), zone, all);

  // Follow the chain from qname through the answer section (RFC 1034 §4.3.2 step 3).
  dns::Name cur = qname;
  bool final = false;
  for (unsigned steps = 0; steps < 32; ++steps) {
    if (!cur.under(zone) && !all) break;  // the rest is another zone's business
    if (qtype == LDNS_RR_TYPE_ANY) {
      // RFC 8482 allows any subset; whatever the server gave for cur is the answer.
      for (auto& s : answer)
        if (owner_is(ldns_rr_list_rr(s.get(), 0), cur)) {
          c.rrsets.emplace_back(ldns_rr_list_clone(s.get()));
          final = true;
        }
      if (final) break;
    }
    if (dns::RrList* s = find(answer, cur, qtype)) {
      // Moved, not cloned: the chain ends here, and no earlier step took this RRset
      // (those are CNAME/DNAME sets, and qtype CNAME/DNAME skips them).
      c.rrsets.push_back(std::move(*s));
      final = true;
      break;
    }
    // DNAME at an ancestor of cur (RFC 6672 §2.2); we synthesize the CNAME ourselves
    // rather than trusting the one in the reply.
    const ldns_rr_list* dn = nullptr;
    for (auto& s : answer) {
      const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
      if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_DNAME && cur.under(dns::owner(rr)) &&
          !cur.equals(dns::owner(rr)) && qtype != LDNS_RR_TYPE_DNAME) {
        dn = s.get();
        break;
      }
    }
    if (dn) {
      const ldns_rr* rr = ldns_rr_list_rr(dn, 0);
      dns::Name target = dns::Name::from_rdf(ldns_rr_rdf(rr, 0)), out;
      if (!dname_substitute(cur, dns::owner(rr), target, out)) {
        c.kind = Classified::error;
        c.rcode = LDNS_RCODE_YXDOMAIN;
        return c;
      }
      c.rrsets.emplace_back(ldns_rr_list_clone(dn));
      dns::RrList syn(ldns_rr_list_new());
      ldns_rr_list_push_rr(syn.get(), synthesize_cname(rr, cur, out).release());
      c.rrsets.push_back(std::move(syn));
      cur = out;
      ++c.chain;
      continue;
    }
    if (qtype != LDNS_RR_TYPE_CNAME) {
      if (dns::RrList* sp = find(answer, cur, LDNS_RR_TYPE_CNAME)) {
        const ldns_rr_list* s = sp->get();
        c.rrsets.emplace_back(ldns_rr_list_clone(s));
        cur = dns::Name::from_rdf(ldns_rr_rdf(ldns_rr_list_rr(s, 0), 0));
        ++c.chain;
        continue;
      }
    }
    break;
  }
  c.next = cur;
  if (final) {
    c.kind = (c.aa || forwarder) ? Classified::answer : Classified::lame;
    return c;
  }

  // A forwarder's chain left its zone: what it says about the rest (data, NXDOMAIN,
  // NODATA) is not its to say. Chase the target on its own.
  if (forwarder && !all && !cur.under(zone)) {
    c.kind = Classified::cname;
    return c;
  }

  // No data for cur in this reply. Negative answer, referral or lame?
  auto authority = in_zone(ldns_pkt_authority(reply), zone, all);
  for (auto& s : authority) {
    const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA && (all || cur.under(dns::owner(rr)))) {
      c.soa = std::move(s);
      break;
    }
  }
  if (c.rcode == LDNS_RCODE_NXDOMAIN) {
    // RFC 2308 §2.1: NXDOMAIN names the last name of the chain.
    c.kind = (c.aa || forwarder || c.soa) ? Classified::nxdomain : Classified::lame;
    return c;
  }
  if (!c.soa && !forwarder && (cur.under(zone))) {
    // Referral: NS RRset for a zone strictly below ours and at or above cur.
    for (auto& s : authority) {
      const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
      dns::Name o = dns::owner(rr);
      if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_NS || !cur.under(o)) continue;
      if (o.equals(zone) || !o.under(zone)) continue;  // upward/sideways referral: lame
      c.cut = o;
      c.ns = std::move(s);
      break;
    }
    if (c.ns) {
      // Glue: addresses in bailiwick of the zone that referred us (RFC 9471).
      for (auto& s : in_zone(ldns_pkt_additional(reply), zone, false)) {
        auto t = ldns_rr_get_type(ldns_rr_list_rr(s.get(), 0));
        if (t == LDNS_RR_TYPE_A || t == LDNS_RR_TYPE_AAAA) c.glue.push_back(std::move(s));
      }
      c.kind = c.rrsets.empty() ? Classified::referral : Classified::cname;
      return c;
    }
  }
  if (!c.rrsets.empty() && !cur.equals(qname)) {
    // The chain left the data this server gave us; the rest needs its own lookup
    // unless the server said authoritatively that the target has no data.
    if (!(c.soa && (c.aa || forwarder) && cur.under(zone))) {
      c.kind = (c.aa || forwarder) ? Classified::cname : Classified::lame;
      return c;
    }
  }
  if (c.soa || c.aa || forwarder) {
    c.kind = (c.aa || forwarder) ? Classified::nodata : Classified::lame;
    return c;
  }
  c.kind = Classified::lame;
  return c;
}

}  // namespace

}  // namespace tern::control::resolver
