#include "control_verbs.h"

#include <charconv>
#include <map>

#include "control_socket.h"

namespace tern::dp {

namespace {
bool to_u32(const std::string& s, uint32_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}
}  // namespace

std::string policy_line(const Policy& p) {
  return "allow=" + (p.allow.empty() ? std::string("none") : p.allow.to_string()) +
         " refuse=" + (p.refuse_outside ? "1" : "0") + " miss-rate=" + std::to_string(p.miss_rate_qps) +
         " miss-burst=" + std::to_string(p.miss_burst) + " stale-on-limit=" + (p.stale_on_limit ? "1" : "0");
}

// `policy k=v ...`: starts from the running policy, applies every key, publishes
// only if all of them are valid (all or nothing).
std::string apply_policy_args(PolicySlot& slot, std::string_view args, std::string& out) {
  std::map<std::string, std::string, std::less<>> kv;
  std::string err;
  auto cur = slot.load();
  if (args.empty()) {
    out += "policy " + policy_line(cur ? *cur : Policy{}) + "\n";
    return {};
  }
  if (!parse_kv_args(args, kv, &err)) return err;
  Policy next = cur ? *cur : Policy{};
  auto flag = [&](const std::string& k, bool& into) -> std::string {
    const std::string& v = kv[k];
    if (v != "0" && v != "1") return k + "=" + v + ": expected 0 or 1";
    into = v == "1";
    return {};
  };
  for (const auto& [k, v] : kv) {
    std::string e;
    if (k == "allow") {
      Acl acl;
      if (v != "none" && !v.empty() && !acl.add_list(v, &e)) return "allow=" + v + ": " + e + " (policy unchanged)";
      next.allow = std::move(acl);
    } else if (k == "refuse") {
      e = flag(k, next.refuse_outside);
    } else if (k == "stale-on-limit") {
      e = flag(k, next.stale_on_limit);
    } else if (k == "miss-rate" || k == "miss-burst") {
      uint32_t n = 0;
      if (!to_u32(v, n)) e = k + "=" + v + ": expected a non-negative integer";
      else (k == "miss-rate" ? next.miss_rate_qps : next.miss_burst) = n;
    } else {
      e = "unknown key '" + k + "'; keys: allow, refuse, miss-rate, miss-burst, stale-on-limit";
    }
    if (!e.empty()) return e + " (policy unchanged)";
  }
  slot.publish(std::make_shared<const Policy>(std::move(next)));
  out += "policy " + policy_line(*slot.load()) + "\n";
  return {};
}

}  // namespace tern::dp
