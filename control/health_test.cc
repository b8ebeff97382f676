// HealthMonitor against stand-ins speaking the dataplane's control-socket protocol and DNS over
// UDP, so every verdict (stalled worker, dead socket, failing canary, drain) is checked here
// without DPDK; tests/failover_test.sh checks the same against the real processes.
#include "control/health.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>

namespace tern::control {
namespace {

TEST(CheckQuery, ParsesNameAndType) {
  std::string err;
  auto q = parse_check_query("WWW.Example.ORG aaaa", err);
  ASSERT_TRUE(q) << err;
  EXPECT_EQ(q->name, "www.example.org.");
  EXPECT_EQ(q->qtype, 28);
  EXPECT_FALSE(q->nonce);
  auto n = parse_check_query("*.canary.example. TYPE99", err);
  ASSERT_TRUE(n) << err;
  EXPECT_TRUE(n->nonce);
  EXPECT_EQ(n->name, "canary.example.");
  EXPECT_EQ(n->qtype, 99);
  EXPECT_FALSE(parse_check_query("www.example.org", err));
  EXPECT_NE(err.find("NAME TYPE"), std::string::npos);
  EXPECT_FALSE(parse_check_query("www.example.org BOGUS", err));
  EXPECT_NE(err.find("BOGUS"), std::string::npos);
  EXPECT_FALSE(parse_check_query(std::string(64, 'a') + ".org A", err));
  EXPECT_FALSE(parse_check_query("*. A", err));
}

TEST(CheckQuery, AnswerMustMatchTheQuestion) {
  auto q = build_query("www.example.org.", 1, 0x1234);
  ASSERT_GT(q.size(), 12u);
  std::vector<uint8_t> a(q.begin(), q.end() - 11);  // drop the OPT record
  a[2] |= 0x80;                                      // QR
  a[3] = (a[3] & 0xf0) | 3;                          // NXDOMAIN
  a[11] = 0;                                         // ARCOUNT 0
  a[12 + 1] = 'W';                                   // 0x20 case in the echo is fine
  std::string err;
  auto s = check_answer(a.data(), a.size(), "www.example.org.", 1, 0x1234, err);
  ASSERT_TRUE(s) << err;
  EXPECT_EQ(s->rcode, 3);
  EXPECT_EQ(rcode_name(s->rcode), "NXDOMAIN");
  EXPECT_FALSE(check_answer(a.data(), a.size(), "www.example.org.", 1, 0x1235, err));
  EXPECT_FALSE(check_answer(a.data(), a.size(), "www.example.net.", 1, 0x1234, err));
  EXPECT_FALSE(check_answer(a.data(), a.size(), "www.example.org.", 28, 0x1234, err));
  EXPECT_FALSE(check_answer(q.data(), q.size(), "www.example.org.", 1, 0x1234, err));  // QR=0
  EXPECT_FALSE(check_answer(a.data(), 20, "www.example.org.", 1, 0x1234, err));
}

// Speaks the dataplane control-socket protocol: one request line, reply lines, OK.
class FakeDataplane {
 public:
  explicit FakeDataplane(std::string path) : path_(std::move(path)) {
    ::unlink(path_.c_str());
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeDataplane() {
    stop_ = true;
    thread_.join();
    close(fd_);
    ::unlink(path_.c_str());
  }
  std::atomic<bool> advance{true};  // false: worker 1's heartbeat freezes
  std::atomic<bool> mute{false};    // true: accept, never answer
  std::atomic<uint64_t> epoch{1}, policy_generation{0};

 private:
  void serve() {
    uint64_t beat = 100, frozen = 0;
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      char buf[256];
      ssize_t n = recv(c, buf, sizeof buf - 1, 0);
      std::string req(buf, n > 0 ? size_t(n) : 0);
      std::string out;
      if (mute) {
        pollfd q{c, POLLIN, 0};
        while (!stop_ && poll(&q, 1, 20) == 0) {
        }
      } else if (req.rfind("heartbeats", 0) == 0) {
        ++beat;
        if (advance) frozen = beat;
        out = "tern_dp_heartbeat_total{core=\"0\"} " + std::to_string(beat) + "\ntern_dp_heartbeat_total{core=\"1\"} " +
              std::to_string(frozen) + "\ntern_dp_epoch " + std::to_string(epoch.load()) +
              "\ntern_dp_policy_generation " + std::to_string(policy_generation.load()) + "\nOK\n";
      } else if (req.rfind("stats", 0) == 0) {
        out = "tern_dp_rx_packets_total{core=\"0\"} 5\ntern_dp_rx_packets_total{core=\"1\"} 6\nOK\n";
      } else {
        out = "ERR unknown verb '" + req.substr(0, req.find(' ')) + "'\n";
      }
      if (!out.empty()) send(c, out.data(), out.size(), MSG_NOSIGNAL);
      close(c);
    }
  }
  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Answers every query NXDOMAIN, or nothing while `mute`.
class FakeResolver {
 public:
  FakeResolver() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        uint8_t buf[512];
        sockaddr_storage from{};
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n < 12 || mute) continue;
        buf[2] |= 0x80;
        buf[3] = uint8_t((buf[3] & 0xf0) | 3);
        sendto(fd_, buf, size_t(n), 0, reinterpret_cast<sockaddr*>(&from), fl);
      }
    });
  }
  ~FakeResolver() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  uint16_t port = 0;
  std::atomic<bool> mute{false};

 private:
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tern-health-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs the loop until pred() holds or `ms` passed (the loop is driven on this thread).
  bool run_until(EventLoop& loop, const std::function<bool()>& pred, int ms = 5000) {
    bool done = false;
    std::function<void()> check = [&] {
      if (pred() || loop.now_ms() > deadline_) {
        done = pred();
        loop.stop();
        return;
      }
      loop.after(std::chrono::milliseconds(10), check);
    };
    deadline_ = loop.refresh_now() + uint64_t(ms);
    loop.after(std::chrono::milliseconds(0), check);
    loop.run();
    return done;
  }

  HealthSettings settings(const FakeResolver* r) {
    HealthSettings s;
    s.dataplane_socket = (dir_ / "dp.sock").string();
    s.interval_ms = 100;
    s.probe_deadline_ms = 200;
    s.canary_deadline_ms = 200;
    s.drain_file = (dir_ / "drained").string();
    if (r) {
      std::string err;
      s.canary = parse_check_query("*.canary.example. A", err);
      s.canary_server = parse_endpoint("127.0.0.1:" + std::to_string(r->port), 0, err);
    }
    return s;
  }

  std::filesystem::path dir_;
  uint64_t deadline_ = 0;
};

