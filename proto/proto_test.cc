// The contract's pieces on their own: prefixes, the policy codec, the framing (a real unix
// socket on a thread), the stat lines.
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "proto/counters.h"
#include "proto/dns_names.h"
#include "proto/framing.h"
#include "proto/policy.h"
#include "proto/prefix.h"

namespace tern::proto {
namespace {

TEST(Prefix, ParsesCanonicalisesAndExplainsHostBits) {
  std::string err;
  auto p = parse_prefix("198.18.0.0/15", &err);
  ASSERT_TRUE(p) << err;
  EXPECT_EQ(p->text(), "198.18.0.0/15");
  EXPECT_EQ(parse_prefix("2001:2:0::/48", &err)->text(), "2001:2::/48");
  EXPECT_EQ(parse_prefix("198.18.0.1", &err)->text(), "198.18.0.1/32");
  EXPECT_FALSE(parse_prefix("198.18.0.1/16", &err));
  EXPECT_NE(err.find("did you mean 198.18.0.0/16"), std::string::npos) << err;
  EXPECT_FALSE(parse_prefix("198.18.0.0/33", &err));
  EXPECT_FALSE(parse_prefix("198.18.0.0/x", &err));
  EXPECT_FALSE(parse_prefix("example.org", &err));
  const uint8_t in[4] = {198, 19, 3, 4}, out[4] = {198, 20, 0, 1};
  EXPECT_TRUE(p->contains(in, false));
  EXPECT_FALSE(p->contains(out, false));
}

TEST(Prefix, ListIsAllOrNothing) {
  std::vector<Prefix> l;
  std::string err;
  ASSERT_TRUE(parse_prefix_list("198.18.0.0/15,2001:2::/48", l, &err));
  EXPECT_EQ(prefix_list_text(l), "198.18.0.0/15,2001:2::/48");
  EXPECT_FALSE(parse_prefix_list("198.18.0.0/15,,2001:2::/48", l, &err));
  EXPECT_FALSE(parse_prefix_list("198.18.0.0/15,bad", l, &err));
  EXPECT_EQ(l.size(), 2u);  // unchanged
  ASSERT_TRUE(parse_prefix_list("none", l, &err));
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(prefix_list_text(l), "none");
}

Policy sample_policy(size_t prefixes) {
  Policy p;
  p.generation = 42;
  for (size_t i = 0; i < prefixes; ++i) {
    Prefix x;
    x.addr = {198, 18, uint8_t(i >> 8), uint8_t(i & 0xff)};
    x.len = 32;
    p.allow.push_back(x);
  }
  p.refuse_outside = false;
  p.miss_rate = 7;
  p.miss_burst = 9;
  p.stale_on_limit = false;
  p.cache.ttl_cap = 60;
  p.cache.stale_window = 0;
  p.cache.max_bytes = 123456789;
  p.rrl = {100, 0, 3, 1, 28, 48};
  p.punt.other = {10, 2};
  p.punt.resolver_replies = {0, 1};
  p.punt.ring_reserve_pct = 0;
  return p;
}

TEST(Policy, RoundTripsEveryKey) {
  Policy p = sample_policy(3), q;
  std::string err;
  ASSERT_TRUE(decode_policy(encode_policy(p), q, &err)) << err;
  EXPECT_EQ(p, q);
  for (auto k : policy_keys()) EXPECT_NE(encode_policy(p).find(std::string(k) + "="), std::string::npos) << k;
}

TEST(Policy, DecodeIsAllOrNothingAndNamesTheProblem) {
  Policy p = sample_policy(1), before = p;
  std::string err;
  EXPECT_FALSE(decode_policy("miss-rate=5 ttl-cap=ten", p, &err));
  EXPECT_NE(err.find("ttl-cap=ten"), std::string::npos) << err;
  EXPECT_FALSE(decode_policy("refuse=1 colour=blue", p, &err));
  EXPECT_NE(err.find("unknown key 'colour'"), std::string::npos) << err;
  EXPECT_FALSE(decode_policy("refuse=1 refuse=0", p, &err));
  EXPECT_FALSE(decode_policy("allow=198.18.0.1/8", p, &err));
  EXPECT_FALSE(decode_policy("punt-other=1000", p, &err));
  EXPECT_NE(err.find("punt-other=1000: expected RATE/BURST"), std::string::npos) << err;
  EXPECT_FALSE(decode_policy("punt-other=5/0", p, &err));
  EXPECT_FALSE(decode_policy("rrl-ipv6-prefix=129", p, &err));
  EXPECT_NE(err.find("from 0 to 128"), std::string::npos) << err;
  EXPECT_FALSE(decode_policy("punt-ring-reserve=101", p, &err));
  EXPECT_EQ(p, before);
  ASSERT_TRUE(decode_policy("miss-rate=5", p, &err));
  EXPECT_EQ(p.miss_rate, 5u);
  EXPECT_EQ(p.allow, before.allow);
}

// A policy push with a 2,000-prefix allow list crosses the socket whole (the old 4 KB limit
// refused a few hundred prefixes).
TEST(Framing, LargePolicyRequestCrossesTheSocket) {
  auto dir = std::filesystem::temp_directory_path() / ("proto_test." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "s.sock").string();
  std::string err;
  int lfd = listen_unix(path, "", "test", &err);
  ASSERT_GE(lfd, 0) << err;
  struct stat st{};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Policy received;
  std::thread server([&] {
    int c = -1;
    while ((c = ::accept(lfd, nullptr, nullptr)) < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    RequestReader rr;
    char buf[4096];
    RequestReader::State s = RequestReader::State::more;
    while (s == RequestReader::State::more) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n < 0 && errno == EAGAIN) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      s = n > 0 ? rr.feed({buf, size_t(n)}) : rr.eof();
    }
    Reply r;
    auto w = split_words(rr.line());
    std::string e;
    if (w.size() < 2 || w[0] != "policy" || !decode_policy(rr.line().substr(7), received, &e)) r.fail(e);
    else r.line("policy generation=" + std::to_string(received.generation));
    std::string out = render_reply(r);
    ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
    ::close(c);
  });
  Policy p = sample_policy(2000);
  const std::string line = "policy " + encode_policy(p);
  EXPECT_GT(line.size(), 20000u);
  Result res = request(path, line, std::chrono::milliseconds(5000));
  server.join();
  ::close(lfd);
  EXPECT_TRUE(res.ok()) << res.message;
  EXPECT_EQ(res.body, "policy generation=42\n");
  EXPECT_EQ(received, p);
  std::filesystem::remove_all(dir);
}

TEST(Framing, OverlongRequestIsRefused) {
  RequestReader rr;
  std::string chunk(64 * 1024, 'x');
  RequestReader::State s = RequestReader::State::more;
  for (size_t sent = 0; sent <= kMaxRequest && s == RequestReader::State::more; sent += chunk.size()) s = rr.feed(chunk);
  EXPECT_EQ(s, RequestReader::State::too_long);
}

TEST(Framing, ReplyRendersAndParsesBack) {
  Reply r;
  r.line("a 1");
  r.fail("bad\nthing");
  Result back = parse_reply(render_reply(r));
  EXPECT_EQ(back.status, Result::Status::err);
  EXPECT_EQ(back.message, "bad thing");
  EXPECT_EQ(back.body, "a 1\n");
  EXPECT_EQ(parse_reply("half a reply").status, Result::Status::io_error);
  EXPECT_EQ(request("/nonexistent/tern.sock", "stats", std::chrono::milliseconds(100)).status,
            Result::Status::not_running);
}

// A symlink planted where the socket goes (a group-writable /run/tern) is refused, and the
// file it points to keeps its mode: nothing is chmod-ed or chown-ed through a name.
TEST(Framing, ListenNeverFollowsAPlantedSymlink) {
  auto dir = std::filesystem::temp_directory_path() / ("proto_link." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string victim = (dir / "victim").string(), path = (dir / "s.sock").string();
  std::ofstream(victim) << "x";
  ::chmod(victim.c_str(), 0644);
  ASSERT_EQ(::symlink(victim.c_str(), path.c_str()), 0);
  std::string err;
  EXPECT_LT(listen_unix(path, "root", "test", &err), 0);
  EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
  struct stat st{};
  ASSERT_EQ(::stat(victim.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  // With a group: the socket is 0660 for it, made in place of a stale one.
  ::unlink(path.c_str());
  int fd = listen_unix(path, "root", "test", &err);
  ASSERT_GE(fd, 0) << err;
  ::close(fd);
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  fd = listen_unix(path, "", "test", &err);  // stale socket from the closed one: replaced
  ASSERT_GE(fd, 0) << err;
  ::close(fd);
  size_t leftovers = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) leftovers += e.path().filename().string().rfind(".tern-sock", 0) == 0;
  EXPECT_EQ(leftovers, 0u);
  std::filesystem::remove_all(dir);
}

TEST(Stats, LinesParseBackAndEveryFamilyIsKnown) {
  auto s = parse_stat_line(stat_line("tern_dp_rx_packets_total", "core=\"3\"", 17));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "tern_dp_rx_packets_total");
  EXPECT_EQ(label_value(s->labels, "core"), "3");
  EXPECT_EQ(s->value, 17u);
  EXPECT_FALSE(parse_stat_line("tern_x{core=3} 1"));
  EXPECT_FALSE(parse_stat_line("tern_x one"));
  ASSERT_TRUE(find_dataplane_metric("tern_dp_drop_acl_total"));
  EXPECT_FALSE(find_dataplane_metric("tern_dp_drop_acl_total")->help.empty());
  EXPECT_FALSE(find_dataplane_metric("tern_dp_cache_entries")->counter);
}

TEST(DnsNames, QtypesAndRcodes) {
  uint16_t t = 0;
  EXPECT_TRUE(parse_qtype("aaaa", t));
  EXPECT_EQ(t, 28);
  EXPECT_TRUE(parse_qtype("TYPE65", t));
  EXPECT_EQ(t, 65);
  EXPECT_FALSE(parse_qtype("TYPE", t));
  EXPECT_FALSE(parse_qtype("BOGUS", t));
  EXPECT_EQ(rcode_text(2), "SERVFAIL");
}

}  // namespace
}  // namespace tern::proto
