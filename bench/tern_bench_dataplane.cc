// tern-bench dataplane: the real worker_loop (dataplane/worker.cc) on a DPDK ring PMD port.
//
// Layout (two lcores): the main lcore is the generator and the sink; the worker lcore runs either
// tern's worker_loop (busy-poll) or a reference loop that only swaps MAC/IP/ports and forwards, on
// the same port, rings and mempool, so the ratio between the two is what tern's work costs.
//
//   generator --rx ring--> [ring PMD port] --worker_loop--> tx ring --> generator (answers, latency)
//                                                     \---> exception ring --> generator (misses)
//
// Queries are built from templates: the generator copies one, writes the name's 8 digits and patches
// the UDP checksum incrementally, so it stays well ahead of the worker. Two name sets are measured
// one after the other, each with a cache of its own: "fixed", every name "n<8 digits>.bench.lab."
// (21 bytes on the wire), and "mix", names of 15 to 100 bytes drawn from kLengthMix below, closer to
// what a resolver sees. Longer names cost more in the parser, the key fold and hash, the full-key
// compare and the answer's copy of the question, so both figures are printed.
// Latency is the TSC stamped into an mbuf dynamic field at enqueue and read at dequeue: time spent in
// the RX ring, the worker and the TX ring, i.e. inside the appliance.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "cache/cache.h"
#include "dataplane/parse.h"
#include "dataplane/worker.h"
#include "tern_bench.h"

namespace tern::bench {
namespace {

constexpr uint32_t kMiss = UINT32_MAX;
constexpr uint32_t kMaxIndex = 100'000'000;  // 8 decimal digits
constexpr unsigned kRingSize = 4096;
constexpr unsigned kPoolSize = 65535;

struct Options {
  bool quick = false;
  uint32_t names = 1'000'000;
  double zipf = 0.9;  // 0 = uniform
  double hit = 1.0;
  bool v6 = false;
  bool edns = false;
  double seconds = 2.0;
  uint32_t miss_rate = 4'000'000'000u;  // per-worker miss budget; default: every miss reaches the sink
  std::vector<double> loads = {0.1, 0.5, 0.9};
  bool no_huge = false;
  bool stages_only = false;
  bool fixed = true, mix = true;  // --name-lengths: which name sets to measure
};

void usage() {
  std::printf(
      "usage: tern-bench dataplane [options]\n"
      "  --quick            CI smoke: 10K names, short phases, one load point; checks every answer\n"
      "  --names N          names in the cache, 1000..10000000 (default 1000000)\n"
      "  --zipf S           Zipf exponent of the query mix, 0 = uniform (default 0.9)\n"
      "  --hit-ratio R      share of queries for cached names, 0..1 (default 1); misses are unique\n"
      "                     names that go to the exception ring (the sink)\n"
      "  --ipv6             IPv6 queries (default IPv4)\n"
      "  --edns             queries carry an OPT record (answers too)\n"
      "  --seconds T        measurement time per phase (default 2)\n"
      "  --miss-rate N      the worker's miss budget per second (default: unlimited)\n"
      "  --no-huge          run DPDK without hugepages (slower; automatic when none are free)\n"
      "  --stages-only      only the stage figure (process_burst in a loop on this thread; for perf)\n"
      "  --name-lengths S   fixed (every name 21 bytes), mix (15-100 bytes, see the source's\n"
      "                     kLengthMix) or both (default), measured one after the other\n"
      "Last line: RESULT worker_mqps=<x> reference_mpps=<y> ratio=<x/y> p99_us=<p99 at 90%% load>\n"
      "  stage_ns=<ns per query, thread CPU> and the same with a mix_ prefix for the length mix\n"
      "  (worker_mqps etc. are the fixed names' figures, or the mix's with --name-lengths mix)\n");
}

bool parse_options(int argc, char** argv, Options& o) {
  auto num = [&](int& i, double lo, double hi, double& out) {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "tern-bench dataplane: %s needs a value\n", argv[i]);
      return false;
    }
    char* end;
    out = std::strtod(argv[++i], &end);
    if (*end || out < lo || out > hi) {
      std::fprintf(stderr, "tern-bench dataplane: %s %s: expected a number in %g..%g\n", argv[i - 1], argv[i], lo, hi);
      return false;
    }
    return true;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    double v;
    if (a == "--quick") {
      o.quick = true;
      o.names = 10'000;
      o.seconds = 0.5;
      o.loads = {0.5};
    } else if (a == "--names") {
      if (!num(i, 1000, 10'000'000, v)) return false;
      o.names = static_cast<uint32_t>(v);
    } else if (a == "--zipf") {
      if (!num(i, 0, 5, v)) return false;
      o.zipf = v;
    } else if (a == "--hit-ratio") {
      if (!num(i, 0, 1, v)) return false;
      o.hit = v;
    } else if (a == "--ipv6") {
      o.v6 = true;
    } else if (a == "--edns") {
      o.edns = true;
    } else if (a == "--seconds") {
      if (!num(i, 0.1, 600, v)) return false;
      o.seconds = v;
    } else if (a == "--miss-rate") {
      if (!num(i, 0, 4e9, v)) return false;
      o.miss_rate = static_cast<uint32_t>(v);
    } else if (a == "--stages-only") {
      o.stages_only = true;
    } else if (a == "--no-huge") {
      o.no_huge = true;
    } else if (a == "--name-lengths") {
      const std::string v = i + 1 < argc ? argv[++i] : "";
      if (v != "fixed" && v != "mix" && v != "both") {
        std::fprintf(stderr, "tern-bench dataplane: --name-lengths '%s': expected fixed, mix or both\n", v.c_str());
        return false;
      }
      o.fixed = v != "mix";
      o.mix = v != "fixed";
    } else if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else {
      std::fprintf(stderr, "tern-bench dataplane: unknown option '%s' (see --help)\n", a.c_str());
      return false;
    }
  }
  return true;
}

