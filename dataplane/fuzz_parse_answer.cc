// libFuzzer target for the fast path's byte-level stages: parse_query on arbitrary frames, then, for
// what it accepts, a cache round trip (insert a response for that question, make_key, lookup) and
// build_answer / build_refused / build_truncated in place. Invariants are checked, not just "no
// crash": the answer fits its buffer, keeps the question, and carries valid IPv4 / UDP checksums.
// The same input also goes through the punt classifier, and through the service thread's fill path
// (PendingQueries + offer_to_cache) twice: as a frame from Linux, and as the DNS message of a local
// answer (Ethernet/IPv4/UDP from port 53 of the service address) to a query recorded from it, so
// that the cache's parser sees answers shaped exactly as the resolver's.
//
//   CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true
//   ninja -C build-fuzz dataplane/fuzz_parse_answer
//   mkdir -p /tmp/corpus && cp dataplane/fuzz-corpus/* /tmp/corpus/
//   build-fuzz/dataplane/fuzz_parse_answer -max_len=1600 -timeout=5 -detect_leaks=0 /tmp/corpus
// (-detect_leaks=0: the cache index packs a tag into its entry pointers, which LeakSanitizer cannot
// follow, so live cache entries look leaked.)
//
// Built without -Dfuzz (TERN_FUZZ_REPLAY) it replays every file of the corpus directories given on
// the command line, each also cut at every length, and is registered as a unit test.
#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "answer.h"
#include "cache/cache.h"
#include "exception.h"
#include "parse.h"
#include "wire/wire.h"

namespace {

using namespace tern;

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);    \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

struct State {
  cache::Cache cache{[] {
                       cache::Config c;
                       c.max_bytes = 4u << 20;
                       c.shards = 4;
                       return c;
                     }(),
                     1};
  cache::ReaderId reader = cache.register_reader();
  dp::ServiceView svc;
  dp::ServiceAddrSet svc_set;
  dp::PendingQueries pending{256, 10000, 5};
  uint64_t now_ms = 1'000'000;
  State() {
    inet_pton(AF_INET, "198.18.0.53", svc.v4[svc.n4++]);
    inet_pton(AF_INET6, "2001:2::53", svc.v6[svc.n6++]);
    svc_set.v4.push_back({198, 18, 0, 53});
    svc_set.v6.push_back({0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53});
  }
};

// replay summary: the corpus must reach both builders and fill the cache from a local answer
size_t g_answered = 0, g_refused = 0, g_filled = 0;

State& state() {
  static State s;
  return s;
}

// A response a resolver could have sent for the question in q: one record of the asked type with
// 4 bytes of rdata (rejected by the cache for types whose rdata has names: then REFUSED is built).
std::vector<uint8_t> response_for(const uint8_t* dns, const dp::Query& q) {
  std::vector<uint8_t> r(dns, dns + q.qend);
  wire::store16(r.data() + 2, static_cast<uint16_t>(0x8180 | (q.hdr_flags & wire::kFlagCD)));
  wire::store16(r.data() + 6, 1);
  wire::store16(r.data() + 8, 0);
  wire::store16(r.data() + 10, q.edns ? 1 : 0);
  const uint8_t rr[] = {0xC0, 0x0C, static_cast<uint8_t>(q.qtype >> 8), static_cast<uint8_t>(q.qtype),
                        0, 1, 0, 0, 1, 44, 0, 4, 198, 18, 9, 9};
  r.insert(r.end(), std::begin(rr), std::end(rr));
  if (q.edns) {
    const uint8_t opt[] = {0, 0, 41, 4, 208, 0, 0, static_cast<uint8_t>(q.edns_do ? 0x80 : 0), 0, 0, 0};
    r.insert(r.end(), std::begin(opt), std::end(opt));
  }
  return r;
}

