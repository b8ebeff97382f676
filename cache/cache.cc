// Cache implementation. The concurrency contract is in cache.h; this file keeps to it:
// readers only load (acquire) slots and table pointers, writers hold their shard's mutex.
#include "cache/cache.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <new>
#include <random>
#include <stdexcept>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tern::cache {

namespace {

using wire::Status;

constexpr uint64_t kEmpty = 0;
constexpr uint64_t kTomb = 1;  // never a valid Entry address
constexpr uint64_t kPtrMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kOffline = std::numeric_limits<uint64_t>::max();
constexpr size_t kMinSlots = 16;  // a multiple of detail::kGroup

inline uint64_t pack(const Entry* e, uint64_t hash) noexcept {
  return (hash & ~kPtrMask) | (reinterpret_cast<uintptr_t>(e) & kPtrMask);
}
inline Entry* unpack(uint64_t v) noexcept {
  return reinterpret_cast<Entry*>(static_cast<uintptr_t>(v & kPtrMask));
}
inline bool live(uint64_t v) noexcept { return v > kTomb; }

inline Status label_type_error(uint8_t c) noexcept {
  return (c & 0xC0) == 0x40 ? Status::label_too_long : Status::bad_label_type;
}

struct RejectText {
  const char* id;
  const char* text;
};
constexpr RejectText kRejectText[] = {
#define X(name, text) {#name, text},
    TERN_CACHE_REJECT(X)
#undef X
};

}  // namespace

const char* to_string(Reject r) noexcept {
  const auto i = static_cast<size_t>(r);
  return i < kRejectCount ? kRejectText[i].id : "unknown";
}
const char* describe(Reject r) noexcept {
  const auto i = static_cast<size_t>(r);
  return i < kRejectCount ? kRejectText[i].text : "unknown reason";
}
const char* to_string(NegKind k) noexcept {
  switch (k) {
    case NegKind::none: return "positive";
    case NegKind::nxdomain: return "nxdomain";
    case NegKind::nodata: return "nodata";
    case NegKind::servfail: return "servfail";
  }
  return "unknown";
}

// ---- hashing and keys --------------------------------------------------------------------

Hasher::Hasher(uint64_t seed) noexcept
    : s0_(Hasher::mum(seed ^ 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull) | 1),
      s1_(Hasher::mum(seed ^ 0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull) | 1) {}

namespace {

// Lowercases n wire-name bytes from src into dst. Label length bytes are at most 63, below
// 'A' (65), so the whole name can be folded without telling lengths from letters. 16 bytes
// at a time while both the source (src_avail bytes readable) and the 255-byte destination
// have room for a full vector; bytewise for the tail.
inline void lower_copy(uint8_t* dst, const uint8_t* src, size_t n, size_t src_avail) noexcept {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i lo = _mm_set1_epi8(static_cast<char>(('A' - 1) ^ 0x80));
  const __m128i hi = _mm_set1_epi8(static_cast<char>(('Z' + 1) ^ 0x80));
  const __m128i bit = _mm_set1_epi8(0x20);
  auto fold16 = [&](size_t at) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + at));
    const __m128i x = _mm_xor_si128(v, flip);  // unsigned order as signed
    const __m128i up = _mm_and_si128(_mm_cmpgt_epi8(x, lo), _mm_cmpgt_epi8(hi, x));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + at), _mm_or_si128(v, _mm_and_si128(up, bit)));
  };
  // Whole blocks, reading on past the name while the source has room (dst holds
  // kMaxNameLen bytes; past n is never read as name). Blocks that do not overlap matter:
  // the hash reads the name back 8 bytes at a time, and a load that spans two stores
  // cannot be forwarded from them (a ~20-cycle stall per key).
  for (; i < n && i + 16 <= src_avail && i + 16 <= wire::kMaxNameLen; i += 16) fold16(i);
  if (i >= n) return;
  if (n >= 16) {  // the source ends within a block of the name's end: overlap the last one
    fold16(n - 16);
    return;
  }
#else
  (void)src_avail;
#endif
  for (; i < n; ++i) dst[i] = wire::to_lower(src[i]);
}

}  // namespace

void make_key_validated(const Hasher& hs, const uint8_t* name, size_t name_len, size_t avail,
                        uint16_t qtype, uint16_t qclass, uint8_t flags, Key& out) noexcept {
  lower_copy(out.name, name, name_len, avail);
  out.name_len = static_cast<uint8_t>(name_len);
  out.qtype = qtype;
  out.qclass = qclass;
  out.flags = flags;
  out.hash = hs.hash({out.name, name_len}, qtype, qclass, flags);
}

Status make_key(const Hasher& hs, std::span<const uint8_t> msg, size_t off, uint8_t flags,
                Key& out, size_t* end) noexcept {
  // 1. Walk the label lengths (a handful of steps), with the checks in wire order.
  size_t p = off;
  size_t len = 0;
  for (;;) {
    if (p >= msg.size()) return Status::truncated;
    const uint8_t c = msg[p];
    // A query's question is the first name in the message: nothing before it to point
    // at, so a pointer here is malformed (RFC 1035 4.1.4).
    if ((c & 0xC0) == 0xC0) return Status::compressed_question;
    if (c & 0xC0) return label_type_error(c);
    if (len + c + 1 > wire::kMaxNameLen) return Status::name_too_long;
    if (c == 0) {
      ++len;
      ++p;
      break;
    }
    if (p + 1 + c > msg.size()) return Status::truncated;
    len += size_t{c} + 1;
    p += size_t{c} + 1;
  }
  if (msg.size() - p < 4) return Status::truncated;
  // 2. Fold and hash it like any validated name.
  make_key_validated(hs, msg.data() + off, len, msg.size() - off, wire::load16(msg.data() + p),
                     wire::load16(msg.data() + p + 2), flags, out);
  *end = p + 4;
  return Status::ok;
}

void make_key(const Hasher& hs, std::span<const uint8_t> name, uint16_t qtype, uint16_t qclass,
              uint8_t flags, Key& out) noexcept {
  const size_t n = std::min(name.size(), wire::kMaxNameLen);
  make_key_validated(hs, name.data(), n, n, qtype, qclass, flags, out);
}

// ---- index table -------------------------------------------------------------------------