TEST_F(HealthTest, ReadyWhenEverythingAnswersThenStalledWorkerIsNotLive) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  FakeResolver res;
  EventLoop loop;
  HealthMonitor h(loop);
  h.configure(settings(&res));
  EXPECT_EQ(h.status().state, Health::not_live);  // nothing checked yet: never assume health
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }))
      << h.status().reason << "\n" << h.detail();
  EXPECT_NE(h.status().reason.find("2 workers beating"), std::string::npos) << h.status().reason;
  EXPECT_NE(h.status().reason.find("NXDOMAIN"), std::string::npos) << h.status().reason;

  dp.advance = false;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_live; }));
  EXPECT_NE(h.status().reason.find("core 1 heartbeat did not advance"), std::string::npos)
      << h.status().reason;
  MetricsWriter w;
  h.collect(w);
  EXPECT_NE(w.text().find("tern_dp_worker_stalled{core=\"1\"} 1\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("tern_dp_worker_stalled{core=\"0\"} 0\n"), std::string::npos);
  EXPECT_NE(w.text().find("tern_dp_rx_packets_total{core=\"1\"} 6\n"), std::string::npos);
  EXPECT_NE(w.text().find("tern_health_live 0\n"), std::string::npos);

  dp.advance = true;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
}

TEST_F(HealthTest, EveryTransitionIsReportedOnceWithItsReason) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  FakeResolver res;
  EventLoop loop;
  HealthMonitor h(loop);
  std::vector<std::pair<Health, std::string>> seen;
  h.on_change([&](const HealthStatus& st, Health) { seen.emplace_back(st.state, st.reason); });
  h.configure(settings(&res));
  // Wait for the reported transition, not for status(): status() reads the latest results and
  // can turn ready mid-cycle, before the cycle ends and reports it.
  ASSERT_TRUE(run_until(loop, [&] { return !seen.empty() && seen.back().first == Health::ready; }));
  EXPECT_FALSE(h.set_draining(true));
  EXPECT_FALSE(h.set_draining(true));  // no change, no second report
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.back().first, Health::not_ready);
  EXPECT_NE(seen.back().second.find("draining"), std::string::npos);
  EXPECT_EQ(seen[seen.size() - 2].first, Health::ready);
  size_t n = seen.size();
  run_until(loop, [&] { return false; }, 400);  // a few more cycles, same verdict
  EXPECT_EQ(seen.size(), n);
}

