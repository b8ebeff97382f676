// Server: listeners, ACL, reload atomicity, against real sockets on loopback and the
// tiny authoritative servers of auth_harness.h.
#include "control/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "control/resolver/auth_harness.h"
#include "control/resolver/test_util.h"

namespace tern::control {
namespace {

using resolver::testing::AuthServer;

const char* kRoot = R"(
. 3600 IN SOA a.root.test. h.root.test. 1 1800 900 604800 300
. 3600 IN NS a.root.test.
a.root.test. 3600 IN A 127.53.2.1
www.test. 3600 IN A 198.18.9.1
)";

// Per-process loopback /24 (see resolver_test.cc): parallel runs never collide.
std::string at(std::string text) {
  static std::string n = "127." + std::to_string(118 + (getpid() >> 8) % 64) + "." +
                         std::to_string(getpid() % 256) + ".";
  for (size_t p; (p = text.find("127.53.2.")) != std::string::npos;) text.replace(p, 9, n);
  return text;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::make_unique<AuthServer>(at("127.53.2.1"), at(kRoot));
    if (!root_->ok()) GTEST_SKIP() << "cannot bind " << at("127.53.2.1") << ":53 (" << root_->error() << ")";
    hints_ = "/tmp/tern-server-test-" + std::to_string(getpid()) + ".hints";
    std::ofstream(hints_) << at(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.53.2.1\n");
    cfg_.root_hints = hints_;
    cfg_.listen = {endpoint(at("127.53.2.10:5353").c_str())};
    cfg_.allow = {prefix(at("127.53.2.0/28").c_str())};
  }
  void TearDown() override {
    if (!hints_.empty()) unlink(hints_.c_str());
  }
  static Endpoint endpoint(const char* t) {
    std::string err;
    auto e = parse_endpoint(t, 53, err);
    EXPECT_TRUE(e) << err;
    return *e;
  }
  static Prefix prefix(const char* t) {
    std::string err;
    auto p = parse_prefix(t, err);
    EXPECT_TRUE(p) << err;
    return *p;
  }
  // Sends one query from `src` to 127.53.2.10:5353, runs the loop briefly, returns the
  // rcode (-1: no reply).
  // The client socket is connected: a reply from any other source address is not seen.
  int ask(const char* src, const char* qname, bool rd = true, uint16_t port = 5353) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in me{}, to{};
    me.sin_family = to.sin_family = AF_INET;
    inet_pton(AF_INET, at(src).c_str(), &me.sin_addr);
    bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof me);
    to.sin_port = htons(port);
    inet_pton(AF_INET, at("127.53.2.10").c_str(), &to.sin_addr);
    connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ldns_pkt* p = nullptr;
    ldns_pkt_query_new_frm_str(&p, qname, LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, rd ? LDNS_RD : 0);
    uint8_t* w = nullptr;
    size_t len = 0;
    ldns_pkt2wire(&w, p, &len);
    sendto(fd, w, len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    free(w);
    ldns_pkt_free(p);
    uint8_t buf[4096];
    ssize_t n = -1;
    for (int i = 0; i < 40 && n < 0; ++i) {
      auto t = loop_.after(std::chrono::milliseconds(25), [&] { loop_.stop(); });
      loop_.run();
      loop_.cancel(t);
      n = recv(fd, buf, sizeof buf, 0);
    }
    close(fd);
    return n >= 4 ? buf[3] & 0x0f : -1;
  }
  // Runs the loop for about `ms` milliseconds.
  void spin(int ms) {
    auto t = loop_.after(std::chrono::milliseconds(ms), [&] { loop_.stop(); });
    loop_.run();
    loop_.cancel(t);
  }
  // A non-blocking TCP client from `src` to the listener, connected and accepted.
  int tcp_client(const char* src, uint16_t port = 5353) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in me{}, to{};
    me.sin_family = to.sin_family = AF_INET;
    inet_pton(AF_INET, at(src).c_str(), &me.sin_addr);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof me), 0);
    to.sin_port = htons(port);
    inet_pton(AF_INET, at("127.53.2.10").c_str(), &to.sin_addr);
    connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);  // EINPROGRESS on loopback
    spin(20);
    return fd;
  }
  // One query as a TCP message (RFC 1035 §4.2.2 length prefix).
  static std::vector<uint8_t> framed_query(const char* qname, uint16_t id) {
    ldns_pkt* p = nullptr;
    ldns_pkt_query_new_frm_str(&p, qname, LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD);
    ldns_pkt_set_id(p, id);
    uint8_t* w = nullptr;
    size_t len = 0;
    ldns_pkt2wire(&w, p, &len);
    std::vector<uint8_t> out{uint8_t(len >> 8), uint8_t(len)};
    out.insert(out.end(), w, w + len);
    free(w);
    ldns_pkt_free(p);
    return out;
  }
  // True when the server closed `fd` (EOF or reset); false while it is open.
  static bool closed_by_server(int fd) {
    uint8_t b[512];
    for (;;) {
      ssize_t n = recv(fd, b, sizeof b, 0);
      if (n > 0) continue;  // an answer: read past it
      return n == 0 || errno != EAGAIN;
    }
  }
  uint64_t counter(const char* name) {
    std::vector<std::pair<std::string, uint64_t>> c;
    server_.counters(c);
    for (auto& [k, v] : c)
      if (k == name) return v;
    ADD_FAILURE() << "no counter " << name;
    return 0;
  }

  EventLoop loop_;
  Server server_{loop_};
  Config cfg_;
  std::string hints_;
  std::unique_ptr<AuthServer> root_;
};

