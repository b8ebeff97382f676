#include "wire/wire.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "wire/test_builder.h"

namespace tern::wire {
namespace {

using testing::encode_name;
using testing::MsgBuilder;

std::vector<uint8_t> with_header(std::vector<uint8_t> body) {
  body.insert(body.begin(), kHeaderSize, uint8_t{0});
  return body;
}

std::string read_text(const std::vector<uint8_t>& m, size_t off, Status* st, size_t* end) {
  uint8_t out[kMaxNameLen];
  uint8_t len = 0;
  *st = read_name(m, off, out, &len, end);
  return *st == Status::ok ? name_to_text({out, len}) : std::string();
}

TEST(WireLoad, BigEndianUnaligned) {
  uint8_t b[7] = {0, 0x12, 0x34, 0x56, 0x78, 0, 0};
  EXPECT_EQ(load16(b + 1), 0x1234);
  EXPECT_EQ(load32(b + 1), 0x12345678u);
  store32(b + 3, 0xA1B2C3D4u);
  EXPECT_EQ(b[3], 0xA1);
  EXPECT_EQ(b[6], 0xD4);
}

TEST(WireName, ReadsAndLowercases) {
  auto m = with_header(encode_name("WWW.Example.COM."));
  Status st;
  size_t end;
  EXPECT_EQ(read_text(m, 12, &st, &end), "www.example.com.");
  EXPECT_EQ(end, m.size());
}

TEST(WireName, FollowsBackwardPointers) {
  auto m = with_header(encode_name("example.com."));
  const size_t second = m.size();
  m.push_back(3);
  m.insert(m.end(), {'w', 'w', 'w'});
  m.push_back(0xC0);
  m.push_back(12);
  Status st;
  size_t end;
  EXPECT_EQ(read_text(m, second, &st, &end), "www.example.com.");
  EXPECT_EQ(end, m.size());  // the end is after the pointer, not after the target
  size_t skip_end;
  EXPECT_EQ(skip_name(m, second, &skip_end), Status::ok);
  EXPECT_EQ(skip_end, m.size());
}

TEST(WireName, RejectsForwardPointerAndPointerIntoHeader) {
  std::vector<uint8_t> m = with_header({0xC0, 14, 0});
  Status st;
  size_t end;
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::bad_pointer);
  m = with_header({0xC0, 4});
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::bad_pointer);
  EXPECT_EQ(skip_name(m, 12, &end), Status::bad_pointer);
  m = with_header({0xC0, 12});  // points at itself
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::bad_pointer);
}

TEST(WireName, RejectsLoopThroughOwnLabels) {
  // offset 12: label "a", then a pointer back to 12: strictly backwards, still a loop.
  std::vector<uint8_t> m = with_header({1, 'a', 0xC0, 12});
  Status st;
  size_t end;
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::pointer_loop);
  // Two names pointing at each other's labels: one of the two pointers is a forward one.
  m = with_header({1, 'a', 0xC0, 16, 1, 'b', 0xC0, 12});
  read_text(m, 16, &st, &end);
  EXPECT_EQ(st, Status::bad_pointer);
  // A chain of backward pointers is fine, up to a bound.
  m = with_header({1, 'a', 0, 0xC0, 12, 0xC0, 15, 0xC0, 17});
  EXPECT_EQ(read_text(m, 19, &st, &end), "a.");
  m = with_header({1, 'a', 0});
  for (unsigned i = 0; i < kMaxPointerHops + 1; ++i) {
    const size_t target = i == 0 ? 12 : m.size() - 2;
    m.push_back(static_cast<uint8_t>(0xC0 | (target >> 8)));
    m.push_back(static_cast<uint8_t>(target));
  }
  read_text(m, m.size() - 2, &st, &end);  // kMaxPointerHops + 1 hops
  EXPECT_EQ(st, Status::pointer_loop);
  read_text(m, m.size() - 4, &st, &end);  // exactly kMaxPointerHops
  EXPECT_EQ(st, Status::ok);
}

