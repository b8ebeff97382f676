// tern::cache — lock-free sharded DNS message cache.
//
// Concurrency contract
// --------------------
// Readers (dataplane worker lcores) call lookup()/lookup_burst()/render() millions of
// times per second.
//   - They never lock, never wait, and never write a shared cache line on a hit. The one
//     exception is the entry's CLOCK access bit, a relaxed byte that is only stored when it
//     is found clear, so a hot entry is written at most once per eviction sweep.
//   - Each reader owns a cache-aligned slot (its QSBR epoch and its hit/miss/stale
//     counters), written only by that reader.
// Writers (the dataplane service thread, the control socket): one writer per shard at a
//   time, serialised by the shard's writer mutex. Readers never take it.
// Publication: an Entry is fully built, then published into the shard index with a
//   release store of a packed (tag, pointer) slot; readers load slots with acquire. Entries
//   are immutable once published: a replace publishes a new Entry into the same slot. A
//   reader therefore sees the old entry or the new one, never a torn one, and compares the
//   full key before it returns a hit (the 16-bit slot tag only filters). A reader may scan
//   a group of slots with plain vector loads to choose a candidate, but it re-loads the
//   chosen slot with acquire and checks it before touching the entry; a stale scan only
//   sends it down the slot-by-slot path.
// The index itself grows or is compacted by building a new table and publishing its
//   pointer (release); the old table is reclaimed like an entry.
// Reclamation (QSBR): each online reader calls quiescent() once per loop iteration, and
//   holds no Entry pointer across it. An unlinked entry (replace, evict, flush, expiry) is
//   tagged with the epoch at which it was unlinked and freed only once every online reader
//   has passed a quiescent point at or after that epoch. A reader that goes idle (sleeps)
//   calls offline() first and online() when it wakes, so it never holds reclamation back.
//   Memory waiting for reclamation is visible in Stats::retired_bytes.
// Bounded memory: Config::max_bytes covers entries (with allocator overhead estimated) and
//   index tables. Each shard evicts with CLOCK (access bit; the hand sweeps short runs from
//   random slots, see evict_locked()) to stay under max_bytes / shards.
// Register/unregister take a small mutex (never on the hot path). A writer never waits for
//   readers: memory they may still see is parked until they pass a quiescent point.
//
// Standard library only: no DPDK, no ldns.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "wire/wire.h"

namespace tern::cache {

namespace detail {
struct Table;  // per-shard open-addressing index, cache.cc
}

inline constexpr uint8_t kKeyDO = 1, kKeyCD = 2;

// Canonical key: lowercased uncompressed qname, qtype, qclass, DO/CD. hash covers all of it.
// The fixed fields come first so that a key for a name under 49 bytes is one cache line.
struct Key {
  uint64_t hash;
  uint16_t qtype, qclass;
  uint8_t flags;
  uint8_t name_len;
  uint8_t name[wire::kMaxNameLen];
};

// Seeded keyed hash over the canonical key (the key is attacker-controlled: a fixed hash
// would let a client aim every name at one probe chain). Seeded randomly per Cache.
class Hasher {
 public:
  explicit Hasher(uint64_t seed) noexcept;
  // Hash of an already canonical name plus the rest of the key. Inline: it is on every
  // query's path, right after the name is folded.
  uint64_t hash(std::span<const uint8_t> canonical_name, uint16_t qtype, uint16_t qclass,
                uint8_t flags) const noexcept;
  static uint64_t mum(uint64_t a, uint64_t b) noexcept {
    const __uint128_t r = static_cast<__uint128_t>(a) * b;
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
  }
  uint64_t seed0() const noexcept { return s0_; }
  uint64_t seed1() const noexcept { return s1_; }

