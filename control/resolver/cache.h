// RRset cache and negative cache of the recursion engine (RFC 2181 §5, RFC 2308,
// RFC 8767). Answers are assembled per message from these RRsets by the iterator.
//
// Contract: single-threaded, owned by the Resolver on the EventLoop thread. Bounded by
// bytes (an estimate of the heap each entry holds); eviction is exact LRU over all
// entries. A stored RRset never replaces a fresh one of higher trust (RFC 2181 §5.4.1):
// glue cannot overwrite an authoritative answer.
#pragma once

#include <cstdint>
#include <list>
#include <ostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/resolver/dns.h"

namespace tern::control::resolver {

struct CacheLimits {
  size_t max_bytes = 256u << 20;
  uint32_t ttl_floor = 0, ttl_cap = 86400, neg_ttl_cap = 3600, servfail_ttl = 5;
  bool serve_stale = true;
  uint32_t stale_window = 86400;
};

// RFC 2181 §5.4.1 ranking, lowest first.
enum class Trust : uint8_t { additional = 1, authority = 2, answer_nonauth = 3, answer_auth = 4 };

enum class EntryKind : char { rrset = 'P', nodata = 'N', nxdomain = 'X', servfail = 'S' };

// DNSSEC status of cached data (RFC 4033 §5, RFC 4035 §4.3), set by the validator once it
// checked the entry; data replaced by put_*() starts unchecked again.
enum class Security : uint8_t { unchecked, secure, insecure, bogus, indeterminate };
const char* security_text(Security s);

struct CacheEntry {
  EntryKind kind = EntryKind::rrset;
  dns::RrList rrs;    // the RRset (rrset) or the SOA RRset (nodata/nxdomain; may be empty)
  uint64_t expire_ms = 0;
  uint32_t ttl = 0;   // TTL as stored (after floor/cap), for prefetch's "last 10%"
  Trust trust = Trust::additional;
  uint32_t hits = 0;
  bool prefetching = false;
  Security sec = Security::unchecked;
  uint16_t ede = 0xffff;  // RFC 8914 code explaining `sec` when bogus; 0xffff: none
  // For an RRset expanded from a wildcard: the NSEC/NSEC3 records (with their RRSIGs)
  // of the same reply that prove the query name itself does not exist (RFC 4035 §5.3.4).
  dns::RrList proof;
  size_t bytes = 0;
  std::list<std::string>::iterator lru;
};

// RFC 2308 §5: the negative TTL is the minimum of the SOA's TTL and its MINIMUM field.
uint32_t negative_ttl(const ldns_rr* soa);

class Cache {
 public:
  explicit Cache(const CacheLimits& l) : limits_(l) { size_filter(); }
  void set_limits(const CacheLimits& l);  // evicts down to the new size at once

  // Stores a clone of one RRset; TTL floor/cap applied. Returns false when refused
  // (lower trust than a fresh entry, or empty).
  // The list holds the RRset's records first, then the RRSIGs that cover it.
  bool put_rrset(const ldns_rr_list* rrset, Trust trust, uint64_t now_ms,
                 const ldns_rr_list* proof = nullptr);
  // NXDOMAIN for `name` (type ignored) or NODATA for (name, type), with the zone's SOA
  // RRset; not cached without an SOA (RFC 2308 §5).
  void put_negative(const dns::Name& name, uint16_t type, EntryKind kind,
                    const ldns_rr_list* soa, uint64_t now_ms);
  void put_servfail(const dns::Name& name, uint16_t type, uint64_t now_ms);

  // Fresh entry, or with allow_stale an expired one within stale_window. nullptr if none.
  // Bumps LRU and hit count.
  CacheEntry* get(const dns::Name& name, uint16_t type, EntryKind kind, uint64_t now_ms,
                  bool allow_stale = false);
  // The entry as stored, fresh or not, without touching LRU order or hit counts: the
  // validator reads and records an entry's security through it.
  CacheEntry* peek(const dns::Name& name, uint16_t type, EntryKind kind);
  // Removes one entry (RFC 5011 refreshes must reach the authority, not the cache).
  void drop(const dns::Name& name, uint16_t type, EntryKind kind);
  // Clone of the entry's RRs with TTLs set to what remains (or stale_ttl when expired).
  static dns::RrList with_ttl(const CacheEntry& e, uint64_t now_ms, uint32_t stale_ttl);
  static uint32_t remaining(const CacheEntry& e, uint64_t now_ms) {
    return e.expire_ms > now_ms ? uint32_t((e.expire_ms - now_ms + 999) / 1000) : 0;
  }

  size_t flush(const dns::Name& name, bool subtree);
  size_t flush_all();
  void dump(std::ostream& os, uint64_t now_ms) const;

  // How many expired entries get() has met that a stale lookup could still serve. A
  // lookup pass that leaves this unchanged would find nothing more with allow_stale.
  uint64_t stale_seen() const { return stale_seen_; }
  // False when no cached DNAME RRset has an owner of `labels` labels (assemble() skips
  // the per-ancestor DNAME lookups then); any_dname() is false with none at all.
  bool any_dname() const { return dnames_ != 0; }
  bool may_have_dname(unsigned labels) const {
    return labels >= kMaxLabels || dname_labels_[labels] != 0;
  }

  size_t entries() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evictions() const { return evictions_; }

 private:
  static constexpr unsigned kMaxLabels = 128;  // a 255-octet name has at most 127
  static std::string key(const dns::Name& name, uint16_t type, EntryKind kind);
  // key() into a reused buffer: lookups allocate nothing.
  const std::string& lookup_key(const dns::Name& name, uint16_t type, EntryKind kind);
  void count_dname(const std::string& k, EntryKind kind, int delta);
  // Owners filter: a counter per hash slot of the owner names with entries. A zero slot
  // proves the name has no entry of any kind, so the lookups of a never-seen name (most
  // of a cold miss) skip the big table and its cache misses. Saturated slots stay set.
  size_t owner_slot(std::string_view owner) const {
    return std::hash<std::string_view>{}(owner) & (filter_.size() - 1);
  }
  void count_owner(const std::string& k, int delta);
  void size_filter();  // sized from limits_.max_bytes, rebuilt from map_
  uint32_t clamp_ttl(uint32_t ttl) const;
  void insert(std::string k, CacheEntry e);
  void erase(std::unordered_map<std::string, CacheEntry>::iterator it);
  void evict_to(size_t max);

  CacheLimits limits_;
  std::unordered_map<std::string, CacheEntry> map_;
  std::list<std::string> lru_;  // front = most recently used
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
  uint64_t stale_seen_ = 0;
  std::string kbuf_;
  std::vector<uint16_t> filter_;  // power-of-two size
  size_t dnames_ = 0;
  uint32_t dname_labels_[kMaxLabels] = {};
};

}  // namespace tern::control::resolver
