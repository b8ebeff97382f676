// Every verb of tern-dataplane's control socket (proto/verbs.h lists them): what each does to
// the cache, the policy slot and the counters. No EAL here: what needs DPDK (NIC counters, the
// readiness probe) comes in as a function, so the unit tests drive exactly what the socket runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "control_socket.h"
#include "exception.h"
#include "worker.h"

namespace tern::dp {

// What the verbs act on. Owned by tern-dataplane's main; every pointer outlives the server.
struct DataplaneState {
  cache::Cache* cache = nullptr;
  PolicySlot* policy = nullptr;
  const std::vector<Worker*>* workers = nullptr;
  const ServiceCounters* service = nullptr;
  std::function<void(std::string& out)> nic_stats;                           // stat lines, or empty
  std::function<std::string(std::string_view args, std::string& out)> probe;  // `probe`, or empty
  uint64_t epoch = 0;                  // this run's identity (heartbeats): tern-control sees restarts
  uint64_t memory_bytes = 0;           // physical memory; cache-bytes above half of it is refused
  std::atomic<uint64_t> policy_rejects{0};   // control socket thread: wo
  std::atomic<uint64_t> warm_inserted{0}, warm_rejected{0};
};

void register_verbs(ControlServer&, DataplaneState&);

// `policy [KEY=VALUE ...]`: decodes the keys onto the policy in force, checks what only the
// dataplane can check (memory for cache-bytes, the cache's own bounds), applies the cache limits
// and publishes, all or nothing; a refused push is counted and leaves everything as it was.
// The reply is the policy in force ("policy generation=... allow=..."). Returns the error or "".
std::string apply_policy(DataplaneState&, std::string_view args, std::string& out);

// A new run's epoch: wall-clock nanoseconds, so it differs from any earlier run's.
uint64_t new_epoch();
// MemTotal from /proc/meminfo, in bytes; 0 when unknown (no check then).
uint64_t physical_memory();

}  // namespace tern::dp
