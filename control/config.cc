// Config parsing: Boost.Program_options reads the INI file (options declared from the
// table in options.cc, list options composing); a light pre-scan of the same text maps every
// `section.name` occurrence to its line, because Boost.PO keeps no line numbers. The n-th
// occurrence of a key in Boost's parsed options is the n-th line the pre-scan saw for it:
// both walk the file top to bottom with the same comment, section and `=` rules.
#include "control/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>

#include "control/options.h"

namespace po = boost::program_options;

namespace tern::control {

// ---------------------------------------------------------------------------------------
// Diagnostics

std::string Diagnostic::str() const {
  std::string s = file;
  if (line) s += ":" + std::to_string(line);
  s += severity == Severity::error ? ": error: " : ": warning: ";
  if (!option.empty()) s += option + ": ";
  s += message;
  if (!hint.empty()) s += "; " + hint;
  return s;
}

bool ParseResult::has_errors() const {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const Diagnostic& d) { return d.severity == Severity::error; });
}

bool ParseResult::has_warnings() const {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const Diagnostic& d) { return d.severity == Severity::warning; });
}

int ParseResult::check_exit_code() const {
  if (has_errors()) return 1;
  if (has_warnings()) return 2;
  return 0;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    unsigned d = static_cast<unsigned>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Addresses

std::optional<Endpoint> parse_endpoint(std::string_view text, uint16_t default_port,
                                       std::string& err) {
  text = trim(text);
  std::string host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      err = "'" + std::string(text) + "' has '[' without ']'";
      return std::nullopt;
    }
    host = std::string(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' && rest.front() != '@') {
        err = "'" + std::string(text) + "': expected ':PORT' after ']'";
        return std::nullopt;
      }
      port_text = rest.substr(1);
      if (port_text.empty()) {
        err = "'" + std::string(text) + "': port missing after ':'";
        return std::nullopt;
      }
    }
  } else if (size_t at = text.rfind('@'); at != std::string_view::npos) {
    host = std::string(text.substr(0, at));
    port_text = text.substr(at + 1);
    if (port_text.empty()) {
      err = "'" + std::string(text) + "': port missing after '@'";
      return std::nullopt;
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    size_t colon = text.find(':');
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (port_text.empty()) {
      err = "'" + std::string(text) + "': port missing after ':'";
      return std::nullopt;
    }
  } else {
    host = std::string(text);  // bare IPv4 or IPv6 address
  }

  uint16_t port = default_port;
  if (!port_text.empty()) {
    uint64_t p = 0;
    if (!parse_u64(port_text, p) || p == 0 || p > 65535) {
      err = "'" + std::string(text) + "': port '" + std::string(port_text) +
            "' is not a number from 1 to 65535";
      return std::nullopt;
    }
    port = static_cast<uint16_t>(p);
  }

  Endpoint e;
  char buf[INET6_ADDRSTRLEN] = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&e.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    e.len = sizeof(sockaddr_in);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    e.text = std::string(buf) + ":" + std::to_string(port);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    e.len = sizeof(sockaddr_in6);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    e.text = "[" + std::string(buf) + "]:" + std::to_string(port);
  } else {
    err = "'" + std::string(host) + "' is not an IPv4 or IPv6 address";
    if (text.find(':') != std::string_view::npos && text.front() != '[' &&
        text.find('@') == std::string_view::npos && host.find('.') == std::string::npos)
      err += " (write an IPv6 address with a port as [ADDR]:PORT)";
    return std::nullopt;
  }
  return e;
}

// One prefix parser for both processes (proto/prefix.h); this adds the socket form.
std::optional<Prefix> parse_prefix(std::string_view text, std::string& err) {
  auto p = proto::parse_prefix(text, &err);
  if (!p) return std::nullopt;
  Prefix out;
  out.len = p->len;
  out.text = p->text();
  if (p->v6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&out.net);
    s->sin6_family = AF_INET6;
    std::memcpy(&s->sin6_addr, p->addr.data(), 16);
  } else {
    auto* s = reinterpret_cast<sockaddr_in*>(&out.net);
    s->sin_family = AF_INET;
    std::memcpy(&s->sin_addr, p->addr.data(), 4);
  }
  return out;
}

proto::Policy dataplane_policy(const Config& c) {
  proto::Policy p;
  p.generation = c.generation;
  for (const Prefix& a : c.allow) {
    std::string err;
    if (auto pp = proto::parse_prefix(a.text, &err)) p.allow.push_back(*pp);  // a.text is canonical
  }
  p.refuse_outside = c.dp_refuse_outside;
  p.miss_rate = c.dp_miss_rate;
  p.miss_burst = c.dp_miss_burst;
  p.stale_on_limit = c.dp_stale_on_limit && c.serve_stale;
  p.cache.max_bytes = c.dp_cache_bytes;
  p.cache.ttl_floor = c.ttl_floor;
  p.cache.ttl_cap = c.ttl_cap;
  p.cache.neg_ttl_cap = c.neg_ttl_cap;
  p.cache.servfail_ttl = c.servfail_ttl;
  p.cache.stale_window = c.serve_stale ? c.stale_window : 0;
  p.cache.stale_answer_ttl = c.stale_answer_ttl;
  p.rrl.responses_per_s = c.dp_rrl_responses;
  p.rrl.errors_per_s = c.dp_rrl_errors;
  p.rrl.burst_s = c.dp_rrl_burst_s;
  p.rrl.slip = c.dp_rrl_slip;
  p.rrl.ipv4_prefix = c.dp_rrl_ipv4_prefix;
  p.rrl.ipv6_prefix = c.dp_rrl_ipv6_prefix;
  p.punt.arp_nd = c.dp_punt_arp_nd;
  p.punt.resolver_replies = c.dp_punt_resolver;
  p.punt.routing = c.dp_punt_routing;
  p.punt.dns_tcp = c.dp_punt_dns_tcp;
  p.punt.other = c.dp_punt_other;
  p.punt.ring_reserve_pct = c.dp_punt_ring_reserve;
  return p;
}

