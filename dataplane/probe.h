// The readiness probe: `probe NAME TYPE` on the control socket injects a real query frame into one
// worker's own path and reports how it came back.
//
//   control thread: build Ethernet/IP/UDP/DNS (RD=1, EDNS 1232) from the probe source to the first
//                   service address -> worker W's inject ring (SP/SC)
//   worker W, at housekeeping: inject ring -> process_burst(kProbe) (the same stages as NIC frames,
//                   minus the allow list and the miss limiter: the probe is ours, not a client's)
//     hit  -> the answer, addressed to the probe source, -> hit ring (MP/SC), never the NIC
//     miss -> exception ring -> Linux -> the resolver answers the probe source -> Linux sends the
//             answer to the probe MAC (a permanent neighbour entry this file installs) -> service
//             thread: cache fill as for any answer, then -> control ring (SP/SC), never the NIC
//   control thread: waits (sleeping, bounded by the deadline) for the reply with the probe's UDP
//                   port and DNS ID on either ring; anything else found there is freed.
//
// Concurrency contract
// - Prober::run runs on the control socket thread only (one request at a time): it is the only
//   producer of the inject rings and the only consumer of the reply rings.
// - Workers produce into the hit ring (multi-producer: one probe at a time, so the CAS is never
//   contended in practice); the service thread is the single producer of the control ring.
// - ProbeCounters: written by the control thread, read by the stats verb (relaxed atomics).
// - A reply arriving after its deadline stays in a ring until the next probe frees it.
#pragma once

#include "proto/counters.h"
#include "proto/dns_names.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "worker.h"

struct rte_mempool;
struct rte_ring;

namespace tern::dp {

// An address/MAC pair no client uses. Linux reaches it through the exception interface only.
struct ProbeSource {
  std::array<uint8_t, 6> mac{0x02, 0x74, 0x65, 0x72, 0x6e, 0x01};  // locally administered, "tern"
  std::array<uint8_t, 4> v4 = kProbeSource4;
  std::array<uint8_t, 16> v6 = kProbeSource6;
};

// One probe on the wire: what the frame carries and what its reply must match.
struct ProbeQuery {
  uint8_t name[255] = {};  // wire form, lowercase
  uint8_t name_len = 0;
  uint16_t qtype = 1;
  uint16_t id = 0, sport = 0;
  bool v6 = false;
  std::array<uint8_t, 16> dst{};  // service address (first 4 bytes for IPv4)
  std::array<uint8_t, 6> dst_mac{};  // the node MAC
};

// Ethernet + IPv4 (DF, checksum) or IPv6 + UDP (checksum) + DNS query with an OPT record.
// Returns the frame length, 0 when out is too small.
size_t build_probe_frame(std::span<uint8_t> out, const ProbeSource& src, const ProbeQuery& q);

struct ProbeReply {
  uint8_t rcode = 0;
  uint16_t ancount = 0;
};
// True when frame is a DNS response from port 53 to the probe source, on q's port, with q's ID.
bool match_probe_reply(std::span<const uint8_t> frame, const ProbeSource& src, const ProbeQuery& q,
                       ProbeReply& out);

using proto::parse_qtype;  // "A", "aaaa", "TYPE65": the one table, shared with tern-control
using proto::rcode_text;

// Route (/32 or /128 via iface) and permanent neighbour entry for the probe source on iface, so
// Linux answers the probe towards the probe MAC. Netlink, replace semantics (idempotent).
bool install_probe_path(const std::string& iface, const ProbeSource& src, bool v6, std::string* error);


enum class ProbeCounter : uint8_t {
#define TERN_X(name, help) name,
  TERN_PROBE_COUNTERS(TERN_X)
#undef TERN_X
};
inline constexpr size_t kProbeCounterCount = 0
#define TERN_X(name, help) +1
    TERN_PROBE_COUNTERS(TERN_X)
#undef TERN_X
    ;
inline constexpr std::string_view kProbeCounterNames[kProbeCounterCount] = {
#define TERN_X(name, help) #name,
    TERN_PROBE_COUNTERS(TERN_X)
#undef TERN_X
};

struct ProbeCounters {  // control thread: wo, stats: ro
  std::atomic<uint64_t> v[kProbeCounterCount] = {};
  void add(ProbeCounter c) {
    auto& a = v[static_cast<size_t>(c)];
    a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  uint64_t get(ProbeCounter c) const { return v[static_cast<size_t>(c)].load(std::memory_order_relaxed); }
};

struct ProberConf {
  rte_mempool* pool = nullptr;
  std::vector<rte_ring*> inject;      // one per worker, indexed by worker number
  rte_ring* hits = nullptr;           // workers -> control thread
  rte_ring* via_control = nullptr;    // service thread -> control thread
  const ServiceAddrs* service = nullptr;
  ProbeSource source;
  std::array<uint8_t, 6> node_mac{};
  std::string iface;                  // exception interface; empty: install nothing (unit tests)
  unsigned deadline_ms = 400;
};

class Prober {
 public:
  explicit Prober(ProberConf c);
  // `probe NAME TYPE`: one line "result=hit|miss rcode=R answers=N latency_us=N core=W", or the error.
  // Workers are probed in turn, so every core's path is exercised over successive probes.
  std::string run(std::string_view args, std::string& out);
  const ProbeCounters& counters() const { return counters_; }

 private:
  ProberConf c_;
  ProbeCounters counters_;
  unsigned next_worker_ = 0;
  bool path_ok_[2] = {false, false};  // v4, v6: route and neighbour installed
  uint64_t seq_ = 0;
};

// Frees every mbuf left in rings (shutdown).
void drain_probe_rings(std::span<rte_ring* const> rings);

}  // namespace tern::dp
