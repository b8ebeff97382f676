// Per-upstream-server state, like Unbound's infra cache: smoothed RTT and RTO (RFC 6298
// arithmetic), timeout backoff, EDNS capability, and lameness per (server, zone).
// Shared by every event loop of tern-control. Concurrency contract: server and lameness
// state is split into kShards shards by server address, each behind its own mutex (a
// lame record lives in its server's shard); the operator tally has one mutex of its own,
// taken once per upstream query and by metrics scrapes. A method takes at most one lock at
// a time and returns copies, never pointers into the tables. Bounded twice: entries idle for an hour are dropped,
// and server and lameness entries together never take more than max_bytes() (estimated per
// entry: key, value and node overhead); past it the least recently used entry goes, so a
// flood of glue naming ever new servers churns the cold end while the servers in use stay.
//
// Next to it, a per-server tally for operators (queries, timeouts, errors by kind): a
// separate table because its counters are cumulative and must outlive the hour-idle
// expiry above. It holds at most kTallyMax servers; when a new server arrives at a full
// table, the least-queried entry goes (its series ends; a server that reappears starts a
// new one, which rate() reads as a counter reset). So the servers that carry the traffic
// keep exact counters while a random-subdomain flood only churns the tail.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
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

// A map with least-recently-used order and a byte estimate: get() creates or touches an
// entry (moves it to the front), find() only reads, pop_oldest() drops the back.
template <typename V>
class LruMap {
 public:
  // Estimated bytes per entry beyond key and value: hash node, list node, bucket.
  static constexpr size_t kOverhead = 96;
  struct Entry {
    V value{};
    uint64_t used = 0;
    typename std::list<std::string>::iterator pos;
  };
  V& get(const std::string& k, uint64_t now, bool* created = nullptr) {
    auto [it, fresh] = map_.try_emplace(k);
    if (fresh) {
      order_.push_front(k);
      it->second.pos = order_.begin();
      bytes_ += cost(k);
    } else if (it->second.pos != order_.begin()) {
      order_.splice(order_.begin(), order_, it->second.pos);
    }
    it->second.used = now;
    if (created) *created = fresh;
    return it->second.value;
  }
  const V* find(const std::string& k) const {
    auto it = map_.find(k);
    return it == map_.end() ? nullptr : &it->second.value;
  }
  bool empty() const { return map_.empty(); }
  size_t size() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t oldest_use() const { return map_.find(order_.back())->second.used; }
  const std::string& oldest_key() const { return order_.back(); }
  void erase(const std::string& k) {
    auto it = map_.find(k);
    if (it == map_.end()) return;
    bytes_ -= cost(k);
    order_.erase(it->second.pos);
    map_.erase(it);
  }
  template <typename Pred>  // Pred(const V&)
  void erase_if(Pred p) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (p(it->second.value)) {
        bytes_ -= cost(it->first);
        order_.erase(it->second.pos);
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }
  static size_t cost(const std::string& k) { return k.size() + sizeof(Entry) + kOverhead; }

 private:
  std::unordered_map<std::string, Entry> map_;
  std::list<std::string> order_;  // most recently used first
  size_t bytes_ = 0;
};

class Infra {
 public:
  static constexpr uint32_t kUnknownRtoMs = 376;  // Unbound's UNKNOWN_SERVER_NICENESS
  static constexpr uint32_t kMinRtoMs = 50;
  static constexpr uint32_t kMaxRtoMs = 120000;
  static constexpr uint64_t kLameMs = 900000;     // lameness is remembered 15 minutes
  static constexpr size_t kShards = 8;

  struct Server {
    int32_t srtt = -1;  // ms, -1 unknown
    int32_t rttvar = 0;
    uint32_t rto = kUnknownRtoMs;
    uint32_t timeouts = 0;  // consecutive
    bool no_edns = false;
    uint64_t last_used = 0;
  };

  Infra();
  void rtt(const ServerAddr& a, uint32_t ms, uint64_t now);
  void timeout(const ServerAddr& a, uint64_t now);
  void set_no_edns(const ServerAddr& a, uint64_t now);
  bool no_edns(const ServerAddr& a) const;
  void mark_lame(const ServerAddr& a, const std::string& zone_key, uint64_t now);
  bool lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) const;
  uint32_t rto(const ServerAddr& a) const;
  // Index of the candidate to ask next: lowest RTO; ties broken at random so equal
  // servers share load. -1 when `candidates` is empty.
  int choose(std::span<const ServerAddr> candidates, std::mt19937& rng) const;
  std::optional<Server> find(const ServerAddr& a) const;
  void expire(uint64_t now);
  size_t size() const;
  size_t lame_entries() const;
  // Memory bound for server and lameness entries (see the top of the file), split evenly
  // over the shards.
  static constexpr size_t kDefaultMaxBytes = 16u << 20;
  void set_max_bytes(size_t b);
  size_t max_bytes() const { return max_bytes_.load(std::memory_order_relaxed); }
  size_t bytes() const;
  uint64_t evictions() const;

  // Operator tallies (see the top of the file). Cumulative, never reset.
  static constexpr size_t kTallyMax = 1024;
  struct Tally {
    ServerAddr addr;
    uint64_t queries = 0, timeouts = 0;
    std::array<uint64_t, kUpstreamErrorKinds> errors{};
  };
  void count_query(const ServerAddr& a);
  void count_timeout(const ServerAddr& a);
  void count_error(const ServerAddr& a, UpstreamError e);
  std::optional<Tally> find_tally(const ServerAddr& a) const;
  // The `n` most-queried servers, most first (ties by address, so the order is stable).
  std::vector<Tally> top(size_t n) const;
  size_t tallies() const;
  uint64_t tally_evictions() const;

 private:
  struct alignas(64) Shard {
    mutable std::mutex mu;
    LruMap<Server> servers;
    LruMap<uint64_t> lame;  // server key + zone key -> until
    size_t max_bytes = kDefaultMaxBytes / kShards;
    uint64_t evictions = 0;
    Server& get(const std::string& k, uint64_t now);
    void shrink();  // evicts least recently used entries down to max_bytes
    size_t bytes() const { return servers.bytes() + lame.bytes(); }
  };
  Shard& shard(const std::string& server_key) const;
  Tally& tally(const ServerAddr& a);  // tally_mu_ held

  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<size_t> max_bytes_{kDefaultMaxBytes};
  mutable std::mutex tally_mu_;
  std::unordered_map<std::string, Tally> tally_;  // server key -> tally, <= kTallyMax
  uint64_t tally_evictions_ = 0;
};

}  // namespace tern::control::resolver
