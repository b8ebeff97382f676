#include "exception.h"

#include <ifaddrs.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "wire/wire.h"

namespace tern::dp {

namespace {

constexpr unsigned kMaxBurst = 64;
constexpr unsigned kHousekeepEveryTurns = 256;
constexpr unsigned kFirstSleepUs = 8;
constexpr uint16_t kEthIpv4 = 0x0800, kEthIpv6 = 0x86DD, kEthVlan = 0x8100, kEthQinQ = 0x88A8;

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

}  // namespace

// Frames from Linux are trusted no more than the wire: every length is checked
// against the frame once, here.
bool find_dns_answer(std::span<const uint8_t> frame, const ServiceAddrSet& svc, size_t& off, size_t& dlen,
                     bool& fragment) {
  const uint8_t* f = frame.data();
  const size_t len = frame.size();
  fragment = false;
  size_t l3 = 14;
  if (len < l3) return false;
  uint16_t et = be16(f + 12);
  for (int tags = 0; (et == kEthVlan || et == kEthQinQ) && tags < 2; ++tags) {
    if (len < l3 + 4) return false;
    et = be16(f + l3 + 2);
    l3 += 4;
  }
  size_t l4;
  if (et == kEthIpv4) {
    if (len < l3 + 20 || (f[l3] >> 4) != 4) return false;
    const size_t ihl = static_cast<size_t>(f[l3] & 0x0f) * 4;
    if (ihl < 20 || len < l3 + ihl || f[l3 + 9] != IPPROTO_UDP) return false;
    // RFC 791: MF set or a fragment offset means this is not a whole datagram.
    if (be16(f + l3 + 6) & 0x3fff) return fragment = true, false;
    const uint8_t* src = f + l3 + 12;
    if (std::none_of(svc.v4.begin(), svc.v4.end(), [&](const auto& a) { return std::memcmp(a.data(), src, 4) == 0; }))
      return false;
    l4 = l3 + ihl;
  } else if (et == kEthIpv6) {
    if (len < l3 + 40 || (f[l3] >> 4) != 6) return false;
    if (f[l3 + 6] == 44) return fragment = true, false;  // RFC 8200 4.5 fragment header
    if (f[l3 + 6] != IPPROTO_UDP) return false;           // other extension headers: not ours to parse
    const uint8_t* src = f + l3 + 8;
    if (std::none_of(svc.v6.begin(), svc.v6.end(), [&](const auto& a) { return std::memcmp(a.data(), src, 16) == 0; }))
      return false;
    l4 = l3 + 40;
  } else {
    return false;
  }
  if (len < l4 + 8 || be16(f + l4) != 53) return false;
  const size_t ulen = be16(f + l4 + 4);  // RFC 768: length includes the 8-byte header
  if (ulen < 8 + wire::kHeaderSize || l4 + ulen > len) return false;
  off = l4 + 8;
  dlen = ulen - 8;
  return true;
}

std::optional<SvcCounter> offer_to_cache(std::span<const uint8_t> frame, const ServiceAddrSet& svc,
                                         cache::Cache& cache, uint32_t now_s) noexcept {
  size_t off = 0, dlen = 0;
  bool frag = false;
  if (!find_dns_answer(frame, svc, off, dlen, frag)) {
    if (frag) return SvcCounter::fill_skipped_frag;
    return std::nullopt;
  }
  const std::span<const uint8_t> msg = frame.subspan(off, dlen);
  const wire::Header h = wire::read_header(msg.data());
  if (!(h.flags & wire::kFlagQR)) return std::nullopt;  // a query from the resolver to port 53 elsewhere
  if (h.flags & wire::kFlagTC) return SvcCounter::fill_skipped_tc;
  // The cache applies every cacheability rule (ECS included) in its one pass over the bytes. It
  // allocates the entry (and sometimes a new index): under memory pressure that throws, and the
  // service thread must carry on (the cache leaves the shard as it was when the allocation fails).
  try {
    const cache::InsertResult r = cache.insert_response(msg, now_s);
    return r.outcome == cache::InsertResult::kInserted   ? SvcCounter::fill_inserted
           : r.outcome == cache::InsertResult::kReplaced ? SvcCounter::fill_replaced
           : r.reason == cache::Reject::client_subnet    ? SvcCounter::fill_skipped_ecs
                                                         : SvcCounter::fill_rejected;
  } catch (const std::bad_alloc&) {
    return SvcCounter::fill_failed_nomem;
  } catch (...) {
    return SvcCounter::fill_failed;
  }
}

namespace {

void sleep_us(unsigned us, int fd) {
  // ppoll on the netlink socket: an address change wakes the thread at once.
  timespec ts{0, static_cast<long>(us) * 1000};
  pollfd pfd{fd, POLLIN, 0};
  ::ppoll(fd >= 0 ? &pfd : nullptr, fd >= 0 ? 1 : 0, &ts, nullptr);
}

}  // namespace

// ---- address watch ---------------------------------------------------------

AddrWatch::~AddrWatch() {
  if (fd_ >= 0) ::close(fd_);
}

bool AddrWatch::open(std::string* error) {
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) {
    *error = std::string("netlink socket for the service address watch: ") + std::strerror(errno);
    return false;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    *error = std::string("bind netlink (address change notifications): ") + std::strerror(errno);
    return false;
  }
  rescan();
  return true;
}

