#include "control/resolver/cache.h"

#include <algorithm>
#include <sys/random.h>

namespace tern::control::resolver {
namespace {

size_t estimate_bytes(const ldns_rr_list* rrs, size_t key_len) {
  // Map node + key + list node + ldns structures; rough but proportional.
  size_t b = 160 + 2 * key_len;
  for (size_t i = 0; rrs && i < ldns_rr_list_rr_count(rrs); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(rrs, i);
    b += 64 + ldns_rdf_size(ldns_rr_owner(rr));
    for (size_t j = 0; j < ldns_rr_rd_count(rr); ++j) b += 32 + ldns_rdf_size(ldns_rr_rdf(rr, j));
  }
  return b;
}

std::shared_ptr<const ldns_rr_list> share(ldns_rr_list* l) {
  return std::shared_ptr<const ldns_rr_list>(l, [](const ldns_rr_list* p) {
    ldns_rr_list_deep_free(const_cast<ldns_rr_list*>(p));
  });
}

uint32_t min_ttl(const ldns_rr_list* rrs) {
  uint32_t t = UINT32_MAX;
  for (size_t i = 0; i < ldns_rr_list_rr_count(rrs); ++i)
    t = std::min(t, ldns_rr_ttl(ldns_rr_list_rr(rrs, i)));
  return t == UINT32_MAX ? 0 : t;
}

}  // namespace

uint32_t negative_ttl(const ldns_rr* soa) {
  if (!soa || ldns_rr_get_type(soa) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(soa) < 7) return 0;
  uint32_t minimum = ldns_rdf2native_int32(ldns_rr_rdf(soa, 6));
  return std::min(ldns_rr_ttl(soa), minimum);
}

std::string CacheShard::key(const dns::Name& name, uint16_t type, EntryKind kind) {
  std::string k = name.key();
  if (kind == EntryKind::nxdomain) type = 0;
  k.push_back(char(type >> 8));
  k.push_back(char(type & 0xff));
  k.push_back(char(kind));
  return k;
}

const std::string& CacheShard::lookup_key(const dns::Name& name, uint16_t type, EntryKind kind) {
  const std::string& w = name.wire();
  kbuf_.resize(w.size() + 3);
  for (size_t i = 0; i < w.size(); ++i) kbuf_[i] = char(dns::fold(uint8_t(w[i])));
  if (kind == EntryKind::nxdomain) type = 0;
  kbuf_[w.size()] = char(type >> 8);
  kbuf_[w.size() + 1] = char(type & 0xff);
  kbuf_[w.size() + 2] = char(kind);
  return kbuf_;
}

void CacheShard::count_index(const std::string& k, EntryKind kind, int delta) {
  if (k.size() < 4) return;
  LabelIndex* idx = nullptr;
  if (kind == EntryKind::nxdomain) {
    idx = nxdomains_;
  } else if (kind == EntryKind::rrset) {
    uint16_t type = uint16_t(uint8_t(k[k.size() - 3]) << 8 | uint8_t(k[k.size() - 2]));
    if (type == LDNS_RR_TYPE_DNAME) idx = dnames_;
  }
  if (!idx) return;
  unsigned labels = 0;
  for (size_t i = 0; i < k.size() - 3 && k[i] != 0; i += 1 + uint8_t(k[i])) ++labels;
  idx->add(labels, delta);
}

void CacheShard::count_owner(const std::string& k, int delta) {
  uint16_t& c = filter_[owner_slot(std::string_view(k.data(), k.size() - 3))];
  if (c != UINT16_MAX) c = uint16_t(c + delta);
}

void CacheShard::size_filter() {
  // At most one entry per 160 bytes (estimate_bytes): a slot per possible entry, as a
  // power of two, 2^10..2^24 slots (2 KiB..32 MiB; 4 MiB for the default 256 MiB cache).
  size_t want = 1024;
  while (want < (1u << 24) && want < limits_.max_bytes / 160) want <<= 1;
  if (filter_.size() == want) return;
  filter_.assign(want, 0);
  for (const auto& kv : map_) count_owner(kv.first, +1);
}

uint32_t CacheShard::clamp_ttl(uint32_t ttl) const {
  return std::min(std::max(ttl, limits_.ttl_floor), limits_.ttl_cap);
}

void CacheShard::set_limits(const CacheLimits& l) {
  limits_ = l;
  evict_to(limits_.max_bytes);
  size_filter();
}

void CacheShard::erase(std::unordered_map<std::string, CacheEntry>::iterator it) {
  bytes_ -= it->second.bytes;
  count_index(it->first, it->second.kind, -1);
  count_owner(it->first, -1);
  lru_.erase(it->second.lru);
  map_.erase(it);
}

void CacheShard::evict_to(size_t max) {
  while (bytes_ > max && !lru_.empty()) {
    auto it = map_.find(lru_.back());
    erase(it);
    ++evictions_;
  }
}

void CacheShard::insert(std::string k, CacheEntry e) {
  e.bytes = estimate_bytes(e.rrs.get(), k.size()) + (e.proof ? estimate_bytes(e.proof.get(), 0) : 0);
  if (e.bytes > limits_.max_bytes) return;
  auto old = map_.find(k);
  if (old != map_.end()) erase(old);
  evict_to(limits_.max_bytes - e.bytes);
  lru_.push_front(k);
  e.lru = lru_.begin();
  bytes_ += e.bytes;
  count_index(k, e.kind, +1);
  count_owner(k, +1);
  map_.emplace(std::move(k), std::move(e));
}

const char* security_text(Security s) {
  switch (s) {
    case Security::unchecked: return "unchecked";
    case Security::secure: return "secure";
    case Security::insecure: return "insecure";
    case Security::bogus: return "bogus";
    case Security::indeterminate: return "indeterminate";
  }
  return "?";
}

CacheEntry* CacheShard::peek(const dns::Name& name, uint16_t type, EntryKind kind) {
  auto it = map_.find(key(name, type, kind));
  return it == map_.end() ? nullptr : &it->second;
}

void CacheShard::drop(const dns::Name& name, uint16_t type, EntryKind kind) {
  auto it = map_.find(key(name, type, kind));
  if (it != map_.end()) erase(it);
}

bool CacheShard::put_rrset(const ldns_rr_list* rrset, Trust trust, uint64_t now_ms,
                           const ldns_rr_list* proof) {
  if (!rrset || ldns_rr_list_rr_count(rrset) == 0) return false;
  const ldns_rr* first = ldns_rr_list_rr(rrset, 0);
  dns::Name owner = dns::owner(first);
  std::string k = key(owner, uint16_t(ldns_rr_get_type(first)), EntryKind::rrset);
  auto it = map_.find(k);
  if (it != map_.end() && it->second.expire_ms > now_ms && it->second.trust > trust) return false;
  CacheEntry e;
  e.kind = EntryKind::rrset;
  e.rrs = share(ldns_rr_list_clone(rrset));
  e.ttl = clamp_ttl(min_ttl(rrset));
  e.expire_ms = now_ms + uint64_t(e.ttl) * 1000;
  e.trust = trust;
  if (proof && ldns_rr_list_rr_count(proof)) e.proof = share(ldns_rr_list_clone(proof));
  insert(std::move(k), std::move(e));
  return true;
}

void CacheShard::put_negative(const dns::Name& name, uint16_t type, EntryKind kind,
                         const ldns_rr_list* soa, uint64_t now_ms) {
  if (!soa || ldns_rr_list_rr_count(soa) == 0) return;  // RFC 2308 §5
  CacheEntry e;
  e.kind = kind;
  e.rrs = share(ldns_rr_list_clone(soa));
  uint32_t ttl = negative_ttl(ldns_rr_list_rr(soa, 0));
  e.ttl = std::min(std::max(ttl, limits_.ttl_floor), limits_.neg_ttl_cap);
  e.expire_ms = now_ms + uint64_t(e.ttl) * 1000;
  e.trust = Trust::answer_auth;
  insert(key(name, type, kind), std::move(e));
}

void CacheShard::put_servfail(const dns::Name& name, uint16_t type, uint64_t now_ms) {
  if (limits_.servfail_ttl == 0) return;
  CacheEntry e;
  e.kind = EntryKind::servfail;
  e.rrs = share(ldns_rr_list_new());
  e.ttl = limits_.servfail_ttl;
  e.expire_ms = now_ms + uint64_t(e.ttl) * 1000;
  // Never served stale: a SERVFAIL record only damps retries while fresh.
  insert(key(name, type, EntryKind::servfail), std::move(e));
}

CacheEntry* CacheShard::get(const dns::Name& name, uint16_t type, EntryKind kind, uint64_t now_ms,
                       bool allow_stale) {
  const std::string& k = lookup_key(name, type, kind);
  if (filter_[owner_slot(std::string_view(k.data(), k.size() - 3))] == 0) return nullptr;
  auto it = map_.find(k);
  if (it == map_.end()) return nullptr;
  CacheEntry& e = it->second;
  if (e.expire_ms <= now_ms) {
    bool servable = limits_.serve_stale && kind != EntryKind::servfail &&
                    now_ms - e.expire_ms <= uint64_t(limits_.stale_window) * 1000;
    if (servable) ++stale_seen_;
    bool usable = allow_stale && servable;
    if (!usable) {
      // Keep expired data around for serve-stale; drop it once past the window.
      if (now_ms - e.expire_ms > uint64_t(limits_.stale_window) * 1000 ||
          !limits_.serve_stale || kind == EntryKind::servfail)
        erase(it);
      return nullptr;
    }
  }
  ++e.hits;
  lru_.splice(lru_.begin(), lru_, e.lru);
  return &e;
}

dns::RrList Cache::with_ttl(const CacheEntry& e, uint64_t now_ms, uint32_t stale_ttl) {
  dns::RrList out(ldns_rr_list_clone(e.rrs.get()));
  uint32_t ttl = e.expire_ms > now_ms ? remaining(e, now_ms) : stale_ttl;
  for (size_t i = 0; i < ldns_rr_list_rr_count(out.get()); ++i) {
    ldns_rr* rr = ldns_rr_list_rr(out.get(), i);
    // Negative answers carry the SOA with the negative TTL (RFC 2308 §3).
    ldns_rr_set_ttl(rr, ttl);
  }
  return out;
}

size_t CacheShard::flush(const dns::Name& name, bool subtree) {
  size_t n = 0;
  std::string nk = name.key();
  for (auto it = map_.begin(); it != map_.end();) {
    const std::string& k = it->first;
    std::string_view owner(k.data(), k.size() - 3);
    bool match = owner == nk;
    if (!match && subtree) {
      dns::Name o;
      match = dns::Name::from_wire(owner, o) && o.under(name);
    }
    if (match) {
      auto next = std::next(it);
      erase(it);
      it = next;
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

size_t CacheShard::flush_all() {
  size_t n = map_.size();
  for (const auto& [k, e] : map_) count_index(k, e.kind, -1);  // the shared indexes
  map_.clear();
  lru_.clear();
  bytes_ = 0;
  std::fill(filter_.begin(), filter_.end(), uint16_t(0));
  return n;
}

bool CacheShard::claim_prefetch(const dns::Name& name, uint16_t type) {
  auto it = map_.find(lookup_key(name, type, EntryKind::rrset));
  if (it == map_.end() || it->second.prefetching) return false;
  it->second.prefetching = true;
  return true;
}

void CacheShard::dump(std::ostream& os, uint64_t now_ms) const {
  // One line per entry, most recently used first: state, remaining TTL, kind, then RRs.
  for (const auto& k : lru_) {
    const CacheEntry& e = map_.at(k);
    std::string_view ow(k.data(), k.size() - 3);
    dns::Name owner;
    dns::Name::from_wire(ow, owner);
    uint16_t type = uint16_t(uint8_t(k[k.size() - 3]) << 8 | uint8_t(k[k.size() - 2]));
    bool fresh = e.expire_ms > now_ms;
    os << "; " << owner.text() << ' ' << (type ? dns::type_text(type) : "*") << ' '
       << (e.kind == EntryKind::rrset      ? "rrset"
           : e.kind == EntryKind::nodata   ? "nodata"
           : e.kind == EntryKind::nxdomain ? "nxdomain"
                                           : "servfail")
       << (fresh ? " ttl=" + std::to_string(Cache::remaining(e, now_ms))
                 : " stale=" + std::to_string((now_ms - e.expire_ms) / 1000) + "s")
       << " trust=" << int(e.trust) << " hits=" << e.hits << '\n';
    dns::RrList rrs = Cache::with_ttl(e, now_ms, 0);
    for (size_t i = 0; i < ldns_rr_list_rr_count(rrs.get()); ++i) {
      char* s = ldns_rr2str(ldns_rr_list_rr(rrs.get(), i));
      if (s) os << s;
      free(s);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Cache: the shards behind their locks.

CacheLimits Cache::shard_limits(CacheLimits l, size_t shards) {
  l.max_bytes = std::max<size_t>(l.max_bytes / shards, 1);
  return l;
}

Cache::Cache(const CacheLimits& l, size_t shards) {
  // Seeded: owner names come from the network, and an attacker who could aim every name at
  // one shard would serialise the loops on its lock.
  if (getrandom(&seed_, sizeof seed_, 0) != ssize_t(sizeof seed_)) seed_ = 0x9e3779b97f4a7c15ull;
  shards = std::max<size_t>(shards, 1);
  CacheLimits sl = shard_limits(l, shards);
  for (size_t i = 0; i < shards; ++i)
    shards_.push_back(std::make_unique<Locked>(sl, &dnames_, &nxdomains_));
}

Cache::Locked& Cache::pick(const dns::Name& owner) {
  // FNV-1a over the case-folded wire name, from a random basis.
  uint64_t h = seed_;
  for (char c : owner.wire()) h = (h ^ dns::fold(uint8_t(c))) * 0x100000001b3ull;
  h ^= h >> 29;
  return *shards_[h % shards_.size()];
}

void Cache::set_limits(const CacheLimits& l) {
  CacheLimits sl = shard_limits(l, shards_.size());
  for (auto& s : shards_) {
    std::lock_guard g(s->mu);
    s->shard.set_limits(sl);
  }
}

bool Cache::put_rrset(const ldns_rr_list* rrset, Trust trust, uint64_t now_ms,
                      const ldns_rr_list* proof) {
  if (!rrset || ldns_rr_list_rr_count(rrset) == 0) return false;
  Locked& s = pick(dns::owner(ldns_rr_list_rr(rrset, 0)));
  std::lock_guard g(s.mu);
  return s.shard.put_rrset(rrset, trust, now_ms, proof);
}

CacheHit Cache::peek(const dns::Name& name, uint16_t type, EntryKind kind) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  CacheEntry* e = s.shard.peek(name, type, kind);
  return e ? CacheHit(*e) : CacheHit();
}

void Cache::set_security(const dns::Name& name, uint16_t type, EntryKind kind, Security sec,
                         uint16_t ede, uint64_t expire_cap_ms) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  if (CacheEntry* e = s.shard.peek(name, type, kind)) {
    e->sec = sec;
    e->ede = ede;
    e->expire_ms = std::min(e->expire_ms, expire_cap_ms);
  }
}

void Cache::drop(const dns::Name& name, uint16_t type, EntryKind kind) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  s.shard.drop(name, type, kind);
}

void Cache::put_negative(const dns::Name& name, uint16_t type, EntryKind kind,
                         const ldns_rr_list* soa, uint64_t now_ms) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  s.shard.put_negative(name, type, kind, soa, now_ms);
}

void Cache::put_servfail(const dns::Name& name, uint16_t type, uint64_t now_ms) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  s.shard.put_servfail(name, type, now_ms);
}

CacheHit Cache::get(const dns::Name& name, uint16_t type, EntryKind kind, uint64_t now_ms,
                    bool allow_stale) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  uint64_t stale_before = s.shard.stale_seen();
  CacheEntry* e = s.shard.get(name, type, kind, now_ms, allow_stale);
  if (s.shard.stale_seen() != stale_before) stale_seen_.fetch_add(1, std::memory_order_relaxed);
  return e ? CacheHit(*e) : CacheHit();
}

CacheHit Cache::nxdomain_above(const dns::Name& name, uint64_t now_ms, bool allow_stale) {
  if (!nxdomains_.any() || name.labels() < 2) return {};
  for (dns::Name z = name.parent(); !z.is_root(); z = z.parent()) {
    if (!nxdomains_.may_have(z.labels())) continue;
    if (CacheHit h = get(z, 0, EntryKind::nxdomain, now_ms, allow_stale)) return h;
  }
  return {};
}

bool Cache::claim_prefetch(const dns::Name& name, uint16_t type) {
  Locked& s = pick(name);
  std::lock_guard g(s.mu);
  return s.shard.claim_prefetch(name, type);
}

size_t Cache::flush(const dns::Name& name, bool subtree) {
  if (!subtree) {
    Locked& s = pick(name);
    std::lock_guard g(s.mu);
    return s.shard.flush(name, false);
  }
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->shard.flush(name, true);
  }
  return n;
}

size_t Cache::flush_all() {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->shard.flush_all();
  }
  return n;
}

void Cache::dump(std::ostream& os, uint64_t now_ms) const {
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    s->shard.dump(os, now_ms);
  }
}

size_t Cache::entries() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->shard.entries();
  }
  return n;
}

size_t Cache::bytes() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->shard.bytes();
  }
  return n;
}

uint64_t Cache::evictions() const {
  uint64_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->shard.evictions();
  }
  return n;
}

}  // namespace tern::control::resolver