// ---- query template ------------------------------------------------------------------------

const uint8_t kClientMac[6] = {0x02, 0, 0, 0, 0, 0x64}, kNodeMac[6] = {0x02, 0, 0, 0, 0, 0x53};
const uint8_t kClient4[4] = {198, 18, 0, 100}, kService4[4] = {198, 18, 0, 53};
const uint8_t kClient6[16] = {0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00};
const uint8_t kService6[16] = {0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53};

void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// ---- names -----------------------------------------------------------------------------------

// Every name starts with the label "n<8 digits>", so the digits sit at the same offset in every
// template (after the header and the label's length octet) and the checker reads any answer's index
// from there. The fixed set is n<8 digits>.bench.lab. (21 bytes on the wire, the name this harness
// has always used, so its figures stay comparable); the mix pads the same first label with labels
// in front of "lab." to the drawn length.
constexpr size_t kDigitsInName = 2;  // offset of the 8 digits inside a name's wire form
constexpr size_t kFixedNameLen = 21;
constexpr size_t kMinMixLen = 15;    // "n<8 digits>" + "lab" + root: 10 + 4 + 1
constexpr size_t kMaxMixLen = 100;

// The length mix, in wire bytes (length octets and the root included; presentation length + 1 for a
// name without the trailing dot + 1). Our model of a resolver's query names, not a measured trace:
// a short head of apex and www names (www.example.com = 17 bytes), the body in 2-4 labels of 20-34
// bytes, and a tail of CDN, cloud-service and tracker names with hashed or generated labels
// (e1234.dscx.akamaiedge.net = 27, long hashed names 60-100). 87.5 % of the queries are 15-40 bytes;
// median 27, mean 30.8. Weights are in 256ths; lengths within a band are spread evenly.
struct LengthBand {
  uint8_t lo, hi, weight;
};
constexpr LengthBand kLengthMix[] = {
    {15, 19, 32}, {20, 24, 64}, {25, 29, 56}, {30, 34, 40}, {35, 40, 32}, {41, 60, 20}, {61, 100, 12},
};

// Wire name of `len` bytes with zero digits: "n00000000" + filler labels + "lab" + root. Filler
// labels are 3-10 characters, as ordinary names have, so longer names also have more labels.
std::vector<uint8_t> name_of_length(size_t len) {
  std::vector<uint8_t> n = {9, 'n', '0', '0', '0', '0', '0', '0', '0', '0'};
  if (len == kFixedNameLen) {
    for (uint8_t b : {uint8_t{5}, uint8_t{'b'}, uint8_t{'e'}, uint8_t{'n'}, uint8_t{'c'}, uint8_t{'h'}}) n.push_back(b);
  } else {
    static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    static constexpr unsigned kLabel[] = {6, 3, 8, 5, 10, 4, 7};
    size_t fill = len - kMinMixLen;
    if (fill == 1) {  // a label needs 2 bytes at least: lengthen the first label instead
      n[0] = 10;
      n.push_back('x');
      fill = 0;
    }
    for (unsigned k = 0, c = 0; fill > 0; ++k) {
      size_t l = std::min<size_t>(kLabel[k % std::size(kLabel)], fill - 1);
      if (fill - (l + 1) == 1) ++l;  // never leave a single byte behind
      n.push_back(static_cast<uint8_t>(l));
      for (size_t i = 0; i < l; ++i) n.push_back(static_cast<uint8_t>(kChars[c++ % (sizeof kChars - 1)]));
      fill -= l + 1;
    }
  }
  for (uint8_t b : {uint8_t{3}, uint8_t{'l'}, uint8_t{'a'}, uint8_t{'b'}, uint8_t{0}}) n.push_back(b);
  return n;
}

struct Template {
  std::vector<uint8_t> frame;
  size_t l3 = 14, l4 = 0, dns = 0, digits = 0, cksum = 0;
  uint64_t base_acc = 0;  // checksum sum of pseudo-header + datagram with digits and checksum zeroed
  size_t name_len = 0;
  bool v6 = false, edns = false;
};

Template make_template(bool v6, bool edns, size_t name_len);

// One template per name length the set uses; which length a name has is a pure function of its
// index (a multiplicative hash picks one of 256 slots of the mix), so the generator, the cache fill
// and the checker agree without a table per name, and the generator's lookup stays in L1.
struct NameSet {
  bool mix = false;
  std::vector<Template> by_len;  // indexed by wire length; only used lengths are built
  uint8_t slot_len[256] = {};
  const Template& of(uint32_t idx) const {
    return by_len[mix ? slot_len[(idx * 0x9E3779B1u) >> 24] : kFixedNameLen];
  }
  const char* label() const { return mix ? "mix" : "fixed"; }
};

NameSet make_name_set(bool mix, bool v6, bool edns) {
  NameSet ns;
  ns.mix = mix;
  ns.by_len.resize(kMaxMixLen + 1);
  if (!mix) {
    ns.by_len[kFixedNameLen] = make_template(v6, edns, kFixedNameLen);
    return ns;
  }
  unsigned slot = 0;
  for (const LengthBand& b : kLengthMix)
    for (unsigned k = 0; k < b.weight; ++k) ns.slot_len[slot++] = static_cast<uint8_t>(b.lo + k * (b.hi - b.lo + 1u) / b.weight);
  for (uint8_t len : ns.slot_len)
    if (ns.by_len[len].frame.empty()) ns.by_len[len] = make_template(v6, edns, len);
  return ns;
}

