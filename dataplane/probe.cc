#include "probe.h"

#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <rte_mbuf.h>
#include <rte_random.h>
#include <rte_ring.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>

#include "parse.h"
#include "wire/wire.h"

namespace tern::dp {

namespace {

constexpr uint16_t kEthIpv4 = 0x0800, kEthIpv6 = 0x86DD;
constexpr uint16_t kProbeUdpSize = 1232;

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

void store_csum(uint8_t* at, uint64_t acc) {
  // csum_acc sums in memory order, so the complement is stored back unswapped (see parse.h).
  uint16_t c = static_cast<uint16_t>(~csum_fold(acc));
  std::memcpy(at, &c, 2);
}

}  // namespace

size_t build_probe_frame(std::span<uint8_t> out, const ProbeSource& src, const ProbeQuery& q) {
  const size_t l3 = 14, l3len = q.v6 ? 40 : 20, l4 = l3 + l3len, dns = l4 + 8;
  const size_t dns_len = 12 + q.name_len + 4 + 11;  // header, question, OPT
  const size_t len = dns + dns_len;
  if (out.size() < len || q.name_len == 0) return 0;
  uint8_t* f = out.data();
  std::memset(f, 0, len);
  std::memcpy(f, q.dst_mac.data(), 6);
  std::memcpy(f + 6, src.mac.data(), 6);
  put16(f + 12, q.v6 ? kEthIpv6 : kEthIpv4);

  uint8_t* ip = f + l3;
  const uint16_t udp_len = static_cast<uint16_t>(8 + dns_len);
  uint64_t pseudo = 0;
  if (q.v6) {
    ip[0] = 0x60;
    put16(ip + 4, udp_len);
    ip[6] = IPPROTO_UDP;
    ip[7] = 64;
    std::memcpy(ip + 8, src.v6.data(), 16);
    std::memcpy(ip + 24, q.dst.data(), 16);
    pseudo = csum_acc(0, ip + 8, 32);
  } else {
    ip[0] = 0x45;
    put16(ip + 2, static_cast<uint16_t>(20 + udp_len));
    put16(ip + 6, 0x4000);  // DF: the probe must never need reassembly
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    std::memcpy(ip + 12, src.v4.data(), 4);
    std::memcpy(ip + 16, q.dst.data(), 4);
    store_csum(ip + 10, csum_acc(0, ip, 20));
    pseudo = csum_acc(0, ip + 12, 8);
  }
  // RFC 768 pseudo-header: addresses (above), zero + protocol, UDP length.
  uint8_t ph[4] = {0, IPPROTO_UDP, 0, 0};
  put16(ph + 2, udp_len);
  pseudo = csum_acc(pseudo, ph, 4);

  uint8_t* udp = f + l4;
  put16(udp, q.sport);
  put16(udp + 2, 53);
  put16(udp + 4, udp_len);

  uint8_t* d = f + dns;
  put16(d, q.id);
  put16(d + 2, wire::kFlagRD);
  put16(d + 4, 1);   // QDCOUNT
  put16(d + 10, 1);  // ARCOUNT: OPT
  uint8_t* p = d + 12;
  std::memcpy(p, q.name, q.name_len);
  p += q.name_len;
  put16(p, q.qtype);
  put16(p + 2, 1);  // IN
  p += 4;
  // RFC 6891 6.1.2: root owner, TYPE OPT, CLASS = payload size, TTL = 0 (version 0, DO=0), RDLEN 0.
  p[0] = 0;
  put16(p + 1, 41);
  put16(p + 3, kProbeUdpSize);

  uint16_t ck = static_cast<uint16_t>(~csum_fold(csum_acc(pseudo, udp, udp_len)));
  if (ck == 0) ck = 0xffff;  // RFC 768: a computed zero is sent as all ones
  std::memcpy(udp + 6, &ck, 2);
  return len;
}

bool match_probe_reply(std::span<const uint8_t> frame, const ProbeSource& src, const ProbeQuery& q,
                       ProbeReply& out) {
  const uint8_t* f = frame.data();
  const size_t len = frame.size();
  if (len < 14) return false;
  const uint16_t et = get16(f + 12);
  size_t l4;
  if (et == kEthIpv6 && q.v6) {
    if (len < 54 || (f[14] >> 4) != 6 || f[20] != IPPROTO_UDP) return false;
    if (std::memcmp(f + 38, src.v6.data(), 16) != 0) return false;
    l4 = 54;
  } else if (et == kEthIpv4 && !q.v6) {
    if (len < 34 || (f[14] >> 4) != 4 || f[23] != IPPROTO_UDP) return false;
    const size_t ihl = static_cast<size_t>(f[14] & 0x0f) * 4;
    if (ihl < 20 || len < 14 + ihl) return false;
    if (std::memcmp(f + 30, src.v4.data(), 4) != 0) return false;
    l4 = 14 + ihl;
  } else {
    return false;
  }
  if (len < l4 + 8 + wire::kHeaderSize) return false;
  if (get16(f + l4) != 53 || get16(f + l4 + 2) != q.sport) return false;
  const size_t ulen = get16(f + l4 + 4);
  if (ulen < 8 + wire::kHeaderSize || l4 + ulen > len) return false;
  const wire::Header h = wire::read_header(f + l4 + 8);
  if (h.id != q.id || !(h.flags & wire::kFlagQR)) return false;
  out.rcode = h.rcode();
  out.ancount = h.ancount;
  return true;
}


// ---- netlink: route + permanent neighbour for the probe source ------------------------------

namespace {

struct NlReq {
  nlmsghdr h;
  char body[256];
};

void add_attr(NlReq& r, uint16_t type, const void* data, size_t n) {
  auto* a = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&r) + NLMSG_ALIGN(r.h.nlmsg_len));
  a->rta_type = type;
  a->rta_len = static_cast<uint16_t>(RTA_LENGTH(n));
  std::memcpy(RTA_DATA(a), data, n);
  r.h.nlmsg_len = NLMSG_ALIGN(r.h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

// Sends one request and reads its ack. 0 or the negative errno the kernel answered.
int nl_transact(int fd, NlReq& r, uint32_t seq) {
  r.h.nlmsg_seq = seq;
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (::sendto(fd, &r, r.h.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) return -errno;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      return reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
}

}  // namespace

bool install_probe_path(const std::string& iface, const ProbeSource& src, bool v6, std::string* error) {
  const unsigned idx = if_nametoindex(iface.c_str());
  const char* fam = v6 ? "IPv6" : "IPv4";
  if (idx == 0) {
    *error = "exception interface " + iface + " not found (" + std::strerror(errno) + ")";
    return false;
  }
  const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    *error = std::string("netlink socket for the probe route: ") + std::strerror(errno);
    return false;
  }
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const void* addr = v6 ? static_cast<const void*>(src.v6.data()) : src.v4.data();
  const size_t alen = v6 ? 16 : 4;
  const int ifi = static_cast<int>(idx);

  NlReq rt{};
  rt.h.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  rt.h.nlmsg_type = RTM_NEWROUTE;
  rt.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  auto* rm = static_cast<rtmsg*>(NLMSG_DATA(&rt.h));
  rm->rtm_family = static_cast<uint8_t>(v6 ? AF_INET6 : AF_INET);
  rm->rtm_dst_len = static_cast<uint8_t>(alen * 8);
  rm->rtm_table = RT_TABLE_MAIN;
  rm->rtm_protocol = RTPROT_STATIC;
  rm->rtm_scope = RT_SCOPE_LINK;
  rm->rtm_type = RTN_UNICAST;
  add_attr(rt, RTA_DST, addr, alen);
  add_attr(rt, RTA_OIF, &ifi, sizeof ifi);

  NlReq nb{};
  nb.h.nlmsg_len = NLMSG_LENGTH(sizeof(ndmsg));
  nb.h.nlmsg_type = RTM_NEWNEIGH;
  nb.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  auto* nd = static_cast<ndmsg*>(NLMSG_DATA(&nb.h));
  nd->ndm_family = static_cast<uint8_t>(v6 ? AF_INET6 : AF_INET);
  nd->ndm_ifindex = ifi;
  nd->ndm_state = NUD_PERMANENT;
  nd->ndm_type = RTN_UNICAST;
  add_attr(nb, NDA_DST, addr, alen);
  add_attr(nb, NDA_LLADDR, src.mac.data(), 6);

  int rc = nl_transact(fd, rt, 1);
  const char* what = "route";
  if (rc == 0) {
    rc = nl_transact(fd, nb, 2);
    what = "permanent neighbour entry";
  }
  ::close(fd);
  if (rc != 0) {
    *error = std::string("cannot install the probe ") + what + " for the " + fam + " probe source on " + iface +
             ": " + std::strerror(-rc) + (rc == -ENETDOWN ? " (bring the interface up)" : "");
    return false;
  }
  return true;
}

// ---- the verb --------------------------------------------------------------------------------

Prober::Prober(ProberConf c) : c_(std::move(c)) {}

std::string Prober::run(std::string_view args, std::string& out) {
  const size_t sp = args.find(' ');
  const std::string_view name_text = args.substr(0, sp);
  std::string_view type_text = sp == std::string_view::npos ? std::string_view{} : args.substr(sp + 1);
  while (!type_text.empty() && type_text.front() == ' ') type_text.remove_prefix(1);
  if (name_text.empty() || type_text.empty() || type_text.find(' ') != std::string_view::npos)
    return "usage: probe NAME TYPE (e.g. probe www.example.org A)";
  if (c_.inject.empty()) return "no worker to probe";

  ProbeQuery q;
  if (const wire::Status st = wire::name_from_text(name_text, q.name, &q.name_len); st != wire::Status::ok)
    return std::string("'").append(name_text).append("' is not a domain name: ").append(wire::describe(st));
  if (!parse_qtype(type_text, q.qtype))
    return std::string("unknown type '").append(type_text).append("' (A, AAAA, NS, SOA, TXT, MX, ... or TYPEnnn)");

  // The first service address: IPv4 when Linux has one on the exception interface, else IPv6.
  const auto svc = c_.service ? c_.service->load() : nullptr;
  if (!svc || (svc->v4.empty() && svc->v6.empty())) {
    counters_.add(ProbeCounter::not_sent);
    return "no service address on the exception interface " + c_.iface + "; nothing to probe (add one with ip addr)";
  }
  q.v6 = svc->v4.empty();
  if (q.v6)
    q.dst = svc->v6.front();
  else
    std::memcpy(q.dst.data(), svc->v4.front().data(), 4);
  q.dst_mac = c_.node_mac;
  const uint64_t r = rte_rand();
  q.id = static_cast<uint16_t>(r);
  q.sport = static_cast<uint16_t>(49152 + (r >> 16) % 16384);  // RFC 6335 dynamic ports

  const int fam = q.v6 ? 1 : 0;
  if (!path_ok_[fam] && !c_.iface.empty()) {
    std::string err;
    if (!install_probe_path(c_.iface, c_.source, q.v6, &err)) {
      counters_.add(ProbeCounter::not_sent);
      return err;
    }
    path_ok_[fam] = true;
  }

  const unsigned w = next_worker_++ % c_.inject.size();
  rte_mbuf* m = rte_pktmbuf_alloc(c_.pool);
  if (!m) {
    counters_.add(ProbeCounter::not_sent);
    return "no mbuf free for the probe (mempool exhausted)";
  }
  const size_t len = build_probe_frame({rte_pktmbuf_mtod(m, uint8_t*), rte_pktmbuf_tailroom(m)}, c_.source, q);
  if (len == 0 || !rte_pktmbuf_append(m, static_cast<uint16_t>(len))) {
    rte_pktmbuf_free(m);
    counters_.add(ProbeCounter::not_sent);
    return "probe frame does not fit an mbuf";
  }
  // Replies to earlier, timed-out probes are stale now.
  drain_probe_rings(std::array<rte_ring*, 2>{c_.hits, c_.via_control});

  const auto t0 = std::chrono::steady_clock::now();
  if (rte_ring_sp_enqueue(c_.inject[w], m) != 0) {
    rte_pktmbuf_free(m);
    counters_.add(ProbeCounter::not_sent);
    return "probe ring of worker " + std::to_string(w) + " is full (worker not polling it)";
  }
  counters_.add(ProbeCounter::sent);
  const auto deadline = t0 + std::chrono::milliseconds(c_.deadline_ms);
  long sleep_ns = 10'000;
  for (;;) {
    for (rte_ring* ring : {c_.hits, c_.via_control}) {
      void* o;
      while (ring && rte_ring_sc_dequeue(ring, &o) == 0) {
        rte_mbuf* a = static_cast<rte_mbuf*>(o);
        ProbeReply rep;
        const bool mine = a->nb_segs == 1 &&
                          match_probe_reply({rte_pktmbuf_mtod(a, const uint8_t*), rte_pktmbuf_data_len(a)},
                                            c_.source, q, rep);
        rte_pktmbuf_free(a);
        if (!mine) continue;
        const auto us =
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
        const bool hit = ring == c_.hits;
        counters_.add(hit ? ProbeCounter::hit : ProbeCounter::via_control);
        out += std::string("result=") + (hit ? "hit" : "miss") + " rcode=" + std::string(rcode_text(rep.rcode)) +
               " answers=" + std::to_string(rep.ancount) + " latency_us=" + std::to_string(us) +
               " core=" + std::to_string(w) + "\n";
        return {};
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    const timespec ts{0, sleep_ns};
    nanosleep(&ts, nullptr);
    sleep_ns = std::min(sleep_ns * 2, 100'000L);  // 100 us: the reported latency stays within that
  }
  counters_.add(ProbeCounter::timed_out);
  path_ok_[fam] = false;  // a link flap drops the neighbour entry: reinstall before the next probe
  return "probe timed out after " + std::to_string(c_.deadline_ms) + " ms (worker " + std::to_string(w) +
         "; exception path or tern-control not answering)";
}

void drain_probe_rings(std::span<rte_ring* const> rings) {
  void* o[32];
  for (rte_ring* r : rings) {
    if (!r) continue;
    while (unsigned n = rte_ring_sc_dequeue_burst(r, o, 32, nullptr))
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(o), n);
  }
}

}  // namespace tern::dp