TEST_F(ServerTest, AnswersAllowedClientsAndRefusesOthers) {
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  EXPECT_EQ(ask("127.53.2.200", "www.test."), int(LDNS_RCODE_REFUSED));
  EXPECT_EQ(counter("refused_acl"), 1u);
}

TEST_F(ServerTest, WildcardListenerAnswersFromTheQueriedAddress) {
  uint16_t port = uint16_t(20000 + getpid() % 20000);
  cfg_.listen = {endpoint(("0.0.0.0:" + std::to_string(port)).c_str())};
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test.", true, port), 0);  // slow path (resolution)
  EXPECT_EQ(ask("127.53.2.2", "www.test.", true, port), 0);  // fast path (message cache)
  EXPECT_GE(counter("answers_msgcache"), 1u);
}

TEST_F(ServerTest, RecursionNotDesiredIsAnsweredFromCacheOnly) {
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test.", false), int(LDNS_RCODE_REFUSED));  // not cached
  EXPECT_EQ(root_->queries, 0);
  EXPECT_EQ(ask("127.53.2.2", "www.test.", true), 0);
  EXPECT_EQ(ask("127.53.2.2", "www.test.", false), 0);
}

TEST_F(ServerTest, FailedReloadKeepsEverythingRunning) {
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  int upstream = root_->queries;

  Config bad = cfg_;
  bad.root_hints = "/nonexistent/root.hints";
  auto err = server_.apply(bad);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("/nonexistent/root.hints"), std::string::npos) << *err;

  // A listener that cannot bind: the error names it; nothing else changed.
  int hog = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(5354);
  inet_pton(AF_INET, at("127.53.2.10").c_str(), &sa.sin_addr);
  ASSERT_EQ(bind(hog, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  Config busy = cfg_;
  busy.listen.push_back(endpoint(at("127.53.2.10:5354").c_str()));
  busy.allow = {};  // would refuse everyone if it were applied
  err = server_.apply(busy);
  close(hog);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(at("127.53.2.10:5354")), std::string::npos) << *err;

  // Same listener, same ACL, same cache: answered without asking upstream again.
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  EXPECT_EQ(root_->queries, upstream);
}

