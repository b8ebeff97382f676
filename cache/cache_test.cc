#include "cache/cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "wire/test_builder.h"

namespace tern::cache {
namespace {

using wire::Section;
using wire::Status;
using wire::testing::MsgBuilder;

constexpr uint64_t kSeed = 0x5eed;
constexpr uint32_t kNow = 1'000'000;

Config test_config() {
  Config c;
  c.max_bytes = 4u << 20;
  c.shards = 4;
  c.max_readers = 4;
  return c;
}

// Key built the way the dataplane builds it: from a query packet.
Key query_key(const Cache& c, std::string_view name, uint16_t qtype, uint8_t flags = 0) {
  const auto q = MsgBuilder(7, wire::kFlagRD).question(name, qtype).finish();
  Key k;
  size_t end;
  EXPECT_EQ(make_key(c.hasher(), q, wire::kHeaderSize, flags, k, &end), Status::ok);
  EXPECT_EQ(end, q.size());
  return k;
}

// "<prefix><i>.lab."
std::string lab_name(const char* prefix, int i) {
  char b[64];
  std::snprintf(b, sizeof b, "%s%d.lab.", prefix, i);
  return b;
}

std::vector<uint8_t> a_response(std::string_view name, uint32_t ttl, uint32_t addr) {
  return MsgBuilder().question(name, wire::kTypeA).a(Section::answer, name, ttl, addr).finish();
}

// TTLs of every RR in rendered sections, in order, found by re-walking a rebuilt message.
std::vector<uint32_t> rendered_ttls(const Entry& e, uint32_t now, bool stale,
                                    const std::vector<uint8_t>& original) {
  std::vector<uint8_t> out(e.sections_len());
  EXPECT_EQ(Cache::render(e, now, stale, out), out.size());
  // Header + question from the original response, then the rendered sections.
  wire::MessageInfo info;
  EXPECT_EQ(wire::walk(original, &info), Status::ok);
  std::vector<uint8_t> msg(original.begin(),
                           original.begin() + static_cast<ptrdiff_t>(info.sections_off));
  msg.insert(msg.end(), out.begin(), out.end());
  wire::store16(&msg[wire::kOffArcount], e.arcount());
  std::vector<uint32_t> ttls;
  EXPECT_EQ(wire::walk(msg, &info, [&](wire::Bytes, const wire::RR& rr) {
              ttls.push_back(rr.ttl);
              return true;
            }),
            Status::ok);
  return ttls;
}

class CacheTest : public ::testing::Test {
 protected:
  explicit CacheTest(Config cfg = test_config()) : cache(cfg, kSeed), r(cache.register_reader()) {}
  ~CacheTest() override { cache.unregister_reader(r); }
  Lookup get(std::string_view name, uint16_t qtype, uint32_t now = kNow, bool stale = false,
             uint8_t flags = 0) {
    return cache.lookup(r, query_key(cache, name, qtype, flags), now, stale);
  }
  Cache cache;
  ReaderId r;
};

// ---- keys --------------------------------------------------------------------------------

TEST_F(CacheTest, KeyIsCaseInsensitive) {
  const Key a = query_key(cache, "WWW.Lab.", wire::kTypeA);
  const Key b = query_key(cache, "www.lab.", wire::kTypeA);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.name_len, b.name_len);
  EXPECT_EQ(std::memcmp(a.name, b.name, a.name_len), 0);
  ASSERT_TRUE(cache.insert_response(a_response("WwW.LAB.", 300, 1), kNow).stored());
  EXPECT_EQ(get("www.lab.", wire::kTypeA).kind, Lookup::kHit);
  EXPECT_EQ(get("WWW.LAB.", wire::kTypeA).kind, Lookup::kHit);
}

TEST_F(CacheTest, KeyDistinguishesTypeClassDoCd) {
  const Key base = query_key(cache, "www.lab.", wire::kTypeA);
  EXPECT_NE(base.hash, query_key(cache, "www.lab.", wire::kTypeAAAA).hash);
  EXPECT_NE(base.hash, query_key(cache, "www.lab.", wire::kTypeA, kKeyDO).hash);
  EXPECT_NE(base.hash, query_key(cache, "www.lab.", wire::kTypeA, kKeyCD).hash);

  // A response to a DO query (OPT DO set) is only served to DO queries; CD likewise.
  auto m = MsgBuilder().question("sec.lab.", wire::kTypeA).a(Section::answer, "sec.lab.", 300, 1)
               .opt(1232, true).finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  EXPECT_EQ(get("sec.lab.", wire::kTypeA, kNow, false, kKeyDO).kind, Lookup::kHit);
  EXPECT_EQ(get("sec.lab.", wire::kTypeA).kind, Lookup::kMiss);
  m = MsgBuilder(1, wire::kFlagQR | wire::kFlagRD | wire::kFlagCD)
          .question("cd.lab.", wire::kTypeA).a(Section::answer, "cd.lab.", 300, 1).finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  EXPECT_EQ(get("cd.lab.", wire::kTypeA, kNow, false, kKeyCD).kind, Lookup::kHit);
  EXPECT_EQ(get("cd.lab.", wire::kTypeA).kind, Lookup::kMiss);
}

// make_key folds case 16 bytes at a time; check it against a bytewise reference for every
// name length up to 255, label bytes of every value (so 0x40-0x5B and 0xC0-0xDB, which
// sit beside 'A'-'Z', are covered), and messages that end right after QCLASS, so the
// vector loop's tail and source-bounds cases all run.
TEST_F(CacheTest, KeyLowercasesLikeTheBytewiseReference) {
  uint32_t rng = 12345;
  auto next = [&] { return rng = rng * 1103515245u + 12345u, (rng >> 8) & 0xFF; };
  for (size_t total = 1; total <= wire::kMaxNameLen; ++total) {
    // Labels of up to 63 bytes filling `total` bytes including the root byte.
    std::vector<uint8_t> name;
    while (name.size() + 1 < total) {
      const size_t room = total - 1 - name.size();  // bytes left before the root
      if (room == 1) {  // a 0-length label cannot fill one byte: grow the previous one
        break;
      }
      const size_t lab = std::min<size_t>(63, room - 1);
      name.push_back(static_cast<uint8_t>(lab));
      for (size_t i = 0; i < lab; ++i) name.push_back(static_cast<uint8_t>(next()));
    }
    name.push_back(0);
    std::vector<uint8_t> msg = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    msg.insert(msg.end(), name.begin(), name.end());
    msg.insert(msg.end(), {0, 1, 0, 1});
    Key k;
    size_t end;
    ASSERT_EQ(make_key(cache.hasher(), msg, 12, 0, k, &end), Status::ok) << total;
    ASSERT_EQ(end, msg.size());
    ASSERT_EQ(k.name_len, name.size());
    for (size_t i = 0; i < name.size(); ++i)
      ASSERT_EQ(k.name[i], wire::to_lower(name[i])) << "length " << total << " byte " << i;
    Key ref;
    make_key(cache.hasher(), {k.name, k.name_len}, 1, 1, 0, ref);
    EXPECT_EQ(ref.hash, k.hash);
  }
}

// Every byte of the name counts in the hash, the 1-7 byte tail included.
TEST_F(CacheTest, KeyHashCoversEveryNameByte) {
  for (size_t n = 1; n <= 40; ++n) {
    std::vector<uint8_t> name(n, 'a');
    const uint64_t h0 = cache.hasher().hash(name, 1, 1, 0);
    for (size_t i = 0; i < n; ++i) {
      name[i] = 'b';
      EXPECT_NE(cache.hasher().hash(name, 1, 1, 0), h0) << n << " " << i;
      name[i] = 'a';
    }
    name.push_back(0);  // a zero byte more is a different name, not padding
    EXPECT_NE(cache.hasher().hash(name, 1, 1, 0), h0) << n;
  }
}

TEST_F(CacheTest, KeySeededPerCache) {
  Cache other(test_config(), kSeed + 1);
  EXPECT_NE(query_key(cache, "www.lab.", 1).hash, query_key(other, "www.lab.", 1).hash);
}

TEST_F(CacheTest, KeyRejectsBadQuestionsWithReason) {
  Key k;
  size_t end;
  auto q = MsgBuilder(1, 0).raw({0xC0, 12}).u16(1).u16(1).force_count(0, 1).finish();
  EXPECT_EQ(make_key(cache.hasher(), q, 12, 0, k, &end), Status::compressed_question);
  std::vector<uint8_t> label{64};
  label.insert(label.end(), 64, 'a');
  label.push_back(0);
  q = MsgBuilder(1, 0).raw(label).u16(1).u16(1).finish();
  EXPECT_EQ(make_key(cache.hasher(), q, 12, 0, k, &end), Status::label_too_long);
  std::vector<uint8_t> longname;
  for (int i = 0; i < 5; ++i) {
    longname.push_back(60);
    longname.insert(longname.end(), 60, 'b');
  }
  longname.push_back(0);
  q = MsgBuilder(1, 0).raw(longname).u16(1).u16(1).finish();
  EXPECT_EQ(make_key(cache.hasher(), q, 12, 0, k, &end), Status::name_too_long);
  q = MsgBuilder(1, 0).question("www.lab.", 1).finish();
  q.pop_back();
  EXPECT_EQ(make_key(cache.hasher(), q, 12, 0, k, &end), Status::truncated);
}

// ---- TTLs --------------------------------------------------------------------------------

// render copies short sections inline in blocks: every length from one tiny RR to past
// the inline limit comes out byte for byte, with nothing written past its end.
TEST_F(CacheTest, RenderCopiesEverySectionLength) {
  for (size_t len = 0; len <= 300; ++len) {
    const std::string name = lab_name("r", static_cast<int>(len));
    std::vector<uint8_t> rdata(len);
    for (size_t i = 0; i < len; ++i) rdata[i] = static_cast<uint8_t>(i * 7 + 1);
    const auto m = MsgBuilder().question(name, 16).rr_ptr(Section::answer, 12, 16, 300, rdata).finish();
    ASSERT_TRUE(cache.insert_response(m, kNow).stored()) << len;
    const Lookup l = get(name, 16);
    ASSERT_EQ(l.kind, Lookup::kHit);
    const auto sec = l.entry->sections();
    std::vector<uint8_t> out(sec.size() + 32, 0xEE);
    ASSERT_EQ(Cache::render(*l.entry, kNow, false, {out.data(), sec.size()}), sec.size());
    EXPECT_TRUE(std::equal(sec.begin(), sec.end(), out.begin())) << len;
    for (size_t i = sec.size(); i < out.size(); ++i) ASSERT_EQ(out[i], 0xEE) << len;
  }
}

TEST_F(CacheTest, HitRendersAgedTtlsAndNeverBelowZero) {
  const auto m = MsgBuilder()
                     .question("www.lab.", wire::kTypeA)
                     .a(Section::answer, "www.lab.", 300, 0xC6120001)
                     .a(Section::answer, "www.lab.", 600, 0xC6120002)
                     .ns(Section::authority, "lab.", 3600, "ns1.lab.")
                     .a(Section::additional, "ns1.lab.", 100, 0xC6120035)
                     .finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  auto l = get("www.lab.", wire::kTypeA, kNow + 150);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->ttl(), 300u);  // min of the answer section
  EXPECT_EQ(l.entry->ancount(), 2);
  EXPECT_EQ(l.entry->nscount(), 1);
  EXPECT_EQ(l.entry->arcount(), 1);
  EXPECT_EQ(rendered_ttls(*l.entry, kNow + 150, false, m),
            (std::vector<uint32_t>{150, 450, 3450, 0}));
  EXPECT_EQ(rendered_ttls(*l.entry, kNow, false, m), (std::vector<uint32_t>{300, 600, 3600, 100}));
  // A clock that steps back does not make TTLs grow.
  EXPECT_EQ(rendered_ttls(*l.entry, kNow - 50, false, m),
            (std::vector<uint32_t>{300, 600, 3600, 100}));
  EXPECT_EQ(get("www.lab.", wire::kTypeA, kNow + 300).kind, Lookup::kMiss);
  std::vector<uint8_t> small(l.entry->sections_len() - 1);
  EXPECT_EQ(Cache::render(*l.entry, kNow, false, small), 0u);
}

