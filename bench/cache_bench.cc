// Message cache micro-benchmarks (Google Benchmark). Prints figures; asserts nothing about
// time. Run the way the report quotes it:
//   build/bench/cache_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Hit lookups use keys built beforehand (the dataplane builds the key while parsing), drawn
// uniformly or Zipf(s=0.9) over 1K, 1M or 10M cached answers. Zipf ranks are scattered over
// the population so that popular entries are not neighbours in memory.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <x86intrin.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "cache/cache.h"
#include "wire/test_builder.h"
#include "wire/wire.h"

// jemalloc's control interface when it is linked in (weak: absent with glibc's malloc).
extern "C" int mallctl(const char*, void*, size_t*, void*, size_t) __attribute__((weak));

namespace {

using namespace tern;
using cache::Cache;
using cache::Key;

constexpr uint32_t kNow = 1'000'000;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "cache_bench: %s\n", what);
  std::exit(1);
}
constexpr size_t kSeqLen = 1u << 18;  // lookup sequence length per benchmark thread
constexpr size_t kTopN = 10'000'000;  // 7 decimal digits in the names below

// Response for "<p>NNNNNNN.bench. A": header, question, one A RR whose owner points at the
// question. 48 bytes; the entry holds 16 name bytes + 16 section bytes.
constexpr size_t kMsgLen = 48;
void make_response(uint8_t* m, char prefix, uint32_t i) {
  static constexpr uint8_t kTemplate[kMsgLen] = {
      0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,                 // header
      8, 'h', '0', '0', '0', '0', '0', '0', '0', 5, 'b', 'e', 'n', 'c', 'h', 0,  // qname
      0, 1, 0, 1,                                                      // A IN
      0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 198, 18, 0, 1};  // A 3600 198.18.0.1
  std::memcpy(m, kTemplate, kMsgLen);
  m[13] = static_cast<uint8_t>(prefix);
  for (int d = 6; d >= 0; --d, i /= 10) m[14 + d] = static_cast<uint8_t>('0' + i % 10);
  wire::store32(m + 44, 0xC6120000u | (i & 0xFFFF));
}

Key key_for(const Cache& c, char prefix, uint32_t i) {
  uint8_t m[kMsgLen];
  make_response(m, prefix, i);
  wire::store16(m + 2, wire::kFlagRD);  // as a query
  Key k;
  size_t end;
  if (cache::make_key(c.hasher(), {m, 32}, 12, 0, k, &end) != wire::Status::ok)
    die("key_for: make_key failed");
  return k;
}

cache::Config big_config(size_t n) {
  cache::Config cfg;
  cfg.max_bytes = std::max<size_t>(64u << 20, n * 256);  // never evicts while populating
  cfg.max_readers = 8;
  return cfg;
}

// A populated cache per size, built once and shared by every benchmark that needs it.
struct Population {
  std::unique_ptr<Cache> cache;
  size_t n = 0;
  double overhead_accounted = 0;  // Cache's own byte accounting minus wire bytes, per entry
  double overhead_heap = 0;       // malloc's in-use delta minus wire bytes, per entry
};

Population& population(size_t n) {
  static std::array<Population, 3> pops;
  static std::array<std::once_flag, 3> once;
  const size_t slot = n <= 1000 ? 0 : n <= 1'000'000 ? 1 : 2;
  std::call_once(once[slot], [&] {
    Population& p = pops[slot];
    p.n = n;
    // In-use heap: small chunks (uordblks) plus mmapped ones (hblkhd: the big index tables).
    auto heap = []() -> size_t {
      if (mallctl) {  // jemalloc is the heap (malloc_conf.cc): ask it
        uint64_t epoch = 1;
        size_t allocated = 0, len = sizeof allocated;
        mallctl("epoch", nullptr, nullptr, &epoch, sizeof epoch);
        if (mallctl("stats.allocated", &allocated, &len, nullptr, 0) == 0) return allocated;
      }
      const struct mallinfo2 mi = mallinfo2();
      return mi.uordblks + mi.hblkhd;
    };
    const size_t heap0 = heap();
    p.cache = std::make_unique<Cache>(big_config(n), 0xbe7c4);
    uint8_t m[kMsgLen];
    size_t wire_bytes = 0;
    for (uint32_t i = 0; i < n; ++i) {
      make_response(m, 'h', i);
      if (!p.cache->insert_response({m, kMsgLen}, kNow).stored())
        die("population: insert rejected");
      wire_bytes += 16 + 16;
    }
    const size_t heap1 = heap();
    const auto st = p.cache->stats();
    if (st.total.entries != n) die("population: entry count differs (evicted while filling?)");
    p.overhead_accounted = (double(st.total.bytes) - double(wire_bytes)) / double(n);
    p.overhead_heap = (double(heap1 - heap0) - double(wire_bytes)) / double(n);
  });
  return pops[slot];
}

