// The service thread: the exception path between the NIC and Linux, the cache
// fill, and the service address watch. Runs on the main lcore.
//
//   worker exception rings --(unchanged)--> exception port TX -> Linux
//   worker exception rings: client queries recorded (PendingQueries)
//   Linux -> exception port RX --(DNS answer from a service address, UDP src 53, to a recorded query:
//            Cache::insert_response, the cache's single writer)--> NIC TX (own queue)
//   NIC RX queue W (paired-queue drivers only) -> process_burst with the service
//            thread's own Worker -> NIC TX / exception port TX
//   netlink RTM_NEWADDR/RTM_DELADDR on the exception interface -> ServiceAddrs
//   Linux -> frame to the probe MAC -> (cache fill) -> probe reply ring (probe.h)
//
// Concurrency contract
// - One thread owns every queue named above; workers only produce into their
//   ring (SP/SC), so nothing here locks. A full exception port or NIC TX queue
//   is a counted drop, never a wait.
// - ServiceCounters are written by the service thread only (relaxed atomics)
//   and read by the control socket thread.
// - The service thread is a cache reader only through its own Worker (paired
//   queues); insert_response never waits for readers (retired memory is freed
//   by later writes once every reader passed a quiescent point), so being both
//   is safe. It goes offline before sleeping, like the workers.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "counters.h"
#include "proto/counters.h"
#include "profile.h"
#include "worker.h"

struct rte_ring;

namespace tern::dp {


enum class SvcCounter : uint16_t {
#define TERN_X(name, help) name,
  TERN_SERVICE_COUNTERS(TERN_X)
#undef TERN_X
};
inline constexpr size_t kSvcCounterCount = 0
#define TERN_X(name, help) +1
    TERN_SERVICE_COUNTERS(TERN_X)
#undef TERN_X
    ;
struct SvcCounterInfo {
  std::string_view name, help;
};
inline constexpr SvcCounterInfo kSvcCounterInfo[kSvcCounterCount] = {
#define TERN_X(name, help) {#name, help},
    TERN_SERVICE_COUNTERS(TERN_X)
#undef TERN_X
};

struct ServiceCounters {  // service thread: wo, control: ro
  std::atomic<uint64_t> v[kSvcCounterCount] = {};
  void add(SvcCounter c, uint64_t n = 1) {
    auto& a = v[static_cast<size_t>(c)];
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get(SvcCounter c) const { return v[static_cast<size_t>(c)].load(std::memory_order_relaxed); }
};

// Watches the addresses Linux has on one interface and publishes them. Uses a
// NETLINK_ROUTE socket subscribed to address changes; any message triggers a
// full re-read with getifaddrs (simple, and correct after a netlink overflow).
class AddrWatch {
 public:
  AddrWatch(std::string iface, ServiceAddrs* out) : iface_(std::move(iface)), out_(out) {}
  ~AddrWatch();
  bool open(std::string* error);
  // Non-blocking: drains the netlink socket; republishes if the set changed.
  // Returns true when a new set was published.
  bool poll();
  int fd() const { return fd_; }
  bool rescan();  // unconditional re-read; true if the set changed

 private:
  std::string iface_;
  ServiceAddrs* out_;
  int fd_ = -1;
  ServiceAddrSet last_;
  bool have_last_ = false;
};

// The UDP endpoints of a frame: source and destination address (IPv4 in the first 4 bytes) and port.
struct UdpFlow {
  bool v6 = false;
  uint8_t src[16] = {}, dst[16] = {};
  uint16_t sport = 0, dport = 0;
};

// Queries the node received from clients and handed to Linux (misses and DNS-shaped punts, the
// readiness probe's misses): the cache is filled only from an answer to one of them, matched on
// client address and port, service address, DNS ID and question (name case-insensitively, type,
// class). Anything else Linux sends from port 53 of a service address (another local daemon, a
// NATed container, forwarded traffic) still reaches its destination, but never the cache.
//
// Service thread only: no atomics, no locks. One allocation, at construction; nothing after.
// Set-associative, kWays entries per set (one cache line each); the set is chosen by a hash keyed
// with a per-process secret, so a client cannot aim its queries at the set of someone else's. A
// full set gives up its oldest entry (that query's answer is then sent but not cached); an entry
// expires timeout_ms after the query, and is consumed by the first answer that matches it. The
// question is kept as a keyed 64-bit hash of the canonical name, type and class.
class PendingQueries {
 public:
  static constexpr unsigned kWays = 4;
  // slots is rounded up to a power of two times kWays (at least kWays).
  PendingQueries(size_t slots, uint32_t timeout_ms, uint64_t seed);
  ~PendingQueries();
  PendingQueries(const PendingQueries&) = delete;
  PendingQueries& operator=(const PendingQueries&) = delete;

