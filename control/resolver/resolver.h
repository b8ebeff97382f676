// The recursion engine: iterative resolution from root hints, forward and stub zones,
// RRset + negative cache, serve-stale and prefetch.
//
// Contract: everything runs on the EventLoop thread; no locks. A Resolution is an
// explicit state machine owned by the Resolver; its only asynchronous waits are one
// upstream query or one sub-resolution (glueless NS address) at a time. Finished
// resolutions are destroyed on the next loop turn, never inside their own callbacks.
#pragma once

#include <cstdint>
#include <functional>
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
  unsigned max_outstanding_total = 10000;
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
  X(glueless_lookups) X(dropped_total_limit) X(do_not_query)

struct ResolverStats {
#define X(n) uint64_t n = 0;
  TERN_RESOLVER_COUNTERS(X)
#undef X
};

// Builds a ResolverConfig and root hints from a Config without side effects.
std::optional<std::string> prepare(const Config& c, ResolverConfig& out, Hints& hints);

class Resolution;

class Resolver {
 public:
  static constexpr unsigned kStaleClientTimeoutMs = 1800;  // RFC 8767 §5 suggestion
  using Done = std::function<void(Answer&)>;
  explicit Resolver(EventLoop& loop);
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
                 Done done, Answer* partial = nullptr, const dns::Name* last = nullptr);
  // lookup() that also returns, on a miss, the partial chain and the name left.
  bool lookup_partial(const Question& q, Answer& out, dns::Name& last);
  void retire(uint64_t id);
  void tick();
  Resolution* find(uint64_t id);

  EventLoop& loop_;
  ResolverConfig cfg_;
  Hints hints_;
  Cache cache_;
  Infra infra_;
  ResolverStats stats_;
  UpstreamStats ustats_;
  std::mt19937 rng_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Resolution>> active_;
  std::unordered_map<std::string, uint64_t> joinable_;  // question key -> client resolution
  EventLoop::TimerId housekeeping_ = 0;
};

}  // namespace tern::control::resolver
