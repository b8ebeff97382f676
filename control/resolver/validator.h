// DNSSEC validation (RFC 4033-4035, RFC 5155, RFC 6840, RFC 9276) between the client
// front end and the recursion engine, with ldns doing the cryptography.
//
// How an answer is judged: every RRset in it (and, for NXDOMAIN/NODATA, the SOA and its
// NSEC/NSEC3 proof) needs the validated DNSKEY RRset of the zone that signed it. Those
// keys come from a walk down from the deepest trust anchor: for each label between the
// anchor and the signer (or, for unsigned data, the owner) the DS RRset is fetched from
// the parent through the Resolver; a signed DS leads to the child's DNSKEY RRset, a signed
// denial of a DS at a delegation makes everything below insecure, a denial at a name that
// is no delegation moves on. Walk results are memoised per name for their TTL (bogus ones
// for bogus-ttl), and each cache entry records the verdict on it, so a cache hit costs
// no crypto after the first validation.
//
// Contract: single-threaded on the EventLoop, like the Resolver it drives. The pure
// checks (check_rrset, check_denial, check_wildcard) take no state and are unit-tested
// with keys made in the test.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "control/loop.h"
#include "control/resolver/resolver.h"
#include "control/resolver/trust_anchor.h"

namespace tern::control::resolver {

// RFC 8914 INFO-CODEs the validator and the front end use.
namespace ede {
constexpr uint16_t none = 0xffff, other = 0, unsupported_dnskey_alg = 1,
                   unsupported_ds_digest = 2, stale_answer = 3, dnssec_indeterminate = 5,
                   dnssec_bogus = 6, signature_expired = 7, signature_not_yet_valid = 8,
                   dnskey_missing = 9, rrsigs_missing = 10, nsec_missing = 12,
                   cached_error = 13, no_reachable_authority = 22,
                   unsupported_nsec3_iterations = 27;
const char* text(uint16_t code);
}  // namespace ede

struct Outcome {  // what one check concluded
  Security sec = Security::bogus;
  uint16_t ede = ede::dnssec_bogus;
};

struct DnssecConfig {
  bool enabled = true;
  TrustAnchors anchors;
  std::vector<dns::Name> nta;  // negative trust anchors from the config file
  uint32_t bogus_ttl = 60;
  unsigned nsec3_max_iterations = 150;
  uint32_t hold_down = 30 * 86400;  // RFC 5011 add hold-down, seconds
};

// Signatures already verified, keyed by the RRSIG, the records it covers and the key that
// verified it: a proof many answers share (a wildcard's NSEC) costs one verification.
// A hit still checks the signature's validity period. Bounded: cleared when full.
class SigMemo {
 public:
  bool seen(const std::string& k) const { return ok_.count(k) != 0; }
  void add(std::string k) {
    if (ok_.size() >= kMax) ok_.clear();
    ok_.insert(std::move(k));
  }
  size_t size() const { return ok_.size(); }

