#include "proto/policy.h"

#include <charconv>
#include <cstdint>
#include <map>
#include <type_traits>
#include <variant>

namespace tern::proto {
namespace {

// Every key names one field of the policy; a key's accessor returns a pointer to it, so encode
// and decode walk the same table and cannot disagree about where a value lives.
using Ref = std::variant<uint64_t*, uint32_t*, bool*, std::vector<Prefix>*, PuntBudget*>;
struct Key {
  std::string_view name;
  Ref (*ref)(Policy&);
  uint64_t max = UINT64_MAX;  // integers: largest value accepted
};

// The one list of policy keys: encode writes them in this order, decode accepts exactly these.
const Key kKeys[] = {
    {"generation", [](Policy& p) -> Ref { return &p.generation; }},
    {"allow", [](Policy& p) -> Ref { return &p.allow; }},
    {"refuse", [](Policy& p) -> Ref { return &p.refuse_outside; }},
    {"miss-rate", [](Policy& p) -> Ref { return &p.miss_rate; }},
    {"miss-burst", [](Policy& p) -> Ref { return &p.miss_burst; }},
    {"stale-on-limit", [](Policy& p) -> Ref { return &p.stale_on_limit; }},
    {"cache-bytes", [](Policy& p) -> Ref { return &p.cache.max_bytes; }},
    {"ttl-floor", [](Policy& p) -> Ref { return &p.cache.ttl_floor; }},
    {"ttl-cap", [](Policy& p) -> Ref { return &p.cache.ttl_cap; }},
    {"neg-ttl-cap", [](Policy& p) -> Ref { return &p.cache.neg_ttl_cap; }},
    {"servfail-ttl", [](Policy& p) -> Ref { return &p.cache.servfail_ttl; }},
    {"stale-window", [](Policy& p) -> Ref { return &p.cache.stale_window; }},
    {"stale-answer-ttl", [](Policy& p) -> Ref { return &p.cache.stale_answer_ttl; }},
    {"rrl-responses", [](Policy& p) -> Ref { return &p.rrl.responses_per_s; }},
    {"rrl-errors", [](Policy& p) -> Ref { return &p.rrl.errors_per_s; }},
    {"rrl-burst", [](Policy& p) -> Ref { return &p.rrl.burst_s; }},
    {"rrl-slip", [](Policy& p) -> Ref { return &p.rrl.slip; }},
    {"rrl-ipv4-prefix", [](Policy& p) -> Ref { return &p.rrl.ipv4_prefix; }, 32},
    {"rrl-ipv6-prefix", [](Policy& p) -> Ref { return &p.rrl.ipv6_prefix; }, 128},
    {"punt-arp-nd", [](Policy& p) -> Ref { return &p.punt.arp_nd; }},
    {"punt-resolver", [](Policy& p) -> Ref { return &p.punt.resolver_replies; }},
    {"punt-routing", [](Policy& p) -> Ref { return &p.punt.routing; }},
    {"punt-dns-tcp", [](Policy& p) -> Ref { return &p.punt.dns_tcp; }},
    {"punt-other", [](Policy& p) -> Ref { return &p.punt.other; }},
    {"punt-ring-reserve", [](Policy& p) -> Ref { return &p.punt.ring_reserve_pct; }, 100},
};

template <class T>
bool to_uint(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

std::string key_list() {
  std::string s;
  for (const Key& k : kKeys) s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

}  // namespace

bool parse_rate_burst(std::string_view text, PuntBudget& out, std::string* error) {
  const size_t slash = text.find('/');
  PuntBudget b{};
  if (slash == std::string_view::npos || !to_uint(text.substr(0, slash), b.rate_per_s) ||
      !to_uint(text.substr(slash + 1), b.burst) || b.burst == 0) {
    if (error) *error = "expected RATE/BURST: frames per second and a bucket depth of at least 1, e.g. 1000/200";
    return false;
  }
  out = b;
  return true;
}

std::string rate_burst_text(const PuntBudget& b) {
  return std::to_string(b.rate_per_s) + '/' + std::to_string(b.burst);
}

std::vector<std::string_view> policy_keys() {
  std::vector<std::string_view> v;
  for (const Key& k : kKeys) v.push_back(k.name);
  return v;
}

std::string encode_policy(const Policy& policy) {
  Policy p = policy;  // the accessors hand out mutable pointers; encoding only reads them
  std::string out;
  for (const Key& k : kKeys) {
    if (!out.empty()) out += ' ';
    out += k.name;
    out += '=';
    std::visit(
        [&](auto* v) {
          using V = std::remove_pointer_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::vector<Prefix>>) out += prefix_list_text(*v);
          else if constexpr (std::is_same_v<V, bool>) out += *v ? '1' : '0';
          else if constexpr (std::is_same_v<V, PuntBudget>)
            out += rate_burst_text(*v);
          else out += std::to_string(*v);
        },
        k.ref(p));
  }
  return out;
}

bool decode_policy(std::string_view text, Policy& p, std::string* error) {
  Policy next = p;
  std::map<std::string_view, bool> seen;
  auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return false;
  };
  while (!text.empty()) {
    const size_t sp = text.find(' ');
    std::string_view tok = text.substr(0, sp);
    text.remove_prefix(sp == std::string_view::npos ? text.size() : sp + 1);
    if (tok.empty()) continue;
    const size_t eq = tok.find('=');
    if (eq == std::string_view::npos || eq == 0) return fail("expected key=value, got '" + std::string(tok) + "'");
    std::string_view name = tok.substr(0, eq), value = tok.substr(eq + 1);
    const Key* key = nullptr;
    for (const Key& k : kKeys)
      if (k.name == name) key = &k;
    if (!key) return fail("unknown key '" + std::string(name) + "'; keys: " + key_list());
    if (seen[key->name]) return fail("'" + std::string(name) + "' given twice");
    seen[key->name] = true;
    std::string bad;
    std::visit(
        [&](auto* v) {
          using V = std::remove_pointer_t<decltype(v)>;
          auto expect = [&](std::string_view what) {
            bad = std::string(name) + "=" + std::string(value) + ": expected " + std::string(what);
          };
          if constexpr (std::is_same_v<V, std::vector<Prefix>>) {
            std::string e;
            if (!parse_prefix_list(value, *v, &e)) bad = std::string(name) + ": " + e;
          } else if constexpr (std::is_same_v<V, bool>) {
            if (value != "0" && value != "1") return expect("0 or 1");
            *v = value == "1";
          } else if constexpr (std::is_same_v<V, PuntBudget>) {
            std::string e;
            if (!parse_rate_burst(value, *v, &e)) bad = std::string(name) + "=" + std::string(value) + ": " + e;
          } else {
            V n{};
            if (!to_uint(value, n)) return expect("a non-negative integer");
            if (n > key->max) return expect("an integer from 0 to " + std::to_string(key->max));
            *v = n;
          }
        },
        key->ref(next));
    if (!bad.empty()) return fail(bad);
  }
  p = std::move(next);
  return true;
}

}  // namespace tern::proto