TEST_F(CacheTest, RenderedSectionsAreTheReceivedBytesWithoutOpt) {
  const auto m = MsgBuilder()
                     .question("www.lab.", wire::kTypeA)
                     .rr_ptr(Section::answer, 12, wire::kTypeA, 300, {198, 18, 0, 1})
                     .opt(1232, false, 0, {{wire::kOptionCookie, std::vector<uint8_t>(8, 7)}})
                     .finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  auto l = get("www.lab.", wire::kTypeA);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->arcount(), 0);
  const size_t sec_off = 12 + 9 + 4;  // header, "www.lab.", qtype+qclass
  const size_t ans_len = 2 + 10 + 4;
  ASSERT_EQ(l.entry->sections_len(), ans_len);
  std::vector<uint8_t> out(ans_len);
  ASSERT_EQ(Cache::render(*l.entry, kNow, false, out), ans_len);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), m.begin() + sec_off));
  EXPECT_EQ(l.entry->flags() & wire::kFlagQR, wire::kFlagQR);
  EXPECT_EQ(l.entry->rcode(), 0);
}

TEST(CacheTtl, FloorAndCap) {
  Config c = test_config();
  c.ttl_floor = 100;
  c.ttl_cap = 1000;
  Cache cache(c, kSeed);
  const ReaderId r = cache.register_reader();
  ASSERT_TRUE(cache.insert_response(a_response("low.lab.", 10, 1), kNow).stored());
  ASSERT_TRUE(cache.insert_response(a_response("high.lab.", 50000, 1), kNow).stored());
  auto l = cache.lookup(r, query_key(cache, "low.lab.", 1), kNow + 50, false);
  ASSERT_EQ(l.kind, Lookup::kHit);  // alive past its own TTL of 10 thanks to the floor
  EXPECT_EQ(l.entry->ttl(), 100u);
  auto m = a_response("low.lab.", 10, 1);
  EXPECT_EQ(rendered_ttls(*l.entry, kNow + 50, false, m), (std::vector<uint32_t>{50}));
  l = cache.lookup(r, query_key(cache, "high.lab.", 1), kNow, false);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->ttl(), 1000u);
  m = a_response("high.lab.", 50000, 1);
  EXPECT_EQ(rendered_ttls(*l.entry, kNow + 1, false, m), (std::vector<uint32_t>{999}));
  EXPECT_EQ(cache.lookup(r, query_key(cache, "high.lab.", 1), kNow + 1000, false).kind,
            Lookup::kMiss);
  cache.unregister_reader(r);
}

