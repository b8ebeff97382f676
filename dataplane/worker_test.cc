// The worker's stages and its loop on real mbufs: EAL with --no-huge --in-memory, a small mempool,
// and for the loop a ring PMD port. No NIC, no hugepages, no root.
#include "worker.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <chrono>
#include <thread>

#include "probe.h"
#include "test_packets.h"

namespace tern::dp {
namespace {

using test::Bytes;
using test::QuerySpec;
using test::v6spec;

rte_mempool* pool() {
  static rte_mempool* mp = [] {
    // --no-huge implies legacy memory, which --in-memory refuses; --no-shconf keeps parallel test
    // processes (and other DPDK programs) from meeting in a shared runtime directory.
    const char* argv[] = {"fastpath_test", "--no-huge", "--no-shconf", "-m", "256", "--no-pci",
                          "--no-telemetry", "--log-level=*:error", "-l", "0"};
    int rc = rte_eal_init(static_cast<int>(std::size(argv)), const_cast<char**>(argv));
    if (rc < 0) {
      ADD_FAILURE() << "rte_eal_init: " << rte_strerror(rte_errno);
      return static_cast<rte_mempool*>(nullptr);
    }
    return rte_pktmbuf_pool_create("fastpath_test", 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  }();
  return mp;
}

rte_mbuf* mbuf(const Bytes& f) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool());
  EXPECT_NE(m, nullptr);
  char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(f.size()));
  EXPECT_NE(p, nullptr);
  std::memcpy(p, f.data(), f.size());
  return m;
}

Bytes bytes(const rte_mbuf* m) {
  const uint8_t* p = rte_pktmbuf_mtod(m, const uint8_t*);
  return Bytes(p, p + rte_pktmbuf_data_len(m));
}

struct WorkerTest : ::testing::Test {
  cache::Cache cache{cache::Config{}, 7};
  PolicySlot policy;
  ServiceAddrs service;
  std::atomic<bool> stop{false};
  Worker* w = nullptr;

  void SetUp() override {
    ASSERT_NE(pool(), nullptr);
    auto addrs = std::make_shared<ServiceAddrSet>();
    addrs->v4.push_back({198, 18, 0, 53});
    std::array<uint8_t, 16> a6;
    inet_pton(AF_INET6, "2001:2::53", a6.data());
    addrs->v6.push_back(a6);
    service.publish(addrs);
    set_policy("198.18.0.0/16,2001:2::/48", true, 1000, 100, true);
    WorkerConf c;
    c.cache = &cache;
    c.policy = &policy;
    c.service = &service;
    c.stop = &stop;
    std::string err;
    w = worker_create(c, &err);
    ASSERT_NE(w, nullptr) << err;
  }
  void TearDown() override { worker_destroy(w); }

  void set_policy(const char* allow, bool refuse, uint32_t rate, uint32_t burst, bool stale) {
    auto p = std::make_shared<Policy>();
    std::string err;
    ASSERT_TRUE(p->allow.add_list(allow, &err)) << err;
    p->refuse_outside = refuse;
    p->miss_rate_qps = rate;
    p->miss_burst = burst;
    p->stale_on_limit = stale;
    policy.publish(p);
  }

  void store(QuerySpec s, uint32_t ttl, uint32_t at) {
    const Bytes rdata = s.v6 ? Bytes{198, 18, 2, 2} : Bytes{198, 18, 1, 1};
    s.qtype = 1;
    auto r = cache.insert_response(test::dns_response(s, ttl, 0x0180, rdata), at);
    ASSERT_TRUE(r.stored()) << cache::to_string(r.reason);
  }

  void set_rrl(const RrlLimits& l) {
    auto p = std::make_shared<Policy>(*policy.load());
    p->rrl = l;
    policy.publish(p);
    worker_housekeeping(*w);
  }

  struct Run {
    std::vector<Bytes> tx, exc;
  };
  Run run(const std::vector<Bytes>& frames, Source src = Source::kNic) {
    std::vector<rte_mbuf*> in;
    for (const Bytes& f : frames) in.push_back(mbuf(f));
    rte_mbuf* tx[kBurst];
    rte_mbuf* exc[kBurst];
    const BurstOut o = process_burst(*w, in, tx, exc, src);
    Run r;
    for (unsigned i = 0; i < o.n_tx; ++i) r.tx.push_back(bytes(tx[i]));
    for (unsigned i = 0; i < o.n_exc; ++i) r.exc.push_back(bytes(exc[i]));
    rte_pktmbuf_free_bulk(tx, o.n_tx);
    rte_pktmbuf_free_bulk(exc, o.n_exc);
    worker_housekeeping(*w);  // publish counters
    return r;
  }
  uint64_t c(Counter x) const { return w->counter(x); }
};