// Zipf(s) over n ranks via the inverse CDF; rank r is mapped to entry (r * odd) mod n,
// a bijection for n a product of 2s and 5s.
std::vector<uint32_t> zipf_indices(size_t n, double s, size_t count, uint64_t seed) {
  static std::mutex mu;
  static std::vector<double> cdf;
  static size_t cdf_n = 0;
  {
    std::lock_guard lk(mu);
    if (cdf_n != n) {
      cdf.resize(n);
      double sum = 0;
      for (size_t r = 0; r < n; ++r) cdf[r] = (sum += 1.0 / std::pow(double(r + 1), s));
      for (auto& c : cdf) c /= sum;
      cdf_n = n;
    }
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint32_t> out(count);
  for (auto& o : out) {
    const size_t r = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
    o = static_cast<uint32_t>((std::min(r, n - 1) * 2654435761ull) % n);
  }
  return out;
}

// The worker builds each key into a small per-burst array that stays in L1; a benchmark
// that streamed whole 272-byte Key objects from a 70 MB array would measure that stream
// (and let it push the cache's hot set out of L3) instead. So the sequence holds each key's
// first 32 bytes (hash, type, class, flags, length and the 16-byte name), and the loop
// copies them into an L1-resident Key, as parsing a packet would. The copy is timed.
struct KeyPrefix {
  alignas(32) uint8_t b[32];
};
static_assert(offsetof(Key, name) + 18 == sizeof(KeyPrefix));

std::vector<KeyPrefix> lookup_keys(const Cache& c, char prefix, size_t n, bool zipf, uint64_t seed) {
  std::vector<uint32_t> idx;
  if (zipf) {
    idx = zipf_indices(n, 0.9, kSeqLen, seed);
  } else {
    std::mt19937_64 rng(seed);
    idx.resize(kSeqLen);
    for (auto& i : idx) i = static_cast<uint32_t>(rng() % n);
  }
  std::vector<KeyPrefix> keys(kSeqLen);
  for (size_t i = 0; i < kSeqLen; ++i) {
    const Key k = key_for(c, prefix, idx[i]);
    if (k.name_len > 18) die("lookup_keys: benchmark names must fit the 32-byte key prefix");
    std::memcpy(keys[i].b, &k, sizeof(KeyPrefix));
  }
  return keys;
}

void lookup_loop(benchmark::State& state, Population& p, const std::vector<KeyPrefix>& keys,
                 bool expect_hit) {
  Cache& c = *p.cache;
  const cache::ReaderId r = c.register_reader();
  size_t i = 0, good = 0;
  Key k;
  for (auto _ : state) {
    __builtin_prefetch(keys[(i + 32) & (kSeqLen - 1)].b);  // the input stream, see BM_HitBurst
    std::memcpy(static_cast<void*>(&k), keys[i++ & (kSeqLen - 1)].b, sizeof(KeyPrefix));
    const cache::Lookup l = c.lookup(r, k, kNow, false);
    benchmark::DoNotOptimize(l.entry);
    good += (l.kind == cache::Lookup::kHit) == expect_hit;
    if ((i & 31) == 0) c.quiescent(r);  // the worker's quiescent point, once per burst
  }
  c.unregister_reader(r);
  if (good != i) state.SkipWithError("lookup result differs from what the benchmark set up");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  using benchmark::Counter;
  state.counters["entries"] = Counter(double(p.n), Counter::kAvgThreads);
  state.counters["overhead_B"] = Counter(p.overhead_accounted, Counter::kAvgThreads);
  state.counters["heap_overhead_B"] = Counter(p.overhead_heap, Counter::kAvgThreads);
}

void BM_Hit(benchmark::State& state, size_t n, bool zipf) {
  Population& p = population(n);
  const auto keys = lookup_keys(*p.cache, 'h', n, zipf, 1000 + state.thread_index());
  lookup_loop(state, p, keys, true);
}

// Latency of one lookup at a time, each timed alone with the TSC (fenced, so lookups do not
// overlap as they do in the loops above): the distribution whose median the cache target
// names. Counters: p50/p90/p99 and mean in ns, with the fenced empty timer's own median
// cost subtracted. Zipf-popular keys mostly find their index line and entry in L1/L2;
// the tail pays DRAM (and TLB) misses; the mean shows that tail.
void BM_HitLatency(benchmark::State& state, size_t n) {
  Population& p = population(n);
  const auto keys = lookup_keys(*p.cache, 'h', n, true, 3000);
  Cache& c = *p.cache;
  const cache::ReaderId r = c.register_reader();
  auto stamp = [] {
    _mm_lfence();
    const uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
  };
  constexpr size_t kMaxCycles = 1u << 16;
  std::vector<uint32_t> hist(kMaxCycles + 1);
  auto median_of = [&](const std::vector<uint32_t>& h, double q) {
    uint64_t total = 0;
    for (uint32_t v : h) total += v;
    uint64_t want = static_cast<uint64_t>(q * double(total)), seen = 0;
    for (size_t i = 0; i < h.size(); ++i)
      if ((seen += h[i]) > want) return double(i);
    return double(h.size() - 1);
  };
  // The timer's own cost: the same fenced pair around nothing.
  std::vector<uint32_t> empty(kMaxCycles + 1);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t a = stamp(), b = stamp();
    ++empty[std::min<uint64_t>(b - a, kMaxCycles)];
  }
  const double overhead = median_of(empty, 0.5);
  const auto wall0 = std::chrono::steady_clock::now();
  const uint64_t tsc0 = __rdtsc();
  size_t i = 0, good = 0;
  uint64_t sum = 0;
  Key k;
  for (auto _ : state) {
    std::memcpy(static_cast<void*>(&k), keys[i++ & (kSeqLen - 1)].b, sizeof(KeyPrefix));
    const uint64_t a = stamp();
    const cache::Lookup l = c.lookup(r, k, kNow, false);
    benchmark::DoNotOptimize(l.entry);
    const uint64_t b = stamp();
    good += l.kind == cache::Lookup::kHit;
    sum += b - a;
    ++hist[std::min<uint64_t>(b - a, kMaxCycles)];
    if ((i & 31) == 0) c.quiescent(r);
  }
  const double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now() - wall0).count());
  const double ghz = double(__rdtsc() - tsc0) / ns;  // TSC cycles per ns
  c.unregister_reader(r);
  if (good != i) state.SkipWithError("a hit benchmark key missed");
  auto to_ns = [&](double cycles) { return std::max(0.0, cycles - overhead) / ghz; };
  state.counters["p50_ns"] = to_ns(median_of(hist, 0.5));
  state.counters["p90_ns"] = to_ns(median_of(hist, 0.9));
  state.counters["p99_ns"] = to_ns(median_of(hist, 0.99));
  state.counters["mean_ns"] = i ? to_ns(double(sum) / double(i)) : 0;
  state.counters["timer_ns"] = overhead / ghz;
  state.counters["entries"] = double(p.n);
}