bool AddrWatch::rescan() {
  ServiceAddrSet s;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) return false;
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || iface_ != i->ifa_name) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      std::array<uint8_t, 4> a;
      std::memcpy(a.data(), &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
      s.v4.push_back(a);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) continue;  // not a service address
      std::array<uint8_t, 16> a;
      std::memcpy(a.data(), &sin6->sin6_addr, 16);
      s.v6.push_back(a);
    }
  }
  ::freeifaddrs(ifa);
  std::sort(s.v4.begin(), s.v4.end());
  std::sort(s.v6.begin(), s.v6.end());
  if (have_last_ && s.v4 == last_.v4 && s.v6 == last_.v6) return false;
  last_ = s;
  have_last_ = true;
  out_->publish(std::make_shared<const ServiceAddrSet>(std::move(s)));
  return true;
}

bool AddrWatch::poll() {
  if (fd_ < 0) return false;
  char buf[8192];
  bool any = false;
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ENOBUFS) {  // overflow: we missed messages, re-read anyway
      any = true;
      continue;
    }
    break;
  }
  return any && rescan();
}

// ---- service loop ----------------------------------------------------------

namespace {

struct Service {
  const ServiceConf& c;
  ServiceCounters& k;
  std::shared_ptr<const ServiceAddrSet> svc;
  uint64_t svc_gen = ~0ull;

  void pick_up_service() {
    uint64_t g = c.service->generation();
    if (g != svc_gen) {
      svc_gen = g;
      svc = c.service->load();
    }
  }

  void tx_or_drop(uint16_t port, uint16_t queue, rte_mbuf** m, uint16_t n, SvcCounter ok, SvcCounter dropped) {
    if (!n) return;
    uint16_t sent = rte_eth_tx_burst(port, queue, m, n);
    k.add(ok, sent);
    if (sent < n) {
      rte_pktmbuf_free_bulk(m + sent, n - sent);
      k.add(dropped, n - sent);
    }
  }

  // Worker rings -> Linux, unchanged.
  unsigned rings_to_linux() {
    unsigned total = 0;
    rte_mbuf* m[kMaxBurst];
    for (rte_ring* r : c.rings) {
      unsigned n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(m), std::min<unsigned>(c.burst, kMaxBurst), nullptr);
      if (!n) continue;
      total += n;
      k.add(SvcCounter::exc_ring_frames, n);
      tx_or_drop(c.exc_port, 0, m, static_cast<uint16_t>(n), SvcCounter::to_linux, SvcCounter::to_linux_dropped);
    }
    return total;
  }

