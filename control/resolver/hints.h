// Root hints (named.root format): the NS RRset of "." and the addresses of those servers.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <vector>

#include "control/resolver/dns.h"

namespace tern::control::resolver {

struct ServerAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  static ServerAddr from_rr(const ldns_rr* a_or_aaaa, uint16_t port = 53);  // len 0 if not A/AAAA
  std::string text() const;       // "198.18.0.1@53", "2001:2::1@53"
  std::string key() const;        // address family + address + port bytes
  bool same(const sockaddr* sa, socklen_t len) const;
};

struct NsServer {
  dns::Name name;
  std::vector<ServerAddr> addrs;
};

struct Hints {
  dns::RrList ns;                 // ". NS ..." as read
  std::vector<NsServer> servers;  // one per NS name, with its A/AAAA addresses
};

// Parses a named.root-style file. On failure returns nullopt and sets `err` to
// "FILE:LINE: what is wrong" or "FILE: what is missing".
std::optional<Hints> load_hints(const std::string& path, std::string& err);
std::optional<Hints> parse_hints(const std::string& text, const std::string& name, std::string& err);

}  // namespace tern::control::resolver
