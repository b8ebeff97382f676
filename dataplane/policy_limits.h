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

}  // namespace tern::dp
