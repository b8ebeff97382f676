// Google Benchmark micro-benchmarks of the fast path's stages, in ns per query, without DPDK's EAL:
// parse_query, make_key (lowercase + hash), lookup hit / miss over N names, build_answer.
//   build/bench/dataplane_micro [--benchmark_filter=Parse]
#include <arpa/inet.h>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "dataplane/answer.h"
#include "dataplane/parse.h"

namespace {

using namespace tern;

std::vector<uint8_t> query_frame(const std::string& label, bool v6, bool edns) {
  std::vector<uint8_t> dns = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, static_cast<uint8_t>(edns ? 1 : 0)};
  dns.push_back(static_cast<uint8_t>(label.size()));
  dns.insert(dns.end(), label.begin(), label.end());
  for (uint8_t b : std::initializer_list<uint8_t>{5, 'b', 'e', 'n', 'c', 'h', 3, 'l', 'a', 'b', 0, 0, 1, 0, 1}) dns.push_back(b);
  if (edns)
    for (uint8_t b : {0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 0}) dns.push_back(b);
  std::vector<uint8_t> f = {2, 0, 0, 0, 0, 0x53, 2, 0, 0, 0, 0, 0x64, static_cast<uint8_t>(v6 ? 0x86 : 0x08),
                            static_cast<uint8_t>(v6 ? 0xDD : 0x00)};
  f.reserve(256);  // also keeps GCC 12's -Warray-bounds false positive on vector::insert quiet
  const size_t l3 = f.size();
  const uint16_t ulen = static_cast<uint16_t>(8 + dns.size());
  if (v6) {
    const uint8_t h[8] = {0x60, 0, 0, 0, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen), 17, 64};
    f.insert(f.end(), h, h + 8);
    f.resize(f.size() + 32);
    inet_pton(AF_INET6, "2001:2::100", &f[l3 + 8]);
    inet_pton(AF_INET6, "2001:2::53", &f[l3 + 24]);
  } else {
    const uint16_t tl = static_cast<uint16_t>(20 + ulen);
    const uint8_t h[12] = {0x45, 0, static_cast<uint8_t>(tl >> 8), static_cast<uint8_t>(tl), 0, 0, 0x40, 0, 64, 17, 0, 0};
    f.insert(f.end(), h, h + 12);
    f.resize(f.size() + 8);
    inet_pton(AF_INET, "198.18.0.100", &f[l3 + 12]);
    inet_pton(AF_INET, "198.18.0.53", &f[l3 + 16]);
    const uint16_t c = static_cast<uint16_t>(~dp::csum_fold(dp::csum_acc(0, &f[l3], 20)));
    std::memcpy(&f[l3 + 10], &c, 2);
  }
  const size_t l4 = f.size();
  const uint8_t u[8] = {0x9c, 0x40, 0, 53, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen), 0, 0};
  f.insert(f.end(), u, u + 8);
  f.insert(f.end(), dns.begin(), dns.end());
  const uint8_t ph[4] = {0, 17, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen)};
  uint64_t acc = v6 ? dp::csum_acc(0, &f[l3 + 8], 32) : dp::csum_acc(0, &f[l3 + 12], 8);
  acc = dp::csum_acc(dp::csum_acc(acc, ph, 4), &f[l4], ulen);
  uint16_t c = static_cast<uint16_t>(~dp::csum_fold(acc));
  if (!c) c = 0xFFFF;
  std::memcpy(&f[l4 + 6], &c, 2);
  return f;
}

std::vector<uint8_t> response(const std::string& label, bool do_bit) {
  std::vector<uint8_t> r = {0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, static_cast<uint8_t>(do_bit ? 1 : 0)};
  r.push_back(static_cast<uint8_t>(label.size()));
  r.insert(r.end(), label.begin(), label.end());
  for (uint8_t b : std::initializer_list<uint8_t>{5, 'b', 'e', 'n', 'c', 'h', 3, 'l', 'a', 'b', 0, 0, 1, 0, 1}) r.push_back(b);
  for (uint8_t b : {0xC0, 0x0C, 0, 1, 0, 1, 0, 1, 0x51, 0x80, 0, 4, 10, 0, 0, 1}) r.push_back(b);
  if (do_bit)
    for (uint8_t b : {0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 0}) r.push_back(b);
  return r;
}

std::string label(uint32_t i) {
  char b[16];
  std::snprintf(b, sizeof b, "n%08u", i);
  return b;
}

dp::ServiceView service() {
  dp::ServiceView v;
  inet_pton(AF_INET, "198.18.0.53", v.v4[v.n4++]);
  inet_pton(AF_INET6, "2001:2::53", v.v6[v.n6++]);
  return v;
}