uint16_t flags_of(const Bytes& f, size_t dns) { return static_cast<uint16_t>(f[dns + 2] << 8 | f[dns + 3]); }

// An IPv4 frame of QuerySpec s carrying another IP protocol (the bytes after the IP header are
// the UDP header's; only ports and types are looked at).
Bytes ip_proto(const QuerySpec& s, uint8_t proto) {
  Bytes f = test::query_frame(s);
  f[14 + 9] = proto;
  test::fix_checksums(f, 14, false);
  return f;
}
Bytes arp_frame() {
  Bytes f = test::query_frame(QuerySpec{});
  f[12] = 0x08;
  f[13] = 0x06;
  return f;
}
Bytes udp_to(uint16_t dport, const char* src = "198.18.0.100", uint16_t sport = 40000) {
  QuerySpec s;
  s.src = src;
  s.sport = sport;
  s.dport = dport;
  return test::query_frame(s);
}
Bytes syn_to(uint16_t dport, uint16_t sport = 40000) {
  QuerySpec s;
  s.sport = sport;
  s.dport = dport;
  return ip_proto(s, 6);
}
Bytes neighbour_solicitation() {
  Bytes f = test::query_frame(v6spec());
  f[14 + 6] = 58;  // ICMPv6
  f[54] = 135;     // RFC 4861 4.3
  return f;
}

TEST_F(WorkerTest, MixedBurstEachFrameGoesWhereItShould) {
  QuerySpec hit;
  hit.qname = "Hit.Lab.";
  store(hit, 300, w->now_s);
  QuerySpec hit6 = v6spec();
  hit6.qname = "hit.lab.";
  QuerySpec miss;
  miss.qname = "miss.lab.";
  QuerySpec outside;
  outside.src = "192.0.2.1";
  Bytes arp = test::query_frame(QuerySpec{});
  arp[12] = 0x08;
  arp[13] = 0x06;
  Bytes bad = test::query_frame(hit);
  bad.back() ^= 1;  // UDP checksum now wrong

  const Bytes miss_frame = test::query_frame(miss);
  Run r = run({test::query_frame(hit), miss_frame, arp, bad, test::query_frame(outside),
               test::query_frame(hit6)});
  ASSERT_EQ(r.tx.size(), 3u);
  ASSERT_EQ(r.exc.size(), 2u);
  // REFUSED is built in stage 1, hits in stage 3.
  EXPECT_EQ(flags_of(r.tx[0], 42), 0x8105) << "outside the allow list: REFUSED";
  EXPECT_EQ(flags_of(r.tx[1], 42), 0x8180);
  EXPECT_EQ(flags_of(r.tx[2], 62), 0x8180);
  // Stage 1 punts (ARP) leave before stage 3 punts (misses).
  EXPECT_EQ(r.exc[0], arp) << "ARP reaches Linux unchanged";
  EXPECT_EQ(r.exc[1], miss_frame) << "a miss reaches the resolver unchanged";
  EXPECT_EQ(c(Counter::rx_packets), 6u);
  EXPECT_EQ(c(Counter::answer_hit), 2u);
  EXPECT_EQ(c(Counter::answer_refused), 1u);
  EXPECT_EQ(c(Counter::miss_punted), 1u);
  EXPECT_EQ(c(Counter::punt_not_ip), 1u);
  EXPECT_EQ(c(Counter::drop_udp_checksum), 1u);
  EXPECT_EQ(c(Counter::query_ok), 4u);
}

TEST_F(WorkerTest, PolicyChangesAtHousekeepingOnly) {
  QuerySpec outside;
  outside.src = "192.0.2.1";
  set_policy("198.18.0.0/16", false, 1000, 100, true);  // drop instead of REFUSED
  Run r = run({test::query_frame(outside)});
  EXPECT_EQ(r.tx.size(), 1u) << "the old policy holds until the next housekeeping pass";
  r = run({test::query_frame(outside)});
  EXPECT_TRUE(r.tx.empty());
  EXPECT_EQ(c(Counter::drop_acl), 1u);
  EXPECT_EQ(c(Counter::answer_refused), 1u);
  set_policy("192.0.2.0/24", true, 1000, 100, true);
  worker_housekeeping(*w);
  r = run({test::query_frame(outside)});
  EXPECT_EQ(r.exc.size(), 1u) << "now allowed: a miss goes to the resolver";
}