bool checksums_ok(const uint8_t* f, const dp::Query& q, size_t len) {
  if (!q.v6 && dp::csum_fold(dp::csum_acc(0, f + q.l3, 20)) != 0xFFFF) return false;
  const size_t ulen = len - q.l4;
  const uint8_t ph[4] = {0, 17, static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen)};
  uint64_t acc = q.v6 ? dp::csum_acc(0, f + q.l3 + 8, 32) : dp::csum_acc(0, f + q.l3 + 12, 8);
  acc = dp::csum_acc(acc, ph, 4);
  return dp::csum_fold(dp::csum_acc(acc, f + q.l4, ulen)) == 0xFFFF;
}

// Ethernet + IPv4 + UDP around msg, lengths right (the fill path does not verify checksums).
std::vector<uint8_t> udp4_frame(const uint8_t src[4], uint16_t sport, const uint8_t dst[4], uint16_t dport,
                                std::span<const uint8_t> msg) {
  std::vector<uint8_t> f(42 + msg.size());
  uint8_t* p = f.data();
  wire::store16(p + 12, 0x0800);
  p[14] = 0x45;
  wire::store16(p + 16, static_cast<uint16_t>(20 + 8 + msg.size()));
  p[22] = 64;
  p[23] = 17;
  std::memcpy(p + 26, src, 4);
  std::memcpy(p + 30, dst, 4);
  wire::store16(p + 34, sport);
  wire::store16(p + 36, dport);
  wire::store16(p + 38, static_cast<uint16_t>(8 + msg.size()));
  std::memcpy(p + 42, msg.data(), msg.size());
  return f;
}

