#include "proto/dns_names.h"

#include <charconv>
#include <iterator>
#include <string>

namespace tern::proto {

bool parse_qtype(std::string_view t, uint16_t& out) {
  struct Name {
    std::string_view n;
    uint16_t code;
  };
  static constexpr Name kTypes[] = {{"A", 1},    {"NS", 2},   {"CNAME", 5}, {"SOA", 6},     {"PTR", 12},
                                    {"MX", 15},  {"TXT", 16}, {"AAAA", 28}, {"SRV", 33},    {"DS", 43},
                                    {"DNSKEY", 48}, {"SVCB", 64}, {"HTTPS", 65}, {"CAA", 257}};
  std::string up(t);
  for (char& c : up)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const auto& k : kTypes)
    if (k.n == up) return out = k.code, true;
  if (up.rfind("TYPE", 0) != 0 || up.size() == 4) return false;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(up.data() + 4, up.data() + up.size(), v);
  if (ec != std::errc() || p != up.data() + up.size() || v == 0 || v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

std::string_view rcode_text(uint8_t rcode) {
  static constexpr std::string_view kNames[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
                                                "YXDOMAIN", "YXRRSET", "NXRRSET",  "NOTAUTH",  "NOTZONE"};
  return rcode < std::size(kNames) ? kNames[rcode] : "RCODE?";
}

}  // namespace tern::proto