Template make_template(bool v6, bool edns, size_t name_len) {
  Template t;
  t.v6 = v6;
  t.edns = edns;
  std::vector<uint8_t> dns;
  put16(dns, 0x4242);
  put16(dns, 0x0100);  // RD
  put16(dns, 1);
  put16(dns, 0);
  put16(dns, 0);
  put16(dns, edns ? 1 : 0);
  const auto name = name_of_length(name_len);
  t.name_len = name.size();
  dns.insert(dns.end(), name.begin(), name.end());
  put16(dns, 1);
  put16(dns, 1);
  if (edns) {
    for (uint8_t b : {0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0}) dns.push_back(b);
  }
  auto& f = t.frame;
  f.insert(f.end(), kNodeMac, kNodeMac + 6);
  f.insert(f.end(), kClientMac, kClientMac + 6);
  put16(f, v6 ? 0x86DD : 0x0800);
  const uint16_t ulen = static_cast<uint16_t>(8 + dns.size());
  if (v6) {
    for (uint8_t b : {0x60, 0, 0, 0}) f.push_back(b);
    put16(f, ulen);
    f.push_back(17);
    f.push_back(64);
    f.insert(f.end(), kClient6, kClient6 + 16);
    f.insert(f.end(), kService6, kService6 + 16);
  } else {
    f.push_back(0x45);
    f.push_back(0);
    put16(f, static_cast<uint16_t>(20 + ulen));
    put16(f, 0);
    put16(f, 0x4000);
    f.push_back(64);
    f.push_back(17);
    put16(f, 0);
    f.insert(f.end(), kClient4, kClient4 + 4);
    f.insert(f.end(), kService4, kService4 + 4);
    const uint16_t c = static_cast<uint16_t>(~dp::csum_fold(dp::csum_acc(0, &f[t.l3], 20)));
    std::memcpy(&f[t.l3 + 10], &c, 2);
  }
  t.l4 = f.size();
  put16(f, 40000);
  put16(f, 53);
  put16(f, ulen);
  put16(f, 0);
  t.cksum = t.l4 + 6;
  t.dns = f.size();
  f.insert(f.end(), dns.begin(), dns.end());
  t.digits = t.dns + 12 + kDigitsInName;
  // The digits start an even distance into the datagram, so their words line up with the base sum.
  std::memset(&f[t.digits], 0, 8);
  const uint8_t ph[4] = {0, 17, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen)};
  uint64_t acc = v6 ? dp::csum_acc(0, &f[t.l3 + 8], 32) : dp::csum_acc(0, &f[t.l3 + 12], 8);
  acc = dp::csum_acc(acc, ph, 4);
  t.base_acc = dp::csum_acc(acc, &f[t.l4], ulen);
  std::memset(&f[t.digits], '0', 8);
  return t;
}

struct Digits {
  char four[10000][4];
  Digits() {
    for (int i = 0; i < 10000; ++i) {
      four[i][0] = static_cast<char>('0' + i / 1000);
      four[i][1] = static_cast<char>('0' + i / 100 % 10);
      four[i][2] = static_cast<char>('0' + i / 10 % 10);
      four[i][3] = static_cast<char>('0' + i % 10);
    }
  }
};
const Digits kDigits;

inline void write_query(uint8_t* dst, const Template& t, uint32_t idx) {
  std::memcpy(dst, t.frame.data(), t.frame.size());
  uint8_t d[8];
  std::memcpy(d, kDigits.four[idx / 10000], 4);
  std::memcpy(d + 4, kDigits.four[idx % 10000], 4);
  std::memcpy(dst + t.digits, d, 8);
  uint16_t c = static_cast<uint16_t>(~dp::csum_fold(dp::csum_acc(t.base_acc, d, 8)));
  if (c == 0) c = 0xFFFF;
  std::memcpy(dst + t.cksum, &c, 2);
}

uint32_t read_index(const uint8_t* name_digits) {
  uint32_t v = 0;
  for (int i = 0; i < 8; ++i) {
    if (name_digits[i] < '0' || name_digits[i] > '9') return kMiss;
    v = v * 10 + (name_digits[i] - '0');
  }
  return v;
}

std::vector<uint8_t> response_for(const NameSet& set, uint32_t idx) {
  std::vector<uint8_t> r;
  put16(r, 0);
  put16(r, 0x8180);
  put16(r, 1);
  put16(r, 1);
  put16(r, 0);
  put16(r, 0);
  auto name = name_of_length(set.of(idx).name_len);
  std::memcpy(&name[kDigitsInName], kDigits.four[idx / 10000], 4);
  std::memcpy(&name[kDigitsInName + 4], kDigits.four[idx % 10000], 4);
  r.insert(r.end(), name.begin(), name.end());
  put16(r, 1);
  put16(r, 1);
  for (uint8_t b : {0xC0, 0x0C, 0, 1, 0, 1, 0, 1, 0x51, 0x80, 0, 4}) r.push_back(b);  // TTL 86400
  for (uint8_t b : {uint8_t{10}, static_cast<uint8_t>(idx >> 16), static_cast<uint8_t>(idx >> 8),
                    static_cast<uint8_t>(idx)})
    r.push_back(b);
  return r;
}

// ---- query mix -----------------------------------------------------------------------------

