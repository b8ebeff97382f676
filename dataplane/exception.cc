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
bool find_udp(std::span<const uint8_t> frame, UdpFlow& flow, size_t& off, size_t& dlen, bool& fragment) {
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
    flow.v6 = false;
    std::memset(flow.src, 0, sizeof flow.src);
    std::memset(flow.dst, 0, sizeof flow.dst);
    std::memcpy(flow.src, f + l3 + 12, 4);
    std::memcpy(flow.dst, f + l3 + 16, 4);
    l4 = l3 + ihl;
  } else if (et == kEthIpv6) {
    if (len < l3 + 40 || (f[l3] >> 4) != 6) return false;
    if (f[l3 + 6] == 44) return fragment = true, false;  // RFC 8200 4.5 fragment header
    if (f[l3 + 6] != IPPROTO_UDP) return false;           // other extension headers: not ours to parse
    flow.v6 = true;
    std::memcpy(flow.src, f + l3 + 8, 16);
    std::memcpy(flow.dst, f + l3 + 24, 16);
    l4 = l3 + 40;
  } else {
    return false;
  }
  if (len < l4 + 8) return false;
  const size_t ulen = be16(f + l4 + 4);  // RFC 768: length includes the 8-byte header
  if (ulen < 8 + wire::kHeaderSize || l4 + ulen > len) return false;
  flow.sport = be16(f + l4);
  flow.dport = be16(f + l4 + 2);
  off = l4 + 8;
  dlen = ulen - 8;
  return true;
}

namespace {

bool in_set(const ServiceAddrSet& svc, bool v6, const uint8_t* a) {
  if (v6)
    return std::any_of(svc.v6.begin(), svc.v6.end(), [&](const auto& s) { return std::memcmp(s.data(), a, 16) == 0; });
  return std::any_of(svc.v4.begin(), svc.v4.end(), [&](const auto& s) { return std::memcmp(s.data(), a, 4) == 0; });
}

}  // namespace

bool find_dns_answer(std::span<const uint8_t> frame, const ServiceAddrSet& svc, size_t& off, size_t& dlen,
                     bool& fragment) {
  UdpFlow fl;
  return find_udp(frame, fl, off, dlen, fragment) && fl.sport == 53 && in_set(svc, fl.v6, fl.src);
}

uint64_t coarse_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// ---- pending queries ---------------------------------------------------------

struct alignas(16) PendingQueries::Slot {
  uint64_t qhash;       // keyed hash of the question (canonical name, type, class)
  uint64_t expires_ms;  // 0: free
  uint8_t client[16], server[16];
  uint16_t cport, id;
  bool v6;
};

PendingQueries::PendingQueries(size_t slots, uint32_t timeout_ms, uint64_t seed)
    : hasher_(seed), timeout_ms_(timeout_ms) {
  size_t sets = 1;
  while (sets * kWays < slots) sets <<= 1;
  mask_ = sets - 1;
  slots_ = new Slot[sets * kWays]();
}

PendingQueries::~PendingQueries() { delete[] slots_; }

PendingQueries::Slot* PendingQueries::set(const uint8_t* client, const uint8_t* server, uint16_t cport,
                                          uint16_t id, bool v6, uint64_t& tag) const noexcept {
  uint64_t c0, c1, s0, s1;
  std::memcpy(&c0, client, 8);
  std::memcpy(&c1, client + 8, 8);
  std::memcpy(&s0, server, 8);
  std::memcpy(&s1, server + 8, 8);
  const uint64_t k0 = hasher_.seed0(), k1 = hasher_.seed1();
  uint64_t h = cache::Hasher::mum(c0 ^ k0, c1 ^ k1);
  h = cache::Hasher::mum(h ^ s0, s1 ^ k0);
  h = cache::Hasher::mum(h ^ (uint64_t{cport} << 16 | id | uint64_t{v6} << 32), k1 ^ 0x9E3779B97F4A7C15ull);
  tag = h;
  return slots_ + (h & mask_) * kWays;
}

bool PendingQueries::question_hash(std::span<const uint8_t> msg, uint64_t& out) const noexcept {
  // The question as the cache keys it: case folded; RD, CD and DO left out (the answer echoes them).
  cache::Key key;
  size_t end = 0;
  if (wire::load16(msg.data() + 4) != 1) return false;  // RFC 1035 4.1.2: exactly one question
  if (cache::make_key(hasher_, msg, wire::kHeaderSize, 0, key, &end) != wire::Status::ok) return false;
  out = key.hash;
  return true;
}

