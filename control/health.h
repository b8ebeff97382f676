// End-to-end health of a tern node: liveness and readiness, as keepalived, BIRD, load
// balancers, `ternctl health` and Prometheus see them.
//
//   live   = tern-control's loop runs its checks on time, the dataplane's control socket
//            answers, and every worker's heartbeat advanced since the previous check.
//   ready  = live, not drained, and within their deadlines:
//            - the dataplane probe: a query injected into a worker's own path (`probe NAME
//              TYPE` on the dataplane control socket) was answered, from the cache or through
//              the exception path and tern-control;
//            - the recursion canary: a configured name resolved by tern-control through its
//              real upstream path. A canary name starting with "*." gets a fresh random label
//              each time, so neither cache nor serve-stale can hide a broken upstream path
//              (NXDOMAIN from the authority counts as success then). In the appliance every
//              upstream packet crosses the exception interface, so a canary answer also proves
//              the exception path moves in both directions.
// A port being open is never taken as health: every check is a real exchange whose answer is
// validated.
//
// Contract: HealthMonitor lives on the EventLoop thread; all of its methods must be called
// there. Checks run asynchronously (non-blocking sockets and loop timers), one cycle every
// interval; status() only reads the latest completed cycle, so it never blocks and can
// serve /readyz and the management socket directly. If cycles stop completing (the loop is
// wedged somewhere else), status() reports not live once the latest result is older than
// three intervals.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/config.h"
#include "control/loop.h"
#include "control/metrics.h"

namespace tern::control {

// "NAME TYPE", e.g. "www.example.org A" or "*.canary.example.org AAAA".
struct CheckQuery {
  std::string name;    // as configured, absolute (trailing dot added), lowercase
  uint16_t qtype = 1;
  std::string type_text;
  bool nonce = false;  // name began with "*.": a random label replaces the '*' on every run
};
std::optional<CheckQuery> parse_check_query(std::string_view text, std::string& err);

struct HealthSettings {
  std::string dataplane_socket;       // empty: no dataplane (tern-control alone, e.g. tests)
  std::optional<CheckQuery> probe;    // sent through the dataplane; nullopt: not checked
  std::optional<CheckQuery> canary;   // resolved by tern-control; nullopt: not checked
  std::optional<Endpoint> canary_server;  // where tern-control listens (canary target)
  unsigned interval_ms = 1000;
  unsigned probe_deadline_ms = 500;
  unsigned canary_deadline_ms = 1500;
  std::string drain_file;             // persists `ternctl drain` across restarts; empty: memory only
  // The config generation the dataplane must run (its heartbeats report the policy generation
  // in force): readiness fails while they differ. 0: not checked.
  uint64_t policy_generation = 0;
};

// Builds settings from a Config (the [health] section and the listen/dataplane options).
// Returns the error a person can act on when the [health] values do not make sense.
std::optional<HealthSettings> health_settings(const Config&, std::string& err);

enum class Health : int { ready = 0, not_ready = 1, not_live = 2 };  // = `ternctl health` exit code

struct HealthStatus {
  Health state = Health::not_live;
  std::string reason;  // one line: why not ready / not live, or what was checked when ready
};

class HealthMonitor {
 public:
  explicit HealthMonitor(EventLoop&);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Starts (or, on reload, retunes) the checks. A cycle in flight finishes under its old
  // settings; the next one uses the new ones. Reads the drain file once, at first call.
  void configure(const HealthSettings&);

  HealthStatus status() const;
  std::string detail() const;  // one line per check, for `ternctl health -v`

  // Called on the loop thread whenever the verdict changes (after a cycle or a drain), with
  // the new status and the previous state: tern-control logs every transition with its reason.
  using ChangeFn = std::function<void(const HealthStatus& now, Health before)>;
  void on_change(ChangeFn fn);

  // Called after every heartbeat reply with the dataplane's epoch (a new value: it restarted)
  // and the policy generation it runs; tern-control re-pushes from there.
  using BeatFn = std::function<void(uint64_t epoch, uint64_t policy_generation)>;
  void on_dataplane(BeatFn fn);
  // The outcome of a policy push: the generation now in force, or the dataplane's refusal
  // (it kept its policy), which readiness reports while generations differ.
  void note_policy(uint64_t generation_in_force, std::string refusal = {});
  void note_refusal(std::string refusal);

  // Drain: readiness fails on purpose while everything keeps answering. Persisted in the
  // drain file, so a node drained for an upgrade stays drained through the restart until
  // `ternctl undrain`. Returns an error if the drain file cannot be written/removed (the
  // in-memory state is changed regardless, so the node still drains).
  std::optional<std::string> set_draining(bool);
  bool draining() const { return draining_; }

  // tern_health_*, tern_probe_*, tern_dp_heartbeat_total, and the dataplane's counters
  // (tern_dp_*_total) from the latest `stats` sample.
  void collect(MetricsWriter&) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool draining_ = false;
};

// Minimal DNS helpers for the checks (RFC 1035 4.1). Exposed for the unit test.
// Builds a query with RD=1 and an EDNS(0) OPT (RFC 6891) advertising 1232 bytes.
std::vector<uint8_t> build_query(std::string_view name, uint16_t qtype, uint16_t id);
struct AnswerSummary {
  uint8_t rcode = 0;
  uint16_t ancount = 0;
  bool truncated = false;
};
// Validates that `msg` answers exactly the query (ID, QR=1, same question, case-insensitive).
std::optional<AnswerSummary> check_answer(const uint8_t* msg, size_t len, std::string_view name,
                                          uint16_t qtype, uint16_t id, std::string& err);
std::string_view rcode_name(uint8_t rcode);

}  // namespace tern::control