TEST_F(CacheTest, TtlWithTopBitSetCountsAsZero) {
  // RFC 2181 8: such a TTL is 0, so the answer is not cacheable.
  const auto res = cache.insert_response(a_response("neg.lab.", 0x80000001u, 1), kNow);
  EXPECT_EQ(res.reason, Reject::zero_ttl);
  EXPECT_EQ(cache.insert_response(a_response("zero.lab.", 0, 1), kNow).reason, Reject::zero_ttl);
}

// ---- negative answers (RFC 2308) -----------------------------------------------------------

TEST_F(CacheTest, NxdomainTtlIsMinOfSoaTtlAndMinimum) {
  const auto m = MsgBuilder().rcode(wire::kRcodeNXDomain).question("nope.lab.", wire::kTypeA)
                     .soa(Section::authority, "lab.", 900, 300).finish();
  const auto res = cache.insert_response(m, kNow);
  ASSERT_EQ(res.outcome, InsertResult::kInserted) << to_string(res.reason);
  auto l = get("nope.lab.", wire::kTypeA, kNow + 10);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->neg_kind(), NegKind::nxdomain);
  EXPECT_EQ(l.entry->rcode(), wire::kRcodeNXDomain);
  EXPECT_EQ(l.entry->ttl(), 300u);
  // The SOA is served with the remaining negative TTL, not its own 900.
  EXPECT_EQ(rendered_ttls(*l.entry, kNow + 10, false, m), (std::vector<uint32_t>{290}));
  EXPECT_EQ(get("nope.lab.", wire::kTypeA, kNow + 300).kind, Lookup::kMiss);
}

