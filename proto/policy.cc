#include "proto/policy.h"

#include <charconv>
#include <map>
#include <variant>

namespace tern::proto {
namespace {

using Field = std::variant<uint64_t Policy::*, uint32_t Policy::*, bool Policy::*,
                           std::vector<Prefix> Policy::*, uint64_t CacheLimits::*,
                           uint32_t CacheLimits::*>;
struct Key {
  std::string_view name;
  Field field;
};

// The one list of policy keys: encode writes them in this order, decode accepts exactly these.
const Key kKeys[] = {
    {"generation", &Policy::generation},
    {"allow", &Policy::allow},
    {"refuse", &Policy::refuse_outside},
    {"miss-rate", &Policy::miss_rate},
    {"miss-burst", &Policy::miss_burst},
    {"stale-on-limit", &Policy::stale_on_limit},
    {"cache-bytes", &CacheLimits::max_bytes},
    {"ttl-floor", &CacheLimits::ttl_floor},
    {"ttl-cap", &CacheLimits::ttl_cap},
    {"neg-ttl-cap", &CacheLimits::neg_ttl_cap},
    {"servfail-ttl", &CacheLimits::servfail_ttl},
    {"stale-window", &CacheLimits::stale_window},
    {"stale-answer-ttl", &CacheLimits::stale_answer_ttl},
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

std::vector<std::string_view> policy_keys() {
  std::vector<std::string_view> v;
  for (const Key& k : kKeys) v.push_back(k.name);
  return v;
}

std::string encode_policy(const Policy& p) {
  std::string out;
  for (const Key& k : kKeys) {
    if (!out.empty()) out += ' ';
    out += k.name;
    out += '=';
    std::visit(
        [&](auto mp) {
          using M = decltype(mp);
          if constexpr (std::is_same_v<M, std::vector<Prefix> Policy::*>) out += prefix_list_text(p.*mp);
          else if constexpr (std::is_same_v<M, bool Policy::*>) out += (p.*mp) ? '1' : '0';
          else if constexpr (std::is_same_v<M, uint64_t CacheLimits::*> ||
                             std::is_same_v<M, uint32_t CacheLimits::*>)
            out += std::to_string(p.cache.*mp);
          else out += std::to_string(p.*mp);
        },
        k.field);
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
        [&](auto mp) {
          using M = decltype(mp);
          auto expect = [&](std::string_view what) {
            bad = std::string(name) + "=" + std::string(value) + ": expected " + std::string(what);
          };
          if constexpr (std::is_same_v<M, std::vector<Prefix> Policy::*>) {
            std::string e;
            if (!parse_prefix_list(value, next.*mp, &e)) bad = std::string(name) + ": " + e;
          } else if constexpr (std::is_same_v<M, bool Policy::*>) {
            if (value != "0" && value != "1") return expect("0 or 1");
            next.*mp = value == "1";
          } else if constexpr (std::is_same_v<M, uint64_t CacheLimits::*> ||
                               std::is_same_v<M, uint32_t CacheLimits::*>) {
            if (!to_uint(value, next.cache.*mp)) expect("a non-negative integer");
          } else {
            if (!to_uint(value, next.*mp)) expect("a non-negative integer");
          }
        },
        key->field);
    if (!bad.empty()) return fail(bad);
  }
  p = std::move(next);
  return true;
}

}  // namespace tern::proto