// The fill path: the input as a frame from Linux (headers fuzzed), then as the DNS message of the
// resolver's answer to a client whose query (the same message with QR clear) was punted first.
void fuzz_fill(State& st, const uint8_t* in, size_t size) {
  const uint32_t now = 1000;
  st.now_ms += 1;
  st.pending.note_query({in, size}, st.svc_set, st.now_ms);
  dp::offer_to_cache({in, size}, st.svc_set, st.pending, st.now_ms, st.cache, now);
  if (size < wire::kHeaderSize || size > 65000) return;
  st.now_ms += 20000;  // every entry recorded so far has expired: only the query below can match
  static const uint8_t kSvc[4] = {198, 18, 0, 53}, kClient[4] = {198, 18, 0, 100};
  std::vector<uint8_t> msg(in, in + size);
  msg[2] &= static_cast<uint8_t>(~0x80);  // the client's query: QR clear
  const auto query = udp4_frame(kClient, 40000, kSvc, 53, msg);
  const dp::PendingQueries::Noted n = st.pending.note_query(query, st.svc_set, st.now_ms);
  msg[2] |= 0x80;  // the resolver's answer
  const auto answer = udp4_frame(kSvc, 53, kClient, 40000, msg);
  const auto v = dp::offer_to_cache(answer, st.svc_set, st.pending, st.now_ms, st.cache, now);
  // A recorded query's answer always matches; an unrecorded one never fills.
  if (n != dp::PendingQueries::Noted::kNotQuery) FUZZ_CHECK(v && *v != dp::SvcCounter::fill_unmatched);
  if (n == dp::PendingQueries::Noted::kNotQuery)
    FUZZ_CHECK(!v || *v == dp::SvcCounter::fill_unmatched);
  if (v && (*v == dp::SvcCounter::fill_inserted || *v == dp::SvcCounter::fill_replaced)) ++g_filled;
  // Consumed: the same answer again teaches the cache nothing.
  const auto again = dp::offer_to_cache(answer, st.svc_set, st.pending, st.now_ms, st.cache, now);
  FUZZ_CHECK(!again || *again == dp::SvcCounter::fill_unmatched);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  State& st = state();
  // Exact-size copy: any read past the frame is a heap overflow ASan reports.
  std::unique_ptr<uint8_t[]> in(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(in.get(), data, size);
  (void)dp::classify_punt({in.get(), size}, st.svc);
  fuzz_fill(st, in.get(), size);
  dp::Query q;
  const dp::Counter v = dp::parse_query({in.get(), size}, st.svc, q);
  if (dp::dns_shaped_punt(v) && q.qend != 0) {
    // A query shape the fast path punts, walked whole: REFUSED must be buildable on it.
    FUZZ_CHECK(q.dns + q.dns_len <= size && q.qend <= q.dns_len);
    const size_t cap = size + 64;
    std::unique_ptr<uint8_t[]> out(new uint8_t[cap]);
    std::memcpy(out.get(), in.get(), size);
    const size_t len = dp::build_refused(out.get(), cap, q, {});
    FUZZ_CHECK(len == size_t{q.dns} + q.qend + (q.edns ? 11 : 0));
    FUZZ_CHECK(checksums_ok(out.get(), q, len));
  }
  if (v != dp::Counter::query_ok) return 0;
  FUZZ_CHECK(q.dns + q.dns_len <= size && q.qend <= q.dns_len && q.l3 < q.l4 && q.l4 < q.dns);

  const uint8_t* dns = in.get() + q.dns;
  const uint32_t now = 1000;
  st.cache.insert_response(response_for(dns, q), now);
  cache::Key key;
  size_t end = 0;
  const uint8_t flags = static_cast<uint8_t>((q.edns_do ? cache::kKeyDO : 0) |
                                             ((q.hdr_flags & wire::kFlagCD) ? cache::kKeyCD : 0));
  const wire::Status ks = cache::make_key(st.cache.hasher(), {dns, q.dns_len}, wire::kHeaderSize, flags, key, &end);
  FUZZ_CHECK(ks != wire::Status::ok || end == q.qend);

  const size_t cap = size + 1500;
  std::unique_ptr<uint8_t[]> out(new uint8_t[cap]);
  std::memcpy(out.get(), in.get(), size);
  size_t len;
  const cache::Lookup l = ks == wire::Status::ok ? st.cache.lookup(st.reader, key, now + 1, true)
                                                 : cache::Lookup{nullptr, cache::Lookup::kMiss};
  if (l.kind != cache::Lookup::kMiss) {
    bool tc = false;
    len = dp::build_answer(out.get(), cap, q, *l.entry, now + 1, l.kind == cache::Lookup::kStale, {}, &tc);
    FUZZ_CHECK(len > 0);  // cap leaves 1500 bytes of room
    FUZZ_CHECK(len - q.dns <= dp::answer_limit(q));
    ++g_answered;
  } else {
    ++g_refused;
    if (q.hdr_flags & 1) {  // some of the time, RRL's slip instead
      len = dp::build_truncated(out.get(), cap, q, (q.hdr_flags & 2) != 0, {});
      FUZZ_CHECK((wire::load16(out.get() + q.dns + 2) & wire::kFlagTC) != 0);
    } else {
      len = dp::build_refused(out.get(), cap, q, {});
    }
    FUZZ_CHECK(len == size_t{q.dns} + q.qend + (q.edns ? 11 : 0));
  }
  st.cache.quiescent(st.reader);
  FUZZ_CHECK(len <= cap);
  FUZZ_CHECK(std::memcmp(out.get() + q.dns + 12, in.get() + q.dns + 12, q.qend - 12) == 0);
  FUZZ_CHECK(checksums_ok(out.get(), q, len));
  return 0;
}

#ifdef TERN_FUZZ_REPLAY
int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
    return 2;
  }
  size_t files = 0, runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(argv[i], ec)) {
      if (!e.is_regular_file()) continue;
      std::ifstream f(e.path(), std::ios::binary);
      const std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      for (size_t cut = 0; cut <= b.size(); ++cut) LLVMFuzzerTestOneInput(b.data(), cut);
      runs += b.size() + 1;
      ++files;
    }
    if (ec) {
      std::fprintf(stderr, "%s: cannot read corpus directory: %s\n", argv[i], ec.message().c_str());
      return 1;
    }
  }
  if (files == 0) {
    std::fprintf(stderr, "no corpus files found: the replay would test nothing\n");
    return 1;
  }
  std::printf("replayed %zu files (%zu inputs with every truncation): %zu answered, %zu refused, %zu filled\n",
              files, runs, g_answered, g_refused, g_filled);
  if (g_answered == 0 || g_refused == 0 || g_filled == 0) {
    std::fprintf(stderr, "the corpus no longer reaches build_answer, build_refused and the fill: add seeds\n");
    return 1;
  }
  return 0;
}
#endif
