// tern-control serving: UDP/TCP listeners, query validation, EDNS, and the recursion
// engine behind them. Everything here lives on the EventLoop thread; no locks.
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

namespace resolver { class Resolver; class Validator; }
class Frontend;  // listeners, TCP connections, client limits (server.cc)

class Server {  // owns listeners + resolver; lives on the loop thread
 public:
  explicit Server(EventLoop&);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Builds everything the new config needs (binds new listeners, loads root hints, sizes
  // caches) WITHOUT touching the running state; on success swaps atomically (listeners
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

  // Over-limit policy (like Unbound's num-queries-per-thread): a query beyond
  // max-outstanding-per-client or max-outstanding-total is dropped and counted, not
  // answered; the client's retry finds room once earlier resolutions finish.

 private:
  EventLoop& loop_;
  std::unique_ptr<resolver::Resolver> resolver_;
  std::unique_ptr<resolver::Validator> validator_;
  std::unique_ptr<Frontend> frontend_;
};

}  // namespace tern::control