 private:
  uint64_t s0_, s1_;
};

// wyhash-style: 64x64->128 multiply folded, keyed by two per-cache secrets. The name is
// hashed 8 bytes at a time from the key buffer (zero-padded tail, little-endian), then the rest of the
// key and the length are folded in, so names of different lengths never collide by padding.
inline uint64_t Hasher::hash(std::span<const uint8_t> name, uint16_t qtype, uint16_t qclass,
                             uint8_t flags) const noexcept {
  uint64_t h = s0_;
  const size_t n = name.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, name.data() + i, 8);
    h = mum(h ^ w, s1_);
  }
  if (const size_t r = n - i) {  // 1-7 tail bytes into the low end of a word, no memcpy call
    const uint8_t* p = name.data() + i;
    uint64_t w = 0;
    size_t j = 0;
    if (r & 4) {
      uint32_t x;
      std::memcpy(&x, p, 4);
      w = x;
      j = 4;
    }
    if (r & 2) {
      uint16_t x;
      std::memcpy(&x, p + j, 2);
      w |= uint64_t{x} << (8 * j);
      j += 2;
    }
    if (r & 1) w |= uint64_t{p[j]} << (8 * j);
    h = mum(h ^ w, s1_);
  }
  const uint64_t tail = (uint64_t{qtype} << 32) | (uint64_t{qclass} << 16) |
                        (uint64_t{flags} << 8) | n;
  return mum(h ^ tail ^ s0_, s1_ ^ 0x1d8e4e27c47d124full);
}

// Builds a key straight from packet bytes: the question name at msg[off] is validated
// (a query's question may not be compressed) and lowercased while copied, then hashed
// 8 bytes at a time from the L1-hot copy; *end = offset after QCLASS.
wire::Status make_key(const Hasher&, std::span<const uint8_t> msg, size_t off, uint8_t flags,
                      Key& out, size_t* end) noexcept;
// Key from a question name the caller has already validated the way make_key would (the
// dataplane's parse_query walks the same labels): name_len includes the root byte, `avail`
// is how many bytes may be read from `name` (at least name_len). Skips the label walk.
void make_key_validated(const Hasher&, const uint8_t* name, size_t name_len, size_t avail,
                        uint16_t qtype, uint16_t qclass, uint8_t flags, Key& out) noexcept;
// Key from a canonical name (ternctl, tests).
void make_key(const Hasher&, std::span<const uint8_t> canonical_name, uint16_t qtype,
              uint16_t qclass, uint8_t flags, Key& out) noexcept;

enum class NegKind : uint8_t { none, nxdomain, nodata, servfail };
const char* to_string(NegKind) noexcept;

// Immutable once published. Layout: this header, then name[name_len], then
// ttl_offsets[ttl_count()] (uint16, relative to the sections start), then sections bytes
// (answer+authority+additional as received, OPT removed, compression pointers untouched:
// they stay valid because the answer is rebuilt with the same 12-byte header and a
// question of identical length).
class Entry {
 public:
  std::span<const uint8_t> name() const noexcept { return {data(), name_len_}; }
  uint16_t qtype() const noexcept { return qtype_; }
  uint16_t qclass() const noexcept { return qclass_; }
  uint8_t key_flags() const noexcept { return key_flags_; }
  // Header flags word of the response as stored (QR, AA, TC=0, RD, RA, AD, CD, rcode low 4).
  uint16_t flags() const noexcept { return flags_; }
  uint8_t rcode() const noexcept { return static_cast<uint8_t>(flags_ & wire::kRcodeMask); }
  uint16_t ancount() const noexcept { return ancount_; }
  uint16_t nscount() const noexcept { return nscount_; }
  uint16_t arcount() const noexcept { return arcount_; }  // OPT not counted
  NegKind neg_kind() const noexcept { return static_cast<NegKind>(neg_kind_); }
  uint32_t stored_at() const noexcept { return stored_at_; }
  uint32_t ttl() const noexcept { return ttl_; }
  uint8_t stale_answer_ttl() const noexcept { return stale_ttl_; }
  size_t sections_len() const noexcept { return sections_len_; }
  std::span<const uint8_t> sections() const noexcept {
    return {data() + name_len_ + 2 * ttl_count(), sections_len_};
  }
  // One TTL per stored record: OPT is not stored, and no record is stored without its TTL.
  size_t ttl_count() const noexcept { return size_t{ancount_} + nscount_ + arcount_; }
  uint16_t ttl_offset(size_t i) const noexcept {
    uint16_t v;
    std::memcpy(&v, data() + name_len_ + 2 * i, 2);
    return v;
  }
  // now_s < stored_at + ttl; a clock that steps back keeps the entry fresh.
  bool fresh(uint32_t now_s) const noexcept { return now_s - stored_at_ < ttl_ || now_s < stored_at_; }
  bool referenced() const noexcept { return ref_.load(std::memory_order_relaxed) != 0; }