 private:
  static constexpr size_t kMax = 20000;
  std::unordered_set<std::string> ok_;
};

// Builds a DnssecConfig from [dnssec] (reads the trust anchor file). No side effects.
std::optional<std::string> prepare_dnssec(const Config& c, DnssecConfig& out);

// The supported algorithms (RFC 8624 "MUST/RECOMMENDED validate" that ldns implements)
// and DS digests. Anything else makes a zone insecure rather than bogus (RFC 6840 §5.2).
bool algorithm_supported(uint8_t alg);
bool digest_supported(uint8_t digest);

// RRset `set` (records then RRSIGs) signed by `zone` with one of `keys` at `now`.
Outcome check_rrset(const ldns_rr_list* set, const dns::Name& zone, const ldns_rr_list* keys,
                     time_t now, SigMemo* memo = nullptr);
// The records of `set` that are not RRSIGs / the RRSIGs in it.
dns::RrList data_of(const ldns_rr_list* set);

// Denial of (name, type) by the NSEC/NSEC3 records in `proof` (records and RRSIGs mixed, as
// the resolver keeps them; signatures are checked against `keys` of `zone`). `nxdomain`:
// the name must not exist; otherwise it must exist without `type` (NODATA), wildcard NODATA
// included. Insecure when an NSEC3 iteration count exceeds `max_iter` (RFC 9276 §3.2) or,
// for DS, when an opt-out span covers the name (RFC 5155 §8.6).
Outcome check_denial(const dns::Name& name, uint16_t type, bool nxdomain,
                      const ldns_rr_list* proof, const dns::Name& zone, const ldns_rr_list* keys,
                      time_t now, unsigned max_iter, SigMemo* memo = nullptr);
// A positive answer for `name` expanded from the wildcard at `labels` labels: `proof` must
// show no closer match exists (RFC 4035 §5.3.4, RFC 5155 §8.8).
Outcome check_wildcard(const dns::Name& name, unsigned labels, const ldns_rr_list* proof,
                        const dns::Name& zone, const ldns_rr_list* keys, time_t now,
                        unsigned max_iter, SigMemo* memo = nullptr);

// What a DS lookup says about a name below a secure zone.
struct CutProof {
  enum Kind { no_cut, insecure_cut, bogus } kind = bogus;
  uint16_t ede = ede::dnssec_bogus;
};
CutProof check_no_ds(const dns::Name& name, const ldns_rr_list* proof, const dns::Name& zone,
                     const ldns_rr_list* keys, time_t now, unsigned max_iter,
                     SigMemo* memo = nullptr);

#define TERN_DNSSEC_COUNTERS(X) \
  X(secure) X(insecure) X(bogus) X(indeterminate) X(unchecked_cd) X(nta_hits) X(key_fetches) \
  X(anchor_updates) X(aggressive_nxdomain) X(aggressive_nodata)

struct ValidatorStats {
#define X(n) uint64_t n = 0;
  TERN_DNSSEC_COUNTERS(X)
#undef X
};

// RFC 8198 aggressive use of NSEC: every NSEC that took part in a secure denial, per
// zone, in canonical order (RFC 4034 §6.1), until its TTL ends. A miss whose name one
// of them covers (and whose wildcard another covers) is answered NXDOMAIN from here,
// a name one of them matches without the type NODATA, with no upstream query. One store
// serves every event loop (a client's next query may land on another loop), behind its
// own mutex; what leaves it is cloned under the lock.
struct NsecStore {
  struct Rec {
    dns::RrList rrs;  // the NSEC and its RRSIGs, TTLs as received
    uint64_t expire_ms = 0;
  };
  struct Zone {
    dns::Name zone;
    std::map<std::string, Rec> by_owner;  // canonical key -> record
    Rec soa;  // the zone's SOA and RRSIGs from the same validated proofs
  };
  mutable std::mutex mu;
  std::unordered_map<std::string, Zone> zones;  // zone key -> its NSECs
  size_t count = 0;
  void clear() {
    std::lock_guard g(mu);
    zones.clear();
    count = 0;
  }
};

class Validator {
 public:
  using Done = std::function<void(Answer&)>;
  // `nsecs`: the aggressive-NSEC store shared with the other loops' validators (a new one
  // when null).
  Validator(EventLoop& loop, Resolver& r, std::shared_ptr<NsecStore> nsecs = nullptr);
  ~Validator();

  // Keeps runtime NTAs; forgets the memoised keys when the anchors changed.
  void configure(DnssecConfig c);
  bool enabled() const { return cfg_.enabled; }

  // Resolver::resolve() plus validation. With `cd` (RFC 4035 §3.2.2) nothing is checked:
  // the data goes out as it is, AD only when it was already proven secure. A bogus answer
  // becomes SERVFAIL with its EDE and its cache entries expire within bogus-ttl.
  bool resolve(const Question& q, bool cd, Done done);
  // Cache only (RD=0): data whose verdict is not yet known is validated when its keys are
  // memoised, otherwise answered without AD.
  bool lookup(const Question& q, bool cd, Answer& out);

  // Negative trust anchors at runtime (RFC 7646), on top of the configured ones.
  bool nta_add(const dns::Name& n);
  bool nta_remove(const dns::Name& n);
  std::vector<std::string> nta_list() const;

  const ValidatorStats& stats() const { return stats_; }
  size_t zones_memoised() const { return zones_.size(); }
  size_t nsecs_current() const {
    std::lock_guard g(nsec_->mu);
    return nsec_->count;
  }
  size_t trust_anchors() const { return cfg_.enabled ? cfg_.anchors.all().size() : 0; }

 private:
  struct Keys;
  struct Job;
  using KeysDone = std::function<void(const Keys&)>;
  void validate(std::shared_ptr<Job> j);
  void next_item(std::shared_ptr<Job> j);
  void finish(std::shared_ptr<Job> j);
  void find_keys(const dns::Name& target, KeysDone done);
  void walk(std::shared_ptr<struct Walk> w);
  void fetch_dnskey(std::shared_ptr<struct Walk> w, const dns::Name& child,
                    std::shared_ptr<dns::RrList> ds);
  bool under_nta(const dns::Name& n) const;
  void refresh_anchors();  // RFC 5011 §2.3 active refresh, on a timer
  void count(Security s);
  uint64_t now_ms() const { return loop_.now_ms(); }

  EventLoop& loop_;
  Resolver& res_;
  DnssecConfig cfg_;
  std::vector<dns::Name> runtime_nta_;
  SigMemo memo_;
  struct ZoneState;
  std::unordered_map<std::string, std::shared_ptr<ZoneState>> zones_;  // name key -> walk memo
  ValidatorStats stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  EventLoop::TimerId refresh_timer_ = 0;

  std::shared_ptr<NsecStore> nsec_;  // shared by every loop's Validator
  static constexpr size_t kMaxNsecs = 100000;
  void remember_nsecs(const dns::Name& zone, const ldns_rr_list* proof);
  bool aggressive(const Question& q, Answer& out);
};

}  // namespace tern::control::resolver
