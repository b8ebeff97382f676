// Network prefixes: the one parser for allow lists, probe sources and every other prefix
// tern-control reads from tern.conf and tern-dataplane receives in its policy.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::proto {

struct Prefix {
  bool v6 = false;
  std::array<uint8_t, 16> addr{};  // network byte order; IPv4 uses the first 4 bytes
  uint8_t len = 0;                 // prefix length in bits

  // Canonical text: "198.18.0.0/15", "2001:2::/48".
  std::string text() const;
  // True when `a` (4 bytes for IPv4, 16 for IPv6, network order) is inside.
  bool contains(const uint8_t* a, bool a_v6) const;
  bool operator==(const Prefix&) const = default;
};

// "198.18.0.0/15", "2001:2::/48", "198.18.0.1" (= /32), "::1" (= /128). Host bits below the
// prefix length must be zero ("198.18.0.1/16" is almost always a typo for a host or a wider
// net): the error names the prefix that was probably meant. nullopt + *error when invalid.
std::optional<Prefix> parse_prefix(std::string_view text, std::string* error);

// Comma separated ("198.18.0.0/15,2001:2::/48"); "none" or "" is the empty list. All or
// nothing: on error `out` is unchanged.
bool parse_prefix_list(std::string_view text, std::vector<Prefix>& out, std::string* error);
std::string prefix_list_text(const std::vector<Prefix>&);  // "none" when empty

}  // namespace tern::proto