 private:
  friend class Cache;
  friend struct EntryBuilder;
  Entry() = default;
  const uint8_t* data() const noexcept { return reinterpret_cast<const uint8_t*>(this + 1); }
  uint8_t* data() noexcept { return reinterpret_cast<uint8_t*>(this + 1); }

  // 28 bytes: every byte here is paid per cached answer (a small answer's entry then fits
  // jemalloc's 64-byte class, one cache line).
  uint32_t stored_at_;
  uint32_t ttl_;
  uint16_t sections_len_;
  uint16_t flags_;
  uint16_t ancount_, nscount_, arcount_;  // stored records; their sum is the TTL count
  uint8_t neg_kind_;
  uint8_t stale_ttl_;                 // Config::stale_answer_ttl, clamped to 255 s
  mutable std::atomic<uint8_t> ref_;  // CLOCK access bit; readers: relaxed set, writer: clear
  [[maybe_unused]] uint8_t spare_ = 0;
  // The key, last and in Key's order (qtype, qclass, flags, name_len, then the name at
  // data()): a lookup compares it with the Key's bytes from qtype on in one pass.
  uint16_t qtype_, qclass_;
  uint8_t key_flags_;
  uint8_t name_len_;
};

struct Lookup {
  const Entry* entry;
  enum Kind : uint8_t { kMiss, kHit, kStale } kind;
};

struct Config {
  size_t max_bytes = 64u << 20;
  unsigned shards = 16;        // rounded up to a power of two, at most 256
  unsigned max_readers = 64;
  uint32_t ttl_floor = 0, ttl_cap = 86400, neg_ttl_cap = 3600, servfail_ttl = 5;
  uint32_t stale_window = 86400;   // RFC 8767 4 (1-3 days suggested); 0 disables serve-stale
  uint32_t stale_answer_ttl = 30;  // RFC 8767 4; values above 255 are clamped to 255
};

// Why insert_response() did not store a response. One list: to_string() and counters.
#define TERN_CACHE_REJECT(X)                                                             \
  X(none, "stored")                                                                      \
  X(malformed, "message failed wire validation (see wire_status)")                      \
  X(not_response, "QR bit clear")                                                        \
  X(bad_opcode, "opcode is not QUERY")                                                   \
  X(bad_qdcount, "not exactly one question")                                             \
  X(truncated, "TC bit set: a truncated answer is not a cacheable answer")              \
  X(opt_not_last, "OPT is not the last record of the additional section")               \
  X(client_subnet, "EDNS Client Subnet answer: tailored to one subnet (RFC 7871 7.3)")  \
  X(name_reads_ttl, "a compression pointer reads a name out of TTL bytes, which ageing rewrites") \
  X(uncacheable_rcode, "rcode other than NOERROR, NXDOMAIN, SERVFAIL")                   \
  X(negative_without_soa, "NXDOMAIN/NODATA without an SOA in authority (RFC 2308 5)")   \
  X(zero_ttl, "TTL works out to 0")                                                      \
  X(too_large, "answer sections larger than 65535 bytes or too many records")           \
  X(servfail_over_stale, "SERVFAIL does not replace an entry that can still be served stale") \
  X(servfail_explained, "SERVFAIL with an Extended DNS Error (RFC 8914), e.g. DNSSEC bogus: the resolver judges it again, not the cache") \
  X(no_memory, "entry larger than a shard's byte budget")

enum class Reject : uint8_t {
#define X(name, text) name,
  TERN_CACHE_REJECT(X)
#undef X
};
inline constexpr size_t kRejectCount = 0
#define X(name, text) +1
    TERN_CACHE_REJECT(X)
#undef X
    ;
const char* to_string(Reject) noexcept;
const char* describe(Reject) noexcept;

struct InsertResult {
  enum Outcome : uint8_t { kInserted, kReplaced, kRejected } outcome;
  Reject reason;             // Reject::none unless rejected
  wire::Status wire_status;  // the wire rule that failed when reason == malformed
  bool stored() const noexcept { return outcome != kRejected; }
};