TEST_F(WorkerTest, MissBudgetThenStaleThenDrop) {
  set_policy("198.18.0.0/16", true, 1, 2, true);
  worker_housekeeping(*w);
  QuerySpec old;
  old.qname = "old.lab.";
  store(old, 10, w->now_s - 100);  // expired 90 s ago: stale
  std::vector<Bytes> frames;
  for (int i = 0; i < 5; ++i) {
    QuerySpec s;
    s.qname = "flood" + std::to_string(i) + ".lab.";
    frames.push_back(test::query_frame(s));
  }
  frames.push_back(test::query_frame(old));
  // One burst: one TSC reading, so no token comes back in between.
  Run r = run(frames);
  EXPECT_EQ(r.exc.size(), 2u) << "burst of 2 misses goes to the resolver";
  EXPECT_EQ(c(Counter::drop_rate_limited), 3u);
  ASSERT_EQ(r.tx.size(), 1u) << "over the limit a stale entry is answered (RFC 8767)";
  EXPECT_EQ(c(Counter::answer_stale), 1u);
  const size_t rr = 42 + 12 + test::name_wire(old.qname).size() + 4;
  EXPECT_EQ(r.tx[0][rr + 9], cache.config().stale_answer_ttl);

  set_policy("198.18.0.0/16", true, 1, 1, false);  // stale off: the stale entry is a plain miss
  worker_housekeeping(*w);
  r = run({test::query_frame(old), test::query_frame(old)});
  EXPECT_EQ(r.exc.size(), 1u);
  EXPECT_TRUE(r.tx.empty());
  EXPECT_EQ(c(Counter::drop_rate_limited), 4u);
}

// Only the node sends from the probe source and its service addresses: such a frame from the NIC
// is spoofed, whatever it carries (a query with ECS would reach the resolver as the node's own
// probe and fill the cache; a SYN or a datagram to another port would reach Linux as the node
// talking to itself).
TEST_F(WorkerTest, SpoofedProbeOrServiceSourceIsDroppedBeforeAnyPunt) {
  QuerySpec ecs;
  ecs.src = "198.18.255.254";
  ecs.edns.present = true;
  ecs.edns.options = {0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 0};  // RFC 7871: family 1, /24
  QuerySpec closed;
  closed.src = "198.18.255.254";
  closed.dport = 9;
  QuerySpec tcp6 = v6spec();
  tcp6.src = "2001:2::ffff:fffe";
  Bytes syn6 = test::query_frame(tcp6);
  syn6[14 + 6] = 6;  // next header TCP: the bytes after it are not looked at
  QuerySpec from_svc;
  from_svc.src = "198.18.0.53";  // a service address
  QuerySpec from_svc6 = v6spec();
  from_svc6.src = "2001:2::53";
  QuerySpec client;
  client.qname = "legit.lab.";
  Run r = run({test::query_frame(ecs), test::query_frame(closed), syn6, test::query_frame(from_svc),
               test::query_frame(from_svc6), test::query_frame(client)});
  EXPECT_TRUE(r.tx.empty());
  ASSERT_EQ(r.exc.size(), 1u) << "only the client's miss reaches Linux";
  EXPECT_EQ(r.exc[0], test::query_frame(client));
  EXPECT_EQ(c(Counter::drop_spoofed_source), 5u);

  // A frame in two segments (jumbo, or a driver that chains) is not parsed, but its source is checked.
  auto chained = [](const Bytes& f) {
    rte_mbuf* head = mbuf(Bytes(f.begin(), f.begin() + 40));
    rte_mbuf* tail = mbuf(Bytes(f.begin() + 40, f.end()));
    EXPECT_EQ(rte_pktmbuf_chain(head, tail), 0);
    return head;
  };
  rte_mbuf* in[2] = {chained(test::query_frame(closed)), chained(test::query_frame(client))};
  rte_mbuf* tx[2];
  rte_mbuf* exc[2];
  const BurstOut o = process_burst(*w, in, tx, exc);
  EXPECT_EQ(o.n_tx, 0u);
  ASSERT_EQ(o.n_exc, 1u) << "the client's chained frame goes to Linux";
  rte_pktmbuf_free(exc[0]);
  worker_housekeeping(*w);
  EXPECT_EQ(c(Counter::drop_spoofed_source), 6u);

  // The probe itself comes from the probe source, through the inject ring, not the NIC.
  QuerySpec probe;
  probe.src = "198.18.255.254";
  probe.qname = "probe.lab.";
  r = run({test::query_frame(probe)}, Source::kProbe);
  EXPECT_EQ(r.exc.size(), 1u) << "the probe's miss goes to the resolver";
  EXPECT_EQ(c(Counter::drop_spoofed_source), 6u);
}