PendingQueries::Noted PendingQueries::note_query(std::span<const uint8_t> frame, const ServiceAddrSet& svc,
                                                 uint64_t now_ms) noexcept {
  UdpFlow fl;
  size_t off = 0, dlen = 0;
  bool frag = false;
  if (!find_udp(frame, fl, off, dlen, frag) || fl.dport != 53 || !in_set(svc, fl.v6, fl.dst)) return Noted::kNotQuery;
  const std::span<const uint8_t> msg = frame.subspan(off, dlen);  // >= 12 bytes: find_udp checked
  const uint16_t flags = wire::load16(msg.data() + 2);
  if ((flags & wire::kFlagQR) || (flags & wire::kOpcodeMask) != 0) return Noted::kNotQuery;
  uint64_t qh;
  if (!question_hash(msg, qh)) return Noted::kNotQuery;
  const uint16_t id = wire::load16(msg.data());
  uint64_t tag;
  Slot* s = set(fl.src, fl.dst, fl.sport, id, fl.v6, tag);
  Slot* victim = nullptr;
  for (unsigned i = 0; i < kWays; ++i) {
    Slot& e = s[i];
    const bool live = e.expires_ms > now_ms;
    if (live && e.qhash == qh && e.id == id && e.cport == fl.sport && e.v6 == fl.v6 &&
        std::memcmp(e.client, fl.src, 16) == 0 && std::memcmp(e.server, fl.dst, 16) == 0) {
      e.expires_ms = now_ms + timeout_ms_;  // a retransmission: one answer is enough
      return Noted::kRefreshed;
    }
    if (!live) {
      if (!victim || victim->expires_ms > now_ms) victim = &e;
    } else if (!victim || (victim->expires_ms > now_ms && e.expires_ms < victim->expires_ms)) {
      victim = &e;  // the oldest live entry, unless a free one turns up
    }
  }
  const bool evicted = victim->expires_ms > now_ms;
  Slot& e = *victim;
  e.qhash = qh;
  e.expires_ms = now_ms + timeout_ms_;
  std::memcpy(e.client, fl.src, 16);
  std::memcpy(e.server, fl.dst, 16);
  e.cport = fl.sport;
  e.id = id;
  e.v6 = fl.v6;
  return evicted ? Noted::kEvicted : Noted::kRecorded;
}

bool PendingQueries::take_answer(const UdpFlow& fl, std::span<const uint8_t> msg, uint64_t now_ms) noexcept {
  if (msg.size() < wire::kHeaderSize) return false;
  uint64_t qh;
  if (!question_hash(msg, qh)) return false;
  const uint16_t id = wire::load16(msg.data());
  uint64_t tag;
  Slot* s = set(fl.dst, fl.src, fl.dport, id, fl.v6, tag);
  for (unsigned i = 0; i < kWays; ++i) {
    Slot& e = s[i];
    if (e.expires_ms > now_ms && e.qhash == qh && e.id == id && e.cport == fl.dport && e.v6 == fl.v6 &&
        std::memcmp(e.client, fl.dst, 16) == 0 && std::memcmp(e.server, fl.src, 16) == 0) {
      e.expires_ms = 0;  // consumed: a second answer to the same query is not trusted
      return true;
    }
  }
  return false;
}

std::optional<SvcCounter> offer_to_cache(std::span<const uint8_t> frame, const ServiceAddrSet& svc,
                                         PendingQueries& pending, uint64_t now_ms, cache::Cache& cache,
                                         uint32_t now_s) noexcept {
  UdpFlow fl;
  size_t off = 0, dlen = 0;
  bool frag = false;
  if (!find_udp(frame, fl, off, dlen, frag)) {
    if (frag) return SvcCounter::fill_skipped_frag;
    return std::nullopt;
  }
  if (fl.sport != 53 || !in_set(svc, fl.v6, fl.src)) return std::nullopt;
  const std::span<const uint8_t> msg = frame.subspan(off, dlen);
  const wire::Header h = wire::read_header(msg.data());
  if (!(h.flags & wire::kFlagQR)) return std::nullopt;  // a query from the resolver to port 53 elsewhere
  // Only the answer to a query a client sent us, and we handed to Linux, may teach the cache.
  if (!pending.take_answer(fl, msg, now_ms)) return SvcCounter::fill_unmatched;
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
      note_queries(m, n);
      tx_or_drop(c.exc_port, 0, m, static_cast<uint16_t>(n), SvcCounter::to_linux, SvcCounter::to_linux_dropped);
    }
    return total;
  }

  // Frames on their way to Linux: the client queries among them are recorded (PendingQueries).
  void note_queries(rte_mbuf* const* m, unsigned n) {
    if (!svc || !n) return;
    const uint64_t now = coarse_ms();
    for (unsigned i = 0; i < n; ++i) {
      if (m[i]->nb_segs != 1) continue;
      switch (c.pending->note_query({rte_pktmbuf_mtod(m[i], const uint8_t*), rte_pktmbuf_data_len(m[i])}, *svc, now)) {
        case PendingQueries::Noted::kNotQuery:
        case PendingQueries::Noted::kRefreshed:
          break;
        case PendingQueries::Noted::kEvicted:
          k.add(SvcCounter::pending_evicted);
          [[fallthrough]];
        case PendingQueries::Noted::kRecorded:
          k.add(SvcCounter::pending_recorded);
          break;
      }
    }
  }

  void maybe_fill(rte_mbuf* m, uint64_t now_ms) {
    if (!svc || m->nb_segs != 1) return;
    if (const auto v = offer_to_cache({rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m)}, *svc,
                                      *c.pending, now_ms, *c.cache, cache_clock_s()))
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
    const uint64_t now_ms = coarse_ms();
    for (uint16_t i = 0; i < n; ++i) {
      maybe_fill(m[i], now_ms);
      if (c.probe_replies && to_probe(m[i])) continue;
      m[nic++] = m[i];
    }
    if (c.nic_tx_ring) {
      const unsigned q = nic ? rte_ring_sp_enqueue_burst(c.nic_tx_ring, reinterpret_cast<void**>(m), nic, nullptr) : 0;
      k.add(SvcCounter::to_nic, q);
      if (q < nic) {
        rte_pktmbuf_free_bulk(m + q, nic - q);
        k.add(SvcCounter::to_nic_dropped, nic - q);
      }
    } else {
      tx_or_drop(c.nic_port, c.nic_tx_queue, m, nic, SvcCounter::to_nic, SvcCounter::to_nic_dropped);
    }
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
    note_queries(exc, out.n_exc);
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
