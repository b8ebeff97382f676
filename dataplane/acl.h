// Prefix lists (IPv4 + IPv6) for the client allow list.
//
// Built by the control plane (parse, add), then published inside an immutable Policy; workers only
// call contains_*(), which is a binary search over merged, sorted, disjoint address ranges, so its cost
// is O(log n) whatever the prefixes overlap. An empty list contains nothing: tern is never an open
// resolver by default.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::dp {

struct Prefix {
  bool v6 = false;
  uint8_t addr[16] = {};  // network byte order; v4 uses the first 4 bytes
  uint8_t len = 0;        // prefix length in bits
};

// "198.18.0.0/15", "2001:2::/48", "198.18.0.1" (= /32), "::1" (= /128). Host bits below the prefix
// length must be zero ("198.18.0.1/16" is an error: it is almost always a typo for a host or a wider
// net). On error returns nullopt and says why in *error.
std::optional<Prefix> parse_prefix(std::string_view text, std::string* error);
std::string to_string(const Prefix&);

class Acl {
 public:
  void add(const Prefix&);
  // Comma separated list of prefixes; all or nothing: on error the Acl is unchanged.
  bool add_list(std::string_view text, std::string* error);

  bool contains_v4(const uint8_t addr[4]) const;   // network byte order
  bool contains_v6(const uint8_t addr[16]) const;  // network byte order
  bool empty() const { return v4_.empty() && v6_.empty(); }
  // The prefixes as added ("198.18.0.0/15,2001:2::/48"), for `policy` replies and logs.
  std::string to_string() const;
  const std::vector<Prefix>& prefixes() const { return prefixes_; }

 private:
  __extension__ typedef unsigned __int128 u128;
  struct Range4 { uint32_t lo, hi; };
  struct Range6 { u128 lo, hi; };
  std::vector<Range4> v4_;   // sorted by lo, disjoint, non-adjacent
  std::vector<Range6> v6_;
  std::vector<Prefix> prefixes_;  // as added, for display
};

}  // namespace tern::dp