bool Prefix::contains(const sockaddr* a) const {
  if (!a) return false;
  const unsigned char* want = nullptr;
  const unsigned char* have = nullptr;
  if (net.ss_family == AF_INET) {
    want = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in*>(&net)->sin_addr);
    if (a->sa_family == AF_INET) {
      have = reinterpret_cast<const unsigned char*>(
          &reinterpret_cast<const sockaddr_in*>(a)->sin_addr);
    } else if (a->sa_family == AF_INET6) {
      const auto* in6 = &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr;
      if (!IN6_IS_ADDR_V4MAPPED(in6)) return false;
      have = reinterpret_cast<const unsigned char*>(in6) + 12;  // RFC 4291 2.5.5.2
    } else {
      return false;
    }
  } else if (net.ss_family == AF_INET6) {
    if (a->sa_family != AF_INET6) return false;
    want = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in6*>(&net)->sin6_addr);
    have = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr);
  } else {
    return false;
  }
  unsigned full = len / 8, rest = len % 8;
  if (std::memcmp(want, have, full) != 0) return false;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (want[full] & mask) == (have[full] & mask);
}

namespace {

// ---------------------------------------------------------------------------------------
// Value conversion, one function per OptType. Each returns false with `err` saying what was
// expected; the caller adds file, line and option.

bool to_bool(std::string_view v, bool& out, std::string& err) {
  std::string l = lower(v);
  if (l == "yes" || l == "true" || l == "on" || l == "1") return out = true, true;
  if (l == "no" || l == "false" || l == "off" || l == "0") return out = false, true;
  err = "'" + std::string(v) + "' is not a boolean: expected yes or no";
  return false;
}

bool in_range(const OptionSpec& o, uint64_t v, std::string_view v_text, std::string_view unit,
              std::string& err) {
  if (v >= o.min && v <= o.max) return true;
  err = "'" + std::string(v_text) + "' is out of range: expected " + std::to_string(o.min) +
        std::string(unit) + " to " + std::to_string(o.max) + std::string(unit);
  return false;
}

bool to_number(const OptionSpec& o, std::string_view v, uint64_t& out, std::string& err) {
  std::string_view digits = v;
  size_t n = 0;
  while (n < v.size() && std::isdigit(static_cast<unsigned char>(v[n]))) ++n;
  digits = v.substr(0, n);
  std::string suffix = lower(trim(v.substr(n)));
  uint64_t base = 0;
  if (!parse_u64(digits, base)) {
    err = "'" + std::string(v) + "' is not " + std::string(type_syntax(o.type));
    return false;
  }
  uint64_t mult = 1;
  std::string unit;
  switch (o.type) {
    case OptType::uint:
    case OptType::count_auto:
      if (!suffix.empty()) {
        err = "'" + std::string(v) + "' is not a plain decimal integer";
        return false;
      }
      break;
    case OptType::size:
      unit = " bytes";
      if (suffix.empty() || suffix == "b") mult = 1;
      else if (suffix == "k" || suffix == "kb" || suffix == "kib") mult = 1ull << 10;
      else if (suffix == "m" || suffix == "mb" || suffix == "mib") mult = 1ull << 20;
      else if (suffix == "g" || suffix == "gb" || suffix == "gib") mult = 1ull << 30;
      else if (suffix == "t" || suffix == "tb" || suffix == "tib") mult = 1ull << 40;
      else {
        err = "'" + std::string(v) + "': unknown size suffix '" + suffix +
              "'; expected K, M, G or T";
        return false;
      }
      break;
    case OptType::duration_ms:
      unit = " ms";
      if (suffix.empty() || suffix == "ms") mult = 1;
      else if (suffix == "s") mult = 1000;
      else if (suffix == "m") mult = 60'000;
      else if (suffix == "h") mult = 3'600'000;
      else if (suffix == "d") mult = 86'400'000;
      else {
        err = "'" + std::string(v) + "': unknown duration unit '" + suffix +
              "'; expected ms, s, m, h or d";
        return false;
      }
      break;
    case OptType::duration_s:
      unit = " s";
      if (suffix.empty() || suffix == "s") mult = 1;
      else if (suffix == "m") mult = 60;
      else if (suffix == "h") mult = 3600;
      else if (suffix == "d") mult = 86400;
      else if (suffix == "ms") {
        err = "'" + std::string(v) + "': this option has whole-second resolution; use s, m, h or d";
        return false;
      } else {
        err = "'" + std::string(v) + "': unknown duration unit '" + suffix +
              "'; expected s, m, h or d";
        return false;
      }
      break;
    default:
      err = "internal: not a numeric option";
      return false;
  }
  if (base > std::numeric_limits<uint64_t>::max() / mult) {
    err = "'" + std::string(v) + "' is too large";
    return false;
  }
  out = base * mult;
  return in_range(o, out, v, unit, err);
}

// RFC 1035 2.3.4: labels 1..63 octets, a name at most 255 octets in wire form.
bool to_zone_name(std::string_view v, std::string& out, std::string& err) {
  std::string name = lower(v);
  if (name.empty()) {
    err = "zone name missing";
    return false;
  }
  if (name == ".") {
    out = name;
    return true;
  }
  if (name.back() != '.') name += '.';
  if (name.front() == '.') {
    err = "zone name '" + std::string(v) + "' starts with a dot";
    return false;
  }
  size_t wire = 1, label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) {
        err = "zone name '" + std::string(v) + "' has an empty label";
        return false;
      }
      wire += label + 1;
      label = 0;
      continue;
    }
    if (!std::isgraph(static_cast<unsigned char>(c)) || c == '\\') {
      err = "zone name '" + std::string(v) + "' contains an invalid character";
      return false;
    }
    if (++label > 63) {
      err = "zone name '" + std::string(v) + "' has a label longer than 63 octets";
      return false;
    }
  }
  if (wire > 255) {
    err = "zone name '" + std::string(v) + "' is longer than 255 octets";
    return false;
  }
  out = name;
  return true;
}