using ReaderId = unsigned;

struct EntryInfo {
  std::span<const uint8_t> name;  // canonical wire; wire::name_to_text() prints it
  uint16_t qtype, qclass;
  uint8_t key_flags;
  uint8_t rcode;
  NegKind neg_kind;
  uint16_t ancount, nscount, arcount;
  uint32_t stored_at, ttl, stale_window;
  size_t sections_len;
  size_t bytes;                   // accounted size of this entry
  unsigned shard;
  bool referenced;
};

struct ShardStats {
  uint64_t entries = 0, bytes = 0;  // gauges: live entries, accounted bytes (entries + index)
  uint64_t inserts = 0, replaces = 0, evictions = 0, expired_evictions = 0, flushed = 0;
  uint64_t index_rebuilds = 0;
  uint64_t index_slots = 0;         // gauge
};
struct ReaderStats {
  bool registered = false;
  uint64_t hits = 0, misses = 0, stale = 0;
};
struct Stats {
  std::vector<ShardStats> shards;
  std::vector<ReaderStats> readers;
  ShardStats total;
  uint64_t hits = 0, misses = 0, stale = 0;
  uint64_t rejects[kRejectCount] = {};          // cache-wide: a malformed answer has no shard
  uint64_t malformed[wire::kStatusCount] = {};  // rejects by wire rule
  uint64_t retired_bytes = 0;                   // unlinked, waiting for readers (gauge)
  uint64_t max_bytes = 0;
};

class Cache {
 public:
  explicit Cache(const Config&);
  Cache(const Config&, uint64_t hash_seed);  // deterministic seed: tests and benchmarks
  ~Cache();  // every reader must be unregistered or stopped
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  const Hasher& hasher() const noexcept { return hasher_; }
  // The construction-time config; the limits below may have changed since (limits()).
  const Config& config() const noexcept { return cfg_; }

  // Limits that change at run time (tern-control pushes [cache] and [dataplane] cache-bytes).
  // Any thread may set them; the TTL rules apply to answers stored from then on, the stale
  // window and the byte budget at once (a smaller budget evicts on the following writes).
  // False, and nothing changed, when max_bytes is too small for the shards.
  struct Limits {
    size_t max_bytes;
    uint32_t ttl_floor, ttl_cap, neg_ttl_cap, servfail_ttl, stale_window, stale_answer_ttl;
    bool operator==(const Limits&) const = default;
  };
  bool set_limits(const Limits&, std::string* error);
  Limits limits() const noexcept;

  // ---- readers ----
  // register_reader() returns a slot index, online. Throws std::runtime_error when all
  // max_readers slots are taken.
  ReaderId register_reader();
  void unregister_reader(ReaderId) noexcept;
  // Call only while online: it publishes "seen the current epoch", which is what online()
  // does too, so calling it after offline() puts the reader back online.
  void quiescent(ReaderId r) noexcept {
    readers_[r].seen.store(epoch_.load(std::memory_order_acquire), std::memory_order_release);
  }
  void offline(ReaderId) noexcept;
  void online(ReaderId) noexcept;

  // Touches the index line the key hashes to; call for a burst before the lookups.
  void prefetch(const Key& k) const noexcept { prefetch_hash(k.hash); }
  void prefetch_hash(uint64_t hash) const noexcept;
  // Hit: fresh entry. Stale: expired but within the stale window and allow_stale. Counts
  // hit/miss/stale in the reader's own slot. The entry stays valid until the reader's next
  // quiescent()/offline().
  Lookup lookup(ReaderId, const Key&, uint32_t now_s, bool allow_stale) const noexcept;
  // Burst form (hash the burst, prefetch the index lines, then the candidate entries, then
  // verify), so that the cache misses of a burst overlap instead of queueing. Same results
  // and counters as lookup() on each key; out[i] answers keys[i]. Returns hits + stale.
  static constexpr size_t kBurst = 32;
  size_t lookup_burst(ReaderId, std::span<const Key* const> keys, uint32_t now_s,
                      bool allow_stale, std::span<Lookup> out) const noexcept;

