// Every counter tern-dataplane exports, listed once: the worker's (per core), the service
// thread's and the readiness probe's, plus the fixed families (NIC, cache, heartbeats, policy).
// tern-dataplane builds its counter enums from these lists and prints `stats` with
// stat_line(); tern-control reads the lines with parse_stat_line() and takes each family's
// type and help from dataplane_metrics(), so a name is spelled in one place only.
// Standard library only: control/ includes this, never dataplane/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// X(name, kind, help): kind is what happens to the frame that increments it:
//   kCount  plain event counter (rx, tx, answers)
//   kPunt   frame goes to the exception ring unchanged (Linux / tern-control handles it)
//   kDrop   frame is freed here
// Prometheus: tern_dp_<name>_total{core="N"}.
// clang-format off
#define TERN_DP_COUNTERS(X) \
  X(rx_packets,          kCount, "frames received from the NIC queue") \
  X(tx_packets,          kCount, "frames handed to the NIC queue") \
  X(query_ok,            kCount, "well-formed queries for a service address (parser verdict)") \
  X(answer_hit,          kCount, "answered from the cache") \
  X(answer_stale,        kCount, "answered stale because the miss rate limit was reached (RFC 8767)") \
  X(answer_refused,      kCount, "REFUSED built in place for a client outside the allow list") \
  X(answer_truncated,    kCount, "answered with TC=1 because the answer exceeds the client's buffer") \
  X(answer_slipped,      kCount, "over the response rate limit, sent truncated (TC=1, RRL slip) instead of dropped") \
  X(miss_punted,         kCount, "cache misses sent to the exception ring within the rate limit") \
  X(housekeeping,        kCount, "housekeeping passes (quiescent point, policy check, stats publish)") \
  X(idle_sleeps,         kCount, "idle sleeps taken (kSleep mode)") \
  X(busy_cycles,         kCount, "TSC cycles spent on received bursts: core load = delta / (elapsed * TSC hz)") \
  X(probe_in,            kCount, "readiness probes taken from the inject ring (also counted in rx_packets)") \
  X(probe_answered,      kCount, "readiness probes answered from the cache, handed to the probe ring") \
  /* punts: not handled here, bridged to Linux unchanged */ \
  X(punt_not_ip,         kPunt,  "ARP, LLDP and every ethertype other than IPv4/IPv6") \
  X(punt_not_udp,        kPunt,  "ICMP, ICMPv6/NDP, TCP and other IP protocols") \
  X(punt_not_ours,       kPunt,  "UDP not to port 53 of a service address (includes upstream answers)") \
  X(punt_ipv4_fragment,  kPunt,  "IPv4 fragment (MF or offset != 0), reassembly is the kernel's job") \
  X(punt_ipv4_options,   kPunt,  "IPv4 header with options (IHL > 5)") \
  X(punt_ipv6_ext,       kPunt,  "IPv6 extension header before UDP") \
  X(punt_dns_opcode,     kPunt,  "opcode other than QUERY: the resolver answers NOTIMP") \
  X(punt_dns_shape,      kPunt,  "query shape the fast path does not answer (class, qtype, counts)") \
  X(punt_edns_version,   kPunt,  "EDNS version != 0: the resolver answers BADVERS (RFC 6891 6.1.3)") \
  X(punt_edns_ecs,       kPunt,  "EDNS Client Subnet option present (RFC 7871)") \
  X(punt_no_room,        kPunt,  "answer does not fit the mbuf's tailroom") \
  /* drops */ \
  X(drop_eth_short,      kDrop,  "frame shorter than its Ethernet / VLAN headers") \
  X(drop_vlan_depth,     kDrop,  "more than two VLAN tags") \
  X(drop_ipv4_header,    kDrop,  "IPv4 version, IHL or total length inconsistent with the frame") \
  X(drop_spoofed_source, kDrop,  "IP source is the probe source or a service address: only the node sends from those") \
  X(drop_ipv4_checksum,  kDrop,  "IPv4 header checksum wrong") \
  X(drop_ipv4_source,    kDrop,  "IPv4 source is broadcast, multicast, loopback or zero (RFC 1812 5.3.7)") \
  X(drop_ipv6_header,    kDrop,  "IPv6 version or payload length inconsistent with the frame") \
  X(drop_ipv6_source,    kDrop,  "IPv6 source is multicast, loopback or unspecified (RFC 4291)") \
  X(drop_udp_header,     kDrop,  "UDP length inconsistent with the IP payload") \
  X(drop_udp_checksum,   kDrop,  "UDP checksum wrong, or zero over IPv6 (RFC 8200 8.1)") \
  X(drop_dns_short,      kDrop,  "DNS message shorter than its header") \
  X(drop_dns_response,   kDrop,  "QR=1 sent to port 53: never answer a response (reflection loop)") \
  X(drop_dns_counts,     kDrop,  "qdcount != 1 or records the query cannot carry") \
  X(drop_dns_name,       kDrop,  "question name malformed (label > 63, name > 255, pointer, truncated)") \
  X(drop_dns_question,   kDrop,  "question truncated after the name") \
  X(drop_dns_opt,        kDrop,  "additional record is not a well-formed OPT (RFC 6891 6.1.1)") \
  X(drop_dns_trailing,   kDrop,  "bytes after the last record") \
  X(drop_acl,            kDrop,  "client outside the allow list and policy says drop") \
  X(drop_rate_limited,   kDrop,  "cache miss over the per-worker miss rate, no stale answer") \
  X(drop_rrl,            kDrop,  "answer over the per-prefix response rate (RRL), not slipped") \
  X(drop_rrl_refused,    kDrop,  "REFUSED over the per-prefix error rate (RRL), not slipped") \
  X(drop_exception_full, kDrop,  "exception ring full") \
  X(drop_exception_reserve, kDrop, "low-priority punt (DNS over TCP, query, other) while the exception ring is nearly full") \
  X(drop_punt_arp_nd,    kDrop,  "ARP / ICMPv6 ND over its exception budget") \
  X(drop_punt_resolver,  kDrop,  "reply to the resolver (from port 53) over its exception budget") \
  X(drop_punt_routing,   kDrop,  "VRRP / BGP / BFD over its exception budget") \
  X(drop_punt_dns_tcp,   kDrop,  "DNS over TCP (port 53 of a service address) over its exception budget") \
  X(drop_punt_query,     kDrop,  "query shape for the resolver (ECS, opcode, EDNS version, IP options) over the miss budget") \
  X(drop_punt_other,     kDrop,  "any other frame for Linux (ICMP, other ports, fragments...) over its exception budget") \
  X(drop_tx_full,        kDrop,  "NIC TX queue did not take the frame") \
  X(drop_probe_full,     kDrop,  "probe answer ring full (the control thread stopped reading it)")