namespace detail {

// Open-addressing, linear probing from the start of a group. Slot = (hash tag in the top
// 16 bits, Entry address in the low 48). Slots and the table pointer are the only things
// readers load.
// Groups: a key's probe sequence starts at the first slot of its home group, kGroup slots
// that fill one cache line. A key is almost always in its home group, so a lookup reads
// one line and finds the key among the group's tags without a data-dependent loop (see
// group_match()); only keys displaced past their group need the slot-by-slot walk.
inline constexpr size_t kGroup = 8;
struct alignas(64) Table {
  size_t cap;  // a multiple of kGroup, >= kMinSlots; groups come from a multiply, not a mask
  std::atomic<uint64_t>* slots() noexcept { return reinterpret_cast<std::atomic<uint64_t>*>(this + 1); }
  const std::atomic<uint64_t>* slots() const noexcept {
    return reinterpret_cast<const std::atomic<uint64_t>*>(this + 1);
  }
  size_t capacity() const noexcept { return cap; }
  // First slot of the home group: Lemire's multiply-shift range reduction of the hash's
  // low 32 bits over the groups (the slot tag is the top 16 bits, the shard bits 40-47:
  // independent).
  size_t home(uint64_t hash) const noexcept {
    return (((hash & 0xFFFFFFFFu) * (cap / kGroup)) >> 32) * kGroup;
  }
  size_t next(size_t i) const noexcept { return ++i == cap ? 0 : i; }
  static size_t bytes(size_t cap) noexcept { return sizeof(Table) + cap * sizeof(uint64_t); }

  static Table* create(size_t cap) {  // cap: a multiple of kGroup (callers account bytes(cap))
    void* mem = ::operator new(bytes(cap), std::align_val_t{64});
    auto* t = new (mem) Table;
    t->cap = cap;
    for (size_t i = 0; i < cap; ++i) new (&t->slots()[i]) std::atomic<uint64_t>(kEmpty);
    return t;
  }
  static void destroy(Table* t) noexcept { ::operator delete(t, std::align_val_t{64}); }
};

static_assert(sizeof(Table) % 64 == 0 && kGroup * sizeof(uint64_t) == 64,
              "a group is one cache line, and slots start on a line");

}  // namespace detail

namespace {
using detail::Table;
using detail::kGroup;

// Readers scan a group with vector loads only to pick a candidate slot; the slot is then
// loaded again atomically (acquire) and checked. ThreadSanitizer would see the vector load
// as a plain read racing the writer, so its build takes the slot-by-slot path.
#if defined(__SANITIZE_THREAD__)  // GCC
#define TERN_CACHE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)  // clang
#define TERN_CACHE_TSAN 1
#endif
#endif
#if defined(__SSE2__) && !defined(TERN_CACHE_TSAN)
#define TERN_CACHE_GROUP_SIMD 1
// Bit 2i+1 set when slot i of the group at g has the tag in tag_bits's top 16 bits.
// Slot i's tag is the upper half of dword 2i+1; the two signed-saturating packs keep each
// dword's sign, which is the sign of its upper 16-bit compare.
[[gnu::always_inline]] inline unsigned group_match(const std::atomic<uint64_t>* g,
                                                   uint64_t tag_bits) noexcept {
  const __m128i t = _mm_set1_epi16(static_cast<short>(tag_bits >> 48));
  const auto* v = reinterpret_cast<const __m128i*>(g);
  const __m128i a = _mm_packs_epi32(_mm_cmpeq_epi16(_mm_load_si128(v), t),
                                    _mm_cmpeq_epi16(_mm_load_si128(v + 1), t));
  const __m128i b = _mm_packs_epi32(_mm_cmpeq_epi16(_mm_load_si128(v + 2), t),
                                    _mm_cmpeq_epi16(_mm_load_si128(v + 3), t));
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_packs_epi16(a, b))) & 0xAAAAu;
}
#endif
void free_entry(Entry* e) noexcept { ::operator delete(static_cast<void*>(e)); }

// The key bytes an entry and a Key share, from qtype to the end of the name, contiguous in
// both (see Entry): 6 + name_len bytes.
constexpr size_t kKeyFixed = offsetof(Key, name) - offsetof(Key, qtype);
static_assert(kKeyFixed == 6 && offsetof(Key, name_len) == offsetof(Key, qtype) + 5,
              "Key: qtype, qclass, flags, name_len must sit right before the name");

// n >= 7 bytes (the fixed key fields and at least the root label), compared inline:
// 16-byte blocks with the last one overlapping, or two overlapping words. Only bytes
// [0, n) of either side are read.
[[gnu::always_inline]] inline bool same_bytes(const uint8_t* a, const uint8_t* b, size_t n) noexcept {
#if defined(__SSE2__)
  if (n >= 16) {
    auto eq = [&](size_t at) {
      return _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + at)),
                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + at)));
    };
    __m128i acc = eq(n - 16);
    for (size_t i = 0; i + 16 < n; i += 16) acc = _mm_and_si128(acc, eq(i));
    return _mm_movemask_epi8(acc) == 0xFFFF;
  }
#endif
  uint64_t x, y, u, v;
  if (n >= 8) {
    std::memcpy(&x, a, 8);
    std::memcpy(&y, b, 8);
    std::memcpy(&u, a + n - 8, 8);
    std::memcpy(&v, b + n - 8, 8);
    return ((x ^ y) | (u ^ v)) == 0;
  }
  uint32_t p, q, r, t;
  std::memcpy(&p, a, 4);
  std::memcpy(&q, b, 4);
  std::memcpy(&r, a + n - 4, 4);
  std::memcpy(&t, b + n - 4, 4);
  return ((p ^ q) | (r ^ t)) == 0;
}

// Same length first (so that only the entry's own bytes are read), then qtype, qclass,
// flags, length and name in one compare: the entry stores them contiguously, ending its
// header (static_assert in EntryBuilder).
[[gnu::always_inline]] inline bool key_matches(const Entry& e, const Key& k) noexcept {
  return e.name().size() == k.name_len &&
         same_bytes(e.name().data() - kKeyFixed, reinterpret_cast<const uint8_t*>(&k.qtype),
                    kKeyFixed + k.name_len);
}

}  // namespace

struct Cache::Shard {
  alignas(64) std::atomic<Table*> table{nullptr};  // readers: acquire load; writer: release store

  // Everything below: writer only, under mu. The atomics are gauges and counters also
  // read (relaxed) by stats().
  alignas(64) std::mutex mu;
  size_t live = 0, tombs = 0;
  // The eviction hand's next two runs, chosen one write ahead so that their index lines
  // (run2) and then their entries (run1) are fetched while other writes go on, instead of
  // stalling the write that evicts. Only hints: checked against the table's size on use.
  size_t run1 = SIZE_MAX, run2 = SIZE_MAX;
  uint64_t rng = 0x9e3779b97f4a7c15ull;  // eviction hand jumps; never 0
  size_t bytes = 0;  // live entries + current table
  struct Retired {
    void* p;
    uint64_t epoch;  // freeable once every online reader has seen this epoch
    size_t bytes;
    bool table;
  };
  std::vector<Retired> retired;
  size_t retired_unstamped = 0;  // tail of `retired` not yet given an epoch
  size_t retired_bytes = 0;
  std::atomic<uint64_t> g_entries{0}, g_bytes{0}, g_slots{0}, g_retired{0};
  std::atomic<uint64_t> inserts{0}, replaces{0}, evictions{0}, expired_evictions{0},
      flushed{0}, rebuilds{0};
};