TEST(WireName, ReportsTheBytesANameIsReadFrom) {
  auto m = with_header(encode_name("example.com."));  // 12..24
  const size_t second = m.size();
  m.insert(m.end(), {3, 'w', 'w', 'w', 0xC0, 20});   // www + pointer to "com."
  std::vector<std::pair<size_t, size_t>> runs;
  uint8_t out[kMaxNameLen];
  uint8_t len;
  size_t end;
  ASSERT_EQ(read_name(
                m, second, out, &len, &end,
                [](void* c, size_t b, size_t e) {
                  static_cast<std::vector<std::pair<size_t, size_t>>*>(c)->emplace_back(b, e);
                },
                &runs),
            Status::ok);
  EXPECT_EQ(name_to_text({out, len}), "www.com.");
  using Runs = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(runs, (Runs{{second, second + 6}, {20, 25}}));
}

TEST(WireName, RejectsLongLabelAndLongName) {
  std::vector<uint8_t> body{64};
  body.insert(body.end(), 64, 'x');
  body.push_back(0);
  auto m = with_header(body);
  Status st;
  size_t end;
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::label_too_long);
  EXPECT_EQ(skip_name(m, 12, &end), Status::label_too_long);

  body.clear();
  for (int i = 0; i < 5; ++i) {  // 5 * 52 = 260 > 255
    body.push_back(51);
    body.insert(body.end(), 51, 'y');
  }
  body.push_back(0);
  m = with_header(body);
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::name_too_long);
  EXPECT_EQ(skip_name(m, 12, &end), Status::name_too_long);

  m = with_header({0x80, 0});
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::bad_label_type);

  m = with_header({3, 'a', 'b'});
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::truncated);
}

TEST(WireName, MaximalNameIsAccepted) {
  std::vector<uint8_t> body;
  for (int i = 0; i < 3; ++i) {
    body.push_back(63);
    body.insert(body.end(), 63, 'z');
  }
  body.push_back(61);
  body.insert(body.end(), 61, 'z');
  body.push_back(0);  // 3*64 + 62 + 1 = 255
  ASSERT_EQ(body.size(), 255u);
  auto m = with_header(body);
  Status st;
  size_t end;
  read_text(m, 12, &st, &end);
  EXPECT_EQ(st, Status::ok);
}

TEST(WireName, SubdomainOnLabelBoundaries) {
  uint8_t a[kMaxNameLen], b[kMaxNameLen], c[kMaxNameLen], root[kMaxNameLen];
  uint8_t la, lb, lc, lr;
  ASSERT_EQ(name_from_text("x.b.lab.", a, &la), Status::ok);
  ASSERT_EQ(name_from_text("b.lab.", b, &lb), Status::ok);
  ASSERT_EQ(name_from_text("ab.lab.", c, &lc), Status::ok);
  ASSERT_EQ(name_from_text(".", root, &lr), Status::ok);
  EXPECT_TRUE(is_subdomain({a, la}, {b, lb}));
  EXPECT_TRUE(is_subdomain({b, lb}, {b, lb}));
  EXPECT_FALSE(is_subdomain({c, lc}, {b, lb}));
  EXPECT_FALSE(is_subdomain({b, lb}, {a, la}));
  EXPECT_TRUE(is_subdomain({c, lc}, {root, lr}));
  EXPECT_EQ(label_count({a, la}), 3u);
}

TEST(WireName, CanonicalOrderRfc4034) {
  // RFC 4034 6.1 example order.
  const char* order[] = {"example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.",
                         "zABC.a.EXAMPLE.", "z.example.", "\\001.z.example.", "*.z.example.",
                         "\\200.z.example."};
  std::vector<std::vector<uint8_t>> names;
  for (const char* t : order) {
    uint8_t b[kMaxNameLen];
    uint8_t l;
    ASSERT_EQ(name_from_text(t, b, &l), Status::ok) << t;
    names.emplace_back(b, b + l);
  }
  for (size_t i = 0; i + 1 < names.size(); ++i) {
    EXPECT_LT(compare_canonical(names[i], names[i + 1]), 0) << order[i] << " < " << order[i + 1];
    EXPECT_GT(compare_canonical(names[i + 1], names[i]), 0);
    EXPECT_EQ(compare_canonical(names[i], names[i]), 0);
  }
}