TEST_F(ServerTest, SuccessfulReloadKeepsTheCache) {
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  int upstream = root_->queries;
  Config next = cfg_;
  next.allow.push_back(prefix(at("127.53.2.128/25").c_str()));
  ASSERT_EQ(server_.apply(next), std::nullopt);
  EXPECT_EQ(ask("127.53.2.200", "www.test."), 0);  // newly allowed
  EXPECT_EQ(root_->queries, upstream);              // from the surviving cache
  EXPECT_EQ(server_.cache_flush("www.test.", false), 1u);
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  EXPECT_GT(root_->queries, upstream);
  std::ostringstream dump;
  server_.cache_dump(dump);
  EXPECT_NE(dump.str().find("www.test."), std::string::npos);
}

// The memoised answers warm a restarted dataplane (export_answers): a reload that changes nothing
// an answer depends on keeps them; one that changes a TTL rule rebuilds them from the RRsets.
TEST_F(ServerTest, ReloadKeepsMemoisedAnswersUnlessTheirRulesChange) {
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  EXPECT_EQ(ask("127.53.2.2", "www.test."), 0);
  auto exported = [&] {
    size_t n = 0;
    server_.export_answers([&](std::span<const uint8_t>) { ++n; });
    return n;
  };
  ASSERT_EQ(exported(), 1u);
  Config next = cfg_;
  next.allow.push_back(prefix(at("127.53.2.128/25").c_str()));
  next.dp_warm_restart = !next.dp_warm_restart;
  ASSERT_EQ(server_.apply(next), std::nullopt);
  EXPECT_EQ(exported(), 1u);
  next.ttl_cap = 60;
  ASSERT_EQ(server_.apply(next), std::nullopt);
  EXPECT_EQ(exported(), 0u);
}

// Issue 15 item 1: a client at max-outstanding-per-client that keeps streaming queries must
// not make tern-control buffer them. The queries go to a server that never answers, so the
// client stays at its limit; then it pushes up to 64 MB. What tern-control holds for the
// connection stays at most one message, and the client finds the window closed instead.
TEST_F(ServerTest, TcpClientAtItsLimitCannotGrowTheReceiveBuffer) {
  AuthServer slow(at("127.53.2.3"), at("slow.test. 3600 IN SOA a.slow.test. h.slow.test. 1 1 1 1 1\n"));
  ASSERT_TRUE(slow.ok()) << slow.error();
  slow.dead = true;
  std::string err;
  cfg_.stub_zones = {ZoneRoute{"slow.test.", {*parse_endpoint(at("127.53.2.3"), 53, err)}}};
  cfg_.max_outstanding_per_client = 4;
  cfg_.upstream_timeout_ms = 60000;
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);

  int fd = tcp_client("127.53.2.2");
  std::vector<uint8_t> stream;
  for (uint16_t i = 0; stream.size() < (1u << 20); ++i) {
    auto m = framed_query(("q" + std::to_string(i % 64) + ".slow.test.").c_str(), i);
    stream.insert(stream.end(), m.begin(), m.end());
  }
  const size_t offered = 64u << 20;
  size_t sent = 0, max_buffered = 0;
  int stalled = 0;  // consecutive rounds in which the client could send nothing
  for (int round = 0; round < 200 && sent < offered && stalled < 20; ++round) {
    size_t before = sent;
    for (;;) {
      size_t off = sent % stream.size();
      ssize_t n = send(fd, stream.data() + off, stream.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += size_t(n);
      if (sent >= offered) break;
    }
    stalled = sent == before ? stalled + 1 : 0;
    spin(5);
    max_buffered = std::max<size_t>(max_buffered, counter("tcp_buffered_bytes_current"));
  }
  std::printf("client pushed %zu bytes of %zu offered; tern-control buffered at most %zu\n",
              sent, offered, max_buffered);
  EXPECT_EQ(counter("tcp_connections_current"), 1u);
  EXPECT_LE(max_buffered, 2u + 65535u) << "more than one message buffered";
  EXPECT_GE(counter("tcp_read_paused"), 1u);
  // The kernel's socket buffers take a few MB on loopback; the rest must stay with the client.
  EXPECT_LT(sent, offered / 4) << "tern-control kept reading from a client at its limit";
  close(fd);
}