namespace {
inline void add(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
}  // namespace

// ---- construction ------------------------------------------------------------------------

namespace {
uint64_t random_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}
}  // namespace

Cache::Cache(const Config& cfg) : Cache(cfg, random_seed()) {}

bool Cache::set_limits(const Limits& l, std::string* error) {
  const size_t shards = size_t{shard_mask_} + 1;
  const size_t min_budget = Table::bytes(kMinSlots) + 4096;
  if (l.max_bytes / shards < min_budget) {
    if (error)
      *error = "cache: max_bytes " + std::to_string(l.max_bytes) + " is too small for " + std::to_string(shards) +
               " shards; give at least " + std::to_string(min_budget * shards);
    return false;
  }
  constexpr auto r = std::memory_order_relaxed;
  max_bytes_.store(l.max_bytes, r);
  shard_budget_.store(l.max_bytes / shards, r);
  ttl_floor_.store(l.ttl_floor, r);
  ttl_cap_.store(l.ttl_cap, r);
  neg_ttl_cap_.store(l.neg_ttl_cap, r);
  servfail_ttl_.store(l.servfail_ttl, r);
  stale_window_.store(l.stale_window, r);
  stale_answer_ttl_.store(l.stale_answer_ttl, r);
  return true;
}

Cache::Limits Cache::limits() const noexcept {
  constexpr auto r = std::memory_order_relaxed;
  return {max_bytes_.load(r),    ttl_floor_.load(r),    ttl_cap_.load(r),         neg_ttl_cap_.load(r),
          servfail_ttl_.load(r), stale_window_.load(r), stale_answer_ttl_.load(r)};
}

Cache::Cache(const Config& cfg, uint64_t seed) : cfg_(cfg), hasher_(seed) {
  if (cfg_.max_readers == 0) throw std::invalid_argument("cache: max_readers must be at least 1");
  const unsigned shards = std::bit_ceil(std::clamp(cfg_.shards, 1u, 256u));
  cfg_.shards = shards;
  shard_mask_ = shards - 1;
  std::string err;
  if (!set_limits({cfg_.max_bytes, cfg_.ttl_floor, cfg_.ttl_cap, cfg_.neg_ttl_cap, cfg_.servfail_ttl,
                   cfg_.stale_window, cfg_.stale_answer_ttl},
                  &err))
    throw std::invalid_argument(err);
  for (unsigned i = 0; i < shards; ++i) {
    auto s = std::make_unique<Shard>();
    Table* t = Table::create(kMinSlots);
    s->bytes = Table::bytes(kMinSlots);
    s->g_bytes.store(s->bytes, std::memory_order_relaxed);
    s->g_slots.store(kMinSlots, std::memory_order_relaxed);
    s->table.store(t, std::memory_order_release);
    s->rng ^= hasher_.seed0() * (i + 1);
    if (s->rng == 0) s->rng = 1;
    shards_.push_back(std::move(s));
  }
  readers_ = std::make_unique<ReaderSlot[]>(cfg_.max_readers);
  for (unsigned i = 0; i < cfg_.max_readers; ++i) readers_[i].seen.store(kOffline);
  for (auto& r : rejects_) r.store(0);
  for (auto& m : malformed_) m.store(0);
}

Cache::~Cache() {
  for (auto& s : shards_) {
    Table* t = s->table.load(std::memory_order_relaxed);
    for (size_t i = 0; i < t->capacity(); ++i) {
      const uint64_t v = t->slots()[i].load(std::memory_order_relaxed);
      if (live(v)) free_entry(unpack(v));
    }
    Table::destroy(t);
    for (auto& r : s->retired) {
      if (r.table) Table::destroy(static_cast<Table*>(r.p));
      else free_entry(static_cast<Entry*>(r.p));
    }
  }
}

size_t Cache::entry_bytes(size_t name_len, size_t n_ttls, size_t sections_len) noexcept {
  const size_t req = sizeof(Entry) + name_len + 2 * n_ttls + sections_len;
  // glibc malloc: 8-byte chunk header, 16-byte granularity, 32-byte minimum chunk.
  const size_t glibc = std::max<size_t>(32, (req + 8 + 15) & ~size_t{15});
  // jemalloc (tern-dataplane's heap, malloc_conf.cc): no header; 16-byte classes up to
  // 128, then four classes per doubling. The budget counts whichever is larger, so it
  // holds with either allocator.
  size_t je;
  if (req <= 128) {
    je = (req + 15) & ~size_t{15};
  } else {
    const size_t step = size_t{1} << (std::bit_width(req - 1) - 3);
    je = (req + step - 1) & ~(step - 1);
  }
  return std::max(glibc, je);
}

// ---- readers -----------------------------------------------------------------------------

ReaderId Cache::register_reader() {
  std::lock_guard lk(reg_mu_);
  for (unsigned i = 0; i < cfg_.max_readers; ++i) {
    if (!readers_[i].registered.load(std::memory_order_relaxed)) {
      readers_[i].registered.store(true, std::memory_order_relaxed);
      // Widen the writers' scan before going online: online()'s RMW on epoch_ then
      // publishes both the bound and the slot to any writer it races with.
      if (i + 1 > reader_hwm_.load(std::memory_order_relaxed))
        reader_hwm_.store(i + 1, std::memory_order_relaxed);
      online(i);
      return i;
    }
  }
  throw std::runtime_error("cache: all " + std::to_string(cfg_.max_readers) +
                           " reader slots are taken; raise Config::max_readers");
}

void Cache::unregister_reader(ReaderId r) noexcept {
  std::lock_guard lk(reg_mu_);
  readers_[r].seen.store(kOffline, std::memory_order_release);
  readers_[r].registered.store(false, std::memory_order_relaxed);
}

void Cache::offline(ReaderId r) noexcept {
  readers_[r].seen.store(kOffline, std::memory_order_release);
}

void Cache::online(ReaderId r) noexcept {
  // Going online needs store-load ordering against a writer doing (unlink; epoch RMW; read
  // `seen`). Both sides read-modify-write epoch_ after their store, so the two RMWs are
  // ordered: if ours is later we acquire the writer's unlink, if it is later the writer
  // acquires our `seen` and waits for us. No standalone fence (ThreadSanitizer models RMWs).
  readers_[r].seen.store(epoch_.load(std::memory_order_acquire), std::memory_order_relaxed);
  epoch_.fetch_add(0, std::memory_order_acq_rel);
}

uint64_t Cache::min_seen() const noexcept {
  uint64_t m = kOffline;
  const unsigned n = reader_hwm_.load(std::memory_order_acquire);
  for (unsigned i = 0; i < n; ++i)
    m = std::min(m, readers_[i].seen.load(std::memory_order_acquire));
  return m;
}