std::vector<uint32_t> make_sequence(const Options& o, size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> cdf;
  if (o.zipf > 0) {
    cdf.resize(o.names);
    double s = 0;
    for (uint32_t r = 0; r < o.names; ++r) cdf[r] = (s += 1.0 / std::pow(r + 1.0, o.zipf));
    for (double& c : cdf) c /= s;
  }
  // A fixed permutation from rank to name index, so the hottest names are not the lowest indices.
  std::vector<uint32_t> perm(o.names);
  for (uint32_t i = 0; i < o.names; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> seq(len);
  for (auto& v : seq) {
    if (u(rng) >= o.hit) {
      v = kMiss;
      continue;
    }
    uint32_t rank;
    if (o.zipf > 0) {
      rank = static_cast<uint32_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
      rank = std::min(rank, o.names - 1);
    } else {
      rank = static_cast<uint32_t>(u(rng) * o.names) % o.names;
    }
    v = perm[rank];
  }
  return seq;
}

// ---- latency ---------------------------------------------------------------------------------

// Log-linear histogram of TSC deltas (HDR-style): 16 sub-buckets per power of two, so any value is
// within 1/16 (6%) of its bucket, in 1 KiB that stays in L1 (a linear histogram fine enough for
// microseconds would be megabytes, and its misses slowed the generator measurably).
struct Histogram {
  static constexpr unsigned kSub = 16, kSubBits = 4;
  uint64_t b[64 * kSub] = {};
  uint64_t n = 0;
  double ns_per_tsc = 1;
  static unsigned bucket(uint64_t v) {
    if (v < kSub) return static_cast<unsigned>(v);
    const unsigned top = 63u - static_cast<unsigned>(__builtin_clzll(v));  // >= kSubBits
    const unsigned shift = top - kSubBits;
    return (shift + 1) * kSub + static_cast<unsigned>((v >> shift) & (kSub - 1));
  }
  static uint64_t upper(unsigned i) {  // largest value in bucket i
    if (i < kSub) return i;
    const unsigned shift = i / kSub - 1;
    return ((uint64_t{kSub} + i % kSub + 1) << shift) - 1;
  }
  void add(uint64_t tsc) {
    ++b[bucket(tsc)];
    ++n;
  }
  double percentile_us(double p) const {
    if (!n) return 0;
    const uint64_t want = static_cast<uint64_t>(std::ceil(p / 100 * static_cast<double>(n)));
    uint64_t seen = 0;
    for (unsigned i = 0; i < 64 * kSub; ++i)
      if ((seen += b[i]) >= want) return static_cast<double>(upper(i)) * ns_per_tsc / 1000;
    return 0;
  }
};

// ---- the generator and sink ------------------------------------------------------------------

struct Rig {
  rte_mempool* pool = nullptr;
  rte_ring *rx = nullptr, *tx = nullptr, *exc = nullptr;
  uint16_t port = 0;
  int stamp_off = -1;
  const NameSet* set = nullptr;
  std::vector<uint32_t> seq;
  size_t seq_pos = 0;
  uint32_t names = 0, next_miss = 0;
  std::vector<rte_mbuf*> stash;
  uint64_t hz = 0;
};

inline uint64_t& stamp(rte_mbuf* m, int off) { return *RTE_MBUF_DYNFIELD(m, off, uint64_t*); }

struct PhaseResult {
  double seconds = 0;
  uint64_t sent = 0, answered = 0, punted = 0, ring_full = 0;
  Histogram lat;
  double mqps() const { return static_cast<double>(answered + punted) / seconds / 1e6; }
};

// Checks answers and punts in the correctness phase.
struct Checker {
  const NameSet* set = nullptr;
  uint32_t names = 0;
  uint64_t hits_ok = 0, misses_ok = 0, errors = 0;
  std::vector<uint8_t> expect;
  void error(const char* what, uint32_t idx) {
    if (errors++ < 5) std::fprintf(stderr, "check: name %u: %s\n", idx, what);
  }
  void answer(const rte_mbuf* m) {
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    const size_t len = rte_pktmbuf_data_len(m);
    const Template* t = &set->of(0);  // every template has the digits at the same offset
    const uint32_t idx = len > t->digits + 8 ? read_index(f + t->digits) : kMiss;
    if (idx == kMiss || idx >= names) return error("answer for a name that is not cached", idx);
    t = &set->of(idx);
    const size_t qend = 12 + t->name_len + 4;
    const size_t want = t->dns + qend + 16 + (t->edns ? 11 : 0);
    if (len != want) return error("answer has the wrong length", idx);
    const uint8_t* dns = f + t->dns;
    if (wire::load16(dns + 2) != 0x8180) return error("flags are not QR RD RA NOERROR", idx);
    if (wire::load16(dns + 6) != 1 || wire::load16(dns + 10) != (t->edns ? 1 : 0))
      return error("wrong record counts", idx);
    const uint8_t* rd = dns + qend + 12;
    if (rd[0] != 10 || rd[1] != static_cast<uint8_t>(idx >> 16) || rd[2] != static_cast<uint8_t>(idx >> 8) ||
        rd[3] != static_cast<uint8_t>(idx))
      return error("A record is not the cached one", idx);
    if (std::memcmp(f, kClientMac, 6) || std::memcmp(f + 6, kNodeMac, 6)) return error("MACs not swapped", idx);
    const uint8_t* dst = t->v6 ? f + t->l3 + 24 : f + t->l3 + 16;
    if (std::memcmp(dst, t->v6 ? kClient6 : kClient4, t->v6 ? 16 : 4)) return error("not addressed to the client", idx);
    const size_t ulen = len - t->l4;
    const uint8_t ph[4] = {0, 17, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen)};
    uint64_t acc = t->v6 ? dp::csum_acc(0, f + t->l3 + 8, 32) : dp::csum_acc(0, f + t->l3 + 12, 8);
    acc = dp::csum_acc(dp::csum_acc(acc, ph, 4), f + t->l4, ulen);
    if (dp::csum_fold(acc) != 0xFFFF) return error("UDP checksum wrong", idx);
    if (!t->v6 && dp::csum_fold(dp::csum_acc(0, f + t->l3, 20)) != 0xFFFF) return error("IPv4 checksum wrong", idx);
    ++hits_ok;
  }
  void punt(const rte_mbuf* m) {
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    const size_t digits = set->of(0).digits;
    const uint32_t idx = rte_pktmbuf_data_len(m) > digits + 8 ? read_index(f + digits) : kMiss;
    if (idx == kMiss || idx < names) return error("a cached name reached the exception ring", idx);
    const Template& t = set->of(idx);
    expect.resize(t.frame.size());
    write_query(expect.data(), t, idx);
    if (rte_pktmbuf_data_len(m) != expect.size() || std::memcmp(f, expect.data(), expect.size()))
      return error("a miss was changed on its way to the exception ring", idx);
    ++misses_ok;
  }
};

void recycle(Rig& r, rte_ring* ring, rte_mbuf** objs, unsigned n) {
  (void)ring;
  for (unsigned i = 0; i < n; ++i) r.stash.push_back(objs[i]);
}

