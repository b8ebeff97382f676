// tern-control serving: UDP/TCP listeners, query validation, EDNS, and the recursion
// engine behind them, on [server] threads event loops.
//
// Contract: Server's methods are called on the caller's loop thread (the daemon's), which
// is also worker 0's loop. Workers 1..N-1 each run their own EventLoop on their own thread,
// with their own SO_REUSEPORT sockets, Frontend and Resolver; what they share is
// resolver::Shared (cache, infra, joins, fetch limits: thread-safe by their contracts).
// When a method needs a worker's loop-owned state (counters, memoised answers, a new
// config) it posts the work to that loop and waits for it: workers never wait on the
// caller, so this cannot deadlock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "control/config.h"
#include "control/loop.h"
#include "control/metrics.h"

namespace tern::control {

namespace resolver { class Resolver; class Validator; struct Shared; struct NsecStore; }
class Frontend;  // listeners, TCP connections, client limits (server.cc)
struct Worker;   // one event loop: its Frontend and Resolver (server.cc)

class Server {  // owns listeners + resolver; lives on the loop thread
 public:
  explicit Server(EventLoop&);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Builds everything the new config needs (binds new listeners, loads root hints, sizes
  // caches) WITHOUT touching the running state; the first call also starts the [server]
  // threads loops (fixed from then on: later calls keep the count); on success swaps atomically (listeners
  // that stay keep their sockets; removed ones close; added ones start), on failure
  // returns a human-readable error and the running state is exactly as before. Used for
  // first start and for every reload.
  std::optional<std::string> apply(const Config&);

  // Cumulative counters, never reset: ("queries_udp", n), ("answers_noerror", n), ...
  // Gauges are included with a "_current" suffix (cache_bytes_current, ...).
  void counters(std::vector<std::pair<std::string, uint64_t>>&) const;
  // Per-upstream-server tallies, the `n` most-queried servers first. Bounded on purpose:
  // a random-subdomain flood reaches many zones' servers, and each would be a new series.
  static constexpr size_t kUpstreamMetricsServers = 64;
  std::vector<UpstreamServerStat> upstream_servers(size_t n = kUpstreamMetricsServers) const;
  size_t cache_flush(std::string_view name /* "" = all */, bool subtree);
  void cache_dump(std::ostream&) const;
  // `ternctl nta add|remove NAME`, `nta list`: runtime negative trust anchors (RFC 7646).
  // Adding or removing one flushes that subtree so its answers are judged again.
  size_t trust_anchors() const;  // zones with a trust anchor in force
  std::optional<std::string> nta(const std::vector<std::string>& args,
                                 std::vector<std::string>& out);
  // The answers tern-control would serve from memory now (MsgCache::export_answers).
  void export_answers(const std::function<void(std::span<const uint8_t>)>& fn) const;

  size_t threads() const { return workers_.size(); }

  // Over-limit policy (like Unbound's num-queries-per-thread): a query beyond
  // max-outstanding-per-client (per loop: a client's flow stays on one loop),
  // max-outstanding-total or max-pending-queries (all loops) is dropped and counted, not
  // answered; the client's retry finds room once earlier resolutions finish.

 private:
  void start_workers(unsigned n);
  void on_worker(size_t i, const std::function<void()>& fn) const;  // runs fn on worker i's loop

  EventLoop& loop_;
  std::shared_ptr<resolver::Shared> shared_;
  std::shared_ptr<resolver::NsecStore> nsecs_;  // RFC 8198: one store for every loop's validator
  std::vector<std::unique_ptr<Worker>> workers_;
  bool started_ = false;
};

}  // namespace tern::control
