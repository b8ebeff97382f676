#include "control/resolver/hints.h"

#include <arpa/inet.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace tern::control::resolver {

ServerAddr ServerAddr::from_rr(const ldns_rr* rr, uint16_t port) {
  ServerAddr a;
  if (!rr || ldns_rr_rd_count(rr) < 1) return a;
  const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
  if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A && ldns_rdf_size(rd) == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    std::memcpy(&sin->sin_addr, ldns_rdf_data(rd), 4);
    a.len = sizeof(sockaddr_in);
  } else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA && ldns_rdf_size(rd) == 16) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, ldns_rdf_data(rd), 16);
    a.len = sizeof(sockaddr_in6);
  }
  return a;
}

std::string ServerAddr::text() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    port = ntohs(sin6->sin6_port);
  }
  return std::string(buf) + "@" + std::to_string(port);
}

std::string ServerAddr::key() const {
  // Built in place: IPv4 keys fit the small-string buffer, no allocation.
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    std::string k(7, '4');
    std::memcpy(k.data() + 1, &sin->sin_addr, 4);
    std::memcpy(k.data() + 5, &sin->sin_port, 2);
    return k;
  }
  auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  std::string k(19, '6');
  std::memcpy(k.data() + 1, &sin6->sin6_addr, 16);
  std::memcpy(k.data() + 17, &sin6->sin6_port, 2);
  return k;
}

bool ServerAddr::same(const sockaddr* sa, socklen_t l) const {
  if (!sa || sa->sa_family != ss.ss_family) return false;
  if (sa->sa_family == AF_INET && l >= socklen_t(sizeof(sockaddr_in))) {
    auto* a = reinterpret_cast<const sockaddr_in*>(sa);
    auto* b = reinterpret_cast<const sockaddr_in*>(&ss);
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
  }
  if (sa->sa_family == AF_INET6 && l >= socklen_t(sizeof(sockaddr_in6))) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    auto* b = reinterpret_cast<const sockaddr_in6*>(&ss);
    return a->sin6_port == b->sin6_port &&
           std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
  }
  return false;
}

std::optional<Hints> parse_hints(const std::string& text, const std::string& name,
                                 std::string& err) {
  Hints h;
  h.ns.reset(ldns_rr_list_new());
  std::vector<dns::RrList> addrs;
  std::istringstream in(text);
  std::string line;
  unsigned lineno = 0;
  dns::Rdf origin(ldns_dname_new_frm_str("."));
  ldns_rdf* prev = nullptr;
  std::vector<ldns_rr*> addr_rrs;
  auto cleanup = [&] {
    for (auto* rr : addr_rrs) ldns_rr_free(rr);
    if (prev) ldns_rdf_deep_free(prev);
  };
  while (std::getline(in, line)) {
    ++lineno;
    size_t c = line.find(';');
    if (c != std::string::npos) line.resize(c);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ldns_rr* rr = nullptr;
    ldns_status st = ldns_rr_new_frm_str(&rr, line.c_str(), 3600000, origin.get(), &prev);
    if (st != LDNS_STATUS_OK) {
      err = name + ":" + std::to_string(lineno) + ": cannot parse record (" +
            ldns_get_errorstr_by_id(st) + "); expected e.g. '.  3600000  NS  A.ROOT-SERVERS.NET.'";
      cleanup();
      return std::nullopt;
    }
    switch (ldns_rr_get_type(rr)) {
      case LDNS_RR_TYPE_NS:
        if (!dns::owner(rr).is_root()) {
          err = name + ":" + std::to_string(lineno) + ": NS record for '" + dns::owner(rr).text() +
                "': root hints hold only the NS records of the root '.'";
          ldns_rr_free(rr);
          cleanup();
          return std::nullopt;
        }
        ldns_rr_list_push_rr(h.ns.get(), rr);
        break;
      case LDNS_RR_TYPE_A:
      case LDNS_RR_TYPE_AAAA:
        addr_rrs.push_back(rr);
        break;
      default:
        ldns_rr_free(rr);  // named.root has nothing else; tolerate comments-as-records
        break;
    }
  }
  for (size_t i = 0; i < ldns_rr_list_rr_count(h.ns.get()); ++i) {
    NsServer s;
    s.name = dns::Name::from_rdf(ldns_rr_rdf(ldns_rr_list_rr(h.ns.get(), i), 0));
    for (auto* rr : addr_rrs)
      if (dns::owner(rr).equals(s.name)) s.addrs.push_back(ServerAddr::from_rr(rr));
    if (!s.addrs.empty()) h.servers.push_back(std::move(s));
  }
  cleanup();
  if (ldns_rr_list_rr_count(h.ns.get()) == 0) {
    err = name + ": no '. NS' records; a root hints file lists the root servers (named.root format)";
    return std::nullopt;
  }
  if (h.servers.empty()) {
    err = name + ": none of the root NS names has an A or AAAA record in the file; add their addresses";
    return std::nullopt;
  }
  return h;
}

std::optional<Hints> load_hints(const std::string& path, std::string& err) {
  std::ifstream f(path);
  if (!f) {
    err = path + ": cannot open root hints: " + std::strerror(errno);
    return std::nullopt;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_hints(ss.str(), path, err);
}

}  // namespace tern::control::resolver