void Cache::prefetch_hash(uint64_t hash) const noexcept {
  const Table* t = shard_for(hash).table.load(std::memory_order_acquire);
  __builtin_prefetch(&t->slots()[t->home(hash)]);
}

namespace {
inline bool tagged(uint64_t v, uint64_t tag) noexcept { return live(v) && (v & ~kPtrMask) == tag; }

// The slot on k's probe sequence that holds k, and the value read from it (what a reader
// must use: the slot may change right after); slot == SIZE_MAX if k is not in the table.
// Readers and the writer (under its lock) both probe this way.
struct Probe {
  size_t slot;
  uint64_t v;
};
Probe probe(const Table* t, const Key& k) noexcept {
  const std::atomic<uint64_t>* slots = t->slots();
  const uint64_t tag = k.hash & ~kPtrMask;
  const size_t h = t->home(k.hash);
  size_t i = h, n = 0;
#if defined(TERN_CACHE_GROUP_SIMD)
  // The home group first: every slot with the tag, in slot order.
  for (unsigned m = group_match(slots + h, tag); m; m &= m - 1) {
    const size_t at = h + (std::countr_zero(m) >> 1);
    const uint64_t v = slots[at].load(std::memory_order_acquire);
    if (tagged(v, tag) && key_matches(*unpack(v), k)) return {at, v};
  }
  // Linear probing never passes an empty slot, so if the home group has one, the key's
  // sequence ends in it and the key is not in the table.
  for (size_t j = 0; j < kGroup; ++j)
    if (slots[h + j].load(std::memory_order_acquire) == kEmpty) return {SIZE_MAX, 0};
  i = t->next(h + kGroup - 1);
  n = kGroup;
#endif
  for (; n < t->cap; ++n, i = t->next(i)) {
    const uint64_t v = slots[i].load(std::memory_order_acquire);
    if (v == kEmpty) break;
    if (tagged(v, tag) && key_matches(*unpack(v), k)) return {i, v};  // the tag only filters
  }
  return {SIZE_MAX, 0};
}
}  // namespace

const Entry* Cache::find(const Table* t, const Key& k) noexcept {
  const Probe p = probe(t, k);
  return p.slot == SIZE_MAX ? nullptr : unpack(p.v);
}

[[gnu::always_inline]] inline Lookup::Kind Cache::kind_of(const Entry* e, uint32_t now_s,
                                                          bool allow_stale) const noexcept {
  if (!e) return Lookup::kMiss;
  const uint32_t age = now_s - e->stored_at_;
  Lookup::Kind kind = Lookup::kMiss;
  if (now_s < e->stored_at_ || age < e->ttl_)
    kind = Lookup::kHit;
  else if (allow_stale && age - e->ttl_ < stale_window_for(*e))
    kind = Lookup::kStale;
  // else expired: a miss; the writer replaces or evicts it.
  // CLOCK access bit: written only when clear, so a hot entry's line stays shared.
  if (kind != Lookup::kMiss && !e->ref_.load(std::memory_order_relaxed))
    e->ref_.store(1, std::memory_order_relaxed);
  return kind;
}

[[gnu::always_inline]] inline Lookup Cache::classify(ReaderSlot& rs, const Entry* e, uint32_t now_s,
                                                     bool allow_stale) const noexcept {
  const Lookup::Kind kind = kind_of(e, now_s, allow_stale);
  bump(kind == Lookup::kHit ? rs.hits : kind == Lookup::kStale ? rs.stale : rs.misses);
  return {kind == Lookup::kMiss ? nullptr : e, kind};
}

Lookup Cache::lookup(ReaderId r, const Key& k, uint32_t now_s, bool allow_stale) const noexcept {
  const Table* t = shard_for(k.hash).table.load(std::memory_order_acquire);
  return classify(readers_[r], find(t, k), now_s, allow_stale);
}

size_t Cache::lookup_burst(ReaderId r, std::span<const Key* const> keys, uint32_t now_s,
                           bool allow_stale, std::span<Lookup> out) const noexcept {
  // Three passes over the burst, each a tight loop: fetch every index line, then read each
  // slot and fetch its entry, then verify. The misses of one pass overlap, and each pass
  // starts when the previous one's first line has had a whole pass to arrive. (A rolling
  // single-loop pipeline with a fixed distance measured 5-20% slower here.)
  ReaderSlot& rs = readers_[r];
  const size_t n = std::min(keys.size(), out.size());
  size_t hits = 0, stale = 0;
  const Table* tabs[kBurst];
  const Entry* cand[kBurst];
  size_t homes[kBurst];
  for (size_t base = 0; base < n; base += kBurst) {
    const size_t m = std::min(kBurst, n - base);
    const Key* const* ks = keys.data() + base;
    // 1. Index lines.
    for (size_t i = 0; i < m; ++i) {
      const Key& k = *ks[i];
      tabs[i] = shard_for(k.hash).table.load(std::memory_order_acquire);
      homes[i] = tabs[i]->home(k.hash);
      __builtin_prefetch(&tabs[i]->slots()[homes[i]]);
    }
    // 2. The first slot of the home group with the key's tag; that entry's header and
    // name. No candidate (a miss, or a key displaced past its group) and a candidate that
    // is not the key (a tag collision, 1 in 65536 per slot) are settled by find() in 3.
    for (size_t i = 0; i < m; ++i) {
      const Key& k = *ks[i];
      const std::atomic<uint64_t>* g = tabs[i]->slots() + homes[i];
      const uint64_t tag = k.hash & ~kPtrMask;
      cand[i] = nullptr;
#if defined(TERN_CACHE_GROUP_SIMD)
      const unsigned mm = group_match(g, tag);
      if (!mm) continue;
      const uint64_t v = g[std::countr_zero(mm) >> 1].load(std::memory_order_acquire);
#else
      const uint64_t v = g[0].load(std::memory_order_acquire);
#endif
      if (!tagged(v, tag)) continue;
      cand[i] = unpack(v);
      // Header and name; the second prefetch is a no-op when they share a line (a
      // branch on the address instead measured slower: it mispredicts half the time).
      const auto* c = reinterpret_cast<const uint8_t*>(cand[i]);
      __builtin_prefetch(c);
      __builtin_prefetch(c + sizeof(Entry) + k.name_len - 1);
      // And the start of the sections (past a few TTL offsets), which render copies
      // next: tern-bench's stage time drops ~10 ns per query with it.
      __builtin_prefetch(c + sizeof(Entry) + k.name_len + 15);
    }
    // 3. Verify.
    // Counted in registers and added to the reader's slot once per call: a store per key
    // to one counter would chain every key through store-to-load forwarding.
    for (size_t i = 0; i < m; ++i) {
      const Key& k = *ks[i];
      const Entry* e = cand[i];
      if (!e || !key_matches(*e, k)) e = find(tabs[i], k);
      const Lookup::Kind kind = kind_of(e, now_s, allow_stale);
      out[base + i] = {kind == Lookup::kMiss ? nullptr : e, kind};
      hits += kind == Lookup::kHit;
      stale += kind == Lookup::kStale;
    }
  }
  if (hits) bump(rs.hits, hits);
  if (stale) bump(rs.stale, stale);
  if (n != hits + stale) bump(rs.misses, n - hits - stale);
  return hits + stale;
}

