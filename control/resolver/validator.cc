#include "control/resolver/validator.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace tern::control::resolver {

const char* ede::text(uint16_t c) {
  switch (c) {
    case other: return "Other Error";
    case unsupported_dnskey_alg: return "Unsupported DNSKEY Algorithm";
    case unsupported_ds_digest: return "Unsupported DS Digest Type";
    case stale_answer: return "Stale Answer";
    case dnssec_indeterminate: return "DNSSEC Indeterminate";
    case dnssec_bogus: return "DNSSEC Bogus";
    case signature_expired: return "Signature Expired";
    case signature_not_yet_valid: return "Signature Not Yet Valid";
    case dnskey_missing: return "DNSKEY Missing";
    case rrsigs_missing: return "RRSIGs Missing";
    case nsec_missing: return "NSEC Missing";
    case cached_error: return "Cached Error";
    case no_reachable_authority: return "No Reachable Authority";
    case unsupported_nsec3_iterations: return "Unsupported NSEC3 Iterations Value";
  }
  return "";
}

bool algorithm_supported(uint8_t alg) {
  // RSASHA1(-NSEC3), RSASHA256/512, ECDSA P-256/P-384, Ed25519, Ed448 (RFC 8624 §3.1),
  // when the ldns build has them.
  switch (alg) {
    case 5: case 7: case 8: case 10: case 13: case 14: case 15: case 16:
      return ldns_key_algo_supported(alg) != 0;
  }
  return false;
}

bool digest_supported(uint8_t d) { return d == 1 || d == 2 || d == 4; }  // RFC 8624 §3.3

namespace {

uint16_t covered(const ldns_rr* sig) {
  const ldns_rdf* t = ldns_rr_rrsig_typecovered(sig);
  return t ? uint16_t(ldns_rdf2rr_type(t)) : 0;
}

bool is_sig(const ldns_rr* rr) { return ldns_rr_get_type(rr) == LDNS_RR_TYPE_RRSIG; }

dns::Name signer(const ldns_rr* sig) { return dns::Name::from_rdf(ldns_rr_rrsig_signame(sig)); }

struct ListShallow {
  void operator()(ldns_rr_list* l) const { ldns_rr_list_free(l); }
};
using View = std::unique_ptr<ldns_rr_list, ListShallow>;  // borrowed records

uint16_t status_ede(ldns_status st) {
  switch (st) {
    case LDNS_STATUS_CRYPTO_SIG_EXPIRED: return ede::signature_expired;
    case LDNS_STATUS_CRYPTO_SIG_NOT_INCEPTED: return ede::signature_not_yet_valid;
    case LDNS_STATUS_CRYPTO_NO_MATCHING_KEYTAG_DNSKEY:
    case LDNS_STATUS_CRYPTO_NO_DNSKEY: return ede::dnskey_missing;
    default: return ede::dnssec_bogus;
  }
}

// One NSEC or NSEC3 record that passed its signature check.
struct Denials {
  std::vector<const ldns_rr*> nsec, nsec3;
};

// Checks the signature of every NSEC/NSEC3 record in `proof` (each owner is its own
// RRset); records that fail are left out, and the first failure is remembered.
Denials verified_denials(const ldns_rr_list* proof, const dns::Name& zone,
                         const ldns_rr_list* keys, time_t now, Outcome& fail, SigMemo* memo) {
  Denials d;
  fail = {Security::secure, ede::none};
  if (!proof) return d;
  for (size_t i = 0; i < ldns_rr_list_rr_count(proof); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(proof, i);
    auto t = ldns_rr_get_type(rr);
    if (t != LDNS_RR_TYPE_NSEC && t != LDNS_RR_TYPE_NSEC3) continue;
    View set(ldns_rr_list_new());
    ldns_rr_list_push_rr(set.get(), const_cast<ldns_rr*>(rr));
    for (size_t j = 0; j < ldns_rr_list_rr_count(proof); ++j) {
      const ldns_rr* s = ldns_rr_list_rr(proof, j);
      if (is_sig(s) && covered(s) == t && ldns_dname_compare(ldns_rr_owner(s), ldns_rr_owner(rr)) == 0)
        ldns_rr_list_push_rr(set.get(), const_cast<ldns_rr*>(s));
    }
    Outcome o = check_rrset(set.get(), zone, keys, now, memo);
    if (o.sec != Security::secure) {
      if (fail.sec == Security::secure) fail = o;
      continue;
    }
    (t == LDNS_RR_TYPE_NSEC ? d.nsec : d.nsec3).push_back(rr);
  }
  return d;
}

int cmp(const dns::Name& a, const ldns_rdf* b) {
  dns::Rdf ra = a.rdf();
  return ldns_dname_compare(ra.get(), b);
}

// RFC 6840 §4.1 / RFC 8198 §5.1: an NSEC at a delegation (NS without SOA) or a DNAME
// says nothing about the names below its owner: those live in another zone.
bool nsec_below_cut(const ldns_rr* nsec, const dns::Name& name) {
  dns::Name owner = dns::owner(nsec);
  if (!name.under(owner) || name.equals(owner)) return false;
  bool ns = ldns_nsec_bitmap_covers_type(ldns_nsec_get_bitmap(nsec), LDNS_RR_TYPE_NS);
  bool soa = ldns_nsec_bitmap_covers_type(ldns_nsec_get_bitmap(nsec), LDNS_RR_TYPE_SOA);
  bool dname = ldns_nsec_bitmap_covers_type(ldns_nsec_get_bitmap(nsec), LDNS_RR_TYPE_DNAME);
  return (ns && !soa) || dname;
}

// RFC 4034 §6.1 canonical order; the last NSEC of a zone points back to the apex.
bool nsec_covers(const ldns_rr* nsec, const dns::Name& name) {
  const ldns_rdf* owner = ldns_rr_owner(nsec);
  const ldns_rdf* next = ldns_rr_rdf(nsec, 0);
  if (!next) return false;
  int c_owner = cmp(name, owner), c_next = cmp(name, next);
  bool last = ldns_dname_compare(next, owner) <= 0;
  if (c_owner <= 0) return false;
  if (nsec_below_cut(nsec, name)) return false;
  return last ? true : c_next < 0;
}

bool nsec_matches(const ldns_rr* nsec, const dns::Name& name) {
  return cmp(name, ldns_rr_owner(nsec)) == 0;
}

bool has_type(const ldns_rr* rr, uint16_t type) {
  const ldns_rdf* bm = ldns_nsec_get_bitmap(rr);
  return bm && ldns_nsec_bitmap_covers_type(bm, ldns_rr_type(type));
}

dns::Name wildcard_of(const dns::Name& ce) {
  dns::Name w;
  dns::Name::from_wire(std::string("\x01*", 2) + ce.wire(), w);
  return w;
}

// The closest encloser an NSEC covering `name` implies (RFC 4035 §5.4): the longest
// ancestor of name that is an ancestor of the NSEC's owner or next name.
dns::Name nsec_closest_encloser(const ldns_rr* nsec, const dns::Name& name) {
  dns::Name owner = dns::owner(nsec), next = dns::Name::from_rdf(ldns_rr_rdf(nsec, 0));
  for (unsigned l = name.labels(); l-- > 0;) {
    dns::Name s = name.suffix(l);
    if (owner.under(s) || next.under(s)) return s;
  }
  return dns::Name();
}

// NSEC3 (RFC 5155): hashes in base32hex, lowercase, compared as strings (the encoding
// keeps the order of the binary hashes).
struct Nsec3Set {
  std::vector<const ldns_rr*> rrs;
  dns::Name zone;
  std::string hash(const ldns_rr* param, const dns::Name& name) const {
    dns::Rdf n = name.rdf();
    dns::Rdf h(ldns_nsec3_hash_name_frm_nsec3(param, n.get()));
    if (!h || ldns_rdf_size(h.get()) < 2) return {};
    const uint8_t* d = ldns_rdf_data(h.get());
    std::string s(reinterpret_cast<const char*>(d + 1), d[0]);
    for (char& c : s) c = char(dns::fold(uint8_t(c)));
    return s;
  }
  static std::string owner_hash(const ldns_rr* rr) {
    const uint8_t* d = ldns_rdf_data(ldns_rr_owner(rr));
    std::string s(reinterpret_cast<const char*>(d + 1), d[0]);
    for (char& c : s) c = char(dns::fold(uint8_t(c)));
    return s;
  }
  static std::string next_hash(const ldns_rr* rr) {
    const ldns_rdf* n = ldns_nsec3_next_owner(rr);
    if (!n) return {};
    char* t = ldns_rdf2str(n);
    std::string s = t ? t : "";
    free(t);
    for (char& c : s) c = char(dns::fold(uint8_t(c)));
    return s;
  }
  const ldns_rr* match(const dns::Name& name) const {
    for (auto* rr : rrs)
      if (hash(rr, name) == owner_hash(rr)) return rr;
    return nullptr;
  }
  const ldns_rr* cover(const dns::Name& name) const {
    for (auto* rr : rrs) {
      std::string h = hash(rr, name), o = owner_hash(rr), n = next_hash(rr);
      if (h.empty() || n.empty()) continue;
      bool last = n <= o;
      if (last ? (h > o || h < n) : (h > o && h < n)) return rr;
    }
    return nullptr;
  }
  // RFC 5155 §8.3: closest encloser `ce` (a matching NSEC3) and the NSEC3 covering the
  // next closer name. False when no such pair exists.
  bool closest_encloser(const dns::Name& name, dns::Name& ce, const ldns_rr*& nc_cover) const {
    for (unsigned l = name.labels(); l + 1 > zone.labels() && l > 0; --l) {
      dns::Name s = name.suffix(l - 1);
      if (!s.under(zone) || !match(s)) continue;
      if (l - 1 == name.labels()) return false;
      ce = s;
      nc_cover = cover(name.suffix(l));
      return nc_cover != nullptr;
    }
    return false;
  }
};

// RFC 9276 §3.2 and RFC 5155 §8.1: too many iterations or an unknown hash: insecure.
bool nsec3_unusable(const std::vector<const ldns_rr*>& rrs, unsigned max_iter) {
  for (auto* rr : rrs)
    if (ldns_nsec3_iterations(rr) > max_iter || ldns_nsec3_algorithm(rr) != 1) return true;
  return false;
}

}  // namespace

