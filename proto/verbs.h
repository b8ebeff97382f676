// Every verb of the two control sockets, listed once. A server registers a handler per row
// and refuses to register a verb that is not here; an unknown verb's error lists the table,
// and `ternctl help` prints it.
#pragma once

#include <span>
#include <string_view>

namespace tern::proto {

struct VerbSpec {
  std::string_view name, usage, help;
};

// tern-dataplane's control socket (tern-control and ternctl are its clients).
inline constexpr VerbSpec kDataplaneVerbs[] = {
    {"stats", "stats", "every counter (proto/counters.h), one sample a line"},
    {"heartbeats", "heartbeats", "per-worker heartbeats, the run's epoch and the policy generation in force"},
    {"policy", "policy [KEY=VALUE ...]", "apply policy keys (proto/policy.h), all or nothing; no keys: print it"},
    {"flush", "flush [NAME]", "remove NAME (every type) from the fast-path cache; no NAME: everything"},
    {"flush-subtree", "flush-subtree NAME", "remove NAME and every name below it from the fast-path cache"},
    {"dump", "dump", "one line per fast-path cache entry"},
    {"probe", "probe NAME TYPE", "inject a readiness probe query into a worker and report how it was answered"},
    {"warm", "warm HEX...", "store answers (DNS responses, hex, TTLs as remaining) in the fast-path cache"},
};

// tern-control's management socket (ternctl is its client).
inline constexpr VerbSpec kControlVerbs[] = {
    {"status", "status", "version, uptime, config file and generation, last reload"},
    {"reload", "reload", "re-read the config: parse, validate, build, swap; a failure keeps the running one"},
    {"stats", "stats", "tern-control's counters"},
    {"cache", "cache flush [NAME] [--subtree] | cache dump",
     "flush both caches (tern-control's and the fast path's) or dump tern-control's"},
    {"health", "health [-v]", "readiness and liveness with the reason"},
    {"drain", "drain", "fail readiness on purpose (the peer takes the address); queries are still answered"},
    {"undrain", "undrain", "end a drain"},
    {"metrics", "metrics", "the Prometheus exposition /metrics serves"},
    {"nta", "nta add NAME | nta remove NAME | nta list",
     "negative trust anchors at runtime (RFC 7646): NAME and below answer unvalidated"},
};

inline const VerbSpec* find_verb(std::span<const VerbSpec> table, std::string_view name) {
  for (const VerbSpec& v : table)
    if (v.name == name) return &v;
  return nullptr;
}

}  // namespace tern::proto
