// The per-core fast path loop: RX burst -> parse -> ACL -> key -> cache lookup -> answer in place ->
// TX burst; everything else goes, unchanged, to this worker's exception ring.
//
// Concurrency contract
// - A Worker is owned by the lcore running worker_loop(). Fields marked "dataplane: wo, control: ro"
//   are also read by the control socket / service thread, through atomics, relaxed (monotonic
//   counters: a reader may see a value a housekeeping pass old, never a torn one).
// - Policy and the service addresses are immutable objects published through a slot (PolicySlot,
//   ServiceAddrs). A publisher stores a new shared_ptr and bumps the generation; a worker compares the
//   generation at housekeeping (every kHousekeepEvery turns and when idle) and copies what it needs.
//   The hot path never touches the slot, never chases the shared pointer, never locks, never waits.
// - The cache reader is online while the loop runs; every housekeeping pass is a QSBR quiescent point.
//   Before sleeping the worker goes offline, so a sleeping worker never holds up reclamation.
// - Never blocks: a full exception ring or TX queue is a counted drop.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "acl.h"
#include "cache/cache.h"
#include "counters.h"
#include "parse.h"
#include "proto/policy.h"
#include "ratelimit.h"
#include "rrl.h"

struct rte_mbuf;
struct rte_ring;

namespace tern::dp {

inline constexpr unsigned kBurst = 32;
inline constexpr unsigned kHousekeepEvery = 256;  // loop turns between housekeeping passes

enum class IdleMode { kBusyPoll, kSleep };

// The policy in force, immutable once published: the value tern-control pushed (proto/policy.h)
// and the workers' view of it, compiled once here so the hot path reads plain fields.
struct Policy {
  proto::Policy value;          // as pushed: the generation, the cache limits, `policy` replies
  Acl allow;                    // value.allow; empty = nobody (never an open resolver by default)
  bool refuse_outside = true;   // REFUSED (true) or silent drop (false) for other clients
  uint32_t miss_rate_qps = 2000, miss_burst = 500;  // per worker token bucket before the exception ring
  bool stale_on_limit = true;   // answer stale instead of dropping an over-limit miss
  RrlLimits rrl;                // response rate limiting per client prefix (proto/policy.h)
  PuntBudgets punt;             // the exception path's budgets per class (proto/policy.h)

  static Policy compile(const proto::Policy& v) {
    Policy p;
    p.value = v;
    for (const Prefix& x : v.allow) p.allow.add(x);
    p.refuse_outside = v.refuse_outside;
    p.miss_rate_qps = v.miss_rate;
    p.miss_burst = v.miss_burst;
    p.stale_on_limit = v.stale_on_limit;
    p.rrl = v.rrl;
    p.punt = v.punt;
    return p;
  }
};

// A single immutable value, republished whole. Writers: any thread (control socket, address watch).
// Readers: workers at housekeeping only (generation first, load() only when it moved).
template <class T>
class Published {
 public:
  void publish(std::shared_ptr<const T> v) {
    value_.store(std::move(v), std::memory_order_release);
    gen_.fetch_add(1, std::memory_order_release);
  }
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }
  std::shared_ptr<const T> load() const { return value_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::shared_ptr<const T>> value_;
  std::atomic<uint64_t> gen_{0};
};

class PolicySlot : public Published<Policy> {};

struct ServiceAddrSet {  // network byte order; at most ServiceView::kMax per family are used
  std::vector<std::array<uint8_t, 4>> v4;
  std::vector<std::array<uint8_t, 16>> v6;
};
class ServiceAddrs : public Published<ServiceAddrSet> {};

// Default readiness probe source (probe.h, --probe-source4/6): 198.18.255.254, 2001:2::ffff:fffe.
inline constexpr std::array<uint8_t, 4> kProbeSource4{198, 18, 255, 254};
inline constexpr std::array<uint8_t, 16> kProbeSource6{0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0,
                                                       0,    0,    0,    0,    0xff, 0xff, 0xff, 0xfe};

struct WorkerConf {
  unsigned index = 0;                 // worker number: the core="N" label
  uint16_t port = 0, rx_queue = 0, tx_queue = 0;
  rte_ring* exception_ring = nullptr; // single producer (this worker), single consumer (service thread)
  cache::Cache* cache = nullptr;
  PolicySlot* policy = nullptr;
  IdleMode idle = IdleMode::kBusyPoll;
  unsigned sleep_max_us = 1000;       // kSleep: longest single sleep
  const std::atomic<bool>* stop = nullptr;
  const ServiceAddrs* service = nullptr;  // addresses Linux has on the exception interface
  bool cksum_offload = false;         // port does IPv4 header + UDP checksums on TX
  int socket_id = -1;                 // NUMA socket for the Worker allocation (-1: any)
  rte_ring* probe_in = nullptr;       // readiness probes (probe.h): control thread -> this worker, SP/SC
  rte_ring* probe_out = nullptr;      // probe answered from the cache -> control thread, MP/SC
  // The probe's source addresses: NIC frames from them are spoofed and dropped.
  std::array<uint8_t, 4> probe_source4 = kProbeSource4;
  std::array<uint8_t, 16> probe_source6 = kProbeSource6;
  // Ports with no TX queue for the service thread (NicPort::service_via_worker, AF_XDP on a veth):
  // its frames for the NIC, service thread -> worker 0, SP/SC; sent on this worker's TX queue.
  rte_ring* service_tx_in = nullptr;
};

// Clock shared by everyone who talks to the cache (workers' lookups, the service thread's inserts):
// seconds on CLOCK_MONOTONIC_COARSE, a vDSO read.
uint32_t cache_clock_s();

struct alignas(64) Worker {
  explicit Worker(const WorkerConf& c);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // --- dataplane: wo, control: ro (relaxed atomics) ---
  alignas(64) std::atomic<uint64_t> heartbeat{0};  // +1 per housekeeping pass
  std::atomic<uint64_t> published[kCounterCount] = {};  // copy of `counters`, refreshed at housekeeping
  uint64_t counter(Counter c) const { return published[index(c)].load(std::memory_order_relaxed); }

