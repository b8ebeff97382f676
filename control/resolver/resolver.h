// The recursion engine: iterative resolution from root hints, forward and stub zones,
// RRset + negative cache, serve-stale and prefetch.
//
// Contract: one Resolver per event loop; a Resolver and its Resolutions run on their
// loop's thread only. A Resolution is an explicit state machine owned by its Resolver; its
// only asynchronous waits are one upstream query or one sub-resolution (glueless NS
// address) at a time. Finished resolutions are destroyed on the next loop turn, never
// inside their own callbacks.
//
// What the loops share is one Shared: the RRset cache and the infra cache (each sharded,
// with its own contract), the cross-loop join table, the fetch limits and the count of
// resolutions. Nothing else crosses threads; an answer for another loop's client is
// cloned and posted to that loop (EventLoop::post), which runs the client's callback.
#pragma once

#include <cstdint>
#include <atomic>
#include <functional>
#include <mutex>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/config.h"
#include "control/loop.h"
#include "control/resolver/cache.h"
#include "control/resolver/hints.h"
#include "control/resolver/infra.h"
#include "control/resolver/upstream.h"

namespace tern::control::resolver {

struct Route {
  dns::Name zone;
  std::vector<ServerAddr> servers;
};

struct ResolverConfig {
  bool qname_minimisation = true, use_0x20 = false;
  unsigned upstream_timeout_ms = 1500, max_upstream_queries = 64, max_chain = 12, retries = 3;
  uint16_t edns_buffer_size = 1232;
  bool prefetch = true;
  uint32_t stale_answer_ttl = 30;
  unsigned max_outstanding_total = 10000;  // all loops together
  // BIND's fetches-per-zone / fetches-per-server: upstream queries in flight at once, all
  // loops together, to one zone's servers / to one server address. 0: no limit.
  unsigned fetches_per_zone = 0, fetches_per_server = 0;
  std::vector<Route> forward, stub;
  bool forward_out_of_zone = false;  // trust forwarders for names outside their zone
  CacheLimits cache;
  size_t infra_max_bytes = Infra::kDefaultMaxBytes;
  // Upstream addresses never queried when learned from the network (glue, NS addresses):
  // [recursion] do-not-query plus the node's own addresses. Servers the operator named
  // (root hints, forward and stub zones) are exempt.
  std::vector<Prefix> do_not_query;
  // DO=1 upstream (RFC 4035 §3.2.1, §4.1): RRSIGs and NSEC/NSEC3 come with the answers.
  bool dnssec_ok = true;
};

struct Question {
  dns::Name name;
  uint16_t type = 1, cls = 1;
};

struct Answer {
  unsigned rcode = LDNS_RCODE_NOERROR;
  // RRsets hold their RRSIGs after their records; a negative answer's authority holds the
  // SOA, its RRSIGs and the NSEC/NSEC3 proof. answer_reply() drops them for DO=0 clients.
  std::vector<dns::RrList> answer, authority;
  bool stale = false;
  Security sec = Security::unchecked;  // set by the Validator
  uint16_t ede = 0xffff;               // RFC 8914 INFO-CODE for the client; 0xffff: none
};

// Counters, cumulative. The X-macro is the one list: the struct, and the names exported.
#define TERN_RESOLVER_COUNTERS(X)                                                          \
  X(cache_hits) X(cache_misses) X(resolutions) X(resolutions_joined) X(answers_stale)      \
  X(prefetches) X(resolution_servfail) X(budget_exhausted) X(chain_too_long)              \
  X(lame_servers) X(edns_fallbacks) X(tcp_fallbacks) X(qmin_fallbacks) X(referrals)        \
  X(glueless_lookups) X(dropped_total_limit) X(do_not_query) X(joined_other_loop)          \
  X(fetches_zone_dropped) X(fetches_server_dropped) X(nxdomain_cut)

struct ResolverStats {
#define X(n) uint64_t n = 0;
  TERN_RESOLVER_COUNTERS(X)
#undef X
};

// The cache key of a question. The one place that says what makes two questions the same
// (the join tables use it); flags that change the answer (DO, CD) belong here.
std::string question_key(const Question& q);

// Identical questions across loops (the same loop joins through Resolver::joinable_).
// Contract: any thread; kShards shards by key, each behind its own mutex, held only for a
// map operation. A key is owned by the loop whose resolution fetches it, from claim() to
// release(); waiters' callbacks never run under a lock, and always on their own loop.
class Joins {
 public:
  static constexpr size_t kShards = 16;
  using Done = std::function<void(struct Answer&)>;
  // True: `loop` now owns `key` and must release() it. False: another loop owns it and
  // `done` was queued (moved from); it runs on `loop` when the owner releases.
  bool claim(const std::string& key, EventLoop* loop, Done& done);
  // Posts a clone of `a` to every queued waiter's loop, and ends the ownership.
  void release(const std::string& key, const struct Answer& a);
  size_t owned() const;  // keys being fetched now

 private:
  struct Waiter {
    EventLoop* loop;
    Done done;
  };
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, std::vector<Waiter>> keys;
  };
  Shard& shard(const std::string& key);
  Shard shards_[kShards];
};