// X(name, help). Prometheus: tern_dp_service_<name>_total.
#define TERN_SERVICE_COUNTERS(X) \
  X(exc_ring_frames,   "frames taken from the workers' exception rings") \
  X(to_linux,          "frames handed to the exception interface (Linux)") \
  X(to_linux_dropped,  "exception interface TX full: frame dropped") \
  X(from_linux,        "frames received from the exception interface") \
  X(to_nic,            "frames from Linux sent on the NIC (service TX queue)") \
  X(to_nic_dropped,    "NIC service TX queue full: frame dropped") \
  X(fill_inserted,     "DNS answers from a service address stored in the cache (new entry)") \
  X(fill_replaced,     "DNS answers from a service address that replaced an entry") \
  X(fill_rejected,     "DNS answers the cache refused (see tern_cache_rejects_total)") \
  X(fill_skipped_tc,   "truncated answers not offered to the cache") \
  X(fill_skipped_ecs,  "answers carrying EDNS Client Subnet, not cached (RFC 7871 7.3)") \
  X(fill_skipped_frag, "fragmented answers (the cache needs the whole message)") \
  X(fill_failed_nomem, "cache insert failed for lack of memory: answer sent, not cached") \
  X(fill_failed,       "cache insert failed otherwise (exception from the cache): answer sent, not cached") \
  X(fill_unmatched,    "DNS answers from a service address matching no query the node punted: sent, never cached") \
  X(pending_recorded,  "client queries punted to Linux and recorded, so that their answers may fill the cache") \
  X(pending_evicted,   "recorded queries given up for a newer one (their set was full): that answer will not be cached") \
  X(service_rx,        "frames received on the service thread's own NIC RX queue") \
  X(addr_updates,      "service address set republished after a netlink change") \
  X(idle_sleeps,       "service thread idle sleeps") \
  X(probe_replies,     "frames from Linux to the probe MAC handed to the probe reply ring (not the NIC)") \
  X(probe_replies_dropped, "probe reply ring full: frame to the probe MAC dropped")

// X(name, help). Prometheus: tern_dp_probe_<name>_total.
#define TERN_PROBE_COUNTERS(X) \
  X(sent,        "probe queries injected into a worker") \
  X(hit,         "probes answered by the worker from the cache") \
  X(via_control, "probes answered through the exception path and the resolver") \
  X(timed_out,   "probes with no answer before the deadline") \
  X(not_sent,    "probes that could not be injected (no service address, no mbuf, ring full)")
// clang-format on

namespace tern::proto {

struct MetricInfo {
  std::string name;         // full Prometheus name, e.g. tern_dp_rx_packets_total
  bool counter = true;      // counter (cumulative, _total) or gauge
  std::string_view help;
  std::string_view labels;  // label names, comma separated ("core", "reason"), or empty
};

// Every family tern-dataplane's `stats` and `heartbeats` replies may carry, in that order.
const std::vector<MetricInfo>& dataplane_metrics();
const MetricInfo* find_dataplane_metric(std::string_view name);

// One sample as a line: `name{labels} value` (labels already in exposition form, or empty).
struct Stat {
  std::string name, labels;
  uint64_t value = 0;
};
std::string stat_line(std::string_view name, std::string_view labels, uint64_t value);
std::optional<Stat> parse_stat_line(std::string_view line);  // nullopt: not a well-formed sample
// The value of label `key` in an exposition label list (`core="3"` -> "3"), or empty.
std::string label_value(std::string_view labels, std::string_view key);

}  // namespace tern::proto