  // --- dataplane only ---
  alignas(64) uint64_t counters[kCounterCount] = {};
  WorkerConf conf;
  cache::ReaderId reader;
  uint32_t now_s = 0;            // cache clock, refreshed at housekeeping
  uint64_t tsc_hz = 0;
  // Copied from the published Policy / ServiceAddrs at housekeeping.
  std::shared_ptr<const Policy> policy;  // keeps `acl` alive; never dereferenced on the hot path
  const Acl* acl = nullptr;
  bool refuse_outside = true, stale_on_limit = true;
  bool rrl_responses = false, rrl_errors = false;  // RRL classes on (copied from rrl, off the big table)
  uint64_t policy_gen = ~0ull, service_gen = ~0ull;
  TokenBucket miss_bucket;  // misses and query shapes for the resolver (PuntClass::kQuery)
  TokenBucket arp_bucket, resolver_bucket, routing_bucket, dns_tcp_bucket, other_bucket;
  TokenBucket* const punt_budget[kPuntClasses];  // by PuntClass
  unsigned ring_reserve = 0;  // exception ring slots kept for the first three classes
  ServiceView service;
  Rrl rrl;  // 64 KiB, last: only touched for responses when RRL is on

  void count(Counter c, uint64_t n = 1) { counters[index(c)] += n; }
};

// Allocates the Worker with rte_zmalloc_socket on conf.socket_id (cache-aligned, not part of an array
// so neighbours never share a line) and registers the cache reader, left offline until worker_loop
// runs. nullptr and *error on failure.
Worker* worker_create(const WorkerConf& conf, std::string* error);
void worker_destroy(Worker* w);

// The loop; returns 0 when *conf.stop becomes true. Launch with
// rte_eal_remote_launch(worker_launch, w, lcore).
int worker_loop(Worker& w);
int worker_launch(void* worker);

// Housekeeping pass: quiescent point, policy / service address pick-up, clock, heartbeat, stats publish.
// Only on the worker's own thread, with its cache reader online.
void worker_housekeeping(Worker& w);
// Copies the worker's counters to `published` (what control reads). Worker's thread only.
void publish_stats(Worker& w);

// The stage function used by the loop, the unit tests, the fuzzer and the benchmarks: classifies and
// answers rx in place. Answers are written to tx, frames for Linux / the resolver to exc; everything
// else is freed and counted. tx and exc must each have room for rx.size() mbufs. Returns how many
// of each. Outside worker_loop (tests, benchmarks) with cache writers running on other threads, put
// the reader online first (cache->online(w.reader)) and pass quiescent points (worker_housekeeping).
// Answers reference no cache memory once returned: the entry is copied into the mbuf.
// kProbe: frames from the probe inject ring (probe.h). Same stages; the allow list and the miss
// limiter do not apply (the probe is the node's own query, one per health interval).
struct BurstOut {
  uint16_t n_tx = 0, n_exc = 0;
};
enum class Source : uint8_t { kNic, kProbe };
BurstOut process_burst(Worker& w, std::span<rte_mbuf* const> rx, rte_mbuf** tx, rte_mbuf** exc,
                       Source src = Source::kNic);

// Takes injected probes (conf.probe_in) through process_burst: answers go to conf.probe_out, never
// the NIC; misses to the exception ring like any miss. Called by worker_loop at housekeeping, so a
// probe waits at most one housekeeping period. Worker's thread only, cache reader online.
void poll_probes(Worker& w);
// Sends what the service thread queued on conf.service_tx_in (nullptr: nothing to do) on this
// worker's TX queue; what the queue does not take is freed and counted as drop_tx_full.
void send_service_frames(Worker& w);

}  // namespace tern::dp