namespace {
// Typical answers are tens of bytes: copy them inline in 16-byte blocks (the last one
// overlapping) rather than through a libc call; long ones go to memcpy.
inline void copy_sections(uint8_t* d, const uint8_t* s, size_t n) noexcept {
#if defined(__SSE2__)
  auto block = [&](size_t at) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + at),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + at)));
  };
  if (n >= 16 && n <= 128) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) block(i);
    if (i < n) block(n - 16);
    return;
  }
  if (n >= 8 && n < 16) {
    uint64_t a, b;
    std::memcpy(&a, s, 8);
    std::memcpy(&b, s + n - 8, 8);
    std::memcpy(d, &a, 8);
    std::memcpy(d + n - 8, &b, 8);
    return;
  }
#endif
  std::memcpy(d, s, n);
}
}  // namespace

size_t Cache::render(const Entry& e, uint32_t now_s, bool stale, std::span<uint8_t> out) noexcept {
  const auto sec = e.sections();
  if (out.size() < sec.size()) return 0;
  copy_sections(out.data(), sec.data(), sec.size());
  const uint32_t age = now_s > e.stored_at_ ? now_s - e.stored_at_ : 0;
  const size_t n_ttls = e.ttl_count();
  for (size_t i = 0; i < n_ttls; ++i) {
    uint8_t* p = out.data() + e.ttl_offset(i);
    uint32_t v;
    if (stale) {
      v = e.stale_ttl_;  // RFC 8767 4: a stale answer carries a short TTL
    } else {
      const uint32_t t = wire::load32(p);
      v = t > age ? t - age : 0;
    }
    wire::store32(p, v);
  }
  return sec.size();
}

// ---- writers -----------------------------------------------------------------------------

void Cache::retire_locked(Shard& s, void* p, size_t bytes, bool is_table) {
  s.retired.push_back({p, 0, bytes, is_table});
  ++s.retired_unstamped;
  s.retired_bytes += bytes;
}

// Stamps what this write retired with a fresh epoch, then frees whatever every online
// reader has moved past.
void Cache::reclaim_locked(Shard& s) {
  if (s.retired_unstamped) {
    const uint64_t e = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
    for (size_t i = s.retired.size() - s.retired_unstamped; i < s.retired.size(); ++i)
      s.retired[i].epoch = e;
    s.retired_unstamped = 0;
  }
  if (s.retired.empty()) return;
  const uint64_t m = min_seen();
  size_t keep = 0;
  for (auto& r : s.retired) {
    if (r.epoch <= m) {
      if (r.table) Table::destroy(static_cast<Table*>(r.p));
      else free_entry(static_cast<Entry*>(r.p));
      s.retired_bytes -= r.bytes;
    } else {
      s.retired[keep++] = r;
    }
  }
  s.retired.resize(keep);
  s.g_retired.store(s.retired_bytes, std::memory_order_relaxed);
}

void Cache::reclaim() {
  for (auto& s : shards_) {
    std::lock_guard lk(s->mu);
    reclaim_locked(*s);
  }
}

namespace {

size_t entry_size(const Entry& e) noexcept {
  return Cache::entry_bytes(e.name().size(), e.ttl_count(), e.sections_len());
}

// First empty or tombstone slot on k's probe sequence. The table is never full (live +
// tombstones stay below 4/5), so this always finds one.
size_t free_slot(const Table* t, uint64_t hash) noexcept {
  size_t i = t->home(hash);
  for (;;) {
    const uint64_t v = t->slots()[i].load(std::memory_order_relaxed);
    if (!live(v)) return i;
    i = t->next(i);
  }
}

}  // namespace

static_assert(sizeof(Entry) == 28, "Entry header grew: it is paid once per cached answer");

struct EntryBuilder {
  static_assert(offsetof(Entry, qtype_) + 6 == sizeof(Entry) &&
                    offsetof(Entry, qclass_) == offsetof(Entry, qtype_) + 2 &&
                    offsetof(Entry, key_flags_) == offsetof(Entry, qtype_) + 4 &&
                    offsetof(Entry, name_len_) == offsetof(Entry, qtype_) + 5,
                "Entry: the key fields end the header in Key's order (key_matches)");
  static Entry* build(const Key& k, std::span<const uint8_t> sections,
                      const std::vector<uint16_t>& ttl_offs) {
    const size_t size = sizeof(Entry) + k.name_len + 2 * ttl_offs.size() + sections.size();
    void* mem = ::operator new(size);
    if (reinterpret_cast<uintptr_t>(mem) & ~kPtrMask) {
      ::operator delete(mem);
      // Index slots keep a hash tag in the top 16 bits of the entry address.
      throw std::runtime_error(
          "cache: allocator returned an address above 2^48; the index needs 48-bit user "
          "addresses (do not map the heap above 128 TiB)");
    }
    auto* e = new (mem) Entry;
    e->name_len_ = k.name_len;
    e->qtype_ = k.qtype;
    e->qclass_ = k.qclass;
    e->key_flags_ = k.flags;
    e->sections_len_ = static_cast<uint16_t>(sections.size());
    e->ref_.store(0, std::memory_order_relaxed);
    uint8_t* d = e->data();
    std::memcpy(d, k.name, k.name_len);
    if (!ttl_offs.empty()) std::memcpy(d + k.name_len, ttl_offs.data(), 2 * ttl_offs.size());
    std::memcpy(d + k.name_len + 2 * ttl_offs.size(), sections.data(), sections.size());
    return e;
  }
  static uint8_t* sections(Entry* e) { return e->data() + e->name_len_ + 2 * e->ttl_count(); }
};