TEST_F(CacheTest, NodataTtlFromSoaAndCap) {
  const auto m = MsgBuilder().question("www.lab.", wire::kTypeAAAA)
                     .soa(Section::authority, "lab.", 7200, 86400).finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  auto l = get("www.lab.", wire::kTypeAAAA);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->neg_kind(), NegKind::nodata);
  EXPECT_EQ(l.entry->ttl(), 3600u);  // neg_ttl_cap
}

TEST_F(CacheTest, NegativeWithoutSoaIsRejected) {
  auto m = MsgBuilder().rcode(wire::kRcodeNXDomain).question("x.lab.", wire::kTypeA).finish();
  EXPECT_EQ(cache.insert_response(m, kNow).reason, Reject::negative_without_soa);
  m = MsgBuilder().question("x.lab.", wire::kTypeA).ns(Section::authority, "lab.", 60, "ns.lab.")
          .finish();  // a referral is not an answer
  EXPECT_EQ(cache.insert_response(m, kNow).reason, Reject::negative_without_soa);
  EXPECT_EQ(cache.stats().rejects[static_cast<size_t>(Reject::negative_without_soa)], 2u);
  EXPECT_EQ(cache.stats().total.entries, 0u);
}

TEST_F(CacheTest, ServfailIsCachedBriefly) {
  const auto m = MsgBuilder().rcode(wire::kRcodeServFail).question("sf.lab.", wire::kTypeA).finish();
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  auto l = get("sf.lab.", wire::kTypeA, kNow + 4);
  ASSERT_EQ(l.kind, Lookup::kHit);
  EXPECT_EQ(l.entry->neg_kind(), NegKind::servfail);
  EXPECT_EQ(l.entry->ttl(), 5u);
  EXPECT_EQ(get("sf.lab.", wire::kTypeA, kNow + 5, true).kind, Lookup::kMiss);  // never stale
}

// ---- serve-stale (RFC 8767) ----------------------------------------------------------------

TEST_F(CacheTest, ServeStaleWithinWindowOnly) {
  const auto m = a_response("old.lab.", 60, 1);
  ASSERT_TRUE(cache.insert_response(m, kNow).stored());
  EXPECT_EQ(get("old.lab.", 1, kNow + 61, false).kind, Lookup::kMiss);
  auto l = get("old.lab.", 1, kNow + 61, true);
  ASSERT_EQ(l.kind, Lookup::kStale);
  EXPECT_EQ(rendered_ttls(*l.entry, kNow + 61, true, m), (std::vector<uint32_t>{30}));
  EXPECT_EQ(get("old.lab.", 1, kNow + 60 + 86399, true).kind, Lookup::kStale);
  EXPECT_EQ(get("old.lab.", 1, kNow + 60 + 86400, true).kind, Lookup::kMiss);
  const Stats s = cache.stats();
  EXPECT_EQ(s.stale, 2u);
  EXPECT_EQ(s.misses, 2u);
}

TEST_F(CacheTest, ServfailWithExtendedErrorIsNotCached) {
  // tern-control's SERVFAIL for bogus data carries EDE 6 (RFC 8914): the fast path must
  // leave it to tern-control, which re-checks after bogus-ttl or a negative trust anchor.
  const auto sf = MsgBuilder()
                      .rcode(wire::kRcodeServFail)
                      .question("bogus.lab.", 1)
                      .opt(1232, true, 0, {{wire::kOptionEDE, {0, 6}}})
                      .finish();
  EXPECT_EQ(cache.insert_response(sf, kNow).reason, Reject::servfail_explained);
  EXPECT_EQ(get("bogus.lab.", 1, kNow, false).kind, Lookup::kMiss);
}

TEST_F(CacheTest, ServfailDoesNotReplaceServableAnswer) {
  ASSERT_TRUE(cache.insert_response(a_response("keep.lab.", 60, 1), kNow).stored());
  const auto sf = MsgBuilder().rcode(wire::kRcodeServFail).question("keep.lab.", 1).finish();
  EXPECT_EQ(cache.insert_response(sf, kNow + 100).reason, Reject::servfail_over_stale);
  EXPECT_EQ(get("keep.lab.", 1, kNow + 100, true).kind, Lookup::kStale);
  // Past the stale window the SERVFAIL may take the slot.
  EXPECT_EQ(cache.insert_response(sf, kNow + 60 + 86400).outcome, InsertResult::kReplaced);
}

// ---- replace, flush, dump ----------------------------------------------------------------

TEST_F(CacheTest, ReplaceServesTheNewAnswer) {
  ASSERT_EQ(cache.insert_response(a_response("r.lab.", 300, 1), kNow).outcome,
            InsertResult::kInserted);
  ASSERT_EQ(cache.insert_response(a_response("R.lab.", 300, 2), kNow + 1).outcome,
            InsertResult::kReplaced);
  auto l = get("r.lab.", 1, kNow + 1);
  ASSERT_EQ(l.kind, Lookup::kHit);
  const auto sec = l.entry->sections();
  EXPECT_EQ(wire::load32(sec.data() + sec.size() - 4), 2u);
  const Stats s = cache.stats();
  EXPECT_EQ(s.total.entries, 1u);
  EXPECT_EQ(s.total.inserts, 1u);
  EXPECT_EQ(s.total.replaces, 1u);
}