// The dataplane's form: 32 keys per call (an RX burst), misses overlapped.
void BM_HitBurst(benchmark::State& state, size_t n, bool zipf) {
  Population& p = population(n);
  const auto keys = lookup_keys(*p.cache, 'h', n, zipf, 2000 + state.thread_index());
  constexpr size_t kB = Cache::kBurst;
  Cache& c = *p.cache;
  const cache::ReaderId r = c.register_reader();
  std::vector<Key> burst(kB);  // the worker's per-burst key array
  std::array<const Key*, kB> kp;
  for (size_t b = 0; b < kB; ++b) kp[b] = &burst[b];
  std::array<cache::Lookup, kB> out;
  size_t i = 0, found = 0;
  for (auto _ : state) {
    // The sequence (8 MB) is the benchmark's input, not the cache's: fetch it two bursts
    // ahead, as a worker's packets are already in cache when it builds their keys.
    for (size_t b = 0; b < kB; b += 2) __builtin_prefetch(keys[(i + 2 * kB + b) & (kSeqLen - 1)].b);
    for (size_t b = 0; b < kB; ++b)
      std::memcpy(static_cast<void*>(&burst[b]), keys[(i + b) & (kSeqLen - 1)].b, sizeof(KeyPrefix));
    found += c.lookup_burst(r, kp, kNow, false, out);
    benchmark::DoNotOptimize(out);
    i += kB;
    c.quiescent(r);
  }
  c.unregister_reader(r);
  if (found != i) state.SkipWithError("a hit benchmark key missed");
  using benchmark::Counter;
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kB));
  state.counters["entries"] = Counter(double(p.n), Counter::kAvgThreads);
}

