// RRset cache and negative cache of the recursion engine (RFC 2181 §5, RFC 2308,
// RFC 8767, RFC 8020). Answers are assembled per message from these RRsets by the iterator.
//
// Concurrency contract: one Cache is shared by every event loop of tern-control. It is
// split into kShards shards chosen by a seeded hash of the owner name; each shard is a
// CacheShard (plain single-threaded tables) behind its own mutex, so there is no global
// lock: two loops contend only when they touch the same shard at the same instant. Every
// public method locks at most one shard at a time (flush, dump and the totals visit them in
// turn), so there is no lock order to get wrong. get() returns a snapshot (CacheHit) taken
// under the lock: the RRs are immutable and reference counted, so a snapshot stays valid
// whatever other loops store, evict or flush afterwards. A reader may therefore observe an
// entry that was replaced a moment later, never a half-written one.
//
// Bounded by bytes (an estimate of the heap each entry holds), max_bytes split evenly
// over the shards; eviction is exact LRU within a shard, so LRU-approximate overall. A
// stored RRset never replaces a fresh one of higher trust (RFC 2181 §5.4.1): glue cannot
// overwrite an authoritative answer.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
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
  // The RRset (rrset) or the SOA RRset (nodata/nxdomain; may be empty). Never modified once
  // stored: snapshots on other threads share it.
  std::shared_ptr<const ldns_rr_list> rrs;
  uint64_t expire_ms = 0;
  uint32_t ttl = 0;   // TTL as stored (after floor/cap), for prefetch's "last 10%"
  Trust trust = Trust::additional;
  uint32_t hits = 0;
  bool prefetching = false;
  Security sec = Security::unchecked;
  uint16_t ede = 0xffff;  // RFC 8914 code explaining `sec` when bogus; 0xffff: none
  // For an RRset expanded from a wildcard: the NSEC/NSEC3 records (with their RRSIGs)
  // of the same reply that prove the query name itself does not exist (RFC 4035 §5.3.4).
  std::shared_ptr<const ldns_rr_list> proof;  // immutable once stored, like rrs
  size_t bytes = 0;
  std::list<std::string>::iterator lru;
};

// RFC 2308 §5: the negative TTL is the minimum of the SOA's TTL and its MINIMUM field.
uint32_t negative_ttl(const ldns_rr* soa);

// Counts of entries of one kind by the label count of their owner, shared by the shards:
// lets a lookup skip, without taking any lock, the ancestors at depths that hold none.
struct LabelIndex {
  static constexpr unsigned kMaxLabels = 128;  // a 255-octet name has at most 127
  std::atomic<size_t> total{0};
  std::array<std::atomic<uint32_t>, kMaxLabels> at{};
  void add(unsigned labels, int delta) {
    total.fetch_add(size_t(delta), std::memory_order_relaxed);
    at[std::min(labels, kMaxLabels - 1)].fetch_add(uint32_t(delta), std::memory_order_relaxed);
  }
  bool any() const { return total.load(std::memory_order_relaxed) != 0; }
  bool may_have(unsigned labels) const {
    return labels >= kMaxLabels || at[labels].load(std::memory_order_relaxed) != 0;
  }
};

// One shard: single-threaded; Cache holds its mutex around every call. The methods mean what
// Cache's of the same name say (below); here they hand out the stored entry itself.
class CacheShard {
 public:
  CacheShard(const CacheLimits& l, LabelIndex* dnames, LabelIndex* nxdomains)
      : limits_(l), dnames_(dnames), nxdomains_(nxdomains) { size_filter(); }
  void set_limits(const CacheLimits& l);

  bool put_rrset(const ldns_rr_list* rrset, Trust trust, uint64_t now_ms,
                 const ldns_rr_list* proof = nullptr);
  void put_negative(const dns::Name& name, uint16_t type, EntryKind kind,
                    const ldns_rr_list* soa, uint64_t now_ms);
  void put_servfail(const dns::Name& name, uint16_t type, uint64_t now_ms);
  // nullptr if none.
  CacheEntry* get(const dns::Name& name, uint16_t type, EntryKind kind, uint64_t now_ms,
                  bool allow_stale = false);
  // The entry as stored, fresh or not, without touching LRU order or hit counts.
  CacheEntry* peek(const dns::Name& name, uint16_t type, EntryKind kind);
  // Removes one entry (RFC 5011 refreshes must reach the authority, not the cache).
  void drop(const dns::Name& name, uint16_t type, EntryKind kind);

  size_t flush(const dns::Name& name, bool subtree);
  size_t flush_all();
  void dump(std::ostream& os, uint64_t now_ms) const;  // most recently used first

  uint64_t stale_seen() const { return stale_seen_; }
  // Marks the entry as being refreshed; false when it is gone or already marked.
  bool claim_prefetch(const dns::Name& name, uint16_t type);

  size_t entries() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evictions() const { return evictions_; }

 private:
  static std::string key(const dns::Name& name, uint16_t type, EntryKind kind);
  // key() into a reused buffer: lookups allocate nothing.
  const std::string& lookup_key(const dns::Name& name, uint16_t type, EntryKind kind);
  void count_index(const std::string& k, EntryKind kind, int delta);
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
  LabelIndex* dnames_;     // DNAME RRsets (assemble's per-ancestor DNAME lookups)
  LabelIndex* nxdomains_;  // NXDOMAIN entries (the RFC 8020 cut)
};