dns::RrList data_of(const ldns_rr_list* set) {
  dns::RrList out(ldns_rr_list_new());
  for (size_t i = 0; set && i < ldns_rr_list_rr_count(set); ++i)
    if (!is_sig(ldns_rr_list_rr(set, i)))
      ldns_rr_list_push_rr(out.get(), ldns_rr_clone(ldns_rr_list_rr(set, i)));
  return out;
}

namespace {

void append_rdfs(std::string& k, const ldns_rr* rr) {
  for (size_t i = 0; i < ldns_rr_rd_count(rr); ++i) {
    const ldns_rdf* d = ldns_rr_rdf(rr, i);
    k.append(reinterpret_cast<const char*>(ldns_rdf_data(d)), ldns_rdf_size(d));
    k.push_back('\x01');
  }
}

// The memo key of (sig, data, the key with the signature's tag): empty when no key has it.
std::string memo_key(const ldns_rr* sig, const ldns_rr_list* data, const ldns_rr_list* keys) {
  uint16_t tag = ldns_rdf2native_int16(ldns_rr_rrsig_keytag(sig));
  const ldns_rr* key = nullptr;
  for (size_t i = 0; keys && i < ldns_rr_list_rr_count(keys) && !key; ++i)
    if (ldns_calc_keytag(ldns_rr_list_rr(keys, i)) == tag) key = ldns_rr_list_rr(keys, i);
  if (!key) return {};
  std::string k = dns::owner(sig).key();
  append_rdfs(k, sig);
  append_rdfs(k, key);
  // The records in canonical order (RFC 4034 §6.3), so the order they came in does not matter.
  std::vector<std::string> rd;
  for (size_t i = 0; i < ldns_rr_list_rr_count(data); ++i) {
    std::string r;
    append_rdfs(r, ldns_rr_list_rr(data, i));
    rd.push_back(std::move(r));
  }
  std::sort(rd.begin(), rd.end());
  for (auto& r : rd) k += r;
  return k;
}

// RFC 4035 §5.3.1: the validity period, checked on every memo hit (serial arithmetic).
bool in_period(const ldns_rr* sig, time_t now) {
  int32_t to_exp = int32_t(ldns_rdf2native_int32(ldns_rr_rrsig_expiration(sig)) - uint32_t(now));
  int32_t from_inc = int32_t(uint32_t(now) - ldns_rdf2native_int32(ldns_rr_rrsig_inception(sig)));
  return to_exp >= 0 && from_inc >= 0;
}

}  // namespace

Outcome check_rrset(const ldns_rr_list* set, const dns::Name& zone, const ldns_rr_list* keys,
                    time_t now, SigMemo* memo) {
  View data(ldns_rr_list_new());
  for (size_t i = 0; set && i < ldns_rr_list_rr_count(set); ++i)
    if (!is_sig(ldns_rr_list_rr(set, i)))
      ldns_rr_list_push_rr(data.get(), ldns_rr_list_rr(set, i));
  if (ldns_rr_list_rr_count(data.get()) == 0) return {Security::bogus, ede::dnssec_bogus};
  uint16_t type = uint16_t(ldns_rr_get_type(ldns_rr_list_rr(data.get(), 0)));
  bool any = false, supported = false;
  uint16_t why = ede::dnssec_bogus;
  for (size_t i = 0; i < ldns_rr_list_rr_count(set); ++i) {
    const ldns_rr* sig = ldns_rr_list_rr(set, i);
    if (!is_sig(sig) || covered(sig) != type || !signer(sig).equals(zone)) continue;
    any = true;
    if (!algorithm_supported(ldns_rdf2native_int8(ldns_rr_rrsig_algorithm(sig)))) continue;
    supported = true;
    std::string mk = memo ? memo_key(sig, data.get(), keys) : std::string();
    if (!mk.empty() && memo->seen(mk) && in_period(sig, now)) return {Security::secure, ede::none};
    View good(ldns_rr_list_new());
    ldns_status st = ldns_verify_rrsig_keylist_time(data.get(), sig, keys, now, good.get());
    if (st == LDNS_STATUS_OK) {
      if (!mk.empty()) memo->add(std::move(mk));
      return {Security::secure, ede::none};
    }
    // The most telling reason wins over a plain "bogus".
    uint16_t e = status_ede(st);
    if (why == ede::dnssec_bogus) why = e;
  }
  if (!any) return {Security::bogus, ede::rrsigs_missing};
  if (!supported) return {Security::bogus, ede::unsupported_dnskey_alg};
  return {Security::bogus, why};
}

