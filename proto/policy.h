// The dataplane policy: everything tern-control decides for tern-dataplane, as one plain
// value with one text codec. tern-control builds it from tern.conf ([server] allow,
// [dataplane], [cache]) and pushes it whole (`policy` verb); tern-dataplane decodes it, checks
// what only it can check, and publishes it to its workers. A flag on tern-dataplane's command
// line only sets the value used until the first push.
//
// Wire form: space separated key=value pairs, every key of kPolicyKeys, e.g.
//   generation=7 allow=198.18.0.0/15,2001:2::/48 refuse=1 miss-rate=2000 ... stale-window=86400
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

struct Policy {
  uint64_t generation = 0;        // tern-control's config generation; 0 = the dataplane's flags
  std::vector<Prefix> allow;      // clients answered; empty = nobody (never open by default)
  bool refuse_outside = true;     // REFUSED (true) or silent drop (false) for other clients
  uint32_t miss_rate = 2000;      // per worker: cache misses per second sent to the resolver
  uint32_t miss_burst = 500;      // token bucket depth for misses
  bool stale_on_limit = true;     // answer stale instead of dropping a miss over the limit
  CacheLimits cache;
  bool operator==(const Policy&) const = default;
};

std::string encode_policy(const Policy&);
// Applies every key=value in `text` to `p`; on error `p` is unchanged and *error names the key,
// the value and what was expected. Unknown keys are errors (a newer tern-control talking to an
// older dataplane must hear about it, not have half its policy ignored).
bool decode_policy(std::string_view text, Policy& p, std::string* error);

// The key names, in wire order (docs, errors, tests).
std::vector<std::string_view> policy_keys();

}  // namespace tern::proto