// Drives one phase: offered rate in queries/s (0 = as fast as the rings take them), `limit` queries
// at most (0 = no limit). Measures after `warmup` seconds for `seconds` seconds.
PhaseResult run_phase(Rig& r, double rate, double warmup, double seconds, Checker* check = nullptr,
                      uint64_t limit = 0) {
  PhaseResult res;
  res.lat.ns_per_tsc = 1e9 / static_cast<double>(r.hz);
  rte_mbuf* objs[64];
  const uint64_t t0 = rte_rdtsc();
  const uint64_t t_meas = t0 + static_cast<uint64_t>(warmup * static_cast<double>(r.hz));
  const uint64_t t_end = t_meas + static_cast<uint64_t>(seconds * static_cast<double>(r.hz));
  uint64_t total_sent = 0, total_back = 0;
  for (;;) {
    const uint64_t now = rte_rdtsc();
    if (now >= t_end) break;
    if (limit && total_sent == limit && total_back == limit) break;
    const bool measuring = now >= t_meas;
    unsigned n = rte_ring_sc_dequeue_burst(r.tx, reinterpret_cast<void**>(objs), 64, nullptr);
    for (unsigned i = 0; i < n; ++i) {
      if (measuring) res.lat.add(now - stamp(objs[i], r.stamp_off));
      if (check) check->answer(objs[i]);
    }
    if (measuring) res.answered += n;
    total_back += n;
    recycle(r, r.tx, objs, n);
    n = rte_ring_sc_dequeue_burst(r.exc, reinterpret_cast<void**>(objs), 64, nullptr);
    if (check)
      for (unsigned i = 0; i < n; ++i) check->punt(objs[i]);
    if (measuring) res.punted += n;
    total_back += n;
    recycle(r, r.exc, objs, n);

    uint64_t budget = 32;
    if (rate > 0) {
      const uint64_t due = static_cast<uint64_t>(static_cast<double>(now - t0) * rate / static_cast<double>(r.hz));
      budget = due > total_sent ? std::min<uint64_t>(32, due - total_sent) : 0;
    }
    if (limit) budget = std::min<uint64_t>(budget, limit - total_sent);
    if (!budget) continue;
    if (r.stash.size() < budget) {
      const size_t need = budget - r.stash.size();
      const size_t have = r.stash.size();
      r.stash.resize(have + need);
      if (rte_pktmbuf_alloc_bulk(r.pool, r.stash.data() + have, static_cast<unsigned>(need)) != 0) {
        r.stash.resize(have);
        budget = have;
        if (!budget) continue;
      }
    }
    for (unsigned i = 0; i < budget; ++i) {
      rte_mbuf* m = r.stash.back();
      r.stash.pop_back();
      uint32_t idx = r.seq[r.seq_pos];
      r.seq_pos = r.seq_pos + 1 == r.seq.size() ? 0 : r.seq_pos + 1;
      if (idx == kMiss) {
        idx = r.next_miss;
        r.next_miss = r.next_miss + 1 == kMaxIndex ? r.names : r.next_miss + 1;
      }
      const Template& t = r.set->of(idx);
      const uint16_t frame_len = static_cast<uint16_t>(t.frame.size());
      m->data_off = RTE_PKTMBUF_HEADROOM;
      m->data_len = frame_len;
      m->pkt_len = frame_len;
      m->ol_flags = 0;
      write_query(rte_pktmbuf_mtod(m, uint8_t*), t, idx);
      stamp(m, r.stamp_off) = now;
      objs[i] = m;
    }
    const unsigned q = rte_ring_sp_enqueue_burst(r.rx, reinterpret_cast<void**>(objs), static_cast<unsigned>(budget), nullptr);
    total_sent += q;
    if (measuring) res.sent += q;
    if (q < budget) {
      res.ring_full += budget - q;
      for (unsigned i = q; i < budget; ++i) r.stash.push_back(objs[i]);
    }
  }
  res.seconds = limit ? static_cast<double>(rte_rdtsc() - t0) / static_cast<double>(r.hz) : seconds;
  return res;
}

void drain(Rig& r) {
  rte_mbuf* objs[64];
  for (rte_ring* ring : {r.rx, r.tx, r.exc}) {
    unsigned n;
    while ((n = rte_ring_dequeue_burst(ring, reinterpret_cast<void**>(objs), 64, nullptr)) > 0) recycle(r, ring, objs, n);
  }
}

// ---- the reference loop --------------------------------------------------------------------

struct RefCtx {
  uint16_t port;
  std::atomic<bool>* stop;
  uint64_t dropped = 0;
};

// What any DPDK responder must do at least: receive, swap Ethernet / IP / UDP endpoints (checksums
// stay valid under a swap), transmit. No parsing, no lookup.
int reference_loop(void* arg) {
  auto* c = static_cast<RefCtx*>(arg);
  rte_mbuf* pkts[dp::kBurst];
  while (!c->stop->load(std::memory_order_relaxed)) {
    const uint16_t n = rte_eth_rx_burst(c->port, 0, pkts, dp::kBurst);
    for (uint16_t i = 0; i < n; ++i) {
      uint8_t* f = rte_pktmbuf_mtod(pkts[i], uint8_t*);
      uint8_t t[16];
      std::memcpy(t, f, 6);
      std::memcpy(f, f + 6, 6);
      std::memcpy(f + 6, t, 6);
      const bool v6 = f[12] == 0x86;
      uint8_t* ip = f + 14;
      const size_t a = v6 ? 8 : 12, alen = v6 ? 16 : 4;
      std::memcpy(t, ip + a, alen);
      std::memcpy(ip + a, ip + a + alen, alen);
      std::memcpy(ip + a + alen, t, alen);
      uint8_t* udp = ip + (v6 ? 40 : 20);
      std::memcpy(t, udp, 2);
      std::memcpy(udp, udp + 2, 2);
      std::memcpy(udp + 2, t, 2);
    }
    const uint16_t sent = n ? rte_eth_tx_burst(c->port, 0, pkts, n) : 0;
    if (sent < n) {
      c->dropped += n - sent;
      rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    }
  }
  return 0;
}

double thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

struct StageFigures {
  double ns_per_query = 0, build_ns = 0;
};

// Runs process_burst on bursts of 32 freshly written queries, `bursts` times, with a housekeeping
// pass every 8 bursts as the loop would; then the same without process_burst, and subtracts.
StageFigures stage_capacity(Rig& r, dp::Worker& w, size_t bursts) {
  StageFigures f;
  rte_mbuf* b[dp::kBurst];
  rte_mbuf* tx[dp::kBurst];
  rte_mbuf* exc[dp::kBurst];
  if (rte_pktmbuf_alloc_bulk(r.pool, b, dp::kBurst) != 0) return f;
  auto fill = [&] {
    for (unsigned i = 0; i < dp::kBurst; ++i) {
      rte_mbuf* m = b[i];
      uint32_t idx = r.seq[r.seq_pos];
      r.seq_pos = r.seq_pos + 1 == r.seq.size() ? 0 : r.seq_pos + 1;
      if (idx == kMiss) {
        idx = r.next_miss;
        r.next_miss = r.next_miss + 1 == kMaxIndex ? r.names : r.next_miss + 1;
      }
      const Template& t = r.set->of(idx);
      m->data_off = RTE_PKTMBUF_HEADROOM;
      m->data_len = m->pkt_len = static_cast<uint16_t>(t.frame.size());
      write_query(rte_pktmbuf_mtod(m, uint8_t*), t, idx);
    }
  };
  double t0 = thread_cpu_ns();
  for (size_t k = 0; k < bursts; ++k) fill();
  f.build_ns = (thread_cpu_ns() - t0) / static_cast<double>(bursts * dp::kBurst);
  t0 = thread_cpu_ns();
  for (size_t k = 0; k < bursts; ++k) {
    fill();
    const dp::BurstOut o = dp::process_burst(w, {b, dp::kBurst}, tx, exc);
    // Everything comes back (no drops with an unlimited miss budget); refill from the outputs, and
    // top up from the pool if a drop freed some.
    unsigned n = 0;
    for (unsigned i = 0; i < o.n_tx; ++i) b[n++] = tx[i];
    for (unsigned i = 0; i < o.n_exc; ++i) b[n++] = exc[i];
    if (n < dp::kBurst && rte_pktmbuf_alloc_bulk(r.pool, b + n, dp::kBurst - n) != 0) return f;
    if ((k & 7) == 7) dp::worker_housekeeping(w);
  }
  const double total = (thread_cpu_ns() - t0) / static_cast<double>(bursts * dp::kBurst);
  f.ns_per_query = total - f.build_ns;
  rte_pktmbuf_free_bulk(b, dp::kBurst);
  return f;
}

bool hugepages_free() {
  std::ifstream f("/proc/meminfo");
  std::string k;
  long v;
  while (f >> k >> v) {
    if (k == "HugePages_Free:") return v >= 256;  // 512 MiB of 2 MiB pages: mempool + cache metadata
    f.ignore(256, '\n');
  }
  return false;
}

// What one name set measured; `run` is false when the set was not measured.
struct SetFigures {
  bool run = false, ok = false;
  double stage_ns = 0, worker_mqps = 0, reference_mpps = 0, p99_us = 0;
};

