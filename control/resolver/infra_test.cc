#include "control/resolver/infra.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace tern::control::resolver {
namespace {

ServerAddr addr(const char* ip) {
  ServerAddr a;
  auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(53);
  inet_pton(AF_INET, ip, &sin->sin_addr);
  a.len = sizeof(sockaddr_in);
  return a;
}

TEST(Infra, ChoosesTheFastestServer) {
  Infra inf;
  std::mt19937 rng(1);
  std::vector<ServerAddr> s = {addr("198.18.1.1"), addr("198.18.1.2"), addr("198.18.1.3")};
  for (int i = 0; i < 5; ++i) {
    inf.rtt(s[0], 80, 0);
    inf.rtt(s[1], 5, 0);
    inf.rtt(s[2], 200, 0);
  }
  for (int i = 0; i < 20; ++i) EXPECT_EQ(inf.choose(s, rng), 1);
}

TEST(Infra, UnknownServersAreTriedBeforeSlowOnes) {
  Infra inf;
  std::mt19937 rng(1);
  std::vector<ServerAddr> s = {addr("198.18.1.1"), addr("198.18.1.2")};
  for (int i = 0; i < 5; ++i) inf.rtt(s[0], 900, 0);
  EXPECT_EQ(inf.choose(s, rng), 1);  // 376 ms niceness beats a measured 900 ms
}

TEST(Infra, TimeoutsBackOffUntilAnotherServerWins) {
  Infra inf;
  std::mt19937 rng(1);
  std::vector<ServerAddr> s = {addr("198.18.1.1"), addr("198.18.1.2")};
  inf.rtt(s[0], 10, 0);
  inf.rtt(s[1], 40, 0);
  EXPECT_EQ(inf.choose(s, rng), 0);
  uint32_t before = inf.rto(s[0]);
  inf.timeout(s[0], 0);
  EXPECT_EQ(inf.rto(s[0]), 2 * before);
  inf.timeout(s[0], 0);
  inf.timeout(s[0], 0);
  EXPECT_EQ(inf.choose(s, rng), 1);
  // A reply resets the backoff through the RTT estimate.
  for (int i = 0; i < 10; ++i) inf.rtt(s[0], 10, 0);
  EXPECT_EQ(inf.choose(s, rng), 0);
}

TEST(Infra, EqualServersShareTheLoad) {
  Infra inf;
  std::mt19937 rng(7);
  std::vector<ServerAddr> s = {addr("198.18.1.1"), addr("198.18.1.2"), addr("198.18.1.3")};
  int seen[3] = {0, 0, 0};
  for (int i = 0; i < 300; ++i) ++seen[inf.choose(s, rng)];
  for (int n : seen) EXPECT_GT(n, 50);
}

TEST(Infra, LamenessIsPerZone) {
  Infra inf;
  auto a = addr("198.18.1.1");
  inf.mark_lame(a, "zoneA", 1000);
  EXPECT_TRUE(inf.lame(a, "zoneA", 2000));
  EXPECT_FALSE(inf.lame(a, "zoneB", 2000));
  EXPECT_FALSE(inf.lame(a, "zoneA", 1000 + Infra::kLameMs));
}

TEST(Infra, TallyIsBoundedAndKeepsTheBusiestServers) {
  Infra inf;
  ServerAddr busy = addr("198.18.1.1");
  for (int i = 0; i < 100; ++i) inf.count_query(busy);
  inf.count_timeout(busy);
  // A random-subdomain flood reaches many zones' servers, each asked once.
  for (unsigned i = 0; i < 3 * Infra::kTallyMax; ++i) {
    std::string ip = "198.19." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    inf.count_query(addr(ip.c_str()));
  }
  EXPECT_EQ(inf.tallies(), Infra::kTallyMax);
  EXPECT_EQ(inf.tally_evictions(), 2 * Infra::kTallyMax + 1);
  auto t = inf.find_tally(busy);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->queries, 100u);
  EXPECT_EQ(t->timeouts, 1u);
  auto top = inf.top(64);
  ASSERT_EQ(top.size(), 64u);
  EXPECT_EQ(top[0].addr.key(), busy.key());
}

// Issue 15 item 7: glue naming ever new servers (a flood through many zones) must not grow
// the server state without bound. The busy server, used all along, survives.
TEST(Infra, ServerStateIsBoundedByBytesAndKeepsWhatIsInUse) {
  Infra inf;
  const size_t max = 256u << 10;
  inf.set_max_bytes(max);
  ServerAddr busy = addr("198.18.1.1");
  inf.rtt(busy, 10, 0);
  size_t peak = 0;
  for (unsigned i = 0; i < 100000; ++i) {
    std::string ip = std::string(i < 64000 ? "198.19." : "198.18.") + std::to_string(i / 250 % 256) +
                     "." + std::to_string(i % 250 + 2);
    ServerAddr a = addr(ip.c_str());
    inf.timeout(a, i);
    if (i % 7 == 0) inf.mark_lame(a, "z" + std::to_string(i), i);
    if (i % 100 == 0) inf.rtt(busy, 10, i);  // in use all along
    peak = std::max(peak, inf.bytes());
  }
  std::printf("100000 servers seen: %zu kept, %zu lame records, %zu bytes (max %zu), %llu evicted\n",
              inf.size(), inf.lame_entries(), inf.bytes(), max,
              static_cast<unsigned long long>(inf.evictions()));
  EXPECT_LE(peak, max);
  EXPECT_LT(inf.size(), 100000u / 10);
  EXPECT_GT(inf.evictions(), 90000u);
  ASSERT_TRUE(inf.find(busy).has_value());
  EXPECT_EQ(inf.find(busy)->srtt, 10);

  // Lowering the bound at reload applies at once.
  inf.set_max_bytes(64u << 10);
  EXPECT_LE(inf.bytes(), 64u << 10);
  EXPECT_TRUE(inf.find(busy).has_value());
}

}  // namespace
}  // namespace tern::control::resolver