// A snapshot of one entry (see the contract at the top). Compares to nullptr like the
// pointer it replaces: `if (auto e = cache.get(...))`.
class CacheHit {
 public:
  CacheHit() = default;
  CacheHit(std::nullptr_t) {}
  explicit CacheHit(const CacheEntry& e) : e_(e), ok_(true) {}
  explicit operator bool() const { return ok_; }
  const CacheEntry* operator->() const { return &e_; }
  const CacheEntry& operator*() const { return e_; }
  friend bool operator==(const CacheHit& h, std::nullptr_t) { return !h.ok_; }

 private:
  CacheEntry e_;
  bool ok_ = false;
};

class Cache {
 public:
  static constexpr size_t kShards = 16;
  // `shards` other than kShards is for tests that need one exact LRU order.
  explicit Cache(const CacheLimits& l, size_t shards = kShards);
  void set_limits(const CacheLimits& l);  // evicts down to the new size at once

  // Stores a clone of one RRset; TTL floor/cap applied. Returns false when refused
  // (lower trust than a fresh entry, or empty).
  // The list holds the RRset's records first, then the RRSIGs that cover it; `proof`: the
  // NSEC/NSEC3 records proving a wildcard expansion (CacheEntry::proof).
  bool put_rrset(const ldns_rr_list* rrset, Trust trust, uint64_t now_ms,
                 const ldns_rr_list* proof = nullptr);
  // NXDOMAIN for `name` (type ignored) or NODATA for (name, type), with the zone's SOA
  // RRset; not cached without an SOA (RFC 2308 §5).
  void put_negative(const dns::Name& name, uint16_t type, EntryKind kind,
                    const ldns_rr_list* soa, uint64_t now_ms);
  void put_servfail(const dns::Name& name, uint16_t type, uint64_t now_ms);

  // The validator's view: a snapshot of the entry as stored, fresh or not, without touching
  // LRU order or hit counts; and the verdict recorded on it (under the shard's lock, so a
  // loop that validated an entry tells every other loop). A bogus verdict also shortens the
  // entry's life to expire_cap_ms (bogus-ttl). Nothing happens if the entry is gone.
  CacheHit peek(const dns::Name& name, uint16_t type, EntryKind kind);
  void set_security(const dns::Name& name, uint16_t type, EntryKind kind, Security sec,
                    uint16_t ede, uint64_t expire_cap_ms = UINT64_MAX);
  // Removes one entry (RFC 5011 refreshes must reach the authority, not the cache).
  void drop(const dns::Name& name, uint16_t type, EntryKind kind);

  // Fresh entry, or with allow_stale an expired one within stale_window. Empty if none.
  // Bumps LRU and hit count.
  CacheHit get(const dns::Name& name, uint16_t type, EntryKind kind, uint64_t now_ms,
               bool allow_stale = false);
  // RFC 8020: the NXDOMAIN entry of the closest proper ancestor of `name` that has one
  // (everything below a nonexistent name does not exist either). Ancestors at label
  // depths without any NXDOMAIN entry cost no lookup.
  CacheHit nxdomain_above(const dns::Name& name, uint64_t now_ms, bool allow_stale = false);
  // Marks a fresh entry as being refreshed by prefetch; true for the one caller that wins.
  bool claim_prefetch(const dns::Name& name, uint16_t type);
  // Clone of the entry's RRs with TTLs set to what remains (or stale_ttl when expired).
  static dns::RrList with_ttl(const CacheEntry& e, uint64_t now_ms, uint32_t stale_ttl);
  static uint32_t remaining(const CacheEntry& e, uint64_t now_ms) {
    return e.expire_ms > now_ms ? uint32_t((e.expire_ms - now_ms + 999) / 1000) : 0;
  }

  size_t flush(const dns::Name& name, bool subtree);
  size_t flush_all();
  void dump(std::ostream& os, uint64_t now_ms) const;  // shard by shard

  // How many expired entries get() has met that a stale lookup could still serve. A
  // lookup pass that leaves this unchanged would find nothing more with allow_stale.
  uint64_t stale_seen() const { return stale_seen_.load(std::memory_order_relaxed); }
  // False when no cached DNAME RRset has an owner of `labels` labels (assemble() skips
  // the per-ancestor DNAME lookups then); any_dname() is false with none at all.
  bool any_dname() const { return dnames_.any(); }
  bool may_have_dname(unsigned labels) const { return dnames_.may_have(labels); }

  size_t entries() const;
  size_t bytes() const;
  uint64_t evictions() const;
  size_t shards() const { return shards_.size(); }

 private:
  struct alignas(64) Locked {  // one cache line of its own for each mutex
    mutable std::mutex mu;
    CacheShard shard;
    Locked(const CacheLimits& l, LabelIndex* d, LabelIndex* n) : shard(l, d, n) {}
  };
  static CacheLimits shard_limits(CacheLimits l, size_t shards);
  Locked& pick(const dns::Name& owner);

  uint64_t seed_;
  LabelIndex dnames_, nxdomains_;
  std::atomic<uint64_t> stale_seen_{0};
  std::vector<std::unique_ptr<Locked>> shards_;
};

}  // namespace tern::control::resolver
