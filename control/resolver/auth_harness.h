// A tiny authoritative server for resolver tests: real UDP and TCP sockets on a
// loopback address, port 53, served from zone text by its own thread. Behaviour
// switches make it dead, lame, TC-happy, EDNS-intolerant or a spoof target.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "control/resolver/dns.h"

namespace tern::control::resolver::testing {

class AuthServer {
 public:
  std::atomic<bool> dead{false}, refuse{false}, tc_udp{false}, formerr_edns{false},
      spoof_first{false};
  std::atomic<int> queries{0}, tcp_queries{0}, rd_queries{0};
  std::mutex mu;
  std::vector<std::string> seen;  // "qname/TYPE" as received, guarded by mu

  // ip: loopback address to bind; zone: records (one per line) of every zone served, each
  // zone with its SOA (the SOAs tell which names are zone apexes).
  AuthServer(const std::string& ip, const std::string& zone) : ip_(ip) {
    rrs_.reset(ldns_rr_list_new());
    size_t pos = 0;
    while (pos < zone.size()) {
      size_t nl = zone.find('\n', pos);
      std::string line = zone.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? zone.size() : nl + 1;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      ldns_rr* rr = nullptr;
      if (ldns_rr_new_frm_str(&rr, line.c_str(), 3600, nullptr, nullptr) == LDNS_STATUS_OK)
        ldns_rr_list_push_rr(rrs_.get(), rr);
    }
    for (size_t i = 0; i < ldns_rr_list_rr_count(rrs_.get()); ++i)
      if (ldns_rr_get_type(ldns_rr_list_rr(rrs_.get(), i)) == LDNS_RR_TYPE_SOA)
        apexes_.push_back(dns::owner(ldns_rr_list_rr(rrs_.get(), i)));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(53);
    inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    udp_ = socket(AF_INET, SOCK_DGRAM, 0);
    tcp_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ok_ = bind(udp_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
          bind(tcp_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && listen(tcp_, 16) == 0;
    if (!ok_) err_ = std::strerror(errno);
    if (ok_) th_ = std::thread([this] { run(); });
  }
  ~AuthServer() {
    stop_ = true;
    if (th_.joinable()) th_.join();
    close(udp_);
    close(tcp_);
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return err_; }
  bool saw(const std::string& s) {
    std::lock_guard lk(mu);
    for (auto& x : seen)
      if (x == s) return true;
    return false;
  }

 private:
  dns::Pkt answer(const ldns_pkt* q, bool tcp) {
    const ldns_rr* qr = ldns_rr_list_rr(ldns_pkt_question(q), 0);
    dns::Name qn = dns::owner(qr);
    ldns_rr_type qt = ldns_rr_get_type(qr);
    ldns_pkt* p = ldns_pkt_new();
    ldns_pkt_set_id(p, ldns_pkt_id(q));
    ldns_pkt_set_qr(p, true);
    ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, ldns_rr_clone(qr));
    dns::Pkt out(p);
    if (refuse) {
      ldns_pkt_set_rcode(p, LDNS_RCODE_REFUSED);
      return out;
    }
    if (formerr_edns && ldns_pkt_edns(q)) {
      ldns_pkt_set_rcode(p, LDNS_RCODE_FORMERR);
      return out;
    }
    if (tc_udp && !tcp) {
      ldns_pkt_set_tc(p, true);
      ldns_pkt_set_aa(p, true);
      return out;
    }
    auto each = [&](auto fn) {
      for (size_t i = 0; i < ldns_rr_list_rr_count(rrs_.get()); ++i) fn(ldns_rr_list_rr(rrs_.get(), i));
    };
    // Our zone: the deepest apex above qname. Delegation: the deepest NS set below it.
    dns::Name apex;
    for (auto& a : apexes_)
      if (qn.under(a) && a.labels() >= apex.labels()) apex = a;
    dns::Name cut;
    bool have_cut = false;
    each([&](ldns_rr* rr) {
      dns::Name o = dns::owner(rr);
      if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_NS && !o.equals(apex) && o.under(apex) && qn.under(o) &&
          (!have_cut || o.labels() > cut.labels())) {
        cut = o;
        have_cut = true;
      }
    });
    if (have_cut) {
      each([&](ldns_rr* rr) {
        if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_NS && dns::owner(rr).equals(cut)) {
          ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, ldns_rr_clone(rr));
          dns::Name ns = dns::Name::from_rdf(ldns_rr_rdf(rr, 0));
          each([&](ldns_rr* g) {
            auto t = ldns_rr_get_type(g);
            if ((t == LDNS_RR_TYPE_A || t == LDNS_RR_TYPE_AAAA) && dns::owner(g).equals(ns))
              ldns_pkt_push_rr(p, LDNS_SECTION_ADDITIONAL, ldns_rr_clone(g));
          });
        }
      });
      return out;
    }
    ldns_pkt_set_aa(p, true);
    // RFC 6672: a DNAME at an ancestor rewrites the name; answer DNAME + synthesized CNAME.
    ldns_rr* dname = nullptr;
    each([&](ldns_rr* rr) {
      if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_DNAME && qn.under(dns::owner(rr)) &&
          !qn.equals(dns::owner(rr)))
        dname = rr;
    });
    if (dname) {
      ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, ldns_rr_clone(dname));
      const std::string& w = qn.wire();
      std::string nw = w.substr(0, w.size() - dns::owner(dname).wire().size()) +
                       dns::Name::from_rdf(ldns_rr_rdf(dname, 0)).wire();
      dns::Name target;
      dns::Name::from_wire(nw, target);
      ldns_rr* c = ldns_rr_new();
      ldns_rr_set_owner(c, qn.rdf().release());
      ldns_rr_set_type(c, LDNS_RR_TYPE_CNAME);
      ldns_rr_set_class(c, LDNS_RR_CLASS_IN);
      ldns_rr_set_ttl(c, ldns_rr_ttl(dname));
      ldns_rr_push_rdf(c, target.rdf().release());
      ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, c);
      each([&](ldns_rr* rr) {
        if (dns::owner(rr).equals(target) && ldns_rr_get_type(rr) == qt)
          ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, ldns_rr_clone(rr));
      });
      return out;
    }
    bool exists = false, found = false;
    each([&](ldns_rr* rr) {
      dns::Name o = dns::owner(rr);
      if (!o.equals(qn)) {
        if (o.under(qn)) exists = true;  // empty non-terminal
        return;
      }
      exists = true;
      if (ldns_rr_get_type(rr) == qt ||
          (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && qt != LDNS_RR_TYPE_CNAME)) {
        ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, ldns_rr_clone(rr));
        found = true;
      }
    });
    if (!found) {
      if (!exists) ldns_pkt_set_rcode(p, LDNS_RCODE_NXDOMAIN);
      each([&](ldns_rr* rr) {
        if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA && dns::owner(rr).equals(apex))
          ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, ldns_rr_clone(rr));
      });
    }
    if (ldns_pkt_edns(q)) ldns_pkt_set_edns_udp_size(p, 1232);
    return out;
  }

  std::vector<uint8_t> handle(const uint8_t* buf, size_t n, bool tcp) {
    ldns_pkt* q = nullptr;
    if (ldns_wire2pkt(&q, buf, n) != LDNS_STATUS_OK) return {};
    dns::Pkt qp(q);
    ++queries;
    if (tcp) ++tcp_queries;
    if (ldns_pkt_rd(q)) ++rd_queries;
    const ldns_rr* qr = ldns_rr_list_rr(ldns_pkt_question(q), 0);
    {
      std::lock_guard lk(mu);
      seen.push_back(dns::lower(dns::owner(qr).text()) + "/" + dns::type_text(ldns_rr_get_type(qr)));
    }
    if (dead) return {};
    dns::Pkt a = answer(q, tcp);
    uint8_t* w = nullptr;
    size_t len = 0;
    ldns_pkt2wire(&w, a.get(), &len);
    std::vector<uint8_t> v(w, w + len);
    free(w);
    return v;
  }

  void run() {
    while (!stop_) {
      pollfd pf[2] = {{udp_, POLLIN, 0}, {tcp_, POLLIN, 0}};
      if (poll(pf, 2, 20) <= 0) continue;
      uint8_t buf[65536];
      if (pf[0].revents & POLLIN) {
        sockaddr_storage from{};
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(udp_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n > 0) {
          auto r = handle(buf, size_t(n), false);
          if (!r.empty()) {
            if (spoof_first) {  // a forged reply: wrong ID, arrives first
              auto f = r;
              f[0] ^= 0x5a;
              sendto(udp_, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
            }
            sendto(udp_, r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
          }
        }
      }
      if (pf[1].revents & POLLIN) {
        int c = accept(tcp_, nullptr, nullptr);
        if (c < 0) continue;
        timeval tv{1, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t len[2];
        if (recv(c, len, 2, MSG_WAITALL) == 2) {
          size_t l = size_t(len[0]) << 8 | len[1];
          if (recv(c, buf, l, MSG_WAITALL) == ssize_t(l)) {
            auto r = handle(buf, l, true);
            if (!r.empty()) {
              uint8_t hdr[2] = {uint8_t(r.size() >> 8), uint8_t(r.size())};
              send(c, hdr, 2, MSG_NOSIGNAL);
              send(c, r.data(), r.size(), MSG_NOSIGNAL);
            }
          }
        }
        close(c);
      }
    }
  }

  std::string ip_;
  std::vector<dns::Name> apexes_;
  dns::RrList rrs_;
  int udp_ = -1, tcp_ = -1;
  bool ok_ = false;
  std::string err_;
  std::atomic<bool> stop_{false};
  std::thread th_;
};

}  // namespace tern::control::resolver::testing