Outcome check_denial(const dns::Name& name, uint16_t type, bool nxdomain,
                     const ldns_rr_list* proof, const dns::Name& zone, const ldns_rr_list* keys,
                     time_t now, unsigned max_iter, SigMemo* memo) {
  Outcome fail;
  Denials d = verified_denials(proof, zone, keys, now, fail, memo);
  const Outcome ok{Security::secure, ede::none};
  const Outcome missing =
      fail.sec == Security::secure ? Outcome{Security::bogus, ede::nsec_missing} : fail;
  if (!d.nsec.empty()) {
    if (!nxdomain) {
      for (auto* rr : d.nsec)
        if (nsec_matches(rr, name))
          return !has_type(rr, type) && !has_type(rr, LDNS_RR_TYPE_CNAME) ? ok : missing;
    }
    const ldns_rr* cov = nullptr;
    for (auto* rr : d.nsec)
      if (nsec_covers(rr, name)) cov = rr;
    if (!cov) return missing;
    if (!nxdomain) {
      // An empty non-terminal: the next name is below `name` (RFC 4035 §3.1.3.2, ENT case).
      dns::Name next = dns::Name::from_rdf(ldns_rr_rdf(cov, 0));
      if (next.under(name) && !next.equals(name)) return ok;
    }
    dns::Name ce = nsec_closest_encloser(cov, name);
    dns::Name wc = wildcard_of(ce);
    for (auto* rr : d.nsec) {
      if (nxdomain && nsec_covers(rr, wc)) return ok;
      // Wildcard NODATA (RFC 4035 §3.1.3.4): the wildcard exists without the type.
      if (!nxdomain && nsec_matches(rr, wc) && !has_type(rr, type) &&
          !has_type(rr, LDNS_RR_TYPE_CNAME))
        return ok;
    }
    return missing;
  }
  if (d.nsec3.empty()) return missing;
  if (nsec3_unusable(d.nsec3, max_iter))
    return {Security::insecure, ede::unsupported_nsec3_iterations};
  Nsec3Set s{d.nsec3, zone};
  if (!nxdomain) {
    if (const ldns_rr* m = s.match(name))
      return !has_type(m, type) && !has_type(m, LDNS_RR_TYPE_CNAME) ? ok : missing;
  }
  dns::Name ce;
  const ldns_rr* nc = nullptr;
  if (!s.closest_encloser(name, ce, nc)) return missing;
  if (!nxdomain && type == LDNS_RR_TYPE_DS && ldns_nsec3_optout(nc))
    return {Security::insecure, ede::none};  // RFC 5155 §8.6
  dns::Name wc = wildcard_of(ce);
  if (nxdomain) return s.cover(wc) ? ok : missing;  // RFC 5155 §8.4
  if (const ldns_rr* m = s.match(wc))                // RFC 5155 §8.7
    return !has_type(m, type) && !has_type(m, LDNS_RR_TYPE_CNAME) ? ok : missing;
  return missing;
}

Outcome check_wildcard(const dns::Name& name, unsigned labels, const ldns_rr_list* proof,
                       const dns::Name& zone, const ldns_rr_list* keys, time_t now,
                       unsigned max_iter, SigMemo* memo) {
  Outcome fail;
  Denials d = verified_denials(proof, zone, keys, now, fail, memo);
  const Outcome missing =
      fail.sec == Security::secure ? Outcome{Security::bogus, ede::nsec_missing} : fail;
  for (auto* rr : d.nsec)
    if (nsec_covers(rr, name)) return {Security::secure, ede::none};
  if (d.nsec3.empty() || labels >= name.labels()) return missing;
  if (nsec3_unusable(d.nsec3, max_iter))
    return {Security::insecure, ede::unsupported_nsec3_iterations};
  Nsec3Set s{d.nsec3, zone};
  if (s.cover(name.suffix(labels + 1))) return {Security::secure, ede::none};  // RFC 5155 §8.8
  return missing;
}

CutProof check_no_ds(const dns::Name& name, const ldns_rr_list* proof, const dns::Name& zone,
                     const ldns_rr_list* keys, time_t now, unsigned max_iter, SigMemo* memo) {
  Outcome fail;
  Denials d = verified_denials(proof, zone, keys, now, fail, memo);
  CutProof bogus{CutProof::bogus,
                 fail.sec == Security::secure ? ede::nsec_missing : fail.ede};
  auto at_cut = [&](const ldns_rr* rr) -> CutProof {
    if (has_type(rr, LDNS_RR_TYPE_DS)) return bogus;  // the proof contradicts the reply
    if (has_type(rr, LDNS_RR_TYPE_NS) && !has_type(rr, LDNS_RR_TYPE_SOA))
      return {CutProof::insecure_cut, ede::none};  // RFC 4035 §5.2: delegation without DS
    return {CutProof::no_cut, ede::none};
  };
  if (!d.nsec.empty()) {
    for (auto* rr : d.nsec)
      if (nsec_matches(rr, name)) return at_cut(rr);
    for (auto* rr : d.nsec)
      if (nsec_covers(rr, name)) return {CutProof::no_cut, ede::none};  // no such name
    return bogus;
  }
  if (d.nsec3.empty()) return bogus;
  if (nsec3_unusable(d.nsec3, max_iter))
    return {CutProof::insecure_cut, ede::unsupported_nsec3_iterations};
  Nsec3Set s{d.nsec3, zone};
  if (const ldns_rr* m = s.match(name)) return at_cut(m);
  dns::Name ce;
  const ldns_rr* nc = nullptr;
  if (!s.closest_encloser(name, ce, nc)) return bogus;
  // RFC 5155 §6: an opt-out span may hide unsigned delegations.
  if (ldns_nsec3_optout(nc)) return {CutProof::insecure_cut, ede::none};
  return {CutProof::no_cut, ede::none};
}

// ---------------------------------------------------------------------------------------

struct Validator::ZoneState {
  enum Kind { secure, insecure, bogus, no_cut } kind = bogus;
  dns::RrList keys;  // the zone's validated DNSKEY records (secure only)
  uint16_t ede = ede::none;
  uint64_t expire_ms = 0;
};

