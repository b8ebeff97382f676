// Rate limits of the fast path: plain values with their defaults, standard library only (no DPDK),
// so tern.conf's [dataplane] section, the policy codec and the tests can all include it. Every value
// is per worker (one RX queue each): node-wide figures are these times the number of workers.
#pragma once

#include <cstdint>

namespace tern::dp {

// Response rate limiting (RRL) in the fast path, as BIND's and Knot's: per client prefix, answers
// over the rate are dropped, except every `slip`-th, which is sent truncated (TC=1, no records) so a
// real client behind a spoofed-at prefix retries over TCP (where the resolver's own rules apply)
// while a reflection attack gains nothing. Accounting is a GCRA (token bucket) per prefix and class,
// in a fixed-size table per worker (dataplane/rrl.h); a quiet prefix may send `rate * burst_s` at
// once.
struct RrlLimits {
  uint32_t responses_per_s = 0;  // answers from the cache per second to one client prefix; default 0
                                 // = no limit (the allowed clients are the platform's own
                                 // applications; set it where clients can be spoofed)
  uint32_t errors_per_s = 20;    // REFUSED (clients outside the allow list) per second to one prefix;
                                 // default 20; 0 = no limit. The reflection an outsider can aim
                                 // at a victim.
  uint32_t burst_s = 2;          // seconds of rate a quiet prefix may use at once; default 2 (>= 1)
  uint32_t slip = 2;             // every slip-th limited response is sent with TC=1 instead of
                                 // dropped; default 2 (BIND's); 0 = drop all, 1 = truncate all
  uint8_t ipv4_prefix = 24;      // bits of an IPv4 source that name one client; default /24 (0..32)
  uint8_t ipv6_prefix = 56;      // bits of an IPv6 source that name one client; default /56 (0..128)
};

// One class of traffic the workers hand to Linux (the exception path): a token bucket per worker.
struct PuntBudget {
  uint32_t rate_per_s;  // frames per second, per worker; 0 = none pass
  uint32_t burst;       // bucket depth, frames
};

// The exception path's budgets, one per class, so that a flood of one kind (UDP to a closed port,
// SYNs, ICMP) cannot crowd out another (ARP/ND, the resolver's upstream answers, VRRP/BGP/BFD).
// Client queries for the resolver (cache misses, and query shapes the fast path does not answer:
// ECS, opcodes, EDNS versions, IP options) are the fifth class and use the existing miss limiter
// (Policy::miss_rate_qps / miss_burst). The readiness probe passes no budget.
struct PuntBudgets {
  // ARP, and ICMPv6 router/neighbour discovery (types 133-137). Default 2000/s, burst 500.
  PuntBudget arp_nd{2000, 500};
  // Replies to the resolver's own queries: UDP from port 53 to an ephemeral port (>= 1024) of a
  // service address, TCP from port 53 to a service address. Default 20000/s, burst 4000 (several
  // upstream exchanges per miss, for the misses of every worker).
  PuntBudget resolver_replies{20000, 4000};
  // Routing and failover peers: VRRP (IP protocol 112), BGP (TCP port 179), BFD (UDP 3784, 3785,
  // 4784). Default 2000/s, burst 500.
  PuntBudget routing{2000, 500};
  // DNS over TCP: TCP to port 53 of a service address (SYNs included). Default 5000/s, burst 1000.
  PuntBudget dns_tcp{5000, 1000};
  // Everything else: ICMP, UDP and TCP to other ports, fragments, IPv6 extension headers, other
  // ethertypes. Default 1000/s, burst 200.
  PuntBudget other{1000, 200};
  // Share of the exception ring kept for the first three classes: once less than this is free,
  // DNS over TCP, client queries and "other" are dropped (drop_exception_reserve). Percent, default
  // 25; 0 = no reserve.
  uint32_t ring_reserve_pct = 25;
};

}  // namespace tern::dp