TEST_F(HealthTest, DataplaneGoneOrMuteIsNotLive) {
  FakeResolver res;
  EventLoop loop;
  HealthMonitor h(loop);
  {
    FakeDataplane dp((dir_ / "dp.sock").string());
    h.configure(settings(&res));
    ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
    dp.mute = true;
    ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_live; }));
    EXPECT_NE(h.status().reason.find("no reply within 200 ms"), std::string::npos)
        << h.status().reason;
  }
  ASSERT_TRUE(run_until(loop, [&] {
    return h.status().reason.find("no socket at") != std::string::npos;
  })) << h.status().reason;
  EXPECT_EQ(h.status().state, Health::not_live);
}

// A dataplane that stops removes its socket first: readiness fails at once, not one (here 60 s)
// interval later, and a new socket renamed into place is checked at once too.
TEST_F(HealthTest, DataplaneSocketRemovedFailsAtOnce) {
  FakeResolver res;
  EventLoop loop;
  HealthMonitor h(loop);
  FakeDataplane dp((dir_ / "dp.sock").string());
  h.configure(settings(&res));
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
  HealthSettings slow = settings(&res);
  slow.interval_ms = 60000;
  h.configure(slow);
  run_until(loop, [&] { return false; }, 200);  // the re-run the new settings start
  ASSERT_EQ(h.status().state, Health::ready) << h.status().reason;
  ASSERT_EQ(::unlink((dir_ / "dp.sock").c_str()), 0);
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_live; }, 1000)) << h.status().reason;
  // "removed" at once, then the immediate re-check's own words for a missing socket.
  EXPECT_NE(h.status().reason.find("dp.sock"), std::string::npos) << h.status().reason;
}

TEST_F(HealthTest, FailingCanaryIsNotReadyButLive) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  FakeResolver res;
  EventLoop loop;
  HealthMonitor h(loop);
  h.configure(settings(&res));
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
  res.mute = true;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_ready; }));
  EXPECT_NE(h.status().reason.find("canary *.canary.example. A: no answer within 200 ms"),
            std::string::npos)
      << h.status().reason;
  res.mute = false;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
}

TEST_F(HealthTest, DrainFailsReadinessAndSurvivesRestart) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  FakeResolver res;
  {
    EventLoop loop;
    HealthMonitor h(loop);
    h.configure(settings(&res));
    ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
    EXPECT_FALSE(h.set_draining(true));
    EXPECT_EQ(h.status().state, Health::not_ready);  // at once, not at the next cycle
    EXPECT_NE(h.status().reason.find("draining"), std::string::npos);
  }
  {
    // A restart (e.g. the package upgrade the node was drained for) keeps it drained.
    EventLoop loop;
    HealthMonitor h(loop);
    h.configure(settings(&res));
    EXPECT_TRUE(h.draining());
    ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_ready; }));
    EXPECT_FALSE(h.set_draining(false));
    EXPECT_FALSE(std::filesystem::exists(dir_ / "drained"));
    ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }));
  }
}