void BM_Miss(benchmark::State& state) {
  Population& p = population(1'000'000);
  const auto keys = lookup_keys(*p.cache, 'm', 1'000'000, false, 77 + state.thread_index());
  lookup_loop(state, p, keys, false);
}

// Steady-state inserts into a full cache: every insert evicts (CLOCK) and frees.
void BM_InsertEvicting(benchmark::State& state) {
  static std::unique_ptr<Cache> c;
  static uint32_t cursor = 0;
  constexpr uint32_t kNames = 2'000'000;  // more than the 64 MiB budget holds (~700K)
  if (!c) {
    c = std::make_unique<Cache>(cache::Config{}, 0x1a5e);
    uint8_t m[kMsgLen];
    for (uint32_t i = 0; i < kNames; ++i) {
      make_response(m, 'i', i);
      c->insert_response({m, kMsgLen}, kNow);
    }
  }
  std::vector<uint8_t> msgs(size_t{kNames} * kMsgLen);
  for (uint32_t i = 0; i < kNames; ++i) make_response(&msgs[size_t{i} * kMsgLen], 'i', i);
  uint64_t rejected = 0;
  for (auto _ : state) {
    const uint32_t i = cursor++ % kNames;
    rejected += !c->insert_response({&msgs[size_t{i} * kMsgLen], kMsgLen}, kNow).stored();
  }
  if (rejected) state.SkipWithError("insert rejected");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  const auto st = c->stats();
  state.counters["entries"] = double(st.total.entries);
  state.counters["evictions"] = double(st.total.evictions);
}