bool to_zone_route(std::string_view v, ZoneRoute& out, std::string& err) {
  auto words = split_ws(v);
  if (words.size() < 2) {
    err = "'" + std::string(v) + "': expected a zone name and at least one server address";
    return false;
  }
  if (!to_zone_name(words[0], out.zone, err)) return false;
  for (size_t i = 1; i < words.size(); ++i) {
    auto e = parse_endpoint(words[i], 53, err);
    if (!e) return false;
    out.servers.push_back(std::move(*e));
  }
  return true;
}

// Converts one value string of option `o` and stores it into `cfg`. List types append.
bool apply_value(const OptionSpec& o, std::string_view value, Config& cfg, std::string& err) {
  value = trim(value);
  if (value.empty() && o.type != OptType::string && o.type != OptType::path) {
    err = "empty value: expected " + std::string(type_syntax(o.type));
    return false;
  }
  switch (o.type) {
    case OptType::boolean: {
      bool b = false;
      if (!to_bool(value, b, err)) return false;
      cfg.*std::get<bool Config::*>(o.field) = b;
      return true;
    }
    case OptType::uint:
    case OptType::count_auto:
    case OptType::size:
    case OptType::duration_ms:
    case OptType::duration_s: {
      uint64_t n = 0;
      if (o.type == OptType::count_auto && lower(value) == "auto")
        n = 0;  // resolved where it is used (e.g. the CPUs the process may run on)
      else if (!to_number(o, value, n, err))
        return false;
      return std::visit(
          [&](auto mp) {
            using V = std::remove_reference_t<decltype(cfg.*mp)>;
            if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
              if (n > std::numeric_limits<V>::max()) {
                err = "'" + std::string(value) + "' does not fit";
                return false;
              }
              cfg.*mp = static_cast<V>(n);
              return true;
            } else {
              err = "internal: numeric option bound to a non-numeric field";
              return false;
            }
          },
          o.field);
    }
    case OptType::string:
    case OptType::path:
      cfg.*std::get<std::string Config::*>(o.field) = std::string(value);
      return true;
    case OptType::endpoint_list: {
      auto& list = cfg.*std::get<std::vector<Endpoint> Config::*>(o.field);
      for (auto w : split_ws(value)) {
        auto e = parse_endpoint(w, 53, err);
        if (!e) return false;
        list.push_back(std::move(*e));
      }
      return true;
    }
    case OptType::prefix_list: {
      auto& list = cfg.*std::get<std::vector<Prefix> Config::*>(o.field);
      for (auto w : split_ws(value)) {
        auto p = parse_prefix(w, err);
        if (!p) return false;
        list.push_back(std::move(*p));
      }
      return true;
    }
    case OptType::rate_burst: {
      std::string e;
      if (!proto::parse_rate_burst(value, cfg.*std::get<proto::PuntBudget Config::*>(o.field), &e)) {
        err = "'" + std::string(value) + "': " + e;
        return false;
      }
      return true;
    }
    case OptType::zone_list: {
      ZoneRoute z;
      if (!to_zone_route(value, z, err)) return false;
      (cfg.*std::get<std::vector<ZoneRoute> Config::*>(o.field)).push_back(std::move(z));
      return true;
    }
  }
  err = "internal: unknown option type";
  return false;
}