// Issue 15 item 2: TCP slots. Addresses outside allow are closed at accept, and one
// address cannot hold more than tcp-max-per-address; another client still gets in.
TEST_F(ServerTest, TcpSlotsAreNotTakenByOutsidersOrOneAddress) {
  cfg_.tcp_max_connections = 8;
  cfg_.tcp_max_per_address = 2;
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  std::vector<int> outsiders, insiders;
  for (int i = 0; i < 20; ++i) outsiders.push_back(tcp_client("127.53.2.200"));
  for (int i = 0; i < 8; ++i) insiders.push_back(tcp_client("127.53.2.2"));
  spin(20);
  int outsiders_open = 0, insiders_open = 0;
  for (int fd : outsiders) outsiders_open += !closed_by_server(fd);
  for (int fd : insiders) insiders_open += !closed_by_server(fd);
  EXPECT_EQ(outsiders_open, 0) << "addresses outside allow hold TCP slots";
  EXPECT_EQ(insiders_open, 2) << "one address holds more than tcp-max-per-address";
  EXPECT_EQ(counter("tcp_rejected_acl"), 20u);
  EXPECT_EQ(counter("tcp_rejected_per_address"), 6u);

  // Someone else is still served over TCP.
  int fd = tcp_client("127.53.2.4");
  auto q = framed_query("www.test.", 77);
  ASSERT_EQ(send(fd, q.data(), q.size(), MSG_NOSIGNAL), ssize_t(q.size()));
  uint8_t buf[4096];
  ssize_t n = -1;
  for (int i = 0; i < 100 && n <= 0; ++i) {
    spin(10);
    n = recv(fd, buf, sizeof buf, 0);
  }
  ASSERT_GE(n, 6) << "no TCP answer for an allowed client";
  EXPECT_EQ(buf[2], 0);  // ID 77 echoed
  EXPECT_EQ(buf[3], 77);
  EXPECT_EQ(buf[5] & 0x0f, 0);  // NOERROR
  close(fd);
  for (int f : outsiders) close(f);
  for (int f : insiders) close(f);
  spin(20);
  EXPECT_EQ(counter("tcp_connections_current"), 0u);
}

// Issue 15 item 2: a byte now and then must not keep a slot forever. A message dripped one
// byte every 20 ms is cut off at tcp-message-timeout; the same message sent at once is
// answered.
TEST_F(ServerTest, TcpMessageMustArriveWithinItsDeadline) {
  cfg_.tcp_message_timeout_ms = 200;
  cfg_.tcp_idle_timeout_ms = 10000;
  ASSERT_EQ(server_.apply(cfg_), std::nullopt);
  auto q = framed_query("www.test.", 9);
  int slow = tcp_client("127.53.2.2");
  bool cut = false;
  size_t i = 0;
  for (; i < q.size() && !cut; ++i) {
    if (send(slow, &q[i], 1, MSG_NOSIGNAL) != 1) cut = true;
    spin(20);
    cut = cut || closed_by_server(slow);
  }
  EXPECT_TRUE(cut) << "a " << q.size() << "-byte message dripped over "
                   << 20 * q.size() << " ms was still being read";
  EXPECT_LT(i, q.size());
  EXPECT_EQ(counter("tcp_closed_message_timeout"), 1u);
  close(slow);

  int fast = tcp_client("127.53.2.2");
  ASSERT_EQ(send(fast, q.data(), q.size(), MSG_NOSIGNAL), ssize_t(q.size()));
  uint8_t buf[4096];
  ssize_t n = -1;
  for (int k = 0; k < 100 && n <= 0; ++k) {
    spin(10);
    n = recv(fast, buf, sizeof buf, 0);
  }
  EXPECT_GE(n, 6) << "a message sent at once was not answered";
  close(fast);
}

}  // namespace
}  // namespace tern::control