// RRL, error class: an outsider spoofing a victim's address gets REFUSED sent there at most at the
// error rate per prefix; every slip-th limited one goes out truncated, the rest are dropped.
TEST_F(WorkerTest, RefusedIsRateLimitedPerPrefixWithSlip) {
  RrlLimits l;
  l.errors_per_s = 5;
  l.burst_s = 1;
  l.slip = 2;
  set_rrl(l);
  std::vector<Bytes> frames;
  for (int i = 0; i < 20; ++i) {
    QuerySpec s;
    s.src = i % 2 ? "192.0.2.1" : "192.0.2.77";  // one /24
    s.id = static_cast<uint16_t>(i);
    frames.push_back(test::query_frame(s));
  }
  Run r = run(frames);
  EXPECT_EQ(c(Counter::answer_refused), 5u) << "a burst of rate * burst_s";
  EXPECT_EQ(c(Counter::answer_slipped), 7u) << "every 2nd of the 15 limited ones";
  EXPECT_EQ(c(Counter::drop_rrl_refused), 8u);
  ASSERT_EQ(r.tx.size(), 12u);
  unsigned tc = 0;
  for (const Bytes& f : r.tx) {
    const uint16_t fl = flags_of(f, 42);
    EXPECT_EQ(fl & 0x800F, 0x8005) << "REFUSED either way";
    tc += (fl & 0x0200) != 0;
    EXPECT_TRUE(test::udp_checksum_ok(f, 14, false));
  }
  EXPECT_EQ(tc, 7u);
  QuerySpec other;
  other.src = "192.0.3.1";  // another /24 has its own budget
  r = run({test::query_frame(other)});
  ASSERT_EQ(r.tx.size(), 1u);
  EXPECT_EQ(flags_of(r.tx[0], 42), 0x8105);
  // Credit comes back with time (5 per second).
  std::this_thread::sleep_for(std::chrono::milliseconds(450));
  QuerySpec again;
  again.src = "192.0.2.1";
  r = run({test::query_frame(again)});
  ASSERT_EQ(r.tx.size(), 1u);
  EXPECT_EQ(flags_of(r.tx[0], 42), 0x8105);
}

// RRL, response class, IPv6 /56: off by default; when on, hits over the rate are dropped (slip 0).
TEST_F(WorkerTest, AnswersAreRateLimitedPerPrefixWhenConfigured) {
  QuerySpec hit = v6spec();
  hit.qname = "hit.lab.";
  store(hit, 300, w->now_s);
  auto from = [&](const char* src, int n) {
    std::vector<Bytes> f;
    for (int i = 0; i < n; ++i) {
      QuerySpec s = hit;
      s.src = src;
      s.id = static_cast<uint16_t>(i);
      f.push_back(test::query_frame(s));
    }
    return f;
  };
  EXPECT_EQ(run(from("2001:2::100", 30)).tx.size(), 30u) << "no response limit by default";
  RrlLimits l;
  l.responses_per_s = 3;
  l.burst_s = 1;
  l.slip = 0;
  set_rrl(l);
  EXPECT_EQ(run(from("2001:2::100", 10)).tx.size(), 3u);
  EXPECT_EQ(run(from("2001:2:0:ff::1", 10)).tx.size(), 0u) << "same /56";
  EXPECT_EQ(run(from("2001:2:0:100::1", 10)).tx.size(), 3u) << "another /56";
  EXPECT_EQ(c(Counter::drop_rrl), 24u);
  EXPECT_EQ(c(Counter::answer_slipped), 0u);
  l.slip = 1;  // every limited answer goes out truncated
  set_rrl(l);
  Run r = run(from("2001:2::100", 2));
  ASSERT_EQ(r.tx.size(), 2u);
  EXPECT_EQ(flags_of(r.tx[0], 62), 0x8380) << "QR RD TC RA, no records";
  EXPECT_EQ(r.tx[0][62 + 7], 0) << "ANCOUNT 0";
  EXPECT_TRUE(test::udp_checksum_ok(r.tx[0], 14, true));
}