  void maybe_fill(rte_mbuf* m) {
    if (!svc || m->nb_segs != 1) return;
    if (const auto v = offer_to_cache({rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m)}, *svc,
                                      *c.cache, cache_clock_s()))
      k.add(*v);
  }

  // A frame Linux addressed to the probe MAC never leaves the node: true when it was taken.
  bool to_probe(rte_mbuf* m) {
    if (rte_pktmbuf_data_len(m) < 6 || std::memcmp(rte_pktmbuf_mtod(m, const uint8_t*), c.probe_mac.data(), 6) != 0)
      return false;
    if (rte_ring_sp_enqueue(c.probe_replies, m) == 0) {
      k.add(SvcCounter::probe_replies);
    } else {
      rte_pktmbuf_free(m);
      k.add(SvcCounter::probe_replies_dropped);
    }
    return true;
  }

  // Linux -> (cache fill) -> NIC.
  unsigned linux_to_nic() {
    rte_mbuf* m[kMaxBurst];
    uint16_t n = rte_eth_rx_burst(c.exc_port, 0, m, std::min<uint16_t>(c.burst, kMaxBurst));
    if (!n) return 0;
    k.add(SvcCounter::from_linux, n);
    uint16_t nic = 0;
    for (uint16_t i = 0; i < n; ++i) {
      maybe_fill(m[i]);
      if (c.probe_replies && to_probe(m[i])) continue;
      m[nic++] = m[i];
    }
    tx_or_drop(c.nic_port, c.nic_tx_queue, m, nic, SvcCounter::to_nic, SvcCounter::to_nic_dropped);
    return n;
  }

  // The service thread's own RX queue (paired-queue drivers): a worker like the others.
  unsigned own_queue() {
    if (c.nic_rx_queue < 0 || !c.own_worker) return 0;
    rte_mbuf* rx[kBurst];
    rte_mbuf* tx[kBurst];
    rte_mbuf* exc[kBurst];
    uint16_t n = rte_eth_rx_burst(c.nic_port, static_cast<uint16_t>(c.nic_rx_queue), rx, kBurst);
    if (!n) return 0;
    k.add(SvcCounter::service_rx, n);
    BurstOut out = process_burst(*c.own_worker, std::span<rte_mbuf* const>(rx, n), tx, exc);
    if (out.n_tx) {
      uint16_t sent = rte_eth_tx_burst(c.nic_port, c.nic_tx_queue, tx, out.n_tx);
      c.own_worker->count(Counter::tx_packets, sent);
      if (sent < out.n_tx) {
        rte_pktmbuf_free_bulk(tx + sent, out.n_tx - sent);
        c.own_worker->count(Counter::drop_tx_full, out.n_tx - sent);
      }
    }
    tx_or_drop(c.exc_port, 0, exc, out.n_exc, SvcCounter::to_linux, SvcCounter::to_linux_dropped);
    return n;
  }

  void housekeeping() {
    if (c.addrs && c.addrs->poll()) k.add(SvcCounter::addr_updates);
    pick_up_service();
    if (c.own_worker) worker_housekeeping(*c.own_worker);
    // The service thread is the cache's only writer; freeing retired entries here too
    // means a shard that stops being written to still returns its memory.
    c.cache->reclaim();
  }
};

}  // namespace

int service_loop(const ServiceConf& c) {
  Service s{c, *c.counters, nullptr};
  s.housekeeping();
  unsigned turns = 0, idle_turns = 0, sleep = kFirstSleepUs;
  while (!c.stop->load(std::memory_order_relaxed)) {
    unsigned work = s.rings_to_linux() + s.linux_to_nic() + s.own_queue();
    if (++turns % kHousekeepEveryTurns == 0) s.housekeeping();
    if (work) {
      idle_turns = 0;
      sleep = kFirstSleepUs;
      continue;
    }
    if (c.idle != IdlePolicy::kSleep || ++idle_turns < 64) continue;
    s.housekeeping();
    if (c.own_worker) c.cache->offline(c.own_worker->reader);
    sleep_us(sleep, c.addrs ? c.addrs->fd() : -1);
    if (c.own_worker) c.cache->online(c.own_worker->reader);
    s.k.add(SvcCounter::idle_sleeps);
    sleep = std::min(sleep * 2, std::max(c.sleep_max_us, 1u));
  }
  if (c.own_worker) {
    c.cache->offline(c.own_worker->reader);
    worker_housekeeping(*c.own_worker);
  }
  return 0;
}

void drain_rings(const std::vector<rte_ring*>& rings) {
  rte_mbuf* m[kMaxBurst];
  for (rte_ring* r : rings) {
    while (unsigned n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(m), kMaxBurst, nullptr))
      rte_pktmbuf_free_bulk(m, n);
  }
}

}  // namespace tern::dp