  // Copies the entry's sections into out and ages every TTL by now_s - stored_at (never
  // below 0; stale answers get stale_answer_ttl). Returns bytes written, 0 if out is too
  // small.
  static size_t render(const Entry&, uint32_t now_s, bool stale, std::span<uint8_t> out) noexcept;

  // ---- writers ----
  // Parses and validates a full DNS response and stores it (see cache.cc for the rules:
  // RFC 2308 negative TTLs, short SERVFAIL, floors and caps, RFC 8767 stale window).
  // Throws std::bad_alloc when it cannot allocate (the caller counts and carries on).
  InsertResult insert_response(std::span<const uint8_t> response, uint32_t now_s);
  size_t flush_all();
  size_t flush_name(std::span<const uint8_t> canonical_name);     // every type and flag
  size_t flush_subtree(std::span<const uint8_t> canonical_name);  // name and below
  // Frees retired memory every reader has moved past. Writers do this on every write to a
  // shard; call it from housekeeping too, so a shard that stops being written to does not
  // keep its last retired entries until the next write.
  void reclaim();

  // Walks every entry; runs alongside readers (it is a reader itself) and does not block
  // writers. Returns false if no reader slot was free.
  bool dump(const std::function<void(const EntryInfo&)>&) const;
  Stats stats() const;  // cumulative, never reset

  // Accounted bytes of an entry with these payload sizes (allocator overhead included).
  static size_t entry_bytes(size_t name_len, size_t n_ttls, size_t sections_len) noexcept;

 private:
  struct Shard;
  // 128-byte aligned: the adjacent-line prefetcher pairs 64-byte lines, so a neighbour's
  // counters must not share the pair.
  struct alignas(128) ReaderSlot {
    std::atomic<uint64_t> seen{0};  // epoch seen at last quiescent point; kOffline when idle
    std::atomic<uint64_t> hits{0}, misses{0}, stale{0};  // written by the owner only
    std::atomic<bool> registered{false};
  };

  Shard& shard_for(uint64_t hash) const noexcept {
    return *shards_[(hash >> 40) & shard_mask_];
  }
  // SERVFAIL entries are never served stale (RFC 8767 is about answers, not failures).
  uint32_t stale_window_for(const Entry& e) const noexcept {
    return e.neg_kind_ == static_cast<uint8_t>(NegKind::servfail) ? 0 : stale_window_.load(std::memory_order_relaxed);
  }
  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t min_seen() const noexcept;
  static const Entry* find(const detail::Table*, const Key&) noexcept;
  // Hit, stale or miss for a matching entry (or none), and the entry's access bit set on a
  // hit; classify() also counts it in the reader's slot.
  Lookup::Kind kind_of(const Entry*, uint32_t now_s, bool allow_stale) const noexcept;
  Lookup classify(ReaderSlot&, const Entry*, uint32_t now_s, bool allow_stale) const noexcept;
  void retire_locked(Shard&, void* p, size_t bytes, bool is_table) ;
  void unlink_locked(Shard&, detail::Table*, size_t slot, Entry*);
  void reclaim_locked(Shard&);
  detail::Table* rebuild_locked(Shard&, size_t want);
  void evict_locked(Shard&, uint32_t now_s, const Entry* keep);
  template <class Pred>
  size_t flush_if(Pred&&);

  Config cfg_;
  Hasher hasher_;
  unsigned shard_mask_;
  // Run-time limits (set_limits): written by any thread, read relaxed by the writer's insert
  // and, for the stale window, by readers; a reader may see the old or the new value.
  std::atomic<size_t> shard_budget_, max_bytes_;
  std::atomic<uint32_t> ttl_floor_, ttl_cap_, neg_ttl_cap_, servfail_ttl_, stale_window_, stale_answer_ttl_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<ReaderSlot[]> readers_;
  mutable std::atomic<uint64_t> epoch_{1};
  std::atomic<unsigned> reader_hwm_{0};  // slots [0, hwm) may be in use; only grows
  mutable std::mutex reg_mu_;  // reader slot (un)registration only, never on the hot path
  std::atomic<uint64_t> rejects_[kRejectCount];
  std::atomic<uint64_t> malformed_[wire::kStatusCount];
};

}  // namespace tern::cache
