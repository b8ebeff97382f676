// Readers and a writer at the same time. Every stored answer encodes its own key index
// and a generation in its rdata, with a payload derived from both, so a reader can tell a
// consistent entry from a torn, freed or misfiled one. Bounded by iteration counts; also
// the test to run under ThreadSanitizer (cache/README.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache.h"
#include "wire/test_builder.h"

namespace tern::cache {
namespace {

using wire::Section;
using wire::Status;
using wire::testing::MsgBuilder;

constexpr uint32_t kNow = 1'000'000;
constexpr unsigned kKeys = 4096;
constexpr unsigned kReaders = 3;
// Sanitizers run 10-20x slower: same interleavings, fewer of them.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr unsigned kScale = 20;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr unsigned kScale = 20;
#else
constexpr unsigned kScale = 1;
#endif
#else
constexpr unsigned kScale = 1;
#endif
constexpr unsigned kWriterOps = 300'000 / kScale;
constexpr unsigned kReaderMinOps = 200'000 / kScale;
constexpr unsigned kReaderMaxOps = 4'000'000 / kScale;

std::string key_name(unsigned i) {
  char b[32];
  std::snprintf(b, sizeof b, "k%u.stress.lab.", i);
  return b;
}

uint8_t fill_byte(uint32_t i, uint32_t gen) { return static_cast<uint8_t>(i * 7 + gen * 13); }
size_t payload_len(uint32_t gen) { return 40 + gen % 60; }

// One TXT RR, owner compressed to the question: rdata = <len> i(4) gen(4) fill...
std::vector<uint8_t> response(uint32_t i, uint32_t gen) {
  const size_t n = payload_len(gen);
  std::vector<uint8_t> rd(1 + n);
  rd[0] = static_cast<uint8_t>(n);
  wire::store32(&rd[1], i);
  wire::store32(&rd[5], gen);
  for (size_t k = 9; k < rd.size(); ++k) rd[k] = fill_byte(i, gen);
  return MsgBuilder()
      .question(key_name(i), wire::kTypeTXT)
      .rr_ptr(Section::answer, wire::kHeaderSize, wire::kTypeTXT, 600, rd)
      .finish();
}

// Returns the generation, or 0 if the rendered answer is not a consistent entry for key i.
uint32_t check(const Entry& e, const Key& k, uint32_t i, std::vector<uint8_t>& buf) {
  if (e.name().size() != k.name_len || std::memcmp(e.name().data(), k.name, k.name_len) != 0)
    return 0;
  if (e.qtype() != wire::kTypeTXT || e.ancount() != 1 || e.nscount() != 0 || e.arcount() != 0)
    return 0;
  const size_t len = Cache::render(e, kNow, false, buf);
  if (len < 2 + 10 + 9) return 0;
  const uint8_t* p = buf.data();
  if (wire::load16(p) != (0xC000 | wire::kHeaderSize)) return 0;
  if (wire::load16(p + 2) != wire::kTypeTXT || wire::load32(p + 6) != 600) return 0;
  const uint16_t rdlen = wire::load16(p + 10);
  if (size_t{rdlen} + 12 != len) return 0;
  const uint8_t* rd = p + 12;
  const uint32_t got_i = wire::load32(rd + 1), gen = wire::load32(rd + 5);
  if (got_i != i || gen == 0 || rd[0] != payload_len(gen) || rdlen != 1 + payload_len(gen))
    return 0;
  for (size_t x = 9; x < rdlen; ++x)
    if (rd[x] != fill_byte(i, gen)) return 0;
  return gen;
}

TEST(CacheStress, ReadersSeeConsistentEntriesWhileWriterChurns) {
  Config cfg;
  // Well under what kKeys answers need: eviction runs constantly.
  cfg.max_bytes = std::max<size_t>(64u << 10, (512u << 10) / kScale);
  cfg.shards = 4;
  cfg.max_readers = kReaders + 2;
  Cache cache(cfg, 0xfeed);

  std::vector<Key> keys(kKeys);
  for (unsigned i = 0; i < kKeys; ++i) {
    const auto q = MsgBuilder(1, wire::kFlagRD).question(key_name(i), wire::kTypeTXT).finish();
    size_t end;
    ASSERT_EQ(make_key(cache.hasher(), q, wire::kHeaderSize, 0, keys[i], &end), Status::ok);
  }

  std::atomic<bool> writer_done{false};
  std::atomic<uint64_t> bad{0}, went_back{0}, reader_ops{0}, reader_hits{0};

  auto reader = [&](unsigned seed) {
    const ReaderId r = cache.register_reader();
    std::mt19937 rng(seed);
    std::vector<uint32_t> last_gen(kKeys, 0);
    std::vector<uint8_t> buf(1024);
    uint64_t ops = 0, hits = 0, errors = 0, back = 0;
    while (ops < kReaderMinOps ||
           (!writer_done.load(std::memory_order_relaxed) && ops < kReaderMaxOps)) {
      // Alternate single lookups and bursts, as a worker would see full and sparse RX.
      const size_t burst = (ops / 64) % 2 ? 1 : 8;
      uint32_t idx[8];
      const Key* kp[8];
      Lookup res[8];
      for (size_t b = 0; b < burst; ++b) {
        idx[b] = rng() % kKeys;
        kp[b] = &keys[idx[b]];
      }
      if (burst == 1)
        res[0] = cache.lookup(r, *kp[0], kNow, false);
      else
        cache.lookup_burst(r, {kp, burst}, kNow, false, {res, burst});
      for (size_t b = 0; b < burst; ++b) {
        if (res[b].kind != Lookup::kHit) continue;
        const uint32_t i = idx[b];
        ++hits;
        const uint32_t gen = check(*res[b].entry, keys[i], i, buf);
        if (gen == 0) ++errors;
        // Generations only grow: a reader never sees an older answer after a newer one.
        if (gen < last_gen[i]) ++back;
        last_gen[i] = std::max(last_gen[i], gen);
      }
      cache.quiescent(r);
      ops += burst;
      if (ops % 8192 < burst) {  // an idle period, as a worker sleeping on an empty queue
        cache.offline(r);
        std::this_thread::yield();
        cache.online(r);
      }
    }
    bad += errors;
    went_back += back;
    reader_ops += ops;
    reader_hits += hits;
    cache.unregister_reader(r);
  };

  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kReaders; ++t) threads.emplace_back(reader, 100 + t);

