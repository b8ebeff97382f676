// Prefix lists (IPv4 + IPv6) compiled for the workers' allow-list lookups.
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

#include "proto/prefix.h"

namespace tern::dp {

using proto::Prefix;  // parsed by proto/prefix.h, the one prefix parser

class Acl {
 public:
  void add(const Prefix&);
  // Comma separated list of prefixes (proto::parse_prefix_list); all or nothing.
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
