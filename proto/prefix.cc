#include "proto/prefix.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace tern::proto {

std::string Prefix::text() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(len);
}

bool Prefix::contains(const uint8_t* a, bool a_v6) const {
  if (a_v6 != v6) return false;
  unsigned full = len / 8, rest = len % 8;
  if (std::memcmp(a, addr.data(), full) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == addr[full];
}

std::optional<Prefix> parse_prefix(std::string_view text, std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<Prefix> {
    if (error) *error = "'" + std::string(text) + "': " + why;
    return std::nullopt;
  };
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  Prefix p;
  std::string_view host = text, len;
  const bool has_len = text.find('/') != std::string_view::npos;
  if (has_len) {
    host = text.substr(0, text.find('/'));
    len = text.substr(text.find('/') + 1);
  }
  std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), p.addr.data()) == 1) {
    p.len = 32;
  } else if (inet_pton(AF_INET6, h.c_str(), p.addr.data()) == 1) {
    p.v6 = true;
    p.len = 128;
  } else {
    return fail("'" + h + "' is not an IPv4 or IPv6 address (expected e.g. 198.18.0.0/15 or 2001:2::/48)");
  }
  if (has_len) {
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), v);
    if (ec != std::errc() || ptr != len.data() + len.size() || len.empty())
      return fail("prefix length '" + std::string(len) + "' is not a number");
    if (v > p.len)
      return fail("prefix length " + std::to_string(v) + " is longer than " + std::to_string(p.len));
    p.len = static_cast<uint8_t>(v);
  }
  Prefix masked = p;
  const unsigned bytes = p.v6 ? 16 : 4;
  for (unsigned i = 0; i < bytes; ++i) {
    const unsigned bits = p.len > i * 8 ? std::min(8u, p.len - i * 8) : 0;
    masked.addr[i] &= bits ? static_cast<uint8_t>(0xff << (8 - bits)) : 0;
  }
  if (masked.addr != p.addr) return fail("host bits set; did you mean " + masked.text() + "?");
  return p;
}

bool parse_prefix_list(std::string_view text, std::vector<Prefix>& out, std::string* error) {
  std::vector<Prefix> parsed;
  if (text == "none" || text.empty()) {
    out.clear();
    return true;
  }
  for (;;) {
    const size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    if (item.empty()) {
      if (error) *error = "empty prefix in list (two commas, or a leading or trailing comma)";
      return false;
    }
    auto p = parse_prefix(item, error);
    if (!p) return false;
    parsed.push_back(*p);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  out = std::move(parsed);
  return true;
}

std::string prefix_list_text(const std::vector<Prefix>& list) {
  if (list.empty()) return "none";
  std::string s;
  for (const Prefix& p : list) {
    if (!s.empty()) s += ',';
    s += p.text();
  }
  return s;
}

}  // namespace tern::proto