struct Validator::Keys {
  Security sec = Security::indeterminate;
  dns::Name zone;
  std::shared_ptr<ZoneState> st;  // holds the keys while a check runs
  uint16_t ede = ede::none;
  const ldns_rr_list* keys() const { return st ? st->keys.get() : nullptr; }
};

struct Walk {
  dns::Name target;
  dns::Name zone;
  std::shared_ptr<void> st;  // ZoneState of `zone`
  unsigned labels = 0;
  std::function<void(Security, uint16_t)> fail;
  std::function<void()> done;
};

namespace {

uint32_t min_ttl(const std::vector<dns::RrList>& sets) {
  uint32_t t = 86400;
  for (auto& s : sets)
    for (size_t i = 0; s && i < ldns_rr_list_rr_count(s.get()); ++i)
      t = std::min(t, ldns_rr_ttl(ldns_rr_list_rr(s.get(), i)));
  return t;
}

const ldns_rr_list* find_set(const Answer& a, const dns::Name& owner, uint16_t type) {
  for (auto& s : a.answer) {
    const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
    if (rr && ldns_rr_get_type(rr) == type && dns::owner(rr).equals(owner)) return s.get();
  }
  return nullptr;
}

}  // namespace

Validator::Validator(EventLoop& loop, Resolver& r, std::shared_ptr<NsecStore> nsecs)
    : loop_(loop), res_(r), nsec_(nsecs ? std::move(nsecs) : std::make_shared<NsecStore>()) {}
Validator::~Validator() {
  *alive_ = false;
  if (refresh_timer_) loop_.cancel(refresh_timer_);
}

void Validator::refresh_anchors() {
  // Each anchored zone's DNSKEY RRset is looked at again once its memo expired (half its
  // TTL or half the hold-down): find_keys() fetches it from the authority and observe()s it.
  if (cfg_.enabled)
    for (const auto& a : cfg_.anchors.all())
      if (!under_nta(a.zone)) find_keys(a.zone, [](const Keys&) {});
  uint32_t every = std::clamp<uint32_t>(cfg_.hold_down / 4, 1, 3600);
  refresh_timer_ = loop_.after(std::chrono::seconds(every), [this] {
    refresh_timer_ = 0;
    refresh_anchors();
  });
}

void Validator::configure(DnssecConfig c) {
  bool same = c.anchors.all().size() == cfg_.anchors.all().size();
  for (size_t i = 0; same && i < c.anchors.all().size(); ++i)
    same = ldns_rr_list_compare(c.anchors.all()[i].rrs.get(), cfg_.anchors.all()[i].rrs.get()) == 0;
  if (!same || c.enabled != cfg_.enabled || c.nsec3_max_iterations != cfg_.nsec3_max_iterations)
    zones_.clear();
  if (!same || !c.enabled) nsec_->clear();
  cfg_ = std::move(c);
  if (refresh_timer_) loop_.cancel(refresh_timer_);
  refresh_timer_ = 0;
  refresh_anchors();
}

bool Validator::under_nta(const dns::Name& n) const {
  for (auto& z : cfg_.nta)
    if (n.under(z)) return true;
  for (auto& z : runtime_nta_)
    if (n.under(z)) return true;
  return false;
}

bool Validator::nta_add(const dns::Name& n) {
  for (auto& z : runtime_nta_)
    if (z.equals(n)) return false;
  runtime_nta_.push_back(n);
  nsec_->clear();  // no proof below an NTA may be used any more
  return true;
}

bool Validator::nta_remove(const dns::Name& n) {
  for (auto it = runtime_nta_.begin(); it != runtime_nta_.end(); ++it)
    if (it->equals(n)) {
      runtime_nta_.erase(it);
      return true;
    }
  return false;
}

std::vector<std::string> Validator::nta_list() const {
  std::vector<std::string> out;
  for (auto& z : cfg_.nta) out.push_back(z.text() + " (config)");
  for (auto& z : runtime_nta_) out.push_back(z.text());
  return out;
}

void Validator::count(Security s) {
  switch (s) {
    case Security::secure: ++stats_.secure; break;
    case Security::insecure: ++stats_.insecure; break;
    case Security::bogus: ++stats_.bogus; break;
    case Security::indeterminate: ++stats_.indeterminate; break;
    case Security::unchecked: ++stats_.unchecked_cd; break;
  }
}

// ---- the key walk ----------------------------------------------------------------------