// Upstream fetch limits (fetches-per-zone, fetches-per-server), counted over all loops.
// Contract: any thread; sharded by key, one mutex per shard, held for a counter update.
// A Slot is held for exactly one upstream query in flight and gives it back on
// destruction (reply, timeout, or the resolution ending).
class FetchLimits {
 public:
  static constexpr size_t kShards = 16;
  enum class Verdict { ok, zone_full, server_full };
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept { *this = std::move(o); }
    Slot& operator=(Slot&& o) noexcept;
    ~Slot() { reset(); }
    void reset();
    explicit operator bool() const { return f_ != nullptr; }

   private:
    friend class FetchLimits;
    FetchLimits* f_ = nullptr;
    std::string zone_, server_;
  };
  // Takes one slot for a query to `server_key` about `zone_key`, against the limits given
  // (0: unlimited). Counts are kept even without limits, so the peaks are visible.
  Verdict acquire(const std::string& zone_key, const std::string& server_key, unsigned per_zone,
                  unsigned per_server, Slot& out);
  // A racy peek for choosing among servers; acquire() decides.
  bool server_full(const std::string& server_key, unsigned per_server) const;
  unsigned zone_in_flight(const std::string& zone_key) const;
  uint64_t zone_peak() const { return zone_peak_.load(std::memory_order_relaxed); }

 private:
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, unsigned> n;
  };
  Shard& zone_shard(const std::string& k) const;
  Shard& server_shard(const std::string& k) const;
  void give_back(const std::string& zone_key, const std::string& server_key);
  mutable Shard zones_[kShards], servers_[kShards];
  std::atomic<uint64_t> zone_peak_{0};
};

// What every loop's Resolver shares.
struct Shared {
  explicit Shared(const CacheLimits& l = CacheLimits{}) : cache(l) {}
  Cache cache;
  Infra infra;
  Joins joins;
  FetchLimits fetches;
  std::atomic<size_t> resolutions{0};  // running, all loops (max-outstanding-total)
  std::atomic<size_t> pending{0};      // client queries waiting, all loops (max-pending-queries)
  std::atomic<unsigned> loops{1};      // > 1: questions are joined across loops
};

// Builds a ResolverConfig and root hints from a Config without side effects.
std::optional<std::string> prepare(const Config& c, ResolverConfig& out, Hints& hints);

class Resolution;

class Resolver {
 public:
  static constexpr unsigned kStaleClientTimeoutMs = 1800;  // RFC 8767 §5 suggestion
  using Done = std::function<void(Answer&)>;
  // `shared` null: a Resolver of its own (one loop, as in the unit tests).
  explicit Resolver(EventLoop& loop, std::shared_ptr<Shared> shared = nullptr);
  ~Resolver();

  void configure(ResolverConfig cfg, Hints hints);  // cache and infra survive
  const ResolverConfig& config() const { return cfg_; }

  // Cache-only answer (also triggers prefetch). False when the cache cannot complete it.
  bool lookup(const Question& q, Answer& out);
  // Full resolution; `done` runs exactly once, possibly before resolve() returns when the
  // answer is cached. False (and `done` never runs) when max_outstanding_total is reached.
  bool resolve(const Question& q, Done done);

  size_t outstanding() const { return active_.size(); }
  Cache& cache() { return cache_; }
  const Cache& cache() const { return cache_; }
  Infra& infra() { return infra_; }
  const Infra& infra() const { return infra_; }
  Shared& shared() { return *shared_; }
  const ResolverStats& stats() const { return stats_; }
  const UpstreamStats& upstream_stats() const { return ustats_; }
  uint64_t now() const { return loop_.now_ms(); }

 private:
  friend class Resolution;
  // Assembles from cache, following cached CNAMEs. Returns true when complete; else
  // `chain` holds the CNAMEs found and `last` the name still to resolve.
  bool assemble(const Question& q, Answer& out, bool allow_stale, dns::Name* last,
                bool for_client);
  // `partial`: a cache-only miss already computed for q (its CNAME chain and the name
  // left to resolve), so the resolution starts where the cache stopped.
  uint64_t start(const Question& q, int depth, std::shared_ptr<unsigned> budget, bool prefetch,
                 Done done, Answer* partial = nullptr, const dns::Name* last = nullptr,
                 std::string shared_key = {});
  // lookup() that also returns, on a miss, the partial chain and the name left.
  bool lookup_partial(const Question& q, Answer& out, dns::Name& last);
  void retire(uint64_t id);
  void tick();
  Resolution* find(uint64_t id);

  EventLoop& loop_;
  ResolverConfig cfg_;
  Hints hints_;
  std::shared_ptr<Shared> shared_;
  Cache& cache_;
  Infra& infra_;
  ResolverStats stats_;
  UpstreamStats ustats_;
  std::mt19937 rng_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Resolution>> active_;
  std::unordered_map<std::string, uint64_t> joinable_;  // question key -> client resolution
  EventLoop::TimerId housekeeping_ = 0;
};

}  // namespace tern::control::resolver