// The whole measurement for one name set, on the rig's port: a cache of its own filled with the set's
// names, a worker on it, then the correctness check, the stage figure, the reference loop, the worker
// at full speed and at the given loads.
SetFigures measure_set(Rig& r, const Options& o, const NameSet& set, unsigned wl) {
  SetFigures fig;
  fig.run = true;
  r.set = &set;
  r.names = o.names;
  r.next_miss = o.names;
  r.seq_pos = 0;
  for (rte_mbuf* m : r.stash) rte_pktmbuf_free(m);
  r.stash.clear();

  // The cache, filled the way the service thread fills it: insert_response on real responses.
  cache::Config cc;
  cc.max_bytes = std::max<size_t>(64u << 20, size_t{o.names} * 400);
  cc.shards = 64;
  cache::Cache cache(cc);
  const uint32_t now = dp::cache_clock_s();
  uint64_t fill_t0 = rte_rdtsc();
  double name_bytes = 0;
  for (uint32_t i = 0; i < o.names; ++i) {
    const auto res = cache.insert_response(response_for(set, i), now);
    if (!res.stored()) {
      std::fprintf(stderr, "tern-bench dataplane: cache refused name %u: %s\n", i, cache::describe(res.reason));
      return fig;
    }
    name_bytes += static_cast<double>(set.of(i).name_len);
  }
  const double fill_s = static_cast<double>(rte_rdtsc() - fill_t0) / static_cast<double>(r.hz);
  const auto cst = cache.stats();
  std::printf("\n== names: %s (%s), mean %.1f bytes on the wire over the cached names\n", set.label(),
              set.mix ? "15-100 bytes, 87.5% of the mix 15-40, median 27" : "n<8 digits>.bench.lab., 21 bytes",
              name_bytes / o.names);
  std::printf("cache: %u entries in %.2f s (%.2f M inserts/s), %.1f MiB accounted\n", o.names, fill_s,
              o.names / fill_s / 1e6, static_cast<double>(cst.total.bytes) / (1 << 20));

  dp::PolicySlot policy;
  auto pol = std::make_shared<dp::Policy>();
  std::string err;
  pol->allow.add_list("198.18.0.0/15,2001:2::/48", &err);
  pol->miss_rate_qps = o.miss_rate;
  pol->miss_burst = 4096;
  policy.publish(pol);
  dp::ServiceAddrs service;
  auto addrs = std::make_shared<dp::ServiceAddrSet>();
  addrs->v4.push_back({198, 18, 0, 53});
  std::array<uint8_t, 16> s6;
  std::memcpy(s6.data(), kService6, 16);
  addrs->v6.push_back(s6);
  service.publish(addrs);
  std::atomic<bool> stop{false};
  dp::WorkerConf wc;
  wc.index = 0;
  wc.port = r.port;
  wc.exception_ring = r.exc;
  wc.cache = &cache;
  wc.policy = &policy;
  wc.idle = dp::IdleMode::kBusyPoll;
  wc.stop = &stop;
  wc.service = &service;
  wc.socket_id = static_cast<int>(rte_lcore_to_socket_id(wl));
  dp::Worker* w = dp::worker_create(wc, &err);
  if (!w) {
    std::fprintf(stderr, "tern-bench dataplane: %s\n", err.c_str());
    return fig;
  }
  auto start_worker = [&] {
    stop = false;
    rte_eal_remote_launch(dp::worker_launch, w, wl);
  };
  auto stop_lcore = [&] {
    stop = true;
    rte_eal_wait_lcore(wl);
    drain(r);
  };

  // 1. Correctness: every hit answered right, every miss handed on unchanged.
  Options co = o;
  co.hit = std::min(o.hit, 0.9);
  r.seq = make_sequence(co, 1 << 16, 1);
  Checker check;
  check.set = &set;
  check.names = o.names;
  const uint64_t n_check = o.quick ? 20'000 : 100'000;
  start_worker();
  run_phase(r, 2e6, 0, 30, &check, n_check);
  stop_lcore();
  fig.ok = check.errors == 0 && check.hits_ok + check.misses_ok == n_check;
  std::printf("check: %lu queries: %lu hits answered correctly, %lu misses punted unchanged, %lu errors%s\n",
              static_cast<unsigned long>(n_check), static_cast<unsigned long>(check.hits_ok),
              static_cast<unsigned long>(check.misses_ok), static_cast<unsigned long>(check.errors),
              fig.ok ? "" : "  FAILED");

  r.seq = make_sequence(o, std::clamp<size_t>(size_t{o.names} * 2, 1 << 20, 1 << 24), 2);
  r.seq_pos = 0;
  const double warm = o.quick ? 0.1 : 0.5;

  // 2a. The worker's stages alone, on this thread, timed in thread CPU time: what one core can do
  // with the rings and the generator taken out, and robust against other load on the machine.
  {
    const StageFigures sf = stage_capacity(r, *w, o.quick ? 20'000 : o.stages_only ? 2'000'000 : 200'000);
    fig.stage_ns = sf.ns_per_query;
    std::printf("worker stages (process_burst, thread CPU time): %.1f ns per query -> %.2f Mqps per core "
                "(query build %.1f ns subtracted)\n",
                sf.ns_per_query, sf.ns_per_query > 0 ? 1e3 / sf.ns_per_query : 0.0, sf.build_ns);
    if (o.stages_only) {
      dp::worker_destroy(w);
      return fig;
    }
  }

  // 2. Reference loop at full speed, on this set's frames.
  RefCtx rc{r.port, &stop};
  stop = false;
  rte_eal_remote_launch(reference_loop, &rc, wl);
  const PhaseResult ref = run_phase(r, 0, warm, o.seconds);
  stop_lcore();
  fig.reference_mpps = ref.mqps();
  std::printf("reference (swap + forward): %.2f Mpps%s\n", fig.reference_mpps,
              ref.ring_full ? "" : "  (generator-bound: the loop was never the bottleneck; a lower bound)");

  // 3. The worker at full speed, then at fractions of it for latency. Besides the wall-clock rate, the
  // worker's own busy cycles per query: the figure that stays honest when the generator, or another
  // process on a shared machine, keeps the worker waiting.
  auto counter = [&](dp::Counter c) { return w->published[dp::index(c)].load(std::memory_order_relaxed); };
  start_worker();
  const uint64_t busy0 = counter(dp::Counter::busy_cycles), rx0 = counter(dp::Counter::rx_packets);
  const PhaseResult max = run_phase(r, 0, warm, o.seconds);
  const uint64_t busy1 = counter(dp::Counter::busy_cycles), rx1 = counter(dp::Counter::rx_packets);
  const double ns_per_query = rx1 > rx0 ? static_cast<double>(busy1 - busy0) * 1e9 / static_cast<double>(r.hz) /
                                              static_cast<double>(rx1 - rx0)
                                        : 0;
  fig.worker_mqps = max.mqps();
  const double busy_share = static_cast<double>(busy1 - busy0) / (static_cast<double>(r.hz) * (warm + o.seconds));
  const bool generator_bound = busy_share < 0.9;
  std::printf("worker busy %.0f%% of the phase, %.1f ns per query while busy%s\n", busy_share * 100, ns_per_query,
              generator_bound ? "  (the worker waited for the generator: the wall-clock rate below is a lower bound)"
                              : "");
  std::printf("worker max: %.2f Mqps (answered %.2f M/s, punted %.2f M/s)%s  p50 %.2f us p99 %.2f us (queueing "
              "behind a full %u-slot ring)\n",
              fig.worker_mqps, static_cast<double>(max.answered) / max.seconds / 1e6,
              static_cast<double>(max.punted) / max.seconds / 1e6,
              generator_bound || !max.ring_full ? "  (generator-bound: a lower bound)" : "", max.lat.percentile_us(50),
              max.lat.percentile_us(99), kRingSize);
  for (size_t li = 0; li < o.loads.size(); ++li) {
    const double load = o.loads[li];
    const PhaseResult p = run_phase(r, load * fig.worker_mqps * 1e6, warm, o.seconds);
    std::printf("load %3.0f%%: offered %.2f Mqps, served %.2f Mqps, latency p50 %.2f us p99 %.2f us p99.9 %.2f us\n",
                load * 100, load * fig.worker_mqps, p.mqps(), p.lat.percentile_us(50), p.lat.percentile_us(99),
                p.lat.percentile_us(99.9));
    if (load >= 0.9 || li + 1 == o.loads.size()) fig.p99_us = p.lat.percentile_us(99);
  }
  stop_lcore();

  std::printf("worker counters:");
  for (size_t i = 0; i < dp::kCounterCount; ++i)
    if (const uint64_t v = w->published[i].load(std::memory_order_relaxed))
      std::printf(" %s=%lu", std::string(dp::kCounterInfo[i].name).c_str(), static_cast<unsigned long>(v));
  std::printf("\n");
  dp::worker_destroy(w);
  return fig;
}

}  // namespace