std::vector<uint8_t> canon(std::string_view text) {
  uint8_t b[wire::kMaxNameLen];
  uint8_t l;
  EXPECT_EQ(wire::name_from_text(text, b, &l), Status::ok);
  return {b, b + l};
}

TEST_F(CacheTest, FlushNameSubtreeAndAll) {
  for (const char* n : {"b.lab.", "x.b.lab.", "ab.lab.", "lab.", "other.test."}) {
    ASSERT_TRUE(cache.insert_response(a_response(n, 300, 1), kNow).stored());
    const auto nodata = MsgBuilder().question(n, wire::kTypeAAAA)
                            .soa(Section::authority, "lab.", 60, 60).finish();
    ASSERT_TRUE(cache.insert_response(nodata, kNow).stored());
  }
  EXPECT_EQ(cache.flush_name(canon("X.B.lab.")), 2u);  // both types
  EXPECT_EQ(get("x.b.lab.", wire::kTypeA).kind, Lookup::kMiss);
  EXPECT_EQ(get("b.lab.", wire::kTypeA).kind, Lookup::kHit);

  ASSERT_TRUE(cache.insert_response(a_response("x.b.lab.", 300, 1), kNow).stored());
  EXPECT_EQ(cache.flush_subtree(canon("b.lab.")), 3u);  // b A+AAAA, x.b A
  EXPECT_EQ(get("b.lab.", wire::kTypeA).kind, Lookup::kMiss);
  EXPECT_EQ(get("x.b.lab.", wire::kTypeA).kind, Lookup::kMiss);
  EXPECT_EQ(get("ab.lab.", wire::kTypeA).kind, Lookup::kHit);  // label boundary
  EXPECT_EQ(get("lab.", wire::kTypeA).kind, Lookup::kHit);

  EXPECT_EQ(cache.flush_all(), 6u);  // ab and lab. and other.test., two types each
  EXPECT_EQ(get("other.test.", wire::kTypeA).kind, Lookup::kMiss);
  EXPECT_EQ(cache.stats().total.entries, 0u);
  EXPECT_EQ(cache.stats().total.flushed, 11u);
}

TEST_F(CacheTest, DumpListsEveryEntry) {
  ASSERT_TRUE(cache.insert_response(a_response("one.lab.", 300, 1), kNow).stored());
  ASSERT_TRUE(cache.insert_response(a_response("Two.lab.", 60, 1), kNow).stored());
  const auto nx = MsgBuilder().rcode(wire::kRcodeNXDomain).question("three.lab.", 1)
                      .soa(Section::authority, "lab.", 60, 30).finish();
  ASSERT_TRUE(cache.insert_response(nx, kNow).stored());
  std::set<std::string> seen;
  ASSERT_TRUE(cache.dump([&](const EntryInfo& e) {
    seen.insert(wire::name_to_text(e.name) + " " + std::to_string(e.qtype) + " " +
                to_string(e.neg_kind) + " " + std::to_string(e.ttl));
    EXPECT_GT(e.bytes, e.sections_len);
  }));
  EXPECT_EQ(seen, (std::set<std::string>{"one.lab. 1 positive 300", "two.lab. 1 positive 60",
                                         "three.lab. 1 nxdomain 30"}));
}

// ---- malformed and uncacheable -----------------------------------------------------------