void Validator::find_keys(const dns::Name& target, KeysDone done) {
  if (under_nta(target)) {
    ++stats_.nta_hits;
    Keys k;
    k.sec = Security::insecure;
    return done(k);
  }
  const TrustAnchor* ta = cfg_.anchors.find(target);
  if (!ta) {
    Keys k;
    k.sec = Security::indeterminate;  // RFC 4035 §4.3: no anchor says anything here
    return done(k);
  }
  auto w = std::make_shared<Walk>();
  w->target = target;
  w->zone = ta->zone;
  w->labels = ta->zone.labels();
  w->fail = [done](Security s, uint16_t e) {
    Keys k;
    k.sec = s;
    k.ede = e;
    done(k);
  };
  w->done = [this, w, done] {
    Keys k;
    k.sec = Security::secure;
    k.zone = w->zone;
    k.st = std::static_pointer_cast<ZoneState>(w->st);
    done(k);
  };
  auto it = zones_.find(ta->zone.key());
  if (it != zones_.end() && it->second->expire_ms > now_ms()) {
    if (it->second->kind != ZoneState::secure) return w->fail(Security::bogus, it->second->ede);
    w->st = it->second;
    ++w->labels;
    return walk(w);
  }
  // The anchor's own DNSKEY RRset, self-signed by a key the anchor names (RFC 4035 §5).
  // Fetched from the authority, not the cache: this is also the RFC 5011 §2.3 refresh.
  ++stats_.key_fetches;
  res_.cache().drop(ta->zone, LDNS_RR_TYPE_DNSKEY, EntryKind::rrset);
  std::weak_ptr<bool> alive = alive_;
  dns::Name zone = ta->zone;
  bool started = res_.resolve(Question{zone, LDNS_RR_TYPE_DNSKEY, 1}, [this, alive, w, zone](Answer& a) {
    if (alive.expired()) return;
    const TrustAnchor* ta = cfg_.anchors.find(zone);
    auto st = std::make_shared<ZoneState>();
    st->kind = ZoneState::bogus;
    st->ede = ede::dnskey_missing;
    st->expire_ms = now_ms() + uint64_t(cfg_.bogus_ttl) * 1000;
    const ldns_rr_list* set = find_set(a, zone, LDNS_RR_TYPE_DNSKEY);
    if (ta && set) {
      View trusted(ldns_rr_list_new());
      for (size_t i = 0; i < ldns_rr_list_rr_count(set); ++i) {
        ldns_rr* k = ldns_rr_list_rr(set, i);
        if (ldns_rr_get_type(k) != LDNS_RR_TYPE_DNSKEY) continue;
        for (size_t j = 0; j < ldns_rr_list_rr_count(ta->rrs.get()); ++j) {
          const ldns_rr* t = ldns_rr_list_rr(ta->rrs.get(), j);
          bool m = ldns_rr_get_type(t) == LDNS_RR_TYPE_DS ? ldns_rr_compare_ds(t, k)
                                                           : ldns_rr_compare_no_rdata(t, k) == 0 &&
                                                                 ldns_rr_compare(t, k) == 0;
          if (m) {
            ldns_rr_list_push_rr(trusted.get(), k);
            break;
          }
        }
      }
      if (ldns_rr_list_rr_count(trusted.get())) {
        Outcome o = check_rrset(set, zone, trusted.get(), time(nullptr));
        if (o.sec == Security::secure) {
          st->kind = ZoneState::secure;
          st->keys = data_of(set);
          st->ede = ede::none;
          std::vector<dns::RrList> v;
          v.push_back(dns::RrList(ldns_rr_list_clone(set)));
          // RFC 5011 §2.3: look again after half the TTL (and, so that a shortened test
          // hold-down can pass, half the hold-down), at least every 15 days.
          uint32_t refresh = std::min({min_ttl(v), cfg_.hold_down, 30u * 86400}) / 2;
          st->expire_ms = now_ms() + uint64_t(std::max<uint32_t>(refresh, 1)) * 1000;
          // Which keys signed the set: RFC 5011 revocation needs the revoked key's own signature.
          View signers(ldns_rr_list_new());
          for (size_t i = 0; i < ldns_rr_list_rr_count(st->keys.get()); ++i) {
            View one(ldns_rr_list_new());
            ldns_rr_list_push_rr(one.get(), ldns_rr_list_rr(st->keys.get(), i));
            if (check_rrset(set, zone, one.get(), time(nullptr)).sec == Security::secure)
              ldns_rr_list_push_rr(signers.get(), ldns_rr_list_rr(st->keys.get(), i));
          }
          std::string err;
          if (cfg_.anchors.observe(zone, st->keys.get(), signers.get(), time(nullptr),
                                   cfg_.hold_down, err))
            ++stats_.anchor_updates;
        } else {
          st->ede = o.ede;
        }
      }
    }
    zones_[zone.key()] = st;
    if (st->kind != ZoneState::secure) return w->fail(Security::bogus, st->ede);
    w->st = st;
    ++w->labels;
    walk(w);
  });
  if (!started) w->fail(Security::indeterminate, ede::dnssec_indeterminate);
}

void Validator::walk(std::shared_ptr<Walk> w) {
  while (w->labels <= w->target.labels()) {
    dns::Name s = w->target.suffix(w->labels);
    auto it = zones_.find(s.key());
    if (it != zones_.end() && it->second->expire_ms > now_ms()) {
      ZoneState& z = *it->second;
      switch (z.kind) {
        case ZoneState::no_cut: break;
        case ZoneState::secure:
          w->zone = s;
          w->st = it->second;
          break;
        case ZoneState::insecure: return w->fail(Security::insecure, z.ede);
        case ZoneState::bogus: return w->fail(Security::bogus, z.ede);
      }
      ++w->labels;
      continue;
    }
    // Unknown: ask the parent for the DS RRset of s (RFC 4035 §5.2).
    ++stats_.key_fetches;
    std::weak_ptr<bool> alive = alive_;
    bool started = res_.resolve(Question{s, LDNS_RR_TYPE_DS, 1}, [this, alive, w, s](Answer& a) {
      if (alive.expired()) return;
      auto* parent = static_cast<ZoneState*>(w->st.get());
      auto st = std::make_shared<ZoneState>();
      uint64_t now = now_ms();
      uint64_t bogus_until = now + uint64_t(cfg_.bogus_ttl) * 1000;
      st->expire_ms = now + uint64_t(std::max<uint32_t>(min_ttl(a.answer), 5)) * 1000;
      time_t wall = time(nullptr);
      const ldns_rr_list* ds = find_set(a, s, LDNS_RR_TYPE_DS);
      if (a.rcode == LDNS_RCODE_NOERROR && ds) {
        Outcome o = check_rrset(ds, w->zone, parent->keys.get(), wall);
        if (o.sec != Security::secure) {
          st->kind = ZoneState::bogus;
          st->ede = o.ede;
          st->expire_ms = bogus_until;
        } else {
          auto usable = std::make_shared<dns::RrList>(ldns_rr_list_new());
          for (size_t i = 0; i < ldns_rr_list_rr_count(ds); ++i) {
            const ldns_rr* r = ldns_rr_list_rr(ds, i);
            if (is_sig(r) || ldns_rr_rd_count(r) < 4) continue;
            uint8_t alg = ldns_rdf2native_int8(ldns_rr_rdf(r, 1));
            uint8_t dig = ldns_rdf2native_int8(ldns_rr_rdf(r, 2));
            if (algorithm_supported(alg) && digest_supported(dig))
              ldns_rr_list_push_rr(usable->get(), ldns_rr_clone(r));
          }
          if (ldns_rr_list_rr_count(usable->get()) == 0) {
            // RFC 4035 §5.2, RFC 6840 §5.2: only unknown algorithms/digests: insecure.
            st->kind = ZoneState::insecure;
          } else {
            return fetch_dnskey(w, s, usable);
          }
        }
      } else if (a.rcode == LDNS_RCODE_NOERROR && !a.answer.empty() &&
                 find_set(a, s, LDNS_RR_TYPE_CNAME)) {
        st->kind = ZoneState::no_cut;  // a CNAME owner is never a zone cut (RFC 2181 §10.1)
      } else if (a.rcode == LDNS_RCODE_NOERROR || a.rcode == LDNS_RCODE_NXDOMAIN) {
        const ldns_rr_list* proof = a.authority.empty() ? nullptr : a.authority[0].get();
        st->expire_ms = now + uint64_t(std::max<uint32_t>(min_ttl(a.authority), 5)) * 1000;
        CutProof c = check_no_ds(s, proof, w->zone, parent->keys.get(), wall,
                                 cfg_.nsec3_max_iterations, &memo_);
        st->ede = c.ede;
        switch (c.kind) {
          case CutProof::no_cut: st->kind = ZoneState::no_cut; break;
          case CutProof::insecure_cut: st->kind = ZoneState::insecure; break;
          case CutProof::bogus:
            st->kind = ZoneState::bogus;
            st->expire_ms = bogus_until;
            break;
        }
      } else {
        st->kind = ZoneState::bogus;
        st->ede = ede::no_reachable_authority;
        st->expire_ms = bogus_until;
      }
      zones_[s.key()] = st;
      walk(w);
    });
    if (!started) return w->fail(Security::indeterminate, ede::dnssec_indeterminate);
    return;
  }
  w->done();
}

