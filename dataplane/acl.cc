#include "acl.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace tern::dp {
namespace {

__extension__ typedef unsigned __int128 u128;

u128 load128(const uint8_t* a) {
  u128 v = 0;
  for (int i = 0; i < 16; ++i) v = v << 8 | a[i];
  return v;
}

uint32_t load32(const uint8_t* a) {
  return uint32_t{a[0]} << 24 | uint32_t{a[1]} << 16 | uint32_t{a[2]} << 8 | a[3];
}

template <class R, class V>
void insert_merged(std::vector<R>& ranges, V lo, V hi) {
  // Keep the list sorted, disjoint and with adjacent ranges joined, so lookup is one binary search.
  R r{lo, hi};
  std::vector<R> out;
  out.reserve(ranges.size() + 1);
  bool placed = false;
  for (const R& x : ranges) {
    if (!placed && r.lo < x.lo) {
      out.push_back(r);
      placed = true;
    }
    out.push_back(x);
  }
  if (!placed) out.push_back(r);
  ranges.clear();
  for (const R& x : out) {
    if (!ranges.empty() && (ranges.back().hi == static_cast<V>(~V{0}) || x.lo <= ranges.back().hi + 1)) {
      ranges.back().hi = std::max(ranges.back().hi, x.hi);
    } else {
      ranges.push_back(x);
    }
  }
}

template <class R, class V>
bool find(const std::vector<R>& ranges, V a) {
  // First range whose lo > a; the candidate is the one before it.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), a, [](V v, const R& r) { return v < r.lo; });
  return it != ranges.begin() && a <= std::prev(it)->hi;
}

}  // namespace

std::optional<Prefix> parse_prefix(std::string_view text, std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<Prefix> {
    if (error) *error = "prefix '" + std::string(text) + "': " + why;
    return std::nullopt;
  };
  Prefix p;
  std::string_view addr = text, len;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    addr = text.substr(0, slash);
    len = text.substr(slash + 1);
  }
  std::string a(addr);
  if (inet_pton(AF_INET, a.c_str(), p.addr) == 1) {
    p.v6 = false;
    p.len = 32;
  } else if (inet_pton(AF_INET6, a.c_str(), p.addr) == 1) {
    p.v6 = true;
    p.len = 128;
  } else {
    return fail("not an IPv4 or IPv6 address (expected e.g. 198.18.0.0/15 or 2001:2::/48)");
  }
  if (!len.empty() || addr.size() != text.size()) {
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), v);
    if (ec != std::errc() || ptr != len.data() + len.size() || len.empty() || v > p.len)
      return fail("prefix length must be 0.." + std::to_string(p.len));
    p.len = static_cast<uint8_t>(v);
  }
  const unsigned bytes = p.v6 ? 16 : 4;
  for (unsigned bit = p.len; bit < bytes * 8; ++bit) {
    if (p.addr[bit / 8] & (0x80 >> (bit % 8)))
      return fail("host bits set below /" + std::to_string(p.len) + "; did you mean " +
                  to_string([&] {
                    Prefix q = p;
                    for (unsigned b = q.len; b < bytes * 8; ++b) q.addr[b / 8] &= ~(0x80 >> (b % 8));
                    return q;
                  }()) +
                  "?");
  }
  return p;
}

std::string to_string(const Prefix& p) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(p.v6 ? AF_INET6 : AF_INET, p.addr, buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(p.len);
}

void Acl::add(const Prefix& p) {
  prefixes_.push_back(p);
  if (p.v6) {
    const u128 net = load128(p.addr);
    const u128 host = p.len == 128 ? 0 : (~u128{0} >> p.len);
    insert_merged<Range6, u128>(v6_, net, net | host);
  } else {
    const uint32_t net = load32(p.addr);
    const uint32_t host = p.len == 32 ? 0 : (~uint32_t{0} >> p.len);
    insert_merged<Range4, uint32_t>(v4_, net, net | host);
  }
}

bool Acl::add_list(std::string_view text, std::string* error) {
  std::vector<Prefix> parsed;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) {
      if (error) *error = "empty prefix in list (two commas, or a trailing comma)";
      return false;
    }
    auto p = parse_prefix(item, error);
    if (!p) return false;
    parsed.push_back(*p);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
    if (text.empty()) {
      if (error) *error = "empty prefix in list (trailing comma)";
      return false;
    }
  }
  for (const Prefix& p : parsed) add(p);
  return true;
}

bool Acl::contains_v4(const uint8_t addr[4]) const { return find<Range4, uint32_t>(v4_, load32(addr)); }
bool Acl::contains_v6(const uint8_t addr[16]) const { return find<Range6, u128>(v6_, load128(addr)); }

std::string Acl::to_string() const {
  std::string s;
  for (const Prefix& p : prefixes_) {
    if (!s.empty()) s += ',';
    s += dp::to_string(p);
  }
  return s;
}

}  // namespace tern::dp