size_t list_size(const OptionSpec& o, const Config& cfg) {
  return std::visit(
      [&](auto mp) -> size_t {
        using V = std::remove_cvref_t<decltype(cfg.*mp)>;
        if constexpr (std::is_arithmetic_v<V> || std::is_same_v<V, std::string> ||
                      std::is_same_v<V, proto::PuntBudget>)
          return 0;
        else return (cfg.*mp).size();
      },
      o.field);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(static_cast<unsigned char>(a[i - 1])) !=
                                  std::tolower(static_cast<unsigned char>(b[j - 1])));
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest known option to an unknown `section.name`, or "" when nothing is close.
// A name that exists in another section is the best match of all: wrong section header.
std::string suggest(std::string_view section, std::string_view name) {
  const OptionSpec* best = nullptr;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& o : options()) {
    size_t d = edit_distance(name, o.name);
    // "listen-address" for "listen", "max-bytes-total" for "max-bytes": one name extends the
    // other. Count that as one edit, whatever the length of the extension.
    std::string_view shorter = name.size() < o.name.size() ? name : o.name;
    std::string_view longer = name.size() < o.name.size() ? o.name : name;
    if (shorter.size() >= 4 && longer.substr(0, shorter.size()) == shorter) d = std::min<size_t>(d, 1);
    d = d * 2 + (o.section == section ? 0 : 1);  // same distance: prefer the same section
    if (d < best_d) best_d = d, best = &o;
  }
  size_t limit = 2 * std::max<size_t>(2, name.size() / 3) + 1;
  if (!best || best_d > limit) return "";
  if (best->name == name) return "did you mean " + best->display() + "? (it belongs in section [" +
                                 std::string(best->section) + "])";
  return "did you mean " + best->display() + "?";
}

// ---------------------------------------------------------------------------------------
// Pre-scan: the same line rules as Boost.PO's common_config_file_iterator (strip from '#',
// trim, "[section]" sets the prefix, "name = value" is an option, anything else is a syntax
// error), recording the line of every key occurrence.

struct Prescan {
  std::map<std::string, std::vector<unsigned>> lines;  // key -> lines, in file order
  std::vector<Diagnostic> errors;
  // The text with every line that has a syntax error blanked (line numbers unchanged), so
  // one pass reports syntax errors and everything else in the file together.
  std::string sanitized;
};

// Boost.PO's own whitespace set for config lines (config_file.cpp trim_ws): the pre-scan must
// cut lines exactly as Boost does, or the two would disagree about what a line is.
std::string_view boost_trim(std::string_view s) {
  constexpr std::string_view ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

Prescan prescan(std::string_view text, const std::string& file) {
  Prescan ps;
  std::string prefix;
  unsigned lineno = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.size() - pos
                                                                          : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++lineno;
    const std::string_view raw = line;
    auto keep = [&] { ps.sanitized.append(raw).push_back('\n'); };
    auto blank = [&] { ps.sanitized.push_back('\n'); };
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = boost_trim(line);
    if (line.empty()) {
      keep();
      continue;
    }
    if (line.front() == '[' && line.back() == ']') {
      std::string_view sec = line.substr(1, line.size() - 2);
      if (sec.empty() || std::any_of(sec.begin(), sec.end(), [](char c) {
            return std::isspace(static_cast<unsigned char>(c));
          })) {
        ps.errors.push_back({Severity::error, file, lineno, "",
                             "section header '" + std::string(line) + "' is not one word",
                             "write it as [server], [recursion], [cache] or [health]"});
      }
      prefix = std::string(sec);
      if (prefix.empty() || prefix.back() != '.') prefix += '.';
      keep();
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      auto ctl = std::find_if(line.begin(), line.end(), [](char c) {
        return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
      });
      if (ctl != line.end()) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(*ctl));
        ps.errors.push_back({Severity::error, file, lineno, "",
                             std::string("line contains the control character ") + hex +
                                 " at column " + std::to_string(ctl - line.begin() + 1 +
                                                                (line.data() - raw.data())),
                             "delete it (an editor may show it as ^K, ^L or nothing at all)"});
      } else {
        ps.errors.push_back({Severity::error, file, lineno, "",
                             "line '" + std::string(line) + "' is neither [section] nor name = value",
                             "options are written as name = value"});
      }
      blank();
      continue;
    }
    std::string_view name = boost_trim(line.substr(0, eq));
    if (name.empty()) {
      ps.errors.push_back({Severity::error, file, lineno, "", "option name missing before '='",
                           ""});
      blank();
      continue;
    }
    ps.lines[prefix + std::string(name)].push_back(lineno);
    keep();
  }
  return ps;
}

std::pair<std::string, std::string> split_key(const std::string& key) {
  size_t dot = key.find('.');
  if (dot == std::string::npos) return {"", key};
  return {key.substr(0, dot), key.substr(dot + 1)};
}

std::string display_key(const std::string& key) {
  auto [sec, name] = split_key(key);
  if (sec.empty()) return name + " (outside any section)";
  return "[" + sec + "] " + name;
}