InsertResult Cache::insert_response(std::span<const uint8_t> msg, uint32_t now_s) {
  auto reject = [&](Reject why, Status st = Status::ok) {
    add(rejects_[static_cast<size_t>(why)]);
    if (why == Reject::malformed) add(malformed_[static_cast<size_t>(st)]);
    return InsertResult{InsertResult::kRejected, why, st};
  };

  // 0. The key, from the question exactly as a query would build it, and the index line
  // it goes to, fetched while the message is validated. The DO bit is in the OPT record
  // at the end, so hash both ways and fetch both lines; a failure here is reported after
  // validation, which names the first broken rule.
  Key key;
  size_t qend;
  uint64_t hash_do = 0;
  const uint8_t cd =
      msg.size() >= wire::kHeaderSize && (wire::load16(msg.data() + 2) & wire::kFlagCD) ? kKeyCD : 0;
  const Status key_st = make_key(hasher_, msg, wire::kHeaderSize, cd, key, &qend);
  if (key_st == Status::ok) {
    prefetch_hash(key.hash);
    // Only a message with an additional section can carry OPT, and so a DO bit.
    if (wire::load16(msg.data() + 10) != 0) {
      hash_do = hasher_.hash({key.name, key.name_len}, key.qtype, key.qclass, cd | kKeyDO);
      prefetch_hash(hash_do);
    }
  }

  // 1. Whole-message validation (RFC 1035 4.1, RFC 6891 6.1) and the RR list.
  wire::MessageInfo info;
  struct Rec {
    size_t ttl_off, rdata_off, end;
    uint32_t ttl;
    uint16_t type;
    wire::Section section;
  };
  // Scratch reused across calls: writers for different shards may run on different threads.
  thread_local std::vector<Rec> rrs;
  thread_local std::vector<std::pair<size_t, size_t>> name_runs;
  // walk() is noexcept: a scratch vector that cannot grow stops the walk and is reported
  // (as std::bad_alloc) once walk has returned, instead of terminating the process.
  thread_local bool scratch_oom;
  rrs.clear();
  name_runs.clear();
  scratch_oom = false;
  Status st = wire::walk(
      msg, &info,
      [](void*, wire::Bytes, const wire::RR& rr) {
        if (rr.type == wire::kTypeOPT) return true;
        try {
          rrs.push_back({rr.ttl_off, rr.rdata_off, rr.end, rr.ttl, rr.type, rr.section});
        } catch (const std::bad_alloc&) {
          scratch_oom = true;
          return false;
        }
        return true;
      },
      nullptr,
      [](void*, size_t b, size_t e) {
        if (scratch_oom) return;
        try {
          name_runs.emplace_back(b, e);
        } catch (const std::bad_alloc&) {
          scratch_oom = true;
        }
      },
      nullptr);
  if (scratch_oom) throw std::bad_alloc();
  if (st != Status::ok) return reject(Reject::malformed, st);
  // render() rewrites TTL bytes, so no name may be read from them: a compression pointer
  // aimed into a TTL field would turn into another name, or garbage, as the entry ages.
  // The walk leaves rrs in message order, so their TTL fields are sorted and disjoint:
  // a run [b, e) overlaps one iff the first field ending after b starts before e.
  for (const auto& run : name_runs) {
    const size_t b = run.first, e = run.second;
    const auto it = std::partition_point(rrs.begin(), rrs.end(),
                                         [b](const Rec& r) { return r.ttl_off + 4 <= b; });
    if (it != rrs.end() && it->ttl_off < e) return reject(Reject::name_reads_ttl);
  }
  const wire::Header& h = info.header;
  if (!(h.flags & wire::kFlagQR)) return reject(Reject::not_response);
  if (h.opcode() != wire::kOpcodeQuery) return reject(Reject::bad_opcode);
  if (h.qdcount != 1) return reject(Reject::bad_qdcount);
  if (h.flags & wire::kFlagTC) return reject(Reject::truncated);
  // The sections are stored without the OPT RR, so it has to be a removable tail.
  if (info.opt.present && !info.opt.last) return reject(Reject::opt_not_last);
  // An answer tailored to one client subnet must not be served to everyone.
  if (info.opt.has_ecs) return reject(Reject::client_subnet);

  const uint16_t rcode = info.rcode();
  if (rcode != wire::kRcodeNoError && rcode != wire::kRcodeNXDomain &&
      rcode != wire::kRcodeServFail)
    return reject(Reject::uncacheable_rcode);
  // A failure the resolver explained (DNSSEC bogus, a broken chain of trust) depends on
  // state only the resolver holds (bogus-ttl, negative trust anchors): never cached here.
  if (rcode == wire::kRcodeServFail && info.opt.has_ede) return reject(Reject::servfail_explained);

  // 2. The key's DO flag (CD came from the same header above).
  if (key_st != Status::ok) return reject(Reject::malformed, key_st);
  if (info.opt.do_bit) {
    key.flags |= kKeyDO;
    key.hash = hash_do;
  }

  const size_t sec_off = info.sections_off;
  const size_t sec_end = info.opt.present ? info.opt.rr_off : msg.size();
  const size_t sec_len = sec_end - sec_off;
  if (sec_len > 0xFFFF || rrs.size() > 0xFFFF) return reject(Reject::too_large);

  // 3. Lifetime. RFC 2181 8: a TTL with the top bit set counts as 0.
  auto rr_ttl = [](uint32_t t) { return (t & 0x80000000u) ? 0u : t; };
  uint32_t ans_min = std::numeric_limits<uint32_t>::max();
  bool have_soa = false;
  uint32_t soa_ttl = 0, soa_min = 0;
  for (const Rec& r : rrs) {
    if (r.section == wire::Section::answer) ans_min = std::min(ans_min, rr_ttl(r.ttl));
    if (r.section == wire::Section::authority && r.type == wire::kTypeSOA && !have_soa) {
      have_soa = true;
      soa_ttl = rr_ttl(r.ttl);
      soa_min = rr_ttl(wire::load32(msg.data() + r.end - 4));  // MINIMUM, RFC 2308 4
    }
  }
  const Limits lim = limits();
  NegKind neg;
  uint32_t ttl;
  uint32_t rr_cap;  // every stored RR TTL is clamped to this
  if (rcode == wire::kRcodeServFail) {
    neg = NegKind::servfail;
    ttl = lim.servfail_ttl;
    rr_cap = ttl;
  } else if (rcode == wire::kRcodeNXDomain || h.ancount == 0) {
    // RFC 2308 5: the negative TTL is min(SOA TTL, SOA MINIMUM); without an SOA the
    // answer must not be cached.
    neg = rcode == wire::kRcodeNXDomain ? NegKind::nxdomain : NegKind::nodata;
    if (!have_soa) return reject(Reject::negative_without_soa);
    ttl = std::min({soa_ttl, soa_min, lim.neg_ttl_cap});
    if (h.ancount) ttl = std::min(ttl, ans_min);  // a CNAME chain ending in NXDOMAIN
    ttl = std::min(std::max(ttl, lim.ttl_floor), lim.neg_ttl_cap);
    rr_cap = ttl;
  } else {
    neg = NegKind::none;
    ttl = std::min(std::max(ans_min, lim.ttl_floor), lim.ttl_cap);
    rr_cap = lim.ttl_cap;
  }
  if (ttl == 0) return reject(Reject::zero_ttl);

  thread_local std::vector<uint16_t> offs;
  offs.clear();
  for (const Rec& r : rrs) offs.push_back(static_cast<uint16_t>(r.ttl_off - sec_off));

  const size_t bytes = entry_bytes(key.name_len, offs.size(), sec_len);
  if (bytes + Table::bytes(kMinSlots) > shard_budget_.load(std::memory_order_relaxed)) return reject(Reject::no_memory);

  // 4. Build the immutable entry before taking the lock.
  struct FreeEntry {
    void operator()(Entry* p) const noexcept { free_entry(p); }
  };
  // Owned until published: an allocation failure in an index rebuild must not leak it.
  std::unique_ptr<Entry, FreeEntry> owned(EntryBuilder::build(key, msg.subspan(sec_off, sec_len), offs));
  Entry* e = owned.get();
  e->stored_at_ = now_s;
  e->ttl_ = ttl;
  e->stale_ttl_ = static_cast<uint8_t>(std::min<uint32_t>(lim.stale_answer_ttl, 255));
  e->neg_kind_ = static_cast<uint8_t>(neg);
  e->flags_ = static_cast<uint16_t>(h.flags & ~wire::kFlagTC);
  e->ancount_ = h.ancount;
  e->nscount_ = h.nscount;
  e->arcount_ = static_cast<uint16_t>(h.arcount - (info.opt.present ? 1 : 0));
  // walk() checked the counts against the records, and offs holds one TTL per non-OPT
  // record, so the counts locate the sections (Entry::ttl_count()).
  if (e->ttl_count() != offs.size()) return reject(Reject::malformed, Status::counts_lie);
  uint8_t* sec = EntryBuilder::sections(e);
  for (uint16_t off : offs) {
    const uint32_t t = std::min(std::max(rr_ttl(wire::load32(sec + off)), lim.ttl_floor), rr_cap);
    wire::store32(sec + off, t);
  }

  // 5. Publish.
  Shard& s = shard_for(key.hash);
  std::lock_guard lk(s.mu);
  Table* t = s.table.load(std::memory_order_relaxed);
  const size_t at = probe(t, key).slot;
  InsertResult res{InsertResult::kInserted, Reject::none, Status::ok};
  if (at != SIZE_MAX) {
    Entry* old = unpack(t->slots()[at].load(std::memory_order_relaxed));
    // RFC 8767: a failing upstream must not wipe an answer we can still serve.
    if (neg == NegKind::servfail && old->neg_kind() != NegKind::servfail &&
        now_s - old->stored_at_ < uint64_t{old->ttl_} + stale_window_for(*old)) {
      return reject(Reject::servfail_over_stale);
    }
    t->slots()[at].store(pack(owned.release(), key.hash), std::memory_order_release);
    const size_t ob = entry_size(*old);
    retire_locked(s, old, ob, false);
    s.bytes = s.bytes - ob + bytes;
    add(s.replaces);
    res.outcome = InsertResult::kReplaced;
  } else {
    if ((s.live + s.tombs + 1) * 5 > t->capacity() * 4) t = rebuild_locked(s, s.live + 1);
    const size_t i = free_slot(t, key.hash);
    if (t->slots()[i].load(std::memory_order_relaxed) == kTomb) --s.tombs;
    t->slots()[i].store(pack(owned.release(), key.hash), std::memory_order_release);
    ++s.live;
    s.bytes += bytes;
    add(s.inserts);
  }
  evict_locked(s, now_s, e);
  reclaim_locked(s);
  s.g_entries.store(s.live, std::memory_order_relaxed);
  s.g_bytes.store(s.bytes, std::memory_order_relaxed);
  return res;
}