TEST(WireName, TextRoundTripAndErrors) {
  uint8_t b[kMaxNameLen];
  uint8_t l;
  ASSERT_EQ(name_from_text("WWW.Lab", b, &l), Status::ok);
  EXPECT_EQ(name_to_text({b, l}), "www.lab.");
  ASSERT_EQ(name_from_text("a\\.b.\\065\\000.", b, &l), Status::ok);
  EXPECT_EQ(l, 1 + 3 + 1 + 2 + 1);
  EXPECT_EQ(name_to_text({b, l}), "a\\.b.a\\000.");
  ASSERT_EQ(name_from_text(".", b, &l), Status::ok);
  EXPECT_EQ(name_to_text({b, l}), ".");
  EXPECT_EQ(name_from_text("a..b", b, &l), Status::bad_text_name);
  EXPECT_EQ(name_from_text("a\\25", b, &l), Status::bad_text_name);
  EXPECT_EQ(name_from_text(std::string(64, 'x') + ".lab", b, &l), Status::label_too_long);
  std::string longname;
  for (int i = 0; i < 26; ++i) longname += "abcdefghi.";
  EXPECT_EQ(name_from_text(longname, b, &l), Status::name_too_long);
}

// ---- walker ----

TEST(WireWalk, EnumeratesRecordsWithOffsets) {
  MsgBuilder mb;
  mb.question("www.lab.", kTypeA);
  mb.rr_ptr(Section::answer, 12, kTypeCNAME, 300, {0xC0, 12});  // www -> www (pointer)
  mb.a(Section::answer, "www.lab.", 60, 0xC6120001);
  mb.ns(Section::authority, "lab.", 3600, "ns1.lab.");
  mb.a(Section::additional, "ns1.lab.", 3600, 0xC6120035);
  mb.opt(1232, true, 0, {{kOptionECS, {0, 1, 24, 0, 198, 18, 0}}});
  const auto m = mb.finish();

  MessageInfo info;
  std::vector<RR> rrs;
  ASSERT_EQ(walk(m, &info, [&](Bytes, const RR& rr) {
              rrs.push_back(rr);
              return true;
            }),
            Status::ok);
  EXPECT_EQ(info.header.qdcount, 1);
  EXPECT_EQ(info.question.qtype, kTypeA);
  EXPECT_EQ(info.question.name_off, 12u);
  ASSERT_EQ(rrs.size(), 5u);
  EXPECT_EQ(rrs[0].type, kTypeCNAME);
  EXPECT_EQ(rrs[0].section, Section::answer);
  EXPECT_EQ(load32(&m[rrs[1].ttl_off]), 60u);
  EXPECT_EQ(rrs[2].section, Section::authority);
  EXPECT_EQ(rrs[4].type, kTypeOPT);
  EXPECT_TRUE(info.opt.present);
  EXPECT_TRUE(info.opt.do_bit);
  EXPECT_TRUE(info.opt.has_ecs);
  EXPECT_TRUE(info.opt.last);
  EXPECT_EQ(info.opt.udp_size, 1232);
}

TEST(WireWalk, ExtendedRcodeFromOpt) {
  MsgBuilder mb;
  mb.question("lab.", kTypeSOA).rcode(0).opt(1232, false, 1);  // BADVERS = 16
  MessageInfo info;
  ASSERT_EQ(walk(mb.finish(), &info), Status::ok);
  EXPECT_EQ(info.rcode(), kRcodeBadVers);
}

TEST(WireWalk, CountsMustMatchBytes) {
  MsgBuilder mb;
  mb.question("www.lab.", kTypeA).a(Section::answer, "www.lab.", 60, 1);
  MessageInfo info;
  EXPECT_EQ(walk(MsgBuilder(mb).force_count(1, 2).finish(), &info), Status::counts_lie);
  EXPECT_EQ(walk(MsgBuilder(mb).force_count(1, 0).finish(), &info), Status::trailing_garbage);
  EXPECT_EQ(walk(MsgBuilder(mb).force_count(0, 2).finish(), &info), Status::truncated);
  auto m = mb.finish();
  m.pop_back();
  EXPECT_EQ(walk(m, &info), Status::truncated);
  EXPECT_EQ(walk(Bytes(m.data(), 5), &info), Status::truncated);
}