// The share of its family's address space that the prefixes allow[idx...] (one family)
// cover together. Aligned prefixes either nest or are disjoint: sorted by address then
// length, a prefix inside an earlier one is inside the last one kept.
double allow_share(const std::vector<Prefix>& allow, const std::vector<size_t>& idx) {
  auto bytes = [&](size_t i) {
    std::array<unsigned char, 16> b{};
    const auto& ss = allow[i].net;
    if (ss.ss_family == AF_INET)
      std::memcpy(b.data(), &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
    else
      std::memcpy(b.data(), &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, 16);
    return b;
  };
  std::vector<std::pair<std::array<unsigned char, 16>, unsigned>> ps;
  for (size_t i : idx) ps.emplace_back(bytes(i), allow[i].len);
  std::sort(ps.begin(), ps.end());
  auto inside = [](const auto& inner, const auto& outer) {
    for (unsigned bit = 0; bit < outer.second; ++bit) {
      unsigned char m = static_cast<unsigned char>(0x80 >> (bit % 8));
      if ((inner.first[bit / 8] & m) != (outer.first[bit / 8] & m)) return false;
    }
    return true;
  };
  double share = 0;
  const std::pair<std::array<unsigned char, 16>, unsigned>* last = nullptr;
  for (const auto& p : ps) {
    if (last && inside(p, *last)) continue;
    share += std::ldexp(1.0, -static_cast<int>(p.second));
    last = &p;
  }
  return share;
}

// Nearest existing ancestor of `dir` must be a writable directory for `dir` to be creatable.
bool dir_usable(const std::filesystem::path& dir, std::string& why) {
  std::error_code ec;
  std::filesystem::path p = dir;
  while (!p.empty()) {
    auto st = std::filesystem::status(p, ec);
    if (!ec && std::filesystem::exists(st)) {
      if (!std::filesystem::is_directory(st)) {
        why = p.string() + " exists and is not a directory";
        return false;
      }
      if (p != dir && access(p.c_str(), W_OK | X_OK) != 0) {
        why = dir.string() + " does not exist and cannot be created: " + p.string() +
              " is not writable (" + std::strerror(errno) + ")";
        return false;
      }
      return true;
    }
    if (p == p.parent_path()) break;
    p = p.parent_path();
  }
  why = dir.string() + " has no existing parent directory";
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------

ParseResult parse_config_text(std::string_view text, const std::string& name) {
  ParseResult r;
  auto& diags = r.diagnostics;
  auto add = [&](Severity s, unsigned line, std::string option, std::string msg,
                 std::string hint = "") {
    diags.push_back({s, name, line, std::move(option), std::move(msg), std::move(hint)});
  };

  // Editors on other systems save a UTF-8 byte order mark; it is not part of the first line.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  Prescan ps = prescan(text, name);
  diags = std::move(ps.errors);

  po::options_description desc;
  for (const auto& o : options()) {
    std::string key = o.key();
    if (o.repeatable())
      desc.add_options()(key.c_str(), po::value<std::vector<std::string>>()->composing());
    else
      desc.add_options()(key.c_str(), po::value<std::string>());
  }

  po::parsed_options parsed(&desc);
  try {
    std::istringstream in{ps.sanitized};
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
  } catch (const std::exception& e) {
    // The pre-scan rejects everything Boost would; reaching here means the two disagree.
    add(Severity::error, 0, "", std::string("cannot parse: ") + e.what());
    return r;
  }

  std::map<std::string, size_t> seen;                  // original key -> occurrences so far
  std::map<std::string, std::vector<unsigned>> lines;  // final key -> line of each stored value
  std::map<std::string, unsigned> first_line;          // scalar final key -> first line
  auto line_of = [&](const std::string& key) -> unsigned {
    auto it = ps.lines.find(key);
    size_t n = seen[key]++;
    return it != ps.lines.end() && n < it->second.size() ? it->second[n] : 0;
  };
  auto in_file = [&](std::string_view section, std::string_view opt) {
    return ps.lines.count(std::string(section) + "." + std::string(opt)) != 0;
  };

  for (auto& opt : parsed.options) {
    const std::string orig = opt.string_key;
    const unsigned line = line_of(orig);
    auto [section, oname] = split_key(orig);

    if (opt.unregistered) {
      const RemovedOption* rm = nullptr;
      for (const auto& x : removed_options())
        if (x.section == section && x.name == oname) rm = &x;
      if (rm) {
        add(Severity::warning, line, display_key(orig),
            "option was removed in " + std::string(rm->version) + " and is ignored",
            std::string(rm->hint));
        continue;
      }
      const RenamedOption* rn = nullptr;
      for (const auto& x : renamed_options())
        if (x.section == section && x.name == oname) rn = &x;
      if (rn) {
        const OptionSpec* target = find_option(rn->new_section, rn->new_name);
        std::string new_disp = target ? target->display() : std::string(rn->new_name);
        if (in_file(rn->new_section, rn->new_name) && target && !target->repeatable()) {
          add(Severity::warning, line, display_key(orig),
              "option was renamed to " + new_disp + " in " + std::string(rn->version) +
                  "; ignored because " + new_disp + " is also set",
              "delete this line");
          continue;
        }
        add(Severity::warning, line, display_key(orig),
            "option was renamed to " + new_disp + " in " + std::string(rn->version) +
                "; its value is applied to " + new_disp,
            "rename the line to '" + std::string(rn->new_name) + " = ...'" +
                (rn->new_section != section
                     ? " under [" + std::string(rn->new_section) + "]"
                     : std::string()));
        opt.string_key = std::string(rn->new_section) + "." + std::string(rn->new_name);
        opt.unregistered = false;
        // fall through to the registered-option handling under the new name
      } else {
        std::string s = suggest(section, oname);
        add(Severity::error, line, display_key(orig), "unknown option",
            s.empty() ? "`ternctl --dump-options-markdown` lists the options this version knows"
                      : s);
        continue;
      }
    }

    const std::string& key = opt.string_key;
    auto [ksec, kname] = split_key(key);
    const OptionSpec* spec = find_option(ksec, kname);
    if (spec && !spec->repeatable()) {
      if (auto it = first_line.find(key); it != first_line.end()) {
        add(Severity::error, line, spec->display(),
            "given more than once (first at line " + std::to_string(it->second) + ")",
            "keep one line; only list options may repeat");
        opt.unregistered = true;  // keep Boost from throwing multiple_occurrences
        continue;
      }
      first_line[key] = line;
    }
    lines[key].push_back(line);
  }

  po::variables_map vm;
  try {
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    add(Severity::error, 0, "", std::string("cannot parse: ") + e.what());
    return r;
  }

  Config cfg;
  cfg.file = name;
  // key -> line of each element of a list option, parallel to the Config vector, so a
  // cross-check names the line of the very element it is about.
  std::map<std::string, std::vector<unsigned>> elem_lines;
  for (const auto& o : options()) {
    const std::string key = o.key();
    // Lists start empty: a list given in the file replaces the default, it does not extend it.
    std::visit(
        [&](auto mp) {
          using V = std::remove_reference_t<decltype(cfg.*mp)>;
          if constexpr (!std::is_arithmetic_v<V> && !std::is_same_v<V, std::string> &&
                        !std::is_same_v<V, proto::PuntBudget>)
            (cfg.*mp).clear();
        },
        o.field);
    std::string err;
    if (!vm.count(key)) {
      if (o.required) {
        add(Severity::error, 0, o.display(), "required option is missing",
            "add '" + std::string(o.name) + " = ...' under [" + std::string(o.section) + "]");
      } else if (!apply_value(o, o.default_value, cfg, err) && !o.default_value.empty()) {
        add(Severity::error, 0, o.display(), "internal: default '" +
                                                 std::string(o.default_value) +
                                                 "' does not parse: " + err);
      }
      continue;
    }
    const auto& klines = lines[key];
    if (o.repeatable()) {
      const auto& values = vm[key].as<std::vector<std::string>>();
      auto& where = elem_lines[key];
      for (size_t i = 0; i < values.size(); ++i) {
        const unsigned l = i < klines.size() ? klines[i] : 0;
        if (!apply_value(o, values[i], cfg, err))
          add(Severity::error, l, o.display(), err,
              "expected " + std::string(type_syntax(o.type)));
        where.resize(list_size(o, cfg), l);  // one line may hold several elements
      }
    } else if (!apply_value(o, vm[key].as<std::string>(), cfg, err)) {
      add(Severity::error, klines.empty() ? 0 : klines.front(), o.display(), err,
          "expected " + std::string(type_syntax(o.type)));
    }
  }

  r.state_dir = cfg.state_dir;

  // ---- cross-checks: things no single value can say about itself
  auto elem_line = [&](const char* key, size_t i) -> unsigned {
    auto it = elem_lines.find(key);
    return it == elem_lines.end() || i >= it->second.size() ? 0 : it->second[i];
  };
  auto line_for = [&](std::string_view section, std::string_view opt) -> unsigned {
    auto it = lines.find(std::string(section) + "." + std::string(opt));
    return it == lines.end() || it->second.empty() ? 0 : it->second.front();
  };
  bool value_errors = r.has_errors();
  const std::filesystem::path base =
      std::filesystem::path(name).has_parent_path() ? std::filesystem::path(name).parent_path()
                                                    : std::filesystem::path(".");

  if (!cfg.root_hints.empty()) {
    std::filesystem::path p(cfg.root_hints);
    // A relative root-hints path is relative to the config file, not to the daemon's cwd.
    if (p.is_relative()) p = base / p;
    std::error_code ec;
    auto st = std::filesystem::status(p, ec);
    unsigned l = line_for("recursion", "root-hints");
    if (ec || !std::filesystem::exists(st)) {
      add(Severity::error, l, "[recursion] root-hints",
          "file " + p.string() + " does not exist",
          "install the root hints (e.g. Debian's dns-root-data: /usr/share/dns/root.hints) or "
          "fix the path");
    } else if (!std::filesystem::is_regular_file(st)) {
      add(Severity::error, l, "[recursion] root-hints", p.string() + " is not a regular file");
    } else if (access(p.c_str(), R_OK) != 0) {
      add(Severity::error, l, "[recursion] root-hints",
          "file " + p.string() + " is not readable: " + std::strerror(errno),
          "tern-control runs as root; check the file's permissions");
    }
    cfg.root_hints = std::filesystem::absolute(p, ec).lexically_normal().string();
  }

  if (cfg.dnssec_validation && !cfg.trust_anchor_file.empty()) {
    std::filesystem::path p(cfg.trust_anchor_file);
    if (p.is_relative()) p = base / p;  // like root-hints: relative to the config file
    std::error_code ec;
    unsigned l = line_for("dnssec", "trust-anchor-file");
    // The packaged default may be absent on a build machine: tern-control then answers
    // without AD (every answer indeterminate) and says so at start; a file the operator
    // named must exist.
    if (!std::filesystem::is_regular_file(p, ec) && cfg.trust_anchor_file != Config{}.trust_anchor_file)
      add(Severity::error, l, "[dnssec] trust-anchor-file",
          "file " + p.string() + " does not exist or is not a regular file",
          "install tern's root anchor (/usr/share/tern/root.key), point the option at a file "
          "of DS/DNSKEY records, or set [dnssec] validation = no");
    else if (std::filesystem::is_regular_file(p, ec) && access(p.c_str(), R_OK) != 0)
      add(Severity::error, l, "[dnssec] trust-anchor-file",
          "file " + p.string() + " is not readable: " + std::strerror(errno));
    cfg.trust_anchor_file = std::filesystem::absolute(p, ec).lexically_normal().string();
  }
  {
    // Names only; the resolver builds them (RFC 1035 §2.3.4 limits).
    std::istringstream in(cfg.negative_trust_anchors);
    for (std::string n; in >> n;) {
      bool ok = n.size() <= 254 || (n.size() == 255 && n.back() == '.');
      size_t start = 0;
      while (ok && start < n.size()) {
        size_t dot = n.find('.', start);
        size_t len = (dot == std::string::npos ? n.size() : dot) - start;
        ok = (len > 0 && len <= 63) || (n == ".");
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      if (!ok)
        add(Severity::error, line_for("dnssec", "negative-trust-anchors"),
            "[dnssec] negative-trust-anchors", "'" + n + "' is not a domain name",
            "list names separated by spaces, e.g. broken.example. corp.example.");
    }
  }

  if (!value_errors) {
    if (cfg.listen.empty())
      add(Severity::error, line_for("server", "listen"), "[server] listen",
          "no listen address", "give at least one, e.g. listen = 127.0.0.1:53");
    for (size_t i = 0; i < cfg.listen.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (cfg.listen[i] == cfg.listen[j])
          add(Severity::error, elem_line("server.listen", i), "[server] listen",
              cfg.listen[i].text + " is listed twice", "delete one of them");

    for (size_t i = 0; i < cfg.allow.size(); ++i)
      if (const auto& p = cfg.allow[i]; p.len == 0 && !cfg.allow_any)
        add(Severity::error, elem_line("server.allow", i),
            "[server] allow",
            p.text + " allows every address on the internet: an open resolver",
            "list your clients' prefixes, or set allow-any = yes if an open resolver is "
            "really intended");
    // /0 is not the only way to be open: 0.0.0.0/1 128.0.0.0/1 is the same resolver. Sum
    // what the prefixes of each family cover (nested ones once) against allow-max-share.
    if (!cfg.allow_any) {
      for (int family : {AF_INET, AF_INET6}) {
        std::vector<size_t> idx;
        for (size_t i = 0; i < cfg.allow.size(); ++i)
          if (cfg.allow[i].net.ss_family == family) idx.push_back(i);
        if (idx.empty() || std::any_of(idx.begin(), idx.end(),
                                       [&](size_t i) { return cfg.allow[i].len == 0; }))
          continue;  // /0 is reported above
        double share = allow_share(cfg.allow, idx);
        if (share * cfg.allow_max_share <= 1.0) continue;
        size_t widest = *std::min_element(idx.begin(), idx.end(), [&](size_t a, size_t b) {
          return cfg.allow[a].len < cfg.allow[b].len;
        });
        char pct[32];
        std::snprintf(pct, sizeof pct, "%.4g%%", share * 100);
        std::string fam = family == AF_INET ? "IPv4" : "IPv6";
        add(Severity::error, elem_line("server.allow", widest), "[server] allow",
            "the " + fam + " prefixes (widest " + cfg.allow[widest].text + ") cover " + pct +
                " of the " + fam + " address space, more than allow-max-share permits (1/" +
                std::to_string(cfg.allow_max_share) + "): that is close to an open resolver",
            "list your clients' prefixes; if this is intended, raise allow-max-share or set "
            "allow-any = yes");
      }
    }
    if (cfg.allow.empty())
      add(Severity::error, line_for("server", "allow"), "[server] allow", "no allowed prefix",
          "give at least one, e.g. allow = 127.0.0.0/8");

    // Listening beyond loopback while only loopback may ask is almost always a forgotten
    // allow line: the resolver would refuse every remote client.
    bool remote_listen = std::any_of(cfg.listen.begin(), cfg.listen.end(), [](const Endpoint& e) {
      if (e.addr.ss_family == AF_INET)
        return (ntohl(reinterpret_cast<const sockaddr_in*>(&e.addr)->sin_addr.s_addr) >> 24) !=
               127;
      return !IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&e.addr)->sin6_addr);
    });
    if (remote_listen && !in_file("server", "allow"))
      add(Severity::warning, line_for("server", "listen"), "[server] allow",
          "listening beyond loopback but allow is not set: only loopback clients will be answered",
          "add allow = PREFIX for your clients");

    if (cfg.ttl_floor > cfg.ttl_cap)
      add(Severity::error, line_for("cache", "ttl-floor"), "[cache] ttl-floor",
          "ttl-floor (" + std::to_string(cfg.ttl_floor) + " s) is above ttl-cap (" +
              std::to_string(cfg.ttl_cap) + " s)",
          "lower ttl-floor or raise ttl-cap");
    if (cfg.max_outstanding_per_client > cfg.max_outstanding_total)
      add(Severity::warning, line_for("server", "max-outstanding-per-client"),
          "[server] max-outstanding-per-client",
          "is above max-outstanding-total (" + std::to_string(cfg.max_outstanding_total) +
              "): the total limit applies first");

    // Each zone has one route. Walk them in file order so the later line is the one flagged.
    struct Route {
      unsigned line;
      const char* kind;
      const std::string* zone;
    };
    std::vector<Route> routes;
    for (const auto* kind : {"forward-zone", "stub-zone"}) {
      const auto& list = std::string_view(kind) == "forward-zone" ? cfg.forward_zones
                                                                  : cfg.stub_zones;
      for (size_t i = 0; i < list.size(); ++i)
        routes.push_back({elem_line((std::string("recursion.") + kind).c_str(), i), kind,
                          &list[i].zone});
    }
    std::stable_sort(routes.begin(), routes.end(),
                     [](const Route& a, const Route& b) { return a.line < b.line; });
    std::map<std::string, std::pair<const char*, unsigned>> zones;  // zone -> kind, line
    for (const auto& rt : routes) {
      auto [it, fresh] = zones.emplace(*rt.zone, std::make_pair(rt.kind, rt.line));
      if (!fresh)
        add(Severity::error, rt.line, std::string("[recursion] ") + rt.kind,
            "zone " + *rt.zone + " is already routed by " + it->second.first + " (line " +
                std::to_string(it->second.second) + ")",
            "give each zone one forward-zone or stub-zone line with all its servers");
    }
  }

  auto check_socket = [&](const std::string& path, std::string_view opt) {
    if (path.empty()) return;
    unsigned l = line_for("server", opt);
    std::string disp = "[server] " + std::string(opt);
    if (path.front() != '/') {
      add(Severity::error, l, disp, "'" + path + "' is not an absolute path",
          "write the full path, e.g. /run/tern/control.sock");
      return;
    }
    if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      add(Severity::error, l, disp,
          "'" + path + "' is longer than a unix socket path may be (" +
              std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes)",
          "choose a shorter path");
      return;
    }
    std::string why;
    if (opt == "control-socket" &&
        !dir_usable(std::filesystem::path(path).parent_path(), why))
      add(Severity::error, l, disp, why, "create the directory or choose another path");
  };
  check_socket(cfg.control_socket, "control-socket");
  check_socket(cfg.dataplane_socket, "dataplane-socket");
  {
    unsigned l = line_for("server", "state-dir");
    std::string why;
    if (cfg.state_dir.empty() || cfg.state_dir.front() != '/')
      add(Severity::error, l, "[server] state-dir",
          "'" + cfg.state_dir + "' is not an absolute path", "write the full path, e.g. /var/lib/tern");
    else if (!dir_usable(cfg.state_dir, why))
      add(Severity::error, l, "[server] state-dir", why,
          "create the directory or choose another path");
  }

  std::stable_sort(diags.begin(), diags.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return a.line < b.line;
  });
  if (!r.has_errors()) r.config = std::move(cfg);
  return r;
}

