// Per-upstream-server state, like Unbound's infra cache: smoothed RTT and RTO (RFC 6298
// arithmetic), timeout backoff, EDNS capability, and lameness per (server, zone).
// Single-threaded (EventLoop thread). Bounded: entries idle for an hour are dropped.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <unordered_map>

#include "control/resolver/hints.h"

namespace tern::control::resolver {

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

 private:
  Server& get(const ServerAddr& a, uint64_t now);
  std::unordered_map<std::string, Server> servers_;
  std::unordered_map<std::string, uint64_t> lame_;  // server key + zone key -> until
};

}  // namespace tern::control::resolver