// New table sized for `want` live entries; publishes it and retires the
// old one. Readers on the old table still find every entry it held.
Table* Cache::rebuild_locked(Shard& s, size_t want) {
  Table* old = s.table.load(std::memory_order_relaxed);
  // 3/5 full after the rebuild, rebuilt again at 4/5 including tombstones: the index costs
  // about 8 / 0.7 bytes per entry, linear probes stay within a line or two, and a table
  // full of tombstones is compacted rather than grown.
  const size_t cap = (std::max(kMinSlots, (want * 5 + 2) / 3) + kGroup - 1) / kGroup * kGroup;
  Table* t = Table::create(cap);
  for (size_t i = 0; i < old->capacity(); ++i) {
    const uint64_t v = old->slots()[i].load(std::memory_order_relaxed);
    if (!live(v)) continue;
    // The slot tag is the top of the hash; the probe start needs the low bits, so
    // recompute the hash from the entry's key.
    const Entry* e = unpack(v);
    const uint64_t h = hasher_.hash(e->name(), e->qtype(), e->qclass(), e->key_flags());
    t->slots()[free_slot(t, h)].store(v, std::memory_order_relaxed);
  }
  s.table.store(t, std::memory_order_release);
  s.bytes = s.bytes - Table::bytes(old->capacity()) + Table::bytes(cap);
  retire_locked(s, old, Table::bytes(old->capacity()), true);
  s.tombs = 0;
  s.run1 = s.run2 = SIZE_MAX;
  add(s.rebuilds);
  s.g_slots.store(cap, std::memory_order_relaxed);
  return t;
}

// Takes a live entry out of the index (a tombstone keeps probe chains intact), out of the
// shard's accounting, and parks it for reclamation.
void Cache::unlink_locked(Shard& s, Table* t, size_t slot, Entry* e) {
  t->slots()[slot].store(kTomb, std::memory_order_release);
  --s.live;
  ++s.tombs;
  const size_t b = entry_size(*e);
  s.bytes -= b;
  retire_locked(s, e, b, false);
}