  std::mt19937 rng(7);
  uint32_t gen = 0;
  uint64_t stored = 0;
  for (unsigned op = 1; op <= kWriterOps; ++op) {
    const uint32_t i = rng() % kKeys;
    stored += cache.insert_response(response(i, ++gen), kNow).stored();
    if (op % 997 == 0) {
      const Key& k = keys[rng() % kKeys];
      cache.flush_name({k.name, k.name_len});
    }
    if (op % (20011 / kScale) == 0) cache.flush_all();
  }
  // Let a subtree flush race the readers too.
  uint8_t zone[wire::kMaxNameLen];
  uint8_t zlen;
  ASSERT_EQ(wire::name_from_text("stress.lab.", zone, &zlen), Status::ok);
  cache.flush_subtree({zone, zlen});
  writer_done = true;
  for (auto& t : threads) t.join();

  EXPECT_EQ(bad.load(), 0u) << "readers saw torn or misfiled entries";
  EXPECT_EQ(went_back.load(), 0u) << "readers saw an older generation after a newer one";
  EXPECT_EQ(stored, kWriterOps);
  EXPECT_GT(reader_hits.load(), 0u);

  const Stats s = cache.stats();
  EXPECT_EQ(s.hits + s.misses + s.stale, reader_ops.load());
  EXPECT_EQ(s.hits, reader_hits.load());
  EXPECT_GT(s.total.evictions, 0u);
  EXPECT_GT(s.total.replaces, 0u);
  EXPECT_EQ(s.total.entries, 0u);  // the subtree flush emptied it
  EXPECT_LE(s.total.bytes, cfg.max_bytes);
  cache.reclaim();
  EXPECT_EQ(cache.stats().retired_bytes, 0u);  // every reader is gone: all memory comes back
}

}  // namespace
}  // namespace tern::cache