TEST_F(CacheTest, MalformedResponsesAreRejectedWithReasonAndNeverStored) {
  struct Case {
    const char* what;
    std::vector<uint8_t> msg;
    Reject reason;
    Status wire;
  };
  std::vector<uint8_t> long_label{64};
  long_label.insert(long_label.end(), 64, 'q');
  long_label.push_back(0);
  std::vector<uint8_t> long_name;
  for (int i = 0; i < 5; ++i) {
    long_name.push_back(60);
    long_name.insert(long_name.end(), 60, 'n');
  }
  long_name.push_back(0);
  const auto base = MsgBuilder().question("m.lab.", wire::kTypeA);
  std::vector<Case> cases = {
      {"forward pointer in owner", MsgBuilder(base).rr_ptr(Section::answer, 0x3FFF, 1, 60, {1, 2, 3, 4}).finish(),
       Reject::malformed, Status::bad_pointer},
      {"pointer into header", MsgBuilder(base).rr_ptr(Section::answer, 2, 1, 60, {1, 2, 3, 4}).finish(),
       Reject::malformed, Status::bad_pointer},
      {"pointer loop", MsgBuilder(base).raw({1, 'x', 0xC0, 24}).u16(1).u16(1).raw({0, 0, 0, 9}).u16(4)
                           .raw({1, 2, 3, 4}).force_count(1, 1).finish(),
       Reject::malformed, Status::pointer_loop},
      {"label over 63", MsgBuilder(base).raw(long_label).u16(1).u16(1).raw({0, 0, 0, 9}).u16(4)
                            .raw({1, 2, 3, 4}).force_count(1, 1).finish(),
       Reject::malformed, Status::label_too_long},
      {"name over 255", MsgBuilder(base).raw(long_name).u16(1).u16(1).raw({0, 0, 0, 9}).u16(4)
                            .raw({1, 2, 3, 4}).force_count(1, 1).finish(),
       Reject::malformed, Status::name_too_long},
      {"ancount lies", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1).force_count(1, 3).finish(),
       Reject::malformed, Status::counts_lie},
      {"trailing bytes", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1).raw({0, 0}).finish(),
       Reject::malformed, Status::trailing_garbage},
      // The second owner points at the low half of the first TTL (01 00) and the rdlength
      // after it (00): a valid name today, a different one once the TTL is aged.
      {"pointer into a TTL", MsgBuilder(base).a(Section::answer, "m.lab.", 0x00000100, 1)
                                 .rr_ptr(Section::answer, 12 + 7 + 4 + 7 + 4 + 2, 1, 60, {1, 2, 3, 4})
                                 .finish(),
       Reject::name_reads_ttl, Status::ok},
      // The same aimed at the second of two TTLs (the check looks fields up in order).
      {"pointer into a later TTL", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1)
                                       .a(Section::answer, "m.lab.", 0x00000100, 2)
                                       .rr_ptr(Section::answer, 12 + 7 + 4 + 21 + 7 + 4 + 2, 1, 60, {1, 2, 3, 4})
                                       .finish(),
       Reject::name_reads_ttl, Status::ok},
      {"OPT not last", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1).opt()
                           .a(Section::additional, "n.lab.", 60, 1).finish(),
       Reject::opt_not_last, Status::ok},
      {"ECS answer", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1)
                         .opt(1232, false, 0, {{wire::kOptionECS, {0, 1, 24, 24, 198, 18, 0}}})
                         .finish(),
       Reject::client_subnet, Status::ok},
      {"TC set", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1)
                     .flags(wire::kFlagQR | wire::kFlagTC).finish(),
       Reject::truncated, Status::ok},
      {"a query", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1).flags(wire::kFlagRD).finish(),
       Reject::not_response, Status::ok},
      {"no question", MsgBuilder().a(Section::answer, "m.lab.", 60, 1).finish(), Reject::bad_qdcount,
       Status::ok},
      {"REFUSED", MsgBuilder(base).rcode(wire::kRcodeRefused).finish(), Reject::uncacheable_rcode,
       Status::ok},
      {"NOTIFY", MsgBuilder(base).a(Section::answer, "m.lab.", 60, 1)
                     .flags(wire::kFlagQR | (wire::kOpcodeNotify << wire::kOpcodeShift)).finish(),
       Reject::bad_opcode, Status::ok},
      {"short header", std::vector<uint8_t>{0x12, 0x34, 0x81}, Reject::malformed, Status::truncated},
  };
  uint64_t expect[kRejectCount] = {};
  uint64_t expect_wire[wire::kStatusCount] = {};
  for (const auto& c : cases) {
    const InsertResult res = cache.insert_response(c.msg, kNow);
    EXPECT_EQ(res.outcome, InsertResult::kRejected) << c.what;
    EXPECT_EQ(res.reason, c.reason) << c.what << ": got " << to_string(res.reason);
    if (c.reason == Reject::malformed) {
      EXPECT_EQ(res.wire_status, c.wire) << c.what << ": got " << wire::to_string(res.wire_status);
    }
    ++expect[static_cast<size_t>(c.reason)];
    if (c.reason == Reject::malformed) ++expect_wire[static_cast<size_t>(c.wire)];
  }
  const Stats s = cache.stats();
  for (size_t i = 0; i < kRejectCount; ++i)
    EXPECT_EQ(s.rejects[i], expect[i]) << to_string(static_cast<Reject>(i));
  for (size_t i = 0; i < wire::kStatusCount; ++i)
    EXPECT_EQ(s.malformed[i], expect_wire[i]) << wire::to_string(static_cast<Status>(i));
  EXPECT_EQ(s.total.entries, 0u);
  EXPECT_EQ(s.total.inserts, 0u);
  EXPECT_EQ(get("m.lab.", wire::kTypeA).kind, Lookup::kMiss);
}

// ---- memory bound and eviction ------------------------------------------------------------

TEST(CacheEviction, ByteBudgetKeepsHotEntries) {
  Config c;
  c.max_bytes = 64 << 10;
  c.shards = 1;
  c.max_readers = 2;
  Cache cache(c, kSeed);
  const ReaderId r = cache.register_reader();
  std::vector<Key> hot;
  for (int i = 0; i < 20; ++i) {
    const std::string n = lab_name("hot", i);
    ASSERT_TRUE(cache.insert_response(a_response(n, 3600, 1), kNow).stored());
    hot.push_back(query_key(cache, n, 1));
  }
  for (int i = 0; i < 5000; ++i) {
    const std::string n = lab_name("cold", i);
    ASSERT_TRUE(cache.insert_response(a_response(n, 3600, 1), kNow).stored());
    // The hot set is read between inserts, as clients would.
    for (const Key& k : hot) ASSERT_EQ(cache.lookup(r, k, kNow, false).kind, Lookup::kHit) << i;
    cache.quiescent(r);
    const Stats s = cache.stats();
    ASSERT_LE(s.total.bytes, c.max_bytes);
  }
  const Stats s = cache.stats();
  EXPECT_GT(s.total.evictions, 4000u);
  EXPECT_LT(s.total.entries, 5020u);
  EXPECT_GT(s.total.entries, 100u);
  cache.unregister_reader(r);
}

