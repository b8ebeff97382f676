// Per-upstream-server state, like Unbound's infra cache: smoothed RTT and RTO (RFC 6298
// arithmetic), timeout backoff, EDNS capability, and lameness per (server, zone).
// Single-threaded (EventLoop thread). Bounded: entries idle for an hour are dropped.
//
// Next to it, a per-server tally for operators (queries, timeouts, errors by kind): a
// separate table because its counters are cumulative and must outlive the hour-idle
// expiry above. It holds at most kTallyMax servers; when a new server arrives at a full
// table, the least-queried entry goes (its series ends; a server that reappears starts a
// new one, which rate() reads as a counter reset). So the servers that carry the traffic
// keep exact counters while a random-subdomain flood only churns the tail.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/resolver/hints.h"

namespace tern::control::resolver {

// What a server did wrong, as the resolver saw it. The X-macro is the one list: the
// enum and the `kind` label values exported.
//   lame      a reply that cannot be for the zone (non-AA answer, upward referral)
//   refused   rcode REFUSED               servfail  rcode SERVFAIL
//   formerr   rcode FORMERR or NOTIMP (also the one that makes us retry without EDNS)
//   tcp       a TCP exchange that failed (connect refused, reset, closed early)
//   network   a UDP exchange that failed at once (ICMP unreachable, no route)
//   malformed a reply that did not parse
#define TERN_UPSTREAM_ERRORS(X) \
  X(lame) X(refused) X(servfail) X(formerr) X(tcp) X(network) X(malformed)

enum class UpstreamError : uint8_t {
#define X(n) n,
  TERN_UPSTREAM_ERRORS(X)
#undef X
};
inline constexpr size_t kUpstreamErrorKinds = 0
#define X(n) +1
    TERN_UPSTREAM_ERRORS(X)
#undef X
    ;
inline constexpr std::array<const char*, kUpstreamErrorKinds> kUpstreamErrorNames = {
#define X(n) #n,
    TERN_UPSTREAM_ERRORS(X)
#undef X
};

class Infra {
 public:
  static constexpr uint32_t kUnknownRtoMs = 376;  // Unbound's UNKNOWN_SERVER_NICENESS
  static constexpr uint32_t kMinRtoMs = 50;
  static constexpr uint32_t kMaxRtoMs = 120000;
  static constexpr uint64_t kLameMs = 900000;     // lameness is remembered 15 minutes

  struct Server {
    int32_t srtt = -1;  // ms, -1 unknown
    int32_t rttvar = 0;
    uint32_t rto = kUnknownRtoMs;
    uint32_t timeouts = 0;  // consecutive
    bool no_edns = false;
    uint64_t last_used = 0;
  };

  void rtt(const ServerAddr& a, uint32_t ms, uint64_t now);
  void timeout(const ServerAddr& a, uint64_t now);
  void set_no_edns(const ServerAddr& a, uint64_t now) { get(a, now).no_edns = true; }
  bool no_edns(const ServerAddr& a) const;
  void mark_lame(const ServerAddr& a, const std::string& zone_key, uint64_t now);
  bool lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) const;
  uint32_t rto(const ServerAddr& a) const;
  // Index of the candidate to ask next: lowest RTO; ties broken at random so equal
  // servers share load. -1 when `candidates` is empty.
  int choose(std::span<const ServerAddr> candidates, std::mt19937& rng) const;
  const Server* find(const ServerAddr& a) const;
  void expire(uint64_t now);
  size_t size() const { return servers_.size(); }

  // Operator tallies (see the top of the file). Cumulative, never reset.
  static constexpr size_t kTallyMax = 1024;
  struct Tally {
    ServerAddr addr;
    uint64_t queries = 0, timeouts = 0;
    std::array<uint64_t, kUpstreamErrorKinds> errors{};
  };
  void count_query(const ServerAddr& a) { ++tally(a).queries; }
  void count_timeout(const ServerAddr& a) { ++tally(a).timeouts; }
  void count_error(const ServerAddr& a, UpstreamError e) { ++tally(a).errors[size_t(e)]; }
  const Tally* find_tally(const ServerAddr& a) const;
  // The `n` most-queried servers, most first (ties by address, so the order is stable).
  std::vector<const Tally*> top(size_t n) const;
  size_t tallies() const { return tally_.size(); }
  uint64_t tally_evictions() const { return tally_evictions_; }

 private:
  Server& get(const ServerAddr& a, uint64_t now);
  Tally& tally(const ServerAddr& a);
  std::unordered_map<std::string, Tally> tally_;  // server key -> tally, <= kTallyMax
  uint64_t tally_evictions_ = 0;
  std::unordered_map<std::string, Server> servers_;
  std::unordered_map<std::string, uint64_t> lame_;  // server key + zone key -> until
};

}  // namespace tern::control::resolver