  enum class Noted : uint8_t { kNotQuery, kRecorded, kRefreshed, kEvicted };
  // A frame on its way to Linux: recorded when it is a whole UDP DNS query (QR=0, QUERY, one
  // question) to port 53 of a service address. kEvicted: recorded, an older entry given up.
  Noted note_query(std::span<const uint8_t> frame, const ServiceAddrSet& svc, uint64_t now_ms) noexcept;
  // An answer (DNS message msg, sent along `flow` from a service address): true, and the entry
  // consumed, when it answers a recorded query that has not expired.
  bool take_answer(const UdpFlow& flow, std::span<const uint8_t> msg, uint64_t now_ms) noexcept;
  size_t capacity() const { return (mask_ + 1) * kWays; }

 private:
  struct alignas(16) Slot;
  Slot* set(const uint8_t* client, const uint8_t* server, uint16_t cport, uint16_t id, bool v6,
            uint64_t& tag) const noexcept;
  bool question_hash(std::span<const uint8_t> msg, uint64_t& out) const noexcept;

  cache::Hasher hasher_;
  Slot* slots_ = nullptr;
  size_t mask_ = 0;  // sets - 1
  uint32_t timeout_ms_;
};

inline constexpr size_t kPendingSlots = 32768;        // 64 bytes each: 2 MiB, one allocation
inline constexpr uint32_t kPendingTimeoutMs = 10000;  // longer than the resolver spends on a query

// The UDP endpoints and DNS message of a whole (unfragmented) UDP datagram in an Ethernet frame
// (up to two VLAN tags, IPv4 or IPv6 without extension headers). fragment = true for a fragment.
bool find_udp(std::span<const uint8_t> frame, UdpFlow& flow, size_t& off, size_t& len, bool& fragment);

struct ServiceConf {
  uint16_t nic_port = 0, nic_tx_queue = 0;
  rte_ring* nic_tx_ring = nullptr;  // set: frames for the NIC go to worker 0 here (no nic_tx_queue)
  int nic_rx_queue = -1;          // paired-queue drivers: the service thread's own RX queue
  Worker* own_worker = nullptr;   // processes nic_rx_queue (nullptr when there is none)
  uint16_t exc_port = 0;
  std::vector<rte_ring*> rings;   // one per worker, SP/SC
  cache::Cache* cache = nullptr;
  AddrWatch* addrs = nullptr;
  ServiceAddrs* service = nullptr;
  IdlePolicy idle = IdlePolicy::kBusy;
  unsigned sleep_max_us = 100;
  uint16_t burst = 32;
  const std::atomic<bool>* stop = nullptr;
  ServiceCounters* counters = nullptr;
  // Readiness probe (probe.h): Linux's frames to probe_mac are the resolver's answers to the
  // probe; they fill the cache like any answer, then go to probe_replies instead of the NIC.
  std::array<uint8_t, 6> probe_mac{};
  rte_ring* probe_replies = nullptr;  // SP (this thread) / SC (control thread); nullptr: no probe
  PendingQueries* pending = nullptr;  // required: what the cache may learn from
};

// Milliseconds on CLOCK_MONOTONIC_COARSE (the pending table's clock).
uint64_t coarse_ms();

// Locates the DNS message in a frame Linux sends towards the NIC when it is a
// whole UDP datagram from port 53 of a service address (Ethernet, up to two
// VLAN tags, IPv4 without fragmentation or IPv6 without extension headers).
// fragment = true for an IPv4/IPv6 fragment (never cached: the message is not whole).
bool find_dns_answer(std::span<const uint8_t> frame, const ServiceAddrSet& svc, size_t& off, size_t& len,
                     bool& fragment);

// Offers one frame Linux sends toward the NIC to the cache (the single writer). Returns the
// service counter naming the outcome, or nullopt when the frame is not a whole DNS answer from
// port 53 of a service address (nothing to count). Never throws: an allocation failure in the
// cache is counted (fill_failed_nomem) and the answer still goes to the client, uncached.
// Only an answer that matches a query in `pending` (consumed) is offered; others: fill_unmatched.
std::optional<SvcCounter> offer_to_cache(std::span<const uint8_t> frame, const ServiceAddrSet& svc,
                                         PendingQueries& pending, uint64_t now_ms, cache::Cache& cache,
                                         uint32_t now_s) noexcept;

// Runs until *stop; returns 0.
int service_loop(const ServiceConf&);

// Frees whatever is left in the rings at shutdown.
void drain_rings(const std::vector<rte_ring*>&);

}  // namespace tern::dp