int dataplane_main(int argc, char** argv) {
  Options o;
  if (!parse_options(argc, argv, o)) return 2;

  const std::string prefix = "--file-prefix=tern-bench-" + std::to_string(getpid());
  std::vector<std::string> eal = {"tern-bench", "-l", "0,1", "--no-pci", "--no-telemetry", "--log-level=*:warning",
                                  prefix};
  bool huge = !o.no_huge && hugepages_free();
  if (huge) {
    eal.push_back("--in-memory");
  } else {
    std::printf("note: %s: running DPDK with --no-huge (figures will be lower; scripts/hugepages.sh reserves pages)\n",
                o.no_huge ? "--no-huge given" : "fewer than 256 free 2 MiB hugepages");
    for (const char* a : {"--no-huge", "--no-shconf", "-m", "1024"}) eal.push_back(a);
  }
  std::vector<char*> eargv;
  for (auto& s : eal) eargv.push_back(s.data());
  if (rte_eal_init(static_cast<int>(eargv.size()), eargv.data()) < 0) {
    std::fprintf(stderr, "tern-bench dataplane: EAL init failed: %s (needs 2 lcores: 0 and 1)\n", rte_strerror(rte_errno));
    return 1;
  }
  const unsigned wl = rte_get_next_lcore(-1, 1, 0);
  if (wl >= RTE_MAX_LCORE) {
    std::fprintf(stderr, "tern-bench dataplane: no worker lcore (EAL got -l 0,1: does this machine have 2 cores?)\n");
    return 1;
  }

  Rig r;
  r.hz = rte_get_tsc_hz();
  static const rte_mbuf_dynfield stamp_desc = {"tern_bench_tsc", sizeof(uint64_t), alignof(uint64_t), 0};
  r.stamp_off = rte_mbuf_dynfield_register(&stamp_desc);
  r.pool = rte_pktmbuf_pool_create("bench_pool", kPoolSize, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, static_cast<int>(rte_socket_id()));
  r.rx = rte_ring_create("bench_rx", kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  r.tx = rte_ring_create("bench_tx", kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  r.exc = rte_ring_create("bench_exc", kRingSize, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (r.stamp_off < 0 || !r.pool || !r.rx || !r.tx || !r.exc) {
    std::fprintf(stderr, "tern-bench dataplane: cannot create mempool/rings: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  const int port = rte_eth_from_rings("bench_port", &r.rx, 1, &r.tx, 1, SOCKET_ID_ANY);
  rte_eth_conf pconf{};
  if (port < 0 || rte_eth_dev_configure(static_cast<uint16_t>(port), 1, 1, &pconf) != 0 ||
      rte_eth_rx_queue_setup(static_cast<uint16_t>(port), 0, kRingSize, SOCKET_ID_ANY, nullptr, r.pool) != 0 ||
      rte_eth_tx_queue_setup(static_cast<uint16_t>(port), 0, kRingSize, SOCKET_ID_ANY, nullptr) != 0 ||
      rte_eth_dev_start(static_cast<uint16_t>(port)) != 0) {
    std::fprintf(stderr, "tern-bench dataplane: ring PMD port setup failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  r.port = static_cast<uint16_t>(port);

  std::printf("tern-bench dataplane: names=%u zipf=%.2f hit=%.2f %s edns=%s seconds=%.1f worker_lcore=%u %s "
              "name-lengths=%s\n",
              o.names, o.zipf, o.hit, o.v6 ? "ipv6" : "ipv4", o.edns ? "on" : "off", o.seconds, wl,
              huge ? "hugepages" : "no-huge", o.fixed && o.mix ? "both" : o.mix ? "mix" : "fixed");
  SetFigures fixed, mix;
  if (o.fixed) {
    const NameSet set = make_name_set(false, o.v6, o.edns);
    fixed = measure_set(r, o, set, wl);
  }
  if (o.mix) {
    const NameSet set = make_name_set(true, o.v6, o.edns);
    mix = measure_set(r, o, set, wl);
  }

  for (rte_mbuf* m : r.stash) rte_pktmbuf_free(m);
  r.stash.clear();
  rte_eth_dev_stop(r.port);
  rte_eth_dev_close(r.port);
  // worker_mqps & co. stay the fixed names' figures (tern-bench plan and earlier runs read them);
  // the mix's follow with a mix_ prefix.
  const SetFigures& head = fixed.run ? fixed : mix;
  std::printf("RESULT worker_mqps=%.2f reference_mpps=%.2f ratio=%.3f p99_us=%.2f stage_ns=%.1f", head.worker_mqps,
              head.reference_mpps, head.reference_mpps > 0 ? head.worker_mqps / head.reference_mpps : 0.0, head.p99_us,
              head.stage_ns);
  if (fixed.run && mix.run)
    std::printf(" mix_worker_mqps=%.2f mix_reference_mpps=%.2f mix_ratio=%.3f mix_p99_us=%.2f mix_stage_ns=%.1f",
                mix.worker_mqps, mix.reference_mpps, mix.reference_mpps > 0 ? mix.worker_mqps / mix.reference_mpps : 0.0,
                mix.p99_us, mix.stage_ns);
  std::printf("\n");
  std::fflush(stdout);
  rte_eal_cleanup();
  return (!fixed.run || fixed.ok) && (!mix.run || mix.ok) ? 0 : 1;
}

}  // namespace tern::bench