// Each kind of frame for Linux has its own budget: a flood of UDP to a closed port and of SYNs to
// port 53 uses up "other" and "DNS over TCP", while ARP, ND, the resolver's upstream answers and
// VRRP/BGP/BFD arriving after it still pass.
TEST_F(WorkerTest, PuntClassesHaveTheirOwnBudgets) {
  auto p = std::make_shared<Policy>(*policy.load());
  p->punt.other = {1, 5};
  p->punt.dns_tcp = {1, 5};
  p->punt.arp_nd = {1, 3};
  p->punt.resolver_replies = {1, 3};
  p->punt.routing = {1, 3};
  policy.publish(p);
  worker_housekeeping(*w);
  for (int k = 0; k < 4; ++k) {  // 40 + 40 flood frames, in bursts of 20
    std::vector<Bytes> flood;
    for (int i = 0; i < 10; ++i) {
      flood.push_back(udp_to(9));
      flood.push_back(syn_to(53));
    }
    run(flood);
  }
  EXPECT_EQ(c(Counter::drop_punt_other), 35u);
  EXPECT_EQ(c(Counter::drop_punt_dns_tcp), 35u);
  Run r = run({arp_frame(), neighbour_solicitation(), udp_to(40001, "198.18.1.1", 53),
               ip_proto(QuerySpec{}, 112), syn_to(179), udp_to(3784), arp_frame(), udp_to(40002, "198.18.1.1", 53)});
  EXPECT_EQ(r.exc.size(), 8u) << "the flood did not use their budgets";
  EXPECT_EQ(c(Counter::drop_punt_arp_nd) + c(Counter::drop_punt_resolver) + c(Counter::drop_punt_routing), 0u);
  r = run({arp_frame(), udp_to(40003, "198.18.1.1", 53), udp_to(3785)});
  EXPECT_EQ(r.exc.size(), 1u) << "resolver replies had one left; ARP/ND and routing none";
  EXPECT_EQ(c(Counter::drop_punt_arp_nd), 1u);
  EXPECT_EQ(c(Counter::drop_punt_resolver), 0u);
  EXPECT_EQ(c(Counter::drop_punt_routing), 1u);
}

// Query shapes the fast path leaves to the resolver are queries all the same: the allow list and
// the miss budget apply to them.
TEST_F(WorkerTest, AllowListAndMissBudgetApplyToPuntedQueryShapes) {
  set_policy("198.18.0.0/16,2001:2::/48", true, 1, 2, true);
  worker_housekeeping(*w);
  auto shaped = [](const char* src, int kind) {
    QuerySpec s;
    s.src = src;
    s.edns.present = true;
    if (kind == 0) s.edns.options = {0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 0};  // ECS
    if (kind == 1) s.edns.version = 1;
    if (kind == 2) s.flags = 4 << 11;  // NOTIFY
    return test::query_frame(s);
  };
  QuerySpec outsider;
  outsider.src = "192.0.2.1";
  Bytes options = test::query_frame(outsider);
  options.insert(options.begin() + 34, {1, 1, 1, 0});  // IPv4 header with 4 bytes of options (NOPs)
  options[14] = 0x46;
  options[17] = static_cast<uint8_t>(options[17] + 4);
  test::fix_checksums(options, 14, false);

  Run r = run({shaped("192.0.2.1", 0), shaped("192.0.2.1", 1), shaped("192.0.2.1", 2), options});
  EXPECT_TRUE(r.exc.empty()) << "nothing from outside the allow list reaches the resolver";
  ASSERT_EQ(r.tx.size(), 2u) << "ECS and EDNS version: REFUSED; NOTIFY and IP options: dropped";
  for (const Bytes& f : r.tx) {
    EXPECT_EQ(flags_of(f, 42), 0x8105);
    EXPECT_TRUE(test::udp_checksum_ok(f, 14, false));
    EXPECT_EQ(f[42 + 11], 1) << "ARCOUNT 1: our OPT";
  }
  EXPECT_EQ(c(Counter::answer_refused), 2u);
  EXPECT_EQ(c(Counter::drop_acl), 2u);

  r = run({shaped("198.18.0.100", 0), shaped("198.18.0.100", 1), shaped("198.18.0.100", 2)});
  EXPECT_EQ(r.exc.size(), 2u) << "allowed: to the resolver within the miss budget (burst 2)";
  EXPECT_EQ(c(Counter::drop_punt_query), 1u);
}