// Replacing answers already cached (a refresh after expiry).
void BM_Replace(benchmark::State& state) {
  constexpr uint32_t kNames = 65536;
  Cache c(cache::Config{}, 0x7e9);
  std::vector<uint8_t> msgs(size_t{kNames} * kMsgLen);
  for (uint32_t i = 0; i < kNames; ++i) {
    make_response(&msgs[size_t{i} * kMsgLen], 'r', i);
    c.insert_response({&msgs[size_t{i} * kMsgLen], kMsgLen}, kNow);
  }
  uint32_t i = 0;
  uint64_t replaced = 0;
  for (auto _ : state) {
    const uint32_t k = (i++ * 40503u) & (kNames - 1);
    // The answer was just read from a socket, so it is in cache: fetch it a few inserts
    // ahead rather than timing a random walk through the 3 MB of test messages.
    __builtin_prefetch(&msgs[size_t{((i + 4) * 40503u) & (kNames - 1)} * kMsgLen]);
    replaced += c.insert_response({&msgs[size_t{k} * kMsgLen], kMsgLen}, kNow).outcome ==
                cache::InsertResult::kReplaced;
  }
  if (replaced != static_cast<uint64_t>(state.iterations())) state.SkipWithError("expected every insert to replace");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Parse the question and hash it: the per-packet key cost.
void BM_MakeKey(benchmark::State& state, bool long_name) {
  constexpr size_t kPackets = 4096;
  std::vector<std::vector<uint8_t>> qs;
  for (uint32_t i = 0; i < kPackets; ++i) {
    std::vector<uint8_t> q = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    char name[128];
    const int len = long_name
        ? std::snprintf(name, sizeof name, "API-Gateway-%u.Eu-West-3.Service.Internal.Example.COM", i)
        : std::snprintf(name, sizeof name, "www%u.Example.com", i);
    const auto qname = wire::testing::encode_name(std::string_view(name, size_t(len)));  // case kept
    q.insert(q.end(), qname.begin(), qname.end());
    q.insert(q.end(), {0, 1, 0, 1});
    qs.push_back(std::move(q));
  }
  Cache c(cache::Config{}, 1);
  Key k;
  size_t i = 0, end;
  for (auto _ : state) {
    const auto& q = qs[i++ & (kPackets - 1)];
    benchmark::DoNotOptimize(cache::make_key(c.hasher(), q, 12, 0, k, &end));
    benchmark::DoNotOptimize(k.hash);
  }
  state.counters["name_bytes"] = double(k.name_len);
}

// Copy an entry's sections and age its TTLs.
void BM_Render(benchmark::State& state, int records) {
  Cache c(cache::Config{}, 5);
  std::vector<uint8_t> m = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0};
  const uint8_t qname[] = {3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0};
  m.insert(m.end(), std::begin(qname), std::end(qname));
  m.insert(m.end(), {0, 1, 0, 1});
  for (int rr = 0; rr < records; ++rr)
    m.insert(m.end(), {0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 198, 18, 0, uint8_t(rr)});
  wire::store16(&m[6], static_cast<uint16_t>(records));
  if (!c.insert_response(m, kNow).stored()) die("render: setup answer was not stored");
  const cache::ReaderId r = c.register_reader();
  Key k;
  size_t end;
  m[2] = 0x01;
  cache::make_key(c.hasher(), m, 12, 0, k, &end);
  const cache::Lookup l = c.lookup(r, k, kNow, false);
  if (!l.entry) die("render: setup answer not found");
  std::array<uint8_t, 1500> out;
  uint32_t age = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(Cache::render(*l.entry, kNow + (age++ & 0x3FF), false, out));
    benchmark::ClobberMemory();
  }
  state.counters["bytes"] = double(l.entry->sections_len());
  c.unregister_reader(r);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  benchmark::RegisterBenchmark("make_key/short", BM_MakeKey, false);
  benchmark::RegisterBenchmark("make_key/long", BM_MakeKey, true);
  benchmark::RegisterBenchmark("render/1rr", BM_Render, 1);
  benchmark::RegisterBenchmark("render/8rr", BM_Render, 8);
  benchmark::RegisterBenchmark("hit/1K/uniform", BM_Hit, size_t{1000}, false);
  benchmark::RegisterBenchmark("hit/1K/zipf0.9", BM_Hit, size_t{1000}, true);
  benchmark::RegisterBenchmark("hit/1M/uniform", BM_Hit, size_t{1'000'000}, false)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit/1M/zipf0.9", BM_Hit, size_t{1'000'000}, true)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit_latency/1K/zipf0.9", BM_HitLatency, size_t{1000});
  benchmark::RegisterBenchmark("hit_latency/1M/zipf0.9", BM_HitLatency, size_t{1'000'000});
  benchmark::RegisterBenchmark("hit_latency/10M/zipf0.9", BM_HitLatency, kTopN);
  benchmark::RegisterBenchmark("hit_burst/1K/zipf0.9", BM_HitBurst, size_t{1000}, true);
  benchmark::RegisterBenchmark("hit_burst/1M/uniform", BM_HitBurst, size_t{1'000'000}, false)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit_burst/1M/zipf0.9", BM_HitBurst, size_t{1'000'000}, true)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("miss/1M", BM_Miss);
  benchmark::RegisterBenchmark("insert/evicting", BM_InsertEvicting);
  benchmark::RegisterBenchmark("insert/replace", BM_Replace);
  benchmark::RegisterBenchmark("hit/10M/uniform", BM_Hit, kTopN, false)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit/10M/zipf0.9", BM_Hit, kTopN, true)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit_burst/10M/uniform", BM_HitBurst, kTopN, false)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("hit_burst/10M/zipf0.9", BM_HitBurst, kTopN, true)
      ->Threads(1)->Threads(2)->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