TEST(CacheEviction, ExpiredEntriesGoFirst) {
  Config c;
  c.max_bytes = 256 << 10;
  c.shards = 1;
  c.stale_window = 10;
  Cache cache(c, kSeed);
  const ReaderId r = cache.register_reader();
  std::vector<Key> old_keys;
  for (int i = 0; i < 2000; ++i) {
    const std::string n = lab_name("old", i);
    ASSERT_TRUE(cache.insert_response(a_response(n, 5, 1), kNow).stored());
    old_keys.push_back(query_key(cache, n, 1));
  }
  // Recently used, but past their stale window by the time the new entries arrive.
  for (const Key& k : old_keys) ASSERT_EQ(cache.lookup(r, k, kNow, false).kind, Lookup::kHit);
  ASSERT_EQ(cache.stats().total.evictions + cache.stats().total.expired_evictions, 0u);
  // New entries, each read once after it arrives: all are live and recently used, the old
  // ones are recently used but dead, and only those should make room.
  for (int i = 0; i < 2000; ++i) {
    const std::string n = lab_name("new", i);
    ASSERT_TRUE(cache.insert_response(a_response(n, 3600, 1), kNow + 100).stored());
    ASSERT_EQ(cache.lookup(r, query_key(cache, n, 1), kNow + 100, false).kind, Lookup::kHit);
  }
  // Both generations carry the access bit once; the dead one loses it. (Index rebuilds
  // restart the hand, so a few live entries can still go: CLOCK is an approximation.)
  const Stats s = cache.stats();
  EXPECT_GT(s.total.expired_evictions, 4 * s.total.evictions);
  int present = 0;
  for (int i = 0; i < 2000; ++i)
    present += cache.lookup(r, query_key(cache, lab_name("new", i), 1),
                            kNow + 100, false).kind == Lookup::kHit;
  EXPECT_GT(present, 1600);
  cache.unregister_reader(r);
}

TEST(CacheEviction, OversizedAnswerIsRejectedNotStoredAndEverythingElseEvicted) {
  Config c;
  c.max_bytes = 16 << 10;
  c.shards = 1;
  Cache cache(c, kSeed);
  auto mb = MsgBuilder().question("big.lab.", wire::kTypeTXT);
  for (int i = 0; i < 100; ++i)
    mb.rr(Section::answer, "big.lab.", wire::kTypeTXT, 60, std::vector<uint8_t>(200, 'x'));
  EXPECT_EQ(cache.insert_response(mb.finish(), kNow).reason, Reject::no_memory);
  EXPECT_EQ(cache.stats().total.entries, 0u);
}

// ---- readers and stats --------------------------------------------------------------------

TEST(CacheReaders, SlotsAreLimitedAndReusable) {
  Config c = test_config();
  c.max_readers = 2;
  Cache cache(c, kSeed);
  const ReaderId a = cache.register_reader();
  const ReaderId b = cache.register_reader();
  EXPECT_NE(a, b);
  EXPECT_THROW(cache.register_reader(), std::runtime_error);
  EXPECT_FALSE(cache.dump([](const EntryInfo&) {}));  // needs a slot of its own
  cache.unregister_reader(a);
  EXPECT_EQ(cache.register_reader(), a);
  cache.unregister_reader(a);
  cache.unregister_reader(b);
}

TEST(CacheReaders, OfflineReaderDoesNotHoldMemoryBack) {
  Config c = test_config();
  Cache cache(c, kSeed);
  const ReaderId r = cache.register_reader();
  ASSERT_TRUE(cache.insert_response(a_response("q.lab.", 300, 1), kNow).stored());
  ASSERT_EQ(cache.lookup(r, query_key(cache, "q.lab.", 1), kNow, false).kind, Lookup::kHit);
  // An online reader that has not passed a quiescent point pins what it may be reading.
  ASSERT_TRUE(cache.insert_response(a_response("q.lab.", 300, 2), kNow).stored());
  EXPECT_GT(cache.stats().retired_bytes, 0u);
  cache.quiescent(r);
  cache.reclaim();
  EXPECT_EQ(cache.stats().retired_bytes, 0u);
  cache.offline(r);
  ASSERT_TRUE(cache.insert_response(a_response("q.lab.", 300, 3), kNow).stored());
  EXPECT_EQ(cache.stats().retired_bytes, 0u);
  cache.online(r);
  EXPECT_EQ(cache.lookup(r, query_key(cache, "q.lab.", 1), kNow, false).kind, Lookup::kHit);
  cache.unregister_reader(r);
}