// When the service thread falls behind, the last slots of the exception ring are kept for ARP/ND,
// the resolver's replies and routing.
TEST_F(WorkerTest, ExceptionRingReserveKeepsRoomForHighPriorityPunts) {
  rte_ring* rxr = rte_ring_create("rr_rx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* txr = rte_ring_create("rr_tx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* exr = rte_ring_create("rr_exc", 64, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  ASSERT_TRUE(rxr && txr && exr);
  const int port = rte_eth_from_rings("rr_port", &rxr, 1, &txr, 1, SOCKET_ID_ANY);
  ASSERT_GE(port, 0) << rte_strerror(rte_errno);
  const uint16_t pid = static_cast<uint16_t>(port);
  rte_eth_conf conf{};
  ASSERT_EQ(rte_eth_dev_configure(pid, 1, 1, &conf), 0);
  ASSERT_EQ(rte_eth_rx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr, pool()), 0);
  ASSERT_EQ(rte_eth_tx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr), 0);
  ASSERT_EQ(rte_eth_dev_start(pid), 0);
  auto p = std::make_shared<Policy>(*policy.load());
  p->punt.ring_reserve_pct = 50;  // 31 of 63 slots
  policy.publish(p);
  worker_destroy(w);
  WorkerConf c;
  c.port = pid;
  c.cache = &cache;
  c.policy = &policy;
  c.service = &service;
  c.stop = &stop;
  c.exception_ring = exr;
  c.idle = IdleMode::kSleep;
  c.sleep_max_us = 200;
  std::string err;
  w = worker_create(c, &err);
  ASSERT_NE(w, nullptr) << err;
  EXPECT_EQ(w->ring_reserve, 31u);

  for (int i = 0; i < 40; ++i) ASSERT_EQ(rte_ring_enqueue(exr, mbuf(udp_to(9))), 0);  // a backlog: 23 free
  std::vector<rte_mbuf*> in;
  for (int i = 0; i < 10; ++i) in.push_back(mbuf(udp_to(9)));
  for (int i = 0; i < 3; ++i) in.push_back(mbuf(arp_frame()));
  in.push_back(mbuf(udp_to(40001, "198.18.1.1", 53)));
  in.push_back(mbuf(ip_proto(QuerySpec{}, 112)));
  ASSERT_EQ(rte_ring_enqueue_burst(rxr, reinterpret_cast<void**>(in.data()), static_cast<unsigned>(in.size()), nullptr),
            in.size());
  std::thread t([&] { worker_loop(*w); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (w->counter(Counter::rx_packets) < in.size() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  t.join();
  EXPECT_EQ(w->counter(Counter::drop_exception_reserve), 10u) << "the closed-port datagrams";
  EXPECT_EQ(rte_ring_count(exr), 45u) << "the backlog, ARP, the resolver's reply, VRRP";
  EXPECT_EQ(w->counter(Counter::drop_exception_full), 0u);
  drain_probe_rings(std::array<rte_ring*, 2>{exr, txr});
  rte_eth_dev_stop(pid);
  rte_eth_dev_close(pid);
  for (rte_ring* r : {rxr, txr, exr}) rte_ring_free(r);
}

TEST_F(WorkerTest, ServiceAddressMovesAtHousekeeping) {
  QuerySpec s;
  s.dst = "198.18.0.54";
  store(s, 300, w->now_s);
  EXPECT_EQ(run({test::query_frame(s)}).exc.size(), 1u);
  EXPECT_EQ(c(Counter::punt_not_ours), 1u);
  auto addrs = std::make_shared<ServiceAddrSet>();
  addrs->v4.push_back({198, 18, 0, 54});  // a VIP moved here
  service.publish(addrs);
  worker_housekeeping(*w);
  EXPECT_EQ(run({test::query_frame(s)}).tx.size(), 1u);
}

// The real loop on a ring PMD port: answers come out of the TX ring, the loop sleeps when idle,
// the heartbeat moves, and the stop flag ends it.
TEST_F(WorkerTest, LoopOnRingPortAnswersAndStops) {
  rte_ring* rxr = rte_ring_create("wt_rx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* txr = rte_ring_create("wt_tx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* exr = rte_ring_create("wt_exc", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  ASSERT_TRUE(rxr && txr && exr);
  const int port = rte_eth_from_rings("wt_port", &rxr, 1, &txr, 1, SOCKET_ID_ANY);
  ASSERT_GE(port, 0) << rte_strerror(rte_errno);
  const uint16_t pid = static_cast<uint16_t>(port);
  rte_eth_conf conf{};
  ASSERT_EQ(rte_eth_dev_configure(pid, 1, 1, &conf), 0);
  ASSERT_EQ(rte_eth_rx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr, pool()), 0);
  ASSERT_EQ(rte_eth_tx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr), 0);
  ASSERT_EQ(rte_eth_dev_start(pid), 0);

  worker_destroy(w);
  WorkerConf c;
  c.port = static_cast<uint16_t>(port);
  c.cache = &cache;
  c.policy = &policy;
  c.service = &service;
  c.stop = &stop;
  c.exception_ring = exr;
  c.idle = IdleMode::kSleep;
  c.sleep_max_us = 200;
  std::string err;
  w = worker_create(c, &err);
  ASSERT_NE(w, nullptr) << err;
  QuerySpec s;
  store(s, 300, w->now_s);

  constexpr unsigned kN = 100;
  std::thread t([&] { worker_loop(*w); });
  for (unsigned i = 0; i < kN; ++i) {
    QuerySpec q = s;
    q.id = static_cast<uint16_t>(i);
    if (i % 10 == 9) q.qname = "miss" + std::to_string(i) + ".lab.";
    rte_mbuf* m = mbuf(test::query_frame(q));
    while (rte_ring_enqueue(rxr, m) != 0) std::this_thread::yield();
  }
  unsigned answers = 0, punts = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (answers + punts < kN && std::chrono::steady_clock::now() < deadline) {
    void* o;
    if (rte_ring_dequeue(txr, &o) == 0) {
      rte_mbuf* m = static_cast<rte_mbuf*>(o);
      EXPECT_EQ(flags_of(bytes(m), 42), 0x8180);
      rte_pktmbuf_free(m);
      ++answers;
    } else if (rte_ring_dequeue(exr, &o) == 0) {
      rte_pktmbuf_free(static_cast<rte_mbuf*>(o));
      ++punts;
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  // Idle now: the worker must go to sleep and keep its heartbeat moving.
  const uint64_t hb = w->heartbeat.load();
  while (w->heartbeat.load() < hb + 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  t.join();
  EXPECT_EQ(answers, kN - kN / 10);
  EXPECT_EQ(punts, kN / 10);
  EXPECT_GE(w->heartbeat.load(), hb + 3);
  EXPECT_GT(w->counter(Counter::idle_sleeps), 0u);
  EXPECT_EQ(w->counter(Counter::tx_packets), kN - kN / 10);
  rte_eth_dev_stop(static_cast<uint16_t>(port));
  rte_eth_dev_close(static_cast<uint16_t>(port));
  rte_ring_free(rxr);
  rte_ring_free(txr);
  rte_ring_free(exr);
}

// The readiness probe through the real loop: a cached name is answered on the probe ring and never
// on the NIC, even with an allow list that does not cover the probe source; an uncached name goes
// to the exception ring like any miss, and the resolver's answer coming back is reported as a miss.
TEST_F(WorkerTest, ProbeHitNeverReachesTheNicAndMissGoesToTheResolver) {
  rte_ring* rxr = rte_ring_create("pt_rx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* txr = rte_ring_create("pt_tx", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* exr = rte_ring_create("pt_exc", 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* pin = rte_ring_create("pt_in", 16, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* phit = rte_ring_create("pt_hit", 64, SOCKET_ID_ANY, RING_F_SC_DEQ);
  rte_ring* pctl = rte_ring_create("pt_ctl", 64, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
  ASSERT_TRUE(rxr && txr && exr && pin && phit && pctl);
  const int port = rte_eth_from_rings("pt_port", &rxr, 1, &txr, 1, SOCKET_ID_ANY);
  ASSERT_GE(port, 0) << rte_strerror(rte_errno);
  const uint16_t pid = static_cast<uint16_t>(port);
  rte_eth_conf conf{};
  ASSERT_EQ(rte_eth_dev_configure(pid, 1, 1, &conf), 0);
  ASSERT_EQ(rte_eth_rx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr, pool()), 0);
  ASSERT_EQ(rte_eth_tx_queue_setup(pid, 0, 256, SOCKET_ID_ANY, nullptr), 0);
  ASSERT_EQ(rte_eth_dev_start(pid), 0);

  set_policy("192.0.2.0/24", false, 1000, 100, true);  // probe source outside, and silently dropped
  worker_destroy(w);
  WorkerConf c;
  c.port = pid;
  c.cache = &cache;
  c.policy = &policy;
  c.service = &service;
  c.stop = &stop;
  c.exception_ring = exr;
  c.idle = IdleMode::kSleep;
  c.sleep_max_us = 200;
  c.probe_in = pin;
  c.probe_out = phit;
  std::string err;
  w = worker_create(c, &err);
  ASSERT_NE(w, nullptr) << err;
  QuerySpec cached;
  cached.qname = "hit.lab.";
  store(cached, 300, w->now_s);

  ProberConf pc;
  pc.pool = pool();
  pc.inject = {pin};
  pc.hits = phit;
  pc.via_control = pctl;
  pc.service = &service;
  pc.node_mac = {0x02, 0, 0, 0, 0, 0x53};
  pc.deadline_ms = 5000;  // generous: a loaded CI machine; the hit normally takes microseconds
  Prober prober(pc);
  std::thread t([&] { worker_loop(*w); });

  std::string out;
  EXPECT_EQ(prober.run("Hit.lab A", out), "");
  EXPECT_EQ(out.rfind("result=hit rcode=NOERROR answers=1 latency_us=", 0), 0u) << out;
  EXPECT_NE(out.find(" core=0"), std::string::npos) << out;

  // A miss: the resolver (this test) takes the query off the exception ring and answers it the way
  // Linux would, toward the probe source; the service thread would put that on the control ring.
  std::string miss_err, miss_out;
  std::thread probe([&] { miss_err = prober.run("miss.lab AAAA", miss_out); });
  void* o = nullptr;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (rte_ring_dequeue(exr, &o) != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  ASSERT_NE(o, nullptr) << "the missed probe never reached the exception ring";
  const Bytes q = bytes(static_cast<rte_mbuf*>(o));
  rte_pktmbuf_free(static_cast<rte_mbuf*>(o));
  ASSERT_GE(q.size(), 42u + 12);
  EXPECT_EQ(std::vector<uint8_t>(q.begin() + 26, q.begin() + 34),
            (std::vector<uint8_t>{198, 18, 255, 254, 198, 18, 0, 53}))
      << "from the probe source to the service address, unchanged";
  QuerySpec ans;
  ans.src = "198.18.0.53";
  ans.dst = "198.18.255.254";
  ans.sport = 53;
  ans.dport = static_cast<uint16_t>(q[34] << 8 | q[35]);  // the query's source port
  ans.id = static_cast<uint16_t>(q[42] << 8 | q[43]);
  ans.qname = "miss.lab.";
  ans.qtype = 28;
  ASSERT_EQ(rte_ring_enqueue(pctl, mbuf(test::frame(ans, test::dns_response(ans, 60, 0x0180, Bytes(16, 1), 0)))), 0);
  probe.join();
  EXPECT_EQ(miss_err, "");
  EXPECT_EQ(miss_out.rfind("result=miss rcode=NOERROR answers=0 ", 0), 0u) << miss_out;

  // Nobody answers this one: a timeout naming the worker, and the query still went to the resolver.
  Prober impatient([&] {
    ProberConf p2 = pc;
    p2.deadline_ms = 100;
    return p2;
  }());
  out.clear();
  const std::string e = impatient.run("gone.lab A", out);
  EXPECT_EQ(e.rfind("probe timed out after 100 ms (worker 0;", 0), 0u) << e;
  EXPECT_EQ(impatient.counters().get(ProbeCounter::timed_out), 1u);

  stop = true;
  t.join();
  EXPECT_EQ(rte_ring_count(txr), 0u) << "a probe answer must never go out on the NIC";
  EXPECT_EQ(rte_ring_count(exr), 1u) << "the timed-out probe went to the resolver too";
  EXPECT_EQ(w->counter(Counter::probe_in), 3u);
  EXPECT_EQ(w->counter(Counter::probe_answered), 1u);
  EXPECT_EQ(w->counter(Counter::tx_packets), 0u);
  EXPECT_EQ(w->counter(Counter::drop_acl), 0u) << "the allow list does not apply to the probe";
  EXPECT_EQ(prober.counters().get(ProbeCounter::sent), 2u);
  EXPECT_EQ(prober.counters().get(ProbeCounter::hit), 1u);
  EXPECT_EQ(prober.counters().get(ProbeCounter::via_control), 1u);
  drain_probe_rings(std::array<rte_ring*, 3>{exr, phit, pctl});
  rte_eth_dev_stop(pid);
  rte_eth_dev_close(pid);
  for (rte_ring* r : {rxr, txr, exr, pin, phit, pctl}) rte_ring_free(r);
}

}  // namespace
}  // namespace tern::dp