// A dataplane on another policy generation than the config's (restarted on its command-line
// defaults, or one that refused the push) may refuse clients the config allows: not ready, with
// the reason, until it runs the config's generation; the epoch and generation reach the owner.
TEST_F(HealthTest, PolicyGenerationMismatchIsNotReady) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  EventLoop loop;
  HealthMonitor h(loop);
  HealthSettings s = settings(nullptr);
  s.policy_generation = 5;
  uint64_t seen_epoch = 0, seen_gen = 99;
  h.on_dataplane([&](uint64_t e, uint64_t g) { seen_epoch = e, seen_gen = g; });
  dp.epoch = 1234;
  h.configure(s);
  ASSERT_TRUE(run_until(loop, [&] { return seen_epoch == 1234 && h.status().state == Health::not_ready; }));
  EXPECT_EQ(seen_gen, 0u);
  EXPECT_NE(h.status().reason.find("dataplane runs policy generation 0, config is generation 5; pushing"),
            std::string::npos) << h.status().reason;
  h.note_refusal("cache-bytes=1048576MiB is more than half of this machine's memory");
  EXPECT_NE(h.status().reason.find("it refused the push: cache-bytes="), std::string::npos) << h.status().reason;
  dp.policy_generation = 5;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; })) << h.status().reason;
  // The dataplane restarts: back on its defaults, not ready again until pushed.
  dp.epoch = 5678;
  dp.policy_generation = 0;
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::not_ready; }));
  EXPECT_EQ(seen_epoch, 5678u);
  h.note_policy(5);
  EXPECT_NE(h.status().state, Health::not_ready);
}

TEST_F(HealthTest, UnknownProbeVerbDoesNotFailTheNode) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  EventLoop loop;
  HealthMonitor h(loop);
  HealthSettings s = settings(nullptr);
  std::string err;
  s.probe = parse_check_query("www.example. A", err);
  h.configure(s);
  ASSERT_TRUE(run_until(loop, [&] { return h.status().state == Health::ready; }))
      << h.status().reason;
  EXPECT_NE(h.detail().find("probe: ok (not supported"), std::string::npos) << h.detail();
}

// A monitor destroyed (tern-control stopping, tests) while its dataplane request waits for a
// reply abandons the request: nothing calls back into it after its deadline, and its socket is
// closed at once. ASan builds turn a late callback into a failure.
TEST_F(HealthTest, DestroyedWhileWaitingForTheDataplaneNeverCallsBack) {
  FakeDataplane dp((dir_ / "dp.sock").string());
  dp.mute = true;
  EventLoop loop;
  auto fds = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                         std::filesystem::directory_iterator{});
  };
  auto before = fds();
  auto changes = std::make_shared<int>(0);
  {
    HealthMonitor h(loop);
    h.on_change([changes](const HealthStatus&, Health) { ++*changes; });
    h.configure(settings(nullptr));
    run_until(loop, [&] { return false; }, 50);  // `heartbeats` sent, the reply never comes
    EXPECT_EQ(h.status().reason, "starting: first health check not complete");
    EXPECT_GT(fds(), before);  // our end, and the fake dataplane's
  }
  EXPECT_EQ(changes.use_count(), 1);  // the monitor's callbacks are gone with it
  run_until(loop, [&] { return false; }, 400);  // well past the 200 ms deadline
  EXPECT_EQ(*changes, 0);
  EXPECT_EQ(fds(), before);  // the fake dataplane saw our end close, and closed its own
}

TEST(HealthSettingsFromConfig, ValidatesHealthSection) {
  Config c;
  std::string err;
  c.listen = {*parse_endpoint("198.18.0.53", 53, err), *parse_endpoint("127.0.0.1", 53, err)};
  c.health_canary = "www.example.org A";
  auto s = health_settings(c, err);
  ASSERT_TRUE(s) << err;
  ASSERT_TRUE(s->canary_server);
  EXPECT_EQ(s->canary_server->text, "127.0.0.1:53");  // loopback listener preferred
  c.health_probe = "www.example.org A";
  EXPECT_FALSE(health_settings(c, err));  // probe without a dataplane
  EXPECT_NE(err.find("dataplane-socket"), std::string::npos) << err;
  c.health_probe.clear();
  c.health_canary = "www.example.org";
  EXPECT_FALSE(health_settings(c, err));
  EXPECT_NE(err.find("[health] canary"), std::string::npos) << err;
}

}  // namespace
}  // namespace tern::control