void BM_Parse(benchmark::State& st) {
  const auto f = query_frame("wWw", st.range(0), st.range(1));
  const auto svc = service();
  dp::Query q;
  for (auto _ : st) {
    benchmark::DoNotOptimize(dp::parse_query(f, svc, q));
    benchmark::ClobberMemory();
  }
  st.SetLabel(std::string(st.range(0) ? "ipv6" : "ipv4") + (st.range(1) ? "+edns" : ""));
}
BENCHMARK(BM_Parse)->Args({0, 0})->Args({0, 1})->Args({1, 1});

void BM_MakeKey(benchmark::State& st) {
  const auto f = query_frame("wWw", false, true);
  dp::Query q;
  dp::parse_query(f, service(), q);
  cache::Cache c(cache::Config{}, 1);
  cache::Key k;
  size_t end;
  for (auto _ : st) {
    benchmark::DoNotOptimize(cache::make_key(c.hasher(), {f.data() + q.dns, q.dns_len}, 12, cache::kKeyDO, k, &end));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_MakeKey);

// Lookups over N cached names in a Zipf(0.9) order (hit) or for names never cached (miss).
struct Names {
  cache::Cache cache;
  std::vector<cache::Key> hit, miss;
  explicit Names(uint32_t n) : cache([n] {
      cache::Config c;
      c.max_bytes = std::max<size_t>(64u << 20, size_t{n} * 400);
      c.shards = 64;
      return c;
    }(), 1) {
    for (uint32_t i = 0; i < n; ++i) cache.insert_response(response(label(i), false), 1000);
    std::mt19937_64 rng(3);
    std::vector<double> cdf(n);
    double s = 0;
    for (uint32_t r = 0; r < n; ++r) cdf[r] = (s += 1.0 / std::pow(r + 1.0, 0.9));
    std::uniform_real_distribution<double> u(0, s);
    for (int i = 0; i < 1 << 16; ++i) {
      const uint32_t r = static_cast<uint32_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
      hit.push_back(key(std::min(r, n - 1)));
      miss.push_back(key(n + static_cast<uint32_t>(i)));
    }
  }
  cache::Key key(uint32_t i) const {
    const auto f = query_frame(label(i), false, false);
    dp::Query q;
    dp::parse_query(f, service(), q);
    cache::Key k;
    size_t end;
    cache::make_key(cache.hasher(), {f.data() + q.dns, q.dns_len}, 12, 0, k, &end);
    return k;
  }
};

void BM_Lookup(benchmark::State& st) {
  static std::unique_ptr<Names> names;
  static uint32_t loaded = 0;
  if (loaded != st.range(0)) {
    names = std::make_unique<Names>(static_cast<uint32_t>(st.range(0)));
    loaded = static_cast<uint32_t>(st.range(0));
  }
  const bool hit = st.range(1);
  const auto& keys = hit ? names->hit : names->miss;
  const cache::ReaderId r = names->cache.register_reader();
  size_t i = 0, found = 0;
  for (auto _ : st) {
    const cache::Lookup l = names->cache.lookup(r, keys[i], 1001, false);
    found += l.kind == cache::Lookup::kHit;
    if (++i == keys.size()) {
      i = 0;
      names->cache.quiescent(r);
    }
  }
  names->cache.unregister_reader(r);
  if (hit && found != static_cast<size_t>(st.iterations())) st.SkipWithError("a cached name missed");
  st.SetLabel(std::to_string(st.range(0)) + " names, zipf 0.9, " + (hit ? "hit" : "miss"));
}
BENCHMARK(BM_Lookup)->Args({100'000, 1})->Args({1'000'000, 1})->Args({1'000'000, 0});

void BM_Answer(benchmark::State& st) {
  const bool edns = st.range(0);
  const auto f = query_frame("wWw", false, edns);
  dp::Query q;
  dp::parse_query(f, service(), q);
  cache::Cache c(cache::Config{}, 1);
  c.insert_response(response("www", edns), 1000);
  cache::Key k;
  size_t end;
  cache::make_key(c.hasher(), {f.data() + q.dns, q.dns_len}, 12, edns ? cache::kKeyDO : 0, k, &end);
  const cache::ReaderId r = c.register_reader();
  const cache::Lookup l = c.lookup(r, k, 1001, false);
  if (l.kind != cache::Lookup::kHit) {
    st.SkipWithError("entry not cached");
    return;
  }
  std::vector<uint8_t> buf(2048);
  bool tc;
  for (auto _ : st) {
    std::memcpy(buf.data(), f.data(), f.size());  // the query as received (included in the figure)
    benchmark::DoNotOptimize(dp::build_answer(buf.data(), buf.size(), q, *l.entry, 1001, false, {}, &tc));
    benchmark::ClobberMemory();
  }
  c.unregister_reader(r);
  st.SetLabel(edns ? "ipv4+edns, software checksums" : "ipv4, software checksums");
}
BENCHMARK(BM_Answer)->Arg(0)->Arg(1);

}  // namespace

BENCHMARK_MAIN();
