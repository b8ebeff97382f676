// The dataplane policy: everything tern-control decides for tern-dataplane, as one plain
// value with one text codec. tern-control builds it from tern.conf ([server] allow,
// [dataplane], [cache]) and pushes it whole (`policy` verb); tern-dataplane decodes it, checks
// what only it can check, and publishes it to its workers. A flag on tern-dataplane's command
// line only sets the value used until the first push.
//
// Wire form: space separated key=value pairs, every key of kPolicyKeys, e.g.
//   generation=7 allow=198.18.0.0/15,2001:2::/48 refuse=1 miss-rate=2000 ... punt-other=1000/200
// Decoding applies the pairs given on top of a base policy, all or nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proto/prefix.h"

namespace tern::proto {

// The answer cache's limits; tern-control's [cache] section feeds both caches.
struct CacheLimits {
  uint64_t max_bytes = 64u << 20;   // the fast-path cache's bound ([dataplane] cache-bytes)
  uint32_t ttl_floor = 0, ttl_cap = 86400, neg_ttl_cap = 3600, servfail_ttl = 5;  // seconds
  uint32_t stale_window = 86400;    // RFC 8767: 0 = never serve stale ([cache] serve-stale = no)
  uint32_t stale_answer_ttl = 30;   // seconds
  bool operator==(const CacheLimits&) const = default;
};

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
  uint32_t ipv4_prefix = 24;     // bits of an IPv4 source that name one client; default /24 (0..32)
  uint32_t ipv6_prefix = 56;     // bits of an IPv6 source that name one client; default /56 (0..128)
  bool operator==(const RrlLimits&) const = default;
};

// One class of traffic the workers hand to Linux (the exception path): a token bucket per worker.
struct PuntBudget {
  uint32_t rate_per_s;  // frames per second, per worker; 0 = none pass
  uint32_t burst;       // bucket depth, frames
  bool operator==(const PuntBudget&) const = default;
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
  bool operator==(const PuntBudgets&) const = default;
};

struct Policy {
  uint64_t generation = 0;        // tern-control's config generation; 0 = the dataplane's flags
  std::vector<Prefix> allow;      // clients answered; empty = nobody (never open by default)
  bool refuse_outside = true;     // REFUSED (true) or silent drop (false) for other clients
  uint32_t miss_rate = 2000;      // per worker: cache misses per second sent to the resolver
  uint32_t miss_burst = 500;      // token bucket depth for misses
  bool stale_on_limit = true;     // answer stale instead of dropping a miss over the limit
  CacheLimits cache;
  RrlLimits rrl;
  PuntBudgets punt;
  bool operator==(const Policy&) const = default;
};

std::string encode_policy(const Policy&);
// Applies every key=value in `text` to `p`; on error `p` is unchanged and *error names the key,
// the value and what was expected. Unknown keys are errors (a newer tern-control talking to an
// older dataplane must hear about it, not have half its policy ignored).
bool decode_policy(std::string_view text, Policy& p, std::string* error);

// RATE/BURST, e.g. "1000/200" (burst >= 1): a punt budget in the policy and in tern.conf.
bool parse_rate_burst(std::string_view text, PuntBudget& out, std::string* error);
std::string rate_burst_text(const PuntBudget&);

// The key names, in wire order (docs, errors, tests).
std::vector<std::string_view> policy_keys();

}  // namespace tern::proto