TEST(WireWalk, ValidatesNamesInsideRdata) {
  MessageInfo info;
  // NS rdata whose name runs past rdlen.
  auto m = MsgBuilder().question("lab.", kTypeNS).rr(Section::answer, "lab.", kTypeNS, 60,
                                                      {3, 'n', 's', '1', 0, 0}).finish();
  EXPECT_EQ(walk(m, &info), Status::bad_rdata);
  // CNAME rdata with a forward pointer.
  m = MsgBuilder().question("lab.", kTypeCNAME).rr(Section::answer, "lab.", kTypeCNAME, 60,
                                                    {0xC0, 0xFF}).finish();
  EXPECT_EQ(walk(m, &info), Status::bad_pointer);
  // MX too short for preference + name.
  m = MsgBuilder().question("lab.", kTypeMX).rr(Section::answer, "lab.", kTypeMX, 60, {0, 10})
          .finish();
  EXPECT_EQ(walk(m, &info), Status::bad_rdata);
  // SOA missing its 20 fixed bytes.
  m = MsgBuilder().question("lab.", kTypeSOA).rr(Section::answer, "lab.", kTypeSOA, 60,
                                                  {0, 0, 1, 2, 3}).finish();
  EXPECT_EQ(walk(m, &info), Status::bad_rdata);
  // A with the wrong length.
  m = MsgBuilder().question("lab.", kTypeA).rr(Section::answer, "lab.", kTypeA, 60, {1, 2, 3})
          .finish();
  EXPECT_EQ(walk(m, &info), Status::bad_rdata);
  // Good SOA and MX pass.
  m = MsgBuilder().question("lab.", kTypeMX)
          .rr(Section::answer, "lab.", kTypeMX, 60, {0, 10, 0xC0, 12})
          .soa(Section::authority, "lab.", 60, 30).finish();
  EXPECT_EQ(walk(m, &info), Status::ok);
}

TEST(WireWalk, OptRules) {
  MessageInfo info;
  auto m = MsgBuilder().question("lab.", kTypeA).opt().opt().finish();
  EXPECT_EQ(walk(m, &info), Status::duplicate_opt);
  m = MsgBuilder().question("lab.", kTypeA).raw({0}).u16(kTypeOPT).u16(1232).raw({0, 0, 0, 0})
          .u16(0).force_count(1, 1).finish();
  EXPECT_EQ(walk(m, &info), Status::opt_not_additional);
  // Option length runs past the rdata.
  m = MsgBuilder().question("lab.", kTypeA).raw({0}).u16(kTypeOPT).u16(1232).raw({0, 0, 0, 0})
          .u16(4).raw({0, 8, 0, 9}).force_count(3, 1).finish();
  EXPECT_EQ(walk(m, &info), Status::bad_opt);
  // OPT with a non-root owner.
  m = MsgBuilder().question("lab.", kTypeA).rr(Section::additional, "lab.", kTypeOPT, 0, {})
          .finish();
  EXPECT_EQ(walk(m, &info), Status::bad_opt);
  // OPT not last is reported, not rejected: the caller decides.
  m = MsgBuilder().question("lab.", kTypeA).opt().a(Section::additional, "x.lab.", 5, 1).finish();
  ASSERT_EQ(walk(m, &info), Status::ok);
  EXPECT_FALSE(info.opt.last);
}

TEST(WireStatus, EveryStatusHasText) {
  for (size_t i = 0; i < kStatusCount; ++i) {
    const auto s = static_cast<Status>(i);
    EXPECT_STRNE(to_string(s), "unknown");
    EXPECT_STRNE(describe(s), "unknown status");
  }
  EXPECT_STREQ(to_string(Status::pointer_loop), "pointer_loop");
}

}  // namespace
}  // namespace tern::wire