void Validator::fetch_dnskey(std::shared_ptr<Walk> w, const dns::Name& child,
                             std::shared_ptr<dns::RrList> ds) {
  ++stats_.key_fetches;
  std::weak_ptr<bool> alive = alive_;
  bool started = res_.resolve(Question{child, LDNS_RR_TYPE_DNSKEY, 1}, [this, alive, w, child, ds](Answer& a) {
    if (alive.expired()) return;
    auto st = std::make_shared<ZoneState>();
    st->kind = ZoneState::bogus;
    st->ede = ede::dnskey_missing;
    st->expire_ms = now_ms() + uint64_t(cfg_.bogus_ttl) * 1000;
    const ldns_rr_list* set = find_set(a, child, LDNS_RR_TYPE_DNSKEY);
    if (set) {
      // RFC 4035 §5.2: a DNSKEY that a DS names, and the DNSKEY RRset signed by it.
      View trusted(ldns_rr_list_new());
      bool tag_seen = false;  // a key the DS names by tag, whose digest does not match
      for (size_t i = 0; i < ldns_rr_list_rr_count(set); ++i) {
        ldns_rr* k = ldns_rr_list_rr(set, i);
        if (ldns_rr_get_type(k) != LDNS_RR_TYPE_DNSKEY) continue;
        for (size_t j = 0; j < ldns_rr_list_rr_count(ds->get()); ++j) {
          const ldns_rr* d = ldns_rr_list_rr(ds->get(), j);
          if (ldns_rr_compare_ds(d, k)) {
            ldns_rr_list_push_rr(trusted.get(), k);
            break;
          }
          tag_seen |= ldns_rdf2native_int16(ldns_rr_rdf(d, 0)) == ldns_calc_keytag(k);
        }
      }
      // No key matches: a DS digest that fails (EDE 6) or no key with the DS's tag (EDE 9).
      if (ldns_rr_list_rr_count(trusted.get()) == 0 && tag_seen) st->ede = ede::dnssec_bogus;
      if (ldns_rr_list_rr_count(trusted.get())) {
        Outcome o = check_rrset(set, child, trusted.get(), time(nullptr));
        if (o.sec == Security::secure) {
          st->kind = ZoneState::secure;
          st->ede = ede::none;
          st->keys = data_of(set);
          st->expire_ms = now_ms() + uint64_t(std::max<uint32_t>(min_ttl(a.answer), 5)) * 1000;
        } else {
          st->ede = o.ede;
        }
      }
    }
    zones_[child.key()] = st;
    walk(w);  // re-reads the memo just written
  });
  if (!started) w->fail(Security::indeterminate, ede::dnssec_indeterminate);
}

// ---- answers ---------------------------------------------------------------------------

struct Validator::Job {
  Question q;
  bool cd = false;
  Answer a;
  Done done;
  struct Item {
    const ldns_rr_list* set = nullptr;  // RRset (with RRSIGs), or the negative proof
    dns::Name owner;
    uint16_t type = 0;
    EntryKind kind = EntryKind::rrset;
  };
  std::vector<Item> items;
  size_t next = 0;
  Security worst = Security::secure;
  uint16_t ede = ede::none;
  void merge(Security s, uint16_t e) {
    auto rank = [](Security x) {
      switch (x) {
        case Security::bogus: return 4;
        case Security::indeterminate: return 3;
        case Security::unchecked: return 2;
        case Security::insecure: return 1;
        case Security::secure: return 0;
      }
      return 4;
    };
    if (rank(s) > rank(worst)) {
      worst = s;
      ede = e;
    }
  }
};

namespace {

// What the validator checks in an answer: each RRset, and for a negative answer its
// proof. A CNAME synthesized from a DNAME is covered by the DNAME's signature.
template <class Item>
std::vector<Item> items_of(const Question& q, const Answer& a) {
  std::vector<Item> out;
  const ldns_rr_list* prev = nullptr;
  dns::Name last = q.name;
  bool final = false;
  for (auto& s : a.answer) {
    const ldns_rr* rr = ldns_rr_list_rr(s.get(), 0);
    if (!rr) continue;
    uint16_t t = uint16_t(ldns_rr_get_type(rr));
    bool synth = prev && ldns_rr_get_type(ldns_rr_list_rr(prev, 0)) == LDNS_RR_TYPE_DNAME &&
                 t == LDNS_RR_TYPE_CNAME;
    prev = s.get();
    if (t == LDNS_RR_TYPE_CNAME && q.type != LDNS_RR_TYPE_CNAME)
      last = dns::Name::from_rdf(ldns_rr_rdf(rr, 0));
    if (t == q.type || q.type == LDNS_RR_TYPE_ANY) final = true;
    if (synth) continue;
    out.push_back(Item{s.get(), dns::owner(rr), t, EntryKind::rrset});
  }
  bool nx = a.rcode == LDNS_RCODE_NXDOMAIN;
  if (nx || (a.rcode == LDNS_RCODE_NOERROR && !final)) {
    const ldns_rr_list* proof = a.authority.empty() ? nullptr : a.authority[0].get();
    out.push_back(Item{proof, last, nx ? uint16_t(0) : q.type,
                       nx ? EntryKind::nxdomain : EntryKind::nodata});
  }
  return out;
}

// The zone to find keys for: the signer of the data, or, unsigned, the owner (or the SOA's
// owner for a negative answer) so that the walk finds the insecure cut above it.
dns::Name target_of(const ldns_rr_list* set, const dns::Name& owner) {
  for (size_t i = 0; set && i < ldns_rr_list_rr_count(set); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(set, i);
    if (!is_sig(rr)) continue;
    dns::Name s = signer(rr), o = dns::owner(rr);
    if (o.under(s)) return s;
  }
  for (size_t i = 0; set && i < ldns_rr_list_rr_count(set); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(set, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA) return dns::owner(rr);
  }
  return owner;
}

}  // namespace

namespace {

// RFC 4034 §6.1 canonical order as a byte string: labels from the root down, lowercase,
// each followed by a 0 byte (a 0 inside a label, legal but unseen in practice, would
// order that name early: then a proof just is not found, never a wrong one).
std::string canonical_key(const dns::Name& n) {
  std::vector<std::string> labels;
  const std::string& w = n.wire();
  for (size_t i = 0; i < w.size() && w[i];) {
    size_t len = uint8_t(w[i]);
    labels.push_back(dns::lower(w.substr(i + 1, len)));
    i += 1 + len;
  }
  std::string k;
  for (auto it = labels.rbegin(); it != labels.rend(); ++it) {
    k += *it;
    k.push_back('\0');
  }
  return k;
}

}  // namespace