ParseResult parse_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ParseResult r;
    r.diagnostics.push_back({Severity::error, path, 0, "",
                             std::string("cannot open config file: ") + std::strerror(errno),
                             "check the path given to --config / ternctl check"});
    return r;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config_text(ss.str(), path);
}

std::vector<std::string> keep_restart_only(const Config& running, Config& next) {
  std::vector<std::string> changed;
  for (const auto& o : options()) {
    if (o.reloadable) continue;
    std::visit(
        [&](auto mp) {
          if (!(running.*mp == next.*mp)) {
            next.*mp = running.*mp;
            changed.push_back(o.display());
          }
        },
        o.field);
  }
  return changed;
}

}  // namespace tern::control

namespace tern::control {

std::string render_config(const Config& c) { return render_config_sections(c, {}); }

std::string render_config_sections(const Config& c, std::initializer_list<std::string_view> only) {
  std::ostringstream out;
  std::string_view section;
  for (const auto& o : options()) {
    if (only.size() && std::find(only.begin(), only.end(), o.section) == only.end()) continue;
    if (o.section != section) {
      section = o.section;
      out << (out.tellp() > 0 ? "\n[" : "[") << section << "]\n";
    }
    std::visit(
        [&](auto mp) {
          using V = std::remove_cvref_t<decltype(c.*mp)>;
          const auto& v = c.*mp;
          if constexpr (std::is_same_v<V, bool>) {
            out << o.name << " = " << (v ? "yes" : "no") << "\n";
          } else if constexpr (std::is_integral_v<V>) {
            if (o.type == OptType::count_auto && v == 0) {
              out << o.name << " = auto\n";
              return;
            }
            out << o.name << " = " << static_cast<uint64_t>(v)
                << (o.type == OptType::duration_ms  ? "ms"
                    : o.type == OptType::duration_s ? "s"
                                                    : "")
                << "\n";
          } else if constexpr (std::is_same_v<V, std::string>) {
            if (!v.empty() || !o.required) out << o.name << " = " << v << "\n";
          } else if constexpr (std::is_same_v<V, proto::PuntBudget>) {
            out << o.name << " = " << proto::rate_burst_text(v) << "\n";
          } else if constexpr (std::is_same_v<V, std::vector<ZoneRoute>>) {
            for (const auto& z : v) {
              out << o.name << " = " << z.zone;
              for (const auto& s : z.servers) out << " " << s.text;
              out << "\n";
            }
          } else {  // endpoint and prefix lists: one per line
            for (const auto& e : v) out << o.name << " = " << e.text << "\n";
          }
        },
        o.field);
  }
  return out.str();
}

}  // namespace tern::control