// CLOCK with a wandering hand. An entry past its stale window goes whatever its access
// bit; otherwise a set bit is cleared and buys the entry time until the hand comes back.
// The hand sweeps short runs from random positions instead of going round in slot order:
// with linear probing, evicting in slot order would leave every hole just behind the hand
// and turn the rest of the table into one long run that new keys must probe through.
// Random runs keep holes spread like the hash. `keep` (just inserted) is spared.
void Cache::evict_locked(Shard& s, uint32_t now_s, const Entry* keep) {
  constexpr size_t kRun = 16;
  Table* t = s.table.load(std::memory_order_relaxed);
  const size_t cap = t->capacity();
  auto random_pos = [&] {
    s.rng ^= s.rng << 13;  // xorshift64
    s.rng ^= s.rng >> 7;
    s.rng ^= s.rng << 17;
    return static_cast<size_t>(((s.rng & 0xFFFFFFFFu) * cap) >> 32);
  };
  size_t steps = 4 * cap + kRun;
  size_t run = 0, hand = 0;
  bool evicted = false;
  constexpr size_t kSpared = 32;
  const Entry* spared[kSpared];
  size_t n_spared = 0;
  while (s.bytes > shard_budget_.load(std::memory_order_relaxed) && steps-- > 0) {
    if (run == 0) {
      // The first run of a write starts where the previous write prefetched.
      hand = !evicted && s.run1 < cap ? s.run1 : random_pos();
      s.run1 = SIZE_MAX;
      run = kRun;
    }
    --run;
    const size_t i = hand;
    hand = t->next(hand);
    const uint64_t v = t->slots()[i].load(std::memory_order_relaxed);
    if (!live(v)) continue;
    Entry* e = unpack(v);
    if (e == keep) continue;
    const bool dead = now_s - e->stored_at_ >= uint64_t{e->ttl_} + stale_window_for(*e) &&
                      now_s >= e->stored_at_;
    if (!dead && e->ref_.load(std::memory_order_relaxed)) {
      e->ref_.store(0, std::memory_order_relaxed);
      if (n_spared < kSpared) spared[n_spared++] = e;
      continue;
    }
    // A second chance lasts until the hand comes back, not until a later run of this same
    // write lands on the entry again (runs start at random and may overlap). After a
    // table's worth of steps everything is fair game, so a shard of hot entries still
    // gets back under its budget.
    if (!dead && steps > 3 * cap &&
        std::find(spared, spared + n_spared, e) != spared + n_spared)
      continue;
    unlink_locked(s, t, i, e);
    add(dead ? s.expired_evictions : s.evictions);
    evicted = true;
    run = 0;
  }
  // Near the budget the next write will evict too: stage its runs. run2's index lines
  // were prefetched by the previous write, so reading them now costs little; prefetch
  // the entries they point at, and the index lines of a new run2.
  if (s.bytes + s.bytes / 64 < shard_budget_.load(std::memory_order_relaxed) || s.run1 < cap) return;
  s.run1 = s.run2 < cap ? s.run2 : random_pos();
  size_t j = s.run1;
  for (size_t n = 0; n < kRun; ++n, j = t->next(j)) {
    const uint64_t v = t->slots()[j].load(std::memory_order_relaxed);
    if (live(v)) {  // the 28-byte header, which may straddle two lines
      __builtin_prefetch(unpack(v));
      __builtin_prefetch(reinterpret_cast<const uint8_t*>(unpack(v)) + sizeof(Entry) - 1);
    }
  }
  s.run2 = random_pos();
  __builtin_prefetch(&t->slots()[s.run2]);
  __builtin_prefetch(&t->slots()[std::min(s.run2 + kRun - 1, cap - 1)]);
}

template <class Pred>
size_t Cache::flush_if(Pred&& pred) {
  size_t n = 0;
  for (auto& sp : shards_) {
    Shard& s = *sp;
    std::lock_guard lk(s.mu);
    Table* t = s.table.load(std::memory_order_relaxed);
    for (size_t i = 0; i < t->capacity(); ++i) {
      const uint64_t v = t->slots()[i].load(std::memory_order_relaxed);
      if (!live(v) || !pred(*unpack(v))) continue;
      unlink_locked(s, t, i, unpack(v));
      add(s.flushed);
      ++n;
    }
    reclaim_locked(s);
    s.g_entries.store(s.live, std::memory_order_relaxed);
    s.g_bytes.store(s.bytes, std::memory_order_relaxed);
  }
  return n;
}

size_t Cache::flush_all() {
  return flush_if([](const Entry&) { return true; });
}

size_t Cache::flush_name(std::span<const uint8_t> name) {
  return flush_if([&](const Entry& e) {
    return e.name().size() == name.size() &&
           wire::compare_canonical(e.name(), name) == 0;
  });
}

size_t Cache::flush_subtree(std::span<const uint8_t> name) {
  return flush_if([&](const Entry& e) { return wire::is_subdomain(e.name(), name); });
}

// ---- inspection --------------------------------------------------------------------------

bool Cache::dump(const std::function<void(const EntryInfo&)>& fn) const {
  auto* self = const_cast<Cache*>(this);  // reader registration is internal bookkeeping
  ReaderId r;
  try {
    r = self->register_reader();
  } catch (const std::runtime_error&) {
    return false;
  }
  struct Unreg {
    Cache* c;
    ReaderId r;
    ~Unreg() { c->unregister_reader(r); }
  } unreg{self, r};
  for (unsigned si = 0; si < shards_.size(); ++si) {
    const Table* t = shards_[si]->table.load(std::memory_order_acquire);
    for (size_t i = 0; i < t->capacity(); ++i) {
      const uint64_t v = t->slots()[i].load(std::memory_order_acquire);
      if (!live(v)) continue;
      const Entry* e = unpack(v);
      EntryInfo info{e->name(),      e->qtype(),   e->qclass(),       e->key_flags(),
                     e->rcode(),     e->neg_kind(), e->ancount(),     e->nscount(),
                     e->arcount(),   e->stored_at(), e->ttl(),         stale_window_for(*e),
                     e->sections_len(), entry_size(*e), si,            e->referenced()};
      fn(info);
    }
    self->quiescent(r);  // no entry pointer is held across this point
  }
  return true;
}

Stats Cache::stats() const {
  Stats st;
  st.max_bytes = max_bytes_.load(std::memory_order_relaxed);
  for (const auto& sp : shards_) {
    const Shard& s = *sp;
    ShardStats x;
    x.entries = s.g_entries.load(std::memory_order_relaxed);
    x.bytes = s.g_bytes.load(std::memory_order_relaxed);
    x.index_slots = s.g_slots.load(std::memory_order_relaxed);
    x.inserts = s.inserts.load(std::memory_order_relaxed);
    x.replaces = s.replaces.load(std::memory_order_relaxed);
    x.evictions = s.evictions.load(std::memory_order_relaxed);
    x.expired_evictions = s.expired_evictions.load(std::memory_order_relaxed);
    x.flushed = s.flushed.load(std::memory_order_relaxed);
    x.index_rebuilds = s.rebuilds.load(std::memory_order_relaxed);
    st.retired_bytes += s.g_retired.load(std::memory_order_relaxed);
    st.total.entries += x.entries;
    st.total.bytes += x.bytes;
    st.total.index_slots += x.index_slots;
    st.total.inserts += x.inserts;
    st.total.replaces += x.replaces;
    st.total.evictions += x.evictions;
    st.total.expired_evictions += x.expired_evictions;
    st.total.flushed += x.flushed;
    st.total.index_rebuilds += x.index_rebuilds;
    st.shards.push_back(x);
  }
  for (unsigned i = 0; i < cfg_.max_readers; ++i) {
    const ReaderSlot& r = readers_[i];
    ReaderStats x;
    x.registered = r.registered.load(std::memory_order_relaxed);
    x.hits = r.hits.load(std::memory_order_relaxed);
    x.misses = r.misses.load(std::memory_order_relaxed);
    x.stale = r.stale.load(std::memory_order_relaxed);
    st.hits += x.hits;
    st.misses += x.misses;
    st.stale += x.stale;
    st.readers.push_back(x);
  }
  for (size_t i = 0; i < kRejectCount; ++i) st.rejects[i] = rejects_[i].load(std::memory_order_relaxed);
  for (size_t i = 0; i < wire::kStatusCount; ++i)
    st.malformed[i] = malformed_[i].load(std::memory_order_relaxed);
  return st;
}

}  // namespace tern::cache