void Validator::remember_nsecs(const dns::Name& zone, const ldns_rr_list* proof) {
  if (!proof) return;
  uint64_t now = now_ms();
  dns::RrList soa(ldns_rr_list_new());
  for (size_t i = 0; i < ldns_rr_list_rr_count(proof); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(proof, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA || (is_sig(rr) && covered(rr) == LDNS_RR_TYPE_SOA))
      ldns_rr_list_push_rr(soa.get(), ldns_rr_clone(rr));
  }
  if (ldns_rr_list_rr_count(soa.get()) == 0 ||
      !dns::owner(ldns_rr_list_rr(soa.get(), 0)).equals(zone))
    return;  // without the zone's SOA no negative answer can be built from these
  std::lock_guard g(nsec_->mu);
  {
    NsecStore::Zone& z = nsec_->zones[zone.key()];
    z.zone = zone;
    z.soa.expire_ms = now + uint64_t(std::max<uint32_t>(ldns_rr_ttl(ldns_rr_list_rr(soa.get(), 0)), 1)) * 1000;
    z.soa.rrs = std::move(soa);
  }
  for (size_t i = 0; i < ldns_rr_list_rr_count(proof); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(proof, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_NSEC) continue;
    dns::Name owner = dns::owner(rr);
    if (!owner.under(zone)) continue;
    if (nsec_->count >= kMaxNsecs) {  // bounded: start over rather than grow
      nsec_->zones.clear();
      nsec_->count = 0;
    }
    NsecStore::Zone& z = nsec_->zones[zone.key()];
    z.zone = zone;
    NsecStore::Rec rec;
    rec.rrs.reset(ldns_rr_list_new());
    ldns_rr_list_push_rr(rec.rrs.get(), ldns_rr_clone(rr));
    for (size_t j = 0; j < ldns_rr_list_rr_count(proof); ++j) {
      const ldns_rr* s = ldns_rr_list_rr(proof, j);
      if (is_sig(s) && covered(s) == LDNS_RR_TYPE_NSEC &&
          ldns_dname_compare(ldns_rr_owner(s), ldns_rr_owner(rr)) == 0)
        ldns_rr_list_push_rr(rec.rrs.get(), ldns_rr_clone(s));
    }
    rec.expire_ms = now + uint64_t(std::max<uint32_t>(ldns_rr_ttl(rr), 1)) * 1000;
    auto [it, added] = z.by_owner.insert_or_assign(canonical_key(owner), std::move(rec));
    (void)it;
    nsec_->count += added;
  }
}

bool Validator::aggressive(const Question& q, Answer& out) {
  std::lock_guard g(nsec_->mu);
  if (nsec_->zones.empty()) return false;
  // The deepest zone with remembered NSECs that holds the name.
  NsecStore::Zone* z = nullptr;
  for (dns::Name n = q.name;; n = n.parent()) {
    if (auto it = nsec_->zones.find(n.key()); it != nsec_->zones.end()) {
      z = &it->second;
      break;
    }
    if (n.is_root()) break;
  }
  if (!z) return false;
  uint64_t now = now_ms();
  // The NSEC at or just before `name` in canonical order, when still fresh.
  auto before = [&](const dns::Name& name) -> const ldns_rr_list* {
    auto it = z->by_owner.upper_bound(canonical_key(name));
    if (it == z->by_owner.begin()) return nullptr;
    --it;
    if (it->second.expire_ms <= now) {
      --nsec_->count;
      z->by_owner.erase(it);
      return nullptr;
    }
    return it->second.rrs.get();
  };
  const ldns_rr_list* at = before(q.name);
  if (!at) return false;
  const ldns_rr* nsec = ldns_rr_list_rr(at, 0);
  // The SOA goes with a negative answer (RFC 8198 §5.1 / RFC 2308 §3).
  if (!z->soa.rrs || z->soa.expire_ms <= now) return false;
  dns::RrList proof(ldns_rr_list_new());
  auto add = [&](const ldns_rr_list* l) {
    for (size_t i = 0; i < ldns_rr_list_rr_count(l); ++i)
      ldns_rr_list_push_rr(proof.get(), ldns_rr_clone(ldns_rr_list_rr(l, i)));
  };
  bool nodata = false;
  if (nsec_matches(nsec, q.name)) {
    // RFC 8198 §5.2 NODATA: the name exists, neither the type nor a CNAME does.
    if (has_type(nsec, q.type) || has_type(nsec, LDNS_RR_TYPE_CNAME) || q.type == LDNS_RR_TYPE_DS ||
        q.type == LDNS_RR_TYPE_ANY)
      return false;
    nodata = true;
    add(at);
  } else {
    if (!nsec_covers(nsec, q.name)) return false;
    // RFC 8198 §5.1 NXDOMAIN: the wildcard at the closest encloser is denied as well.
    dns::Name wc = wildcard_of(nsec_closest_encloser(nsec, q.name));
    const ldns_rr_list* wat = before(wc);
    if (!wat || nsec_matches(ldns_rr_list_rr(wat, 0), wc) || !nsec_covers(ldns_rr_list_rr(wat, 0), wc))
      return false;
    add(at);
    if (wat != at) add(wat);
  }
  out = Answer{};
  out.rcode = nodata ? LDNS_RCODE_NOERROR : LDNS_RCODE_NXDOMAIN;
  dns::RrList auth(ldns_rr_list_clone(z->soa.rrs.get()));
  // RFC 8198 §5.4 / RFC 2308 §5: no longer than the SOA's negative TTL or what remains.
  uint32_t ttl = std::min<uint32_t>(negative_ttl(ldns_rr_list_rr(auth.get(), 0)),
                                    uint32_t((z->soa.expire_ms - now + 999) / 1000));
  for (size_t i = 0; i < ldns_rr_list_rr_count(proof.get()); ++i)
    ldns_rr_list_push_rr(auth.get(), ldns_rr_clone(ldns_rr_list_rr(proof.get(), i)));
  for (size_t i = 0; i < ldns_rr_list_rr_count(auth.get()); ++i) {
    ldns_rr* r = ldns_rr_list_rr(auth.get(), i);
    ldns_rr_set_ttl(r, std::min(ldns_rr_ttl(r), ttl));
  }
  out.authority.push_back(std::move(auth));
  out.sec = Security::secure;
  ++(nodata ? stats_.aggressive_nodata : stats_.aggressive_nxdomain);
  return true;
}

bool Validator::resolve(const Question& q, bool cd, Done done) {
  if (!cfg_.enabled) return res_.resolve(q, std::move(done));
  std::weak_ptr<bool> alive = alive_;
  if (!cd) {
    // RFC 8198: a miss that remembered NSECs prove negative needs no upstream query.
    Answer a;
    if (res_.lookup(q, a)) {
      auto j = std::make_shared<Job>();
      j->q = q;
      j->a = std::move(a);
      j->done = std::move(done);
      validate(j);
      return true;
    }
    if (aggressive(q, a)) {
      count(Security::secure);
      done(a);
      return true;
    }
  }
  return res_.resolve(q, [this, alive, q, cd, done = std::move(done)](Answer& a) {
    if (alive.expired()) return done(a);
    auto j = std::make_shared<Job>();
    j->q = q;
    j->cd = cd;
    j->a = std::move(a);
    j->done = done;
    validate(j);
  });
}