TEST_F(CacheTest, BurstLookupMatchesSingleLookups) {
  std::vector<Key> keys;
  for (int i = 0; i < 100; ++i) {
    const std::string n = lab_name("b", i);
    if (i % 3 != 2) {  // every third name is absent
      ASSERT_TRUE(cache.insert_response(a_response(n, i % 2 ? 60 : 600, 1), kNow).stored());
    }
    keys.push_back(query_key(cache, n, wire::kTypeA));
  }
  std::vector<const Key*> ptrs;
  for (const Key& k : keys) ptrs.push_back(&k);
  std::vector<Lookup> burst(keys.size());
  const uint32_t at = kNow + 100;  // odd names are stale by now
  const size_t found = cache.lookup_burst(r, ptrs, at, true, burst);
  const Stats after_burst = cache.stats();
  size_t expect_found = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const Lookup one = cache.lookup(r, keys[i], at, true);
    EXPECT_EQ(burst[i].kind, one.kind) << i;
    EXPECT_EQ(burst[i].entry, one.entry) << i;
    expect_found += one.kind != Lookup::kMiss;
  }
  EXPECT_EQ(found, expect_found);
  EXPECT_GT(found, 0u);
  EXPECT_LT(found, keys.size());
  const Stats s = cache.stats();
  EXPECT_EQ(after_burst.hits * 2, s.hits);
  EXPECT_EQ(after_burst.stale * 2, s.stale);
  EXPECT_EQ(after_burst.misses * 2, s.misses);
  // Every burst length, shorter and longer than the pipeline's distances, at every offset
  // of the key list.
  for (size_t len = 1; len <= 2 * Cache::kBurst + 3; ++len) {
    for (size_t off = 0; off + len <= keys.size(); off += 7) {
      std::vector<Lookup> part(len);
      cache.lookup_burst(r, std::span(ptrs).subspan(off, len), at, true, part);
      for (size_t i = 0; i < len; ++i) {
        ASSERT_EQ(part[i].kind, burst[off + i].kind) << len << " " << off << " " << i;
        ASSERT_EQ(part[i].entry, burst[off + i].entry) << len << " " << off << " " << i;
      }
    }
  }
}

// One shard filled to its index's growth point, with holes flushed into it: many keys sit
// past their home group (the table is 3/5 to 4/5 full), behind tombstones, or share a
// group with absent names' tags. Every cached name must hit and every other name miss,
// one at a time and in bursts, before and after the index grows.
TEST(CacheIndex, EveryKeyIsFoundWhereverItWasPlaced) {
  Config cfg;
  cfg.max_bytes = 64u << 20;
  cfg.shards = 1;
  cfg.max_readers = 2;
  Cache cache(cfg, kSeed);
  const ReaderId r = cache.register_reader();
  auto check = [&](int n, const char* when) {
    std::vector<Key> keys;
    for (int i = 0; i < n + 500; ++i) keys.push_back(query_key(cache, lab_name("g", i), wire::kTypeA));
    std::vector<const Key*> ptrs;
    for (const Key& k : keys) ptrs.push_back(&k);
    std::vector<Lookup> burst(keys.size());
    cache.lookup_burst(r, ptrs, kNow, false, burst);
    for (int i = 0; i < n + 500; ++i) {
      const bool cached = i < n && i % 7 != 3;  // every 7th name was flushed
      const Lookup one = cache.lookup(r, keys[i], kNow, false);
      ASSERT_EQ(one.kind, cached ? Lookup::kHit : Lookup::kMiss) << when << " name " << i;
      ASSERT_EQ(burst[i].kind, one.kind) << when << " name " << i;
      ASSERT_EQ(burst[i].entry, one.entry) << when << " name " << i;
      if (cached) {
        ASSERT_EQ(wire::name_to_text(one.entry->name()), lab_name("g", i)) << when;
      }
    }
    cache.quiescent(r);
  };
  int n = 0;
  auto fill_to = [&](int to) {
    for (; n < to; ++n)
      ASSERT_TRUE(cache.insert_response(a_response(lab_name("g", n), 600, 1), kNow).stored());
    for (int i = 3; i < to; i += 7) cache.flush_name(wire::testing::encode_name(lab_name("g", i)));
  };
  fill_to(3000);
  const uint64_t slots = cache.stats().total.index_slots;
  check(3000, "first fill");
  // Up to just before the index grows (4/5 full counting tombstones), then past it.
  fill_to(static_cast<int>(slots * 4 / 5) - 600);
  EXPECT_EQ(cache.stats().total.index_slots, slots);
  check(n, "near full");
  fill_to(n + 2000);
  EXPECT_GT(cache.stats().total.index_slots, slots);
  check(n, "after growth");
  cache.unregister_reader(r);
}

TEST_F(CacheTest, StatsAreCumulativeAndNeverReset) {
  ASSERT_TRUE(cache.insert_response(a_response("s.lab.", 300, 1), kNow).stored());
  get("s.lab.", 1);
  get("s.lab.", 1);
  get("t.lab.", 1);
  const Stats a = cache.stats();
  const Stats b = cache.stats();
  EXPECT_EQ(a.hits, 2u);
  EXPECT_EQ(a.misses, 1u);
  EXPECT_EQ(b.hits, 2u);
  EXPECT_EQ(b.misses, 1u);
  EXPECT_EQ(b.readers[r].hits, 2u);
  cache.flush_all();
  get("s.lab.", 1);
  const Stats c = cache.stats();
  EXPECT_EQ(c.hits, 2u);
  EXPECT_EQ(c.misses, 2u);
  EXPECT_EQ(c.total.inserts, 1u);
  // A reader slot handed to a new reader keeps counting from where it was.
  cache.unregister_reader(r);
  r = cache.register_reader();
  EXPECT_EQ(cache.stats().hits, 2u);
}

TEST(CacheStrings, EveryRejectHasText) {
  for (size_t i = 0; i < kRejectCount; ++i) {
    EXPECT_STRNE(to_string(static_cast<Reject>(i)), "unknown");
    EXPECT_STRNE(describe(static_cast<Reject>(i)), "unknown reason");
  }
}

}  // namespace
}  // namespace tern::cache
