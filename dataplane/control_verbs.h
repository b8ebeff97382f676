// Dataplane-specific control socket verbs that need no DPDK: the `policy` verb's
// parsing and validation (all or nothing), kept apart from main.cc so the unit
// test drives exactly what the socket runs.
#pragma once

#include <string>
#include <string_view>

#include "worker.h"

namespace tern::dp {

// "allow=198.18.0.0/15,2001:2::/48 refuse=1 miss-rate=2000 miss-burst=500 stale-on-limit=1"
std::string policy_line(const Policy&);

// `policy [allow=PFX[,PFX...]|none] [refuse=0|1] [miss-rate=N] [miss-burst=N] [stale-on-limit=0|1]`
// Starts from the published policy, applies every key, and publishes only when
// all of them are valid. No args: prints the current policy. Appends the
// resulting "policy ..." line to out; returns the error message or "".
std::string apply_policy_args(PolicySlot& slot, std::string_view args, std::string& out);

}  // namespace tern::dp