bool Validator::lookup(const Question& q, bool cd, Answer& out) {
  if (!res_.lookup(q, out)) return false;
  if (!cfg_.enabled) return true;
  // Cache only: the verdicts already recorded on the entries, nothing fetched.
  auto items = items_of<Job::Item>(q, out);
  Job j;
  for (auto& it : items) {
    auto e = res_.cache().peek(it.owner, it.kind == EntryKind::nxdomain ? 0 : it.type, it.kind);
    j.merge(e ? e->sec : Security::unchecked, e ? e->ede : ede::none);
  }
  if (out.rcode != LDNS_RCODE_NOERROR && out.rcode != LDNS_RCODE_NXDOMAIN) j.worst = Security::indeterminate;
  out.sec = j.worst;
  if (j.worst == Security::bogus && !cd) {
    out.answer.clear();
    out.authority.clear();
    out.rcode = LDNS_RCODE_SERVFAIL;
    out.ede = j.ede;
  } else if (out.stale) {
    out.ede = ede::stale_answer;
  }
  count(out.sec);
  return true;
}

void Validator::validate(std::shared_ptr<Job> j) {
  Answer& a = j->a;
  if (a.rcode != LDNS_RCODE_NOERROR && a.rcode != LDNS_RCODE_NXDOMAIN) {
    j->worst = Security::indeterminate;
    return finish(j);
  }
  j->items = items_of<Job::Item>(j->q, a);
  next_item(j);
}

void Validator::next_item(std::shared_ptr<Job> j) {
  while (j->next < j->items.size()) {
    Job::Item& it = j->items[j->next];
    uint16_t etype = it.kind == EntryKind::nxdomain ? 0 : it.type;
    auto e = res_.cache().peek(it.owner, etype, it.kind);
    if (e && e->sec != Security::unchecked) {
      j->merge(e->sec, e->ede);
      ++j->next;
      continue;
    }
    if (j->cd) {  // RFC 4035 §3.2.2: the client checks; we only pass on what we know
      j->merge(Security::unchecked, ede::none);
      ++j->next;
      continue;
    }
    std::weak_ptr<bool> alive = alive_;
    dns::Name target = target_of(it.set, it.owner);
    find_keys(target, [this, alive, j](const Keys& k) {
      if (alive.expired()) return;
      Job::Item& it = j->items[j->next];
      Outcome o{k.sec, k.ede};
      time_t wall = time(nullptr);
      if (k.sec == Security::secure) {
        if (it.kind == EntryKind::rrset) {
          o = check_rrset(it.set, k.zone, k.keys(), wall, &memo_);
          if (o.sec == Security::secure) {
            // A wildcard expansion also needs the proof that no closer name exists.
            unsigned labels = it.owner.labels();
            for (size_t i = 0; i < ldns_rr_list_rr_count(it.set); ++i) {
              const ldns_rr* r = ldns_rr_list_rr(it.set, i);
              if (is_sig(r) && covered(r) == it.type)
                labels = std::min<unsigned>(labels, ldns_rdf2native_int8(ldns_rr_rrsig_labels(r)));
            }
            if (labels < it.owner.labels()) {
              auto e = res_.cache().peek(it.owner, it.type, EntryKind::rrset);
              o = check_wildcard(it.owner, labels, e ? e->proof.get() : nullptr, k.zone,
                                 k.keys(), wall, cfg_.nsec3_max_iterations, &memo_);
            }
          }
        } else {
          // The SOA is signed too (RFC 4035 §3.1.3), then the denial itself.
          View soa(ldns_rr_list_new());
          for (size_t i = 0; it.set && i < ldns_rr_list_rr_count(it.set); ++i) {
            ldns_rr* r = ldns_rr_list_rr(it.set, i);
            if (ldns_rr_get_type(r) == LDNS_RR_TYPE_SOA ||
                (is_sig(r) && covered(r) == LDNS_RR_TYPE_SOA))
              ldns_rr_list_push_rr(soa.get(), r);
          }
          o = ldns_rr_list_rr_count(soa.get()) ? check_rrset(soa.get(), k.zone, k.keys(), wall)
                                               : Outcome{Security::secure, ede::none};
          if (o.sec == Security::secure)
            o = check_denial(it.owner, it.type, it.kind == EntryKind::nxdomain, it.set, k.zone,
                             k.keys(), wall, cfg_.nsec3_max_iterations, &memo_);
          if (o.sec == Security::secure) remember_nsecs(k.zone, it.set);
        }
      }
      if (o.sec == Security::insecure) o.ede = ede::none;
      uint16_t etype = it.kind == EntryKind::nxdomain ? 0 : it.type;
      // Recorded on the shared entry: every loop's later hits reuse the verdict. A bogus one
      // lives at most bogus-ttl: retried soon, never served as secure.
      res_.cache().set_security(it.owner, etype, it.kind,
                                o.sec == Security::indeterminate ? Security::unchecked : o.sec, o.ede,
                                o.sec == Security::bogus ? now_ms() + uint64_t(cfg_.bogus_ttl) * 1000
                                                         : UINT64_MAX);
      j->merge(o.sec, o.ede);
      ++j->next;
      next_item(j);
    });
    return;
  }
  finish(j);
}

void Validator::finish(std::shared_ptr<Job> j) {
  Answer& a = j->a;
  a.sec = j->worst;
  if (j->worst == Security::bogus && !j->cd) {
    a.answer.clear();
    a.authority.clear();
    a.rcode = LDNS_RCODE_SERVFAIL;
    a.ede = j->ede == ede::none ? ede::dnssec_bogus : j->ede;
  } else if (a.stale) {
    a.ede = ede::stale_answer;
  }
  count(j->worst);
  j->done(a);
}

}  // namespace tern::control::resolver

namespace tern::control::resolver {

std::optional<std::string> prepare_dnssec(const Config& c, DnssecConfig& out) {
  out.enabled = c.dnssec_validation;
  out.bogus_ttl = c.bogus_ttl;
  out.nsec3_max_iterations = c.nsec3_max_iterations;
  std::istringstream in(c.negative_trust_anchors);
  for (std::string t; in >> t;) {
    dns::Name n;
    if (!dns::Name::from_text(t, n))
      return "[dnssec] negative-trust-anchors: '" + t + "' is not a domain name";
    out.nta.push_back(n);
  }
  if (!out.enabled) return std::nullopt;
  std::string err;
  std::error_code ec;
  if (c.trust_anchor_file == Config{}.trust_anchor_file &&
      !std::filesystem::exists(c.trust_anchor_file, ec))
    return std::nullopt;  // the packaged default is not installed: no anchors, no AD
  out.hold_down = c.rfc5011_hold_down;
  // The managed copy (RFC 5011) wins once it exists; the shipped file seeds it.
  std::string managed = c.state_dir + "/trust-anchors/managed.key";
  if (!out.anchors.load_managed(c.trust_anchor_file, managed, err))
    return "[dnssec] trust-anchor-file: " + err;
  return std::nullopt;
}

}  // namespace tern::control::resolver
