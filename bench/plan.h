// tern-bench plan: capacity planning from measured figures.
//
// Every throughput figure comes from a results file written by a measurement on the
// hardware being planned for (tern-bench dataplane for the worker rate, bench/compare
// for the control plane's miss rate). A figure that is not in a results file is never
// guessed: the planner refuses and names the command that produces it. The arithmetic
// (Ethernet framing, cores, ports, cache and mempool memory) is plain functions here so
// the unit test can check it against hand-computed cases.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::bench::plan {

// IEEE 802.3 framing. Every frame on the wire costs preamble + SFD and the inter-frame
// gap on top of the frame itself, and a frame is padded to the 64-byte minimum.
inline constexpr uint32_t kPreambleSfd = 8;
inline constexpr uint32_t kInterFrameGap = 12;
inline constexpr uint32_t kFcs = 4;
inline constexpr uint32_t kMinFrame = 64;  // including FCS
inline constexpr uint32_t kEthHeader = 14;  // untagged
inline constexpr uint32_t kIpv4Header = 20, kIpv6Header = 40, kUdpHeader = 8;

// Frame bytes (Ethernet header to FCS, padded to 64) carrying a DNS message of
// `dns_bytes` in UDP over IPv4 or IPv6.
uint32_t frame_bytes(uint32_t dns_bytes, bool ipv6);
// Bytes of line time one such frame occupies: the frame plus preamble, SFD and IFG.
uint32_t wire_bytes(uint32_t dns_bytes, bool ipv6);

// Cache bytes `names` cached answers cost: each entry as cache/ accounts it (allocator
// overhead included, Cache::entry_bytes) plus its share of the index, sized for the
// table's lowest fill after a rebuild (3/5), so the figure holds at every fill level.
// `answer_bytes` is the whole DNS answer message, `name_bytes` the qname in wire form;
// the cache stores the sections after the question, one TTL offset per record.
struct CacheCost {
  uint64_t entry_bytes = 0;  // per name
  uint32_t ttls = 0;         // records per answer assumed (at most one per 16 section bytes)
  uint64_t total = 0;        // names * entry + index
};
CacheCost cache_cost(uint64_t names, uint32_t answer_bytes, uint32_t name_bytes);

// Key=value figures read from results files. Accepts `tern-bench dataplane` output (its
// `RESULT k=v k=v ...` line; the last one wins) and plain `key=value` lines (as
// bench/compare writes); `#` starts a comment. Later files override earlier ones.
struct Figure {
  double value = 0;
  std::string source;  // "FILE:LINE", printed next to the plan so a reader can check it
};
using Figures = std::map<std::string, Figure, std::less<>>;

// Adds the figures in `text` (from `origin`) to `out`. A value that is not a number is an
// error naming the file and line; returns false and sets `error`.
bool parse_results(std::string_view text, std::string_view origin, Figures& out, std::string& error);

struct Inputs {
  // demand
  double peak_qps = 0;    // busiest second the region must answer
  double hit_ratio = 1;   // share answered from cache, 0..1
  double headroom = 0;    // spare capacity on top of the peak: plan for peak * (1 + headroom)
  uint32_t query_bytes = 64;    // mean DNS query message (UDP payload)
  uint32_t answer_bytes = 120;  // mean DNS answer message (UDP payload)
  bool ipv6 = false;
  uint64_t names = 0;           // distinct cached answers to hold; 0 = cache not sized
  uint32_t name_bytes = 24;     // mean qname length in wire form
  // measured (per core)
  double worker_qps_per_core = 0;  // tern-bench dataplane: worker_mqps * 1e6
  double control_qps = 0;          // misses/s one tern-control answers (0 = not measured)
  // tern-control runs [server] threads event loops. With more than one, its capacity comes
  // from the figure measured with two (bench/control_vs_unbound.sh: control_qps_threads2),
  // extended by the gain the second thread brought per further thread, never more.
  unsigned control_threads = 1;
  double control_qps_threads2 = 0;  // misses/s with threads = 2 (0 = not measured)
  // one node, from the hardware profile
  std::string profile_name;
  unsigned node_workers = 0;       // worker lcores in the profile
  double line_gbps = 0;            // per port, per direction
  uint64_t hugepages_mb_profile = 0;  // [memory] hugepages_mb
  uint64_t hugepages_mb_needed = 0;   // what the profile's mempool and rings need
  uint64_t ram_mb = 0;             // node RAM available to the cache; 0 = not checked
};

enum class Resource { kWorkerCores, kControlPlane, kPortLineRate };
std::string_view resource_name(Resource);

struct Plan {
  double design_qps = 0, hit_qps = 0, miss_qps = 0;
  // cores
  unsigned worker_cores = 0;   // every query passes a worker (hits answered, misses punted)
  unsigned control_cores = 0;  // tern-control cores for the misses
  double control_node_qps = 0; // misses/s one node's tern-control answers at control_threads
  // line rate, per direction
  uint32_t query_wire_bytes = 0, answer_wire_bytes = 0;
  double rx_gbps = 0, tx_gbps = 0;  // queries in, answers out
  unsigned ports = 0;               // ports so that the busier direction fits
  // memory
  CacheCost cache;                  // total == 0 when names == 0
  uint64_t hugepages_mb = 0;        // per node
  unsigned hugepages_2m = 0;        // 2 MB pages per node
  // one node of the profile: the qps each resource caps it at
  struct Limit {
    Resource resource;
    double qps;  // design qps one node sustains before this resource is exhausted
  };
  std::vector<Limit> node_limits;  // sorted, tightest first
  unsigned nodes = 0;              // nodes of this profile for design_qps
};

// Misses/s one tern-control answers with in.control_threads loops: control_qps for one; with
// more, control_qps + (threads - 1) x (control_qps_threads2 - control_qps), the measured
// gain of the second thread (none if it lost) repeated, a straight line through the two
// measured points. Threads beyond the node's cores are the caller's check.
double control_capacity(const Inputs&);

// Pure arithmetic; the inputs are validated by the caller.
Plan compute(const Inputs&);

// The human-readable report tern-bench plan prints.
std::string format(const Inputs&, const Plan&);

// Line rate of the profile's port: `--line-gbps` if given, else "<N> GbE" in the profile's
// description. nullopt when neither says (the planner then refuses rather than guess).
std::optional<double> line_rate_from_description(std::string_view description);

// tern-bench plan [options]
int plan_main(int argc, char** argv);

}  // namespace tern::bench::plan
