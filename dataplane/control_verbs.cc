#include "control_verbs.h"

#include <chrono>
#include <fstream>

#include "proto/counters.h"
#include "proto/policy.h"
#include "wire/wire.h"

namespace tern::dp {
namespace {

bool text_to_name(std::string_view text, uint8_t* buf, uint8_t& len, std::string& err) {
  if (text.empty()) {
    err = "missing NAME";
    return false;
  }
  wire::Status st = wire::name_from_text(text, buf, &len);
  if (st != wire::Status::ok) {
    err = "'" + std::string(text) + "' is not a domain name: " + wire::describe(st);
    return false;
  }
  return true;
}

cache::Cache::Limits to_cache_limits(const proto::CacheLimits& c) {
  return {static_cast<size_t>(c.max_bytes), c.ttl_floor,    c.ttl_cap,         c.neg_ttl_cap,
          c.servfail_ttl,                   c.stale_window, c.stale_answer_ttl};
}

void line(std::string& out, std::string_view name, std::string_view labels, uint64_t v) {
  out += proto::stat_line(name, labels, v);
  out += '\n';
}

void stats(const DataplaneState& s, std::string& out) {
  for (const Worker* w : *s.workers) {
    const std::string core = "core=\"" + std::to_string(w->conf.index) + "\"";
    for (size_t i = 0; i < kCounterCount; ++i)
      line(out, "tern_dp_" + std::string(kCounterInfo[i].name) + "_total", core,
           w->published[i].load(std::memory_order_relaxed));
  }
  for (size_t i = 0; i < kSvcCounterCount; ++i)
    line(out, "tern_dp_service_" + std::string(kSvcCounterInfo[i].name) + "_total", {},
         s.service->v[i].load(std::memory_order_relaxed));
  if (s.nic_stats) s.nic_stats(out);
  const cache::Stats cs = s.cache->stats();
  line(out, "tern_dp_cache_hits_total", {}, cs.hits);
  line(out, "tern_dp_cache_misses_total", {}, cs.misses);
  line(out, "tern_dp_cache_stale_total", {}, cs.stale);
  line(out, "tern_dp_cache_inserts_total", {}, cs.total.inserts);
  line(out, "tern_dp_cache_evictions_total", {}, cs.total.evictions);
  line(out, "tern_dp_cache_flushed_total", {}, cs.total.flushed);
  line(out, "tern_dp_cache_entries", {}, cs.total.entries);
  line(out, "tern_dp_cache_bytes", {}, cs.total.bytes);
  for (size_t i = 0; i < cache::kRejectCount; ++i)
    line(out, "tern_dp_cache_rejects_total",
         "reason=\"" + std::string(cache::to_string(static_cast<cache::Reject>(i))) + "\"", cs.rejects[i]);
  line(out, "tern_dp_warm_inserted_total", {}, s.warm_inserted.load(std::memory_order_relaxed));
  line(out, "tern_dp_warm_rejected_total", {}, s.warm_rejected.load(std::memory_order_relaxed));
}

void heartbeats(const DataplaneState& s, std::string& out) {
  for (const Worker* w : *s.workers)
    line(out, "tern_dp_heartbeat_total", "core=\"" + std::to_string(w->conf.index) + "\"",
         w->heartbeat.load(std::memory_order_relaxed));
  line(out, "tern_dp_epoch", {}, s.epoch);
  auto pol = s.policy->load();
  line(out, "tern_dp_policy_generation", {}, pol ? pol->value.generation : 0);
  line(out, "tern_dp_policy_rejects_total", {}, s.policy_rejects.load(std::memory_order_relaxed));
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `warm HEX ...`: answers tern-control holds, TTLs already aged. Each goes through the same
// insert_response as a fill, so the cache's rules (validation, caps, negative TTLs) apply.
std::string warm(DataplaneState& s, std::string_view args, std::string& out) {
  uint64_t stored = 0, refused = 0;
  std::vector<uint8_t> msg;
  const uint32_t now = cache_clock_s();
  while (!args.empty()) {
    const size_t sp = args.find(' ');
    std::string_view h = args.substr(0, sp);
    args.remove_prefix(sp == std::string_view::npos ? args.size() : sp + 1);
    if (h.empty()) continue;
    if (h.size() % 2) return "warm: odd number of hex digits in a message (nothing after it was stored)";
    msg.clear();
    for (size_t i = 0; i < h.size(); i += 2) {
      const int hi = hex(h[i]), lo = hex(h[i + 1]);
      if (hi < 0 || lo < 0) return "warm: '" + std::string(h.substr(i, 2)) + "' is not hex";
      msg.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    try {
      const cache::InsertResult r = s.cache->insert_response(msg, now);
      (r.stored() ? stored : refused) += 1;
    } catch (const std::bad_alloc&) {
      ++refused;
    }
  }
  s.warm_inserted.fetch_add(stored, std::memory_order_relaxed);
  s.warm_rejected.fetch_add(refused, std::memory_order_relaxed);
  out += "warm stored=" + std::to_string(stored) + " refused=" + std::to_string(refused) + "\n";
  return {};
}

}  // namespace

uint64_t new_epoch() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

uint64_t physical_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemTotal:") return kb * 1024;
  return 0;
}

std::string apply_policy(DataplaneState& s, std::string_view args, std::string& out) {
  auto cur = s.policy->load();
  const proto::Policy in_force = cur ? cur->value : proto::Policy{};
  if (args.empty()) {
    out += "policy " + proto::encode_policy(in_force) + "\n";
    return {};
  }
  auto refuse = [&](std::string why) {
    s.policy_rejects.fetch_add(1, std::memory_order_relaxed);
    return why + " (policy unchanged: generation " + std::to_string(in_force.generation) + " stays in force)";
  };
  proto::Policy next = in_force;
  std::string err;
  if (!proto::decode_policy(args, next, &err)) return refuse(err);
  if (s.memory_bytes && next.cache.max_bytes > s.memory_bytes / 2)
    return refuse("cache-bytes=" + std::to_string(next.cache.max_bytes >> 20) + "MiB is more than half of this machine's " +
                  std::to_string(s.memory_bytes >> 20) + " MiB; lower [dataplane] cache-bytes");
  const cache::Cache::Limits before = s.cache->limits(), want = to_cache_limits(next.cache);
  if (!s.cache->set_limits(want, &err)) return refuse(err + "; raise [dataplane] cache-bytes");
  Policy np = Policy::compile(next);
  s.policy->publish(std::make_shared<const Policy>(std::move(np)));
  // Entries stored under the old TTL rules would keep them until they expire: a lower ttl-cap
  // must hold from now on, so the cache starts over (the stale window applies at lookup).
  const bool ttl_rules_changed = before.ttl_floor != want.ttl_floor || before.ttl_cap != want.ttl_cap ||
                                 before.neg_ttl_cap != want.neg_ttl_cap || before.servfail_ttl != want.servfail_ttl ||
                                 before.stale_answer_ttl != want.stale_answer_ttl;
  if (ttl_rules_changed) out += "flushed " + std::to_string(s.cache->flush_all()) + " (TTL rules changed)\n";
  out += "policy " + proto::encode_policy(next) + "\n";
  return {};
}

void register_verbs(ControlServer& server, DataplaneState& s) {
  server.on("stats", [&s](std::string_view, std::string& out) {
    stats(s, out);
    return std::string();
  });
  server.on("heartbeats", [&s](std::string_view, std::string& out) {
    heartbeats(s, out);
    return std::string();
  });
  server.on("policy", [&s](std::string_view args, std::string& out) { return apply_policy(s, args, out); });
  server.on("flush", [&s](std::string_view args, std::string& out) {
    if (args.empty()) {
      out += "flushed " + std::to_string(s.cache->flush_all()) + "\n";
      return std::string();
    }
    uint8_t name[wire::kMaxNameLen];
    uint8_t len = 0;
    std::string err;
    if (!text_to_name(args, name, len, err)) return err;
    out += "flushed " + std::to_string(s.cache->flush_name({name, len})) + "\n";
    return std::string();
  });
  server.on("flush-subtree", [&s](std::string_view args, std::string& out) {
    uint8_t name[wire::kMaxNameLen];
    uint8_t len = 0;
    std::string err;
    if (!text_to_name(args, name, len, err)) return err;
    out += "flushed " + std::to_string(s.cache->flush_subtree({name, len})) + "\n";
    return std::string();
  });
  server.on("dump", [&s](std::string_view, std::string& out) {
    const uint32_t now = cache_clock_s();
    bool ok = s.cache->dump([&](const cache::EntryInfo& e) {
      const uint32_t age = now - e.stored_at;
      out += wire::name_to_text(e.name) + " type=" + std::to_string(e.qtype) + " class=" + std::to_string(e.qclass) +
             " flags=" + std::to_string(e.key_flags) + " rcode=" + std::to_string(e.rcode) +
             " neg=" + cache::to_string(e.neg_kind) + " ttl=" + std::to_string(age < e.ttl ? e.ttl - age : 0) +
             (age >= e.ttl ? " stale" : "") + " an=" + std::to_string(e.ancount) + " ns=" + std::to_string(e.nscount) +
             " ar=" + std::to_string(e.arcount) + " bytes=" + std::to_string(e.bytes) + "\n";
    });
    return ok ? std::string() : std::string("no cache reader slot free for the dump; retry");
  });
  server.on("probe", [&s](std::string_view args, std::string& out) {
    return s.probe ? s.probe(args, out) : std::string("no readiness probe in this dataplane");
  });
  server.on("warm", [&s](std::string_view args, std::string& out) { return warm(s, args, out); });
}

}  // namespace tern::dp
