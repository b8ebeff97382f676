// The worker loop. One fixed shape (STYLE.md 2b): RX burst, stages, TX burst; housekeeping every
// kHousekeepEvery turns and whenever the queue is idle.
#include "worker.h"

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_random.h>
#include <rte_ring.h>

#include <ctime>
#include <new>

#include "answer.h"
#include "wire/wire.h"

namespace tern::dp {
namespace {

constexpr unsigned kPrefetchAhead = 4;   // l3fwd's PREFETCH_OFFSET: enough to cover a DRAM miss
constexpr unsigned kIdleSpinsBeforeSleep = 64;
constexpr unsigned kFirstSleepUs = 8;

const Policy kNobody{};  // before the first publish: nobody is allowed (never an open resolver)

// Indexed by PuntClass.
constexpr Counter kPuntDrop[kPuntClasses] = {Counter::drop_punt_arp_nd,  Counter::drop_punt_resolver,
                                             Counter::drop_punt_routing, Counter::drop_punt_dns_tcp,
                                             Counter::drop_punt_query,   Counter::drop_punt_other};

void apply_policy(Worker& w, std::shared_ptr<const Policy> p) {
  const Policy& pol = p ? *p : kNobody;
  w.acl = &pol.allow;
  w.refuse_outside = pol.refuse_outside;
  w.stale_on_limit = pol.stale_on_limit;
  w.miss_bucket.configure(pol.miss_rate_qps, pol.miss_burst, w.tsc_hz, rte_rdtsc());
  w.rrl.configure(pol.rrl, w.tsc_hz);
  const uint64_t now = rte_rdtsc();
  const PuntBudgets& b = pol.punt;
  w.arp_bucket.configure(b.arp_nd.rate_per_s, b.arp_nd.burst, w.tsc_hz, now);
  w.resolver_bucket.configure(b.resolver_replies.rate_per_s, b.resolver_replies.burst, w.tsc_hz, now);
  w.routing_bucket.configure(b.routing.rate_per_s, b.routing.burst, w.tsc_hz, now);
  w.dns_tcp_bucket.configure(b.dns_tcp.rate_per_s, b.dns_tcp.burst, w.tsc_hz, now);
  w.other_bucket.configure(b.other.rate_per_s, b.other.burst, w.tsc_hz, now);
  const unsigned cap = w.conf.exception_ring ? rte_ring_get_capacity(w.conf.exception_ring) : 0;
  w.ring_reserve = static_cast<unsigned>(uint64_t{cap} * std::min<uint32_t>(b.ring_reserve_pct, 100) / 100);
  w.rrl_responses = w.rrl.on(Rrl::kResponses);
  w.rrl_errors = w.rrl.on(Rrl::kErrors);
  w.policy = std::move(p);  // the old Policy may be freed here, off the hot path
}

void apply_service(Worker& w, const ServiceAddrSet* s) {
  ServiceView v;
  std::memcpy(v.probe4, w.conf.probe_source4.data(), 4);
  std::memcpy(v.probe6, w.conf.probe_source6.data(), 16);
  v.has_probe = true;
  if (s) {
    for (const auto& a : s->v4) {
      if (v.n4 == ServiceView::kMax) break;
      std::memcpy(v.v4[v.n4++], a.data(), 4);
    }
    for (const auto& a : s->v6) {
      if (v.n6 == ServiceView::kMax) break;
      std::memcpy(v.v6[v.n6++], a.data(), 16);
    }
  }
  w.service = v;
}

inline const uint8_t* client_addr(const uint8_t* f, const Query& q) { return f + q.l3 + (q.v6 ? 8 : 12); }

inline bool allowed(const Worker& w, const uint8_t* f, const Query& q) {
  return q.v6 ? w.acl->contains_v6(client_addr(f, q)) : w.acl->contains_v4(client_addr(f, q));
}

// Resizes the single-segment mbuf (checked in stage 1) to the answer's length and sets the TX
// offload request. Lengths are set directly: rte_pktmbuf_append/trim walk to the last segment
// through m->next, on the mbuf's second cache line, which nothing else here touches (measured: a
// third of the loop's stall cycles on the ring PMD).
inline void fit_mbuf(rte_mbuf* m, size_t len, const Query& q, bool offload) {
  m->data_len = static_cast<uint16_t>(len);  // <= data_len + tailroom: build_* checked the room
  m->pkt_len = static_cast<uint32_t>(len);
  if (offload) {
    m->l2_len = q.l3;
    m->l3_len = q.v6 ? 40 : 20;
    m->ol_flags = (m->ol_flags & (RTE_MBUF_F_EXTERNAL | RTE_MBUF_F_INDIRECT)) | RTE_MBUF_F_TX_UDP_CKSUM |
                  (q.v6 ? RTE_MBUF_F_TX_IPV6 : (RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM));
  }
}

inline size_t mbuf_cap(const rte_mbuf* m) {
  return size_t{rte_pktmbuf_data_len(m)} + rte_pktmbuf_tailroom(m);
}

}  // namespace

uint32_t cache_clock_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint32_t>(ts.tv_sec);
}

Worker::Worker(const WorkerConf& c)
    : conf(c),
      reader(c.cache->register_reader()),
      punt_budget{&arp_bucket, &resolver_bucket, &routing_bucket, &dns_tcp_bucket, &miss_bucket, &other_bucket} {
  tsc_hz = rte_get_tsc_hz();
  now_s = cache_clock_s();
  rrl.seed(rte_rand(), rte_rand());
  apply_policy(*this, nullptr);
  apply_service(*this, nullptr);
}

Worker::~Worker() { conf.cache->unregister_reader(reader); }

Worker* worker_create(const WorkerConf& conf, std::string* error) {
  if (!conf.cache || !conf.policy || !conf.stop || !conf.service) {
    if (error) *error = "worker " + std::to_string(conf.index) + ": cache, policy, stop and service are required";
    return nullptr;
  }
  void* mem = rte_zmalloc_socket("tern_worker", sizeof(Worker), alignof(Worker), conf.socket_id);
  if (!mem) {
    if (error)
      *error = "worker " + std::to_string(conf.index) + ": cannot allocate " + std::to_string(sizeof(Worker)) +
               " bytes on socket " + std::to_string(conf.socket_id) + ": " + rte_strerror(rte_errno);
    return nullptr;
  }
  try {
    Worker* w = new (mem) Worker(conf);
    worker_housekeeping(*w);
    // Offline until worker_loop starts: a worker launched late must not hold back reclamation.
    conf.cache->offline(w->reader);
    return w;
  } catch (const std::exception& e) {
    rte_free(mem);
    if (error) *error = "worker " + std::to_string(conf.index) + ": " + e.what();
    return nullptr;
  }
}

void worker_destroy(Worker* w) {
  if (!w) return;
  w->~Worker();
  rte_free(w);
}

void publish_stats(Worker& w) {
  for (size_t i = 0; i < kCounterCount; ++i) w.published[i].store(w.counters[i], std::memory_order_relaxed);
}

void worker_housekeeping(Worker& w) {
  w.conf.cache->quiescent(w.reader);  // no Entry pointer is held across this point
  w.now_s = cache_clock_s();
  if (const uint64_t g = w.conf.policy->generation(); g != w.policy_gen) {
    w.policy_gen = g;
    apply_policy(w, w.conf.policy->load());
  }
  if (const uint64_t g = w.conf.service->generation(); g != w.service_gen) {
    w.service_gen = g;
    auto s = w.conf.service->load();
    apply_service(w, s.get());
  }
  w.count(Counter::housekeeping);
  publish_stats(w);
  w.heartbeat.store(w.heartbeat.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

namespace {

BurstOut process_chunk(Worker& w, std::span<rte_mbuf* const> rx, rte_mbuf** tx, rte_mbuf** exc, Source src) {
  BurstOut out;
  const unsigned n = static_cast<unsigned>(rx.size());  // <= kBurst
  Query q[kBurst];
  cache::Key key[kBurst];
  uint8_t todo[kBurst];  // indices of well-formed, allowed queries: they go to the cache stages
  unsigned ntodo = 0;
  const AnswerOpts opts{w.conf.cksum_offload};
  auto drop = [&](rte_mbuf* m, Counter c) {
    w.count(c);
    rte_pktmbuf_free(m);
  };
  auto punt = [&](rte_mbuf* m, Counter c, PuntClass cls) {
    w.count(c);
    m->hash.usr = static_cast<uint32_t>(cls);  // to_exception_ring reads it (ring reserve)
    exc[out.n_exc++] = m;
  };
  uint64_t tsc1 = 0;  // stage 1 reads the TSC only when a punt or a REFUSED needs it
  auto now1 = [&] { return tsc1 ? tsc1 : (tsc1 = rte_rdtsc()); };
  // A frame for Linux: within its class's budget (the probe passes none), else dropped.
  auto punt_budgeted = [&](rte_mbuf* m, Counter c, PuntClass cls) {
    if (src == Source::kNic && !w.punt_budget[static_cast<size_t>(cls)]->take(now1())) {
      drop(m, kPuntDrop[static_cast<size_t>(cls)]);
      return;
    }
    punt(m, c, cls);
  };
  // A client outside the allow list: REFUSED (within the RRL error rate, slipped past it) or drop.
  auto refuse = [&](rte_mbuf* m, const Query& qq) {
    if (!w.refuse_outside || qq.qend == 0) {
      drop(m, Counter::drop_acl);  // no REFUSED for it: policy, or a message not walked to its end
      return;
    }
    uint8_t* wf = rte_pktmbuf_mtod(m, uint8_t*);
    // RRL, error class: REFUSED is what an outsider can reflect at a victim.
    const Rrl::Verdict rv = w.rrl_errors ? w.rrl.check(client_addr(wf, qq), qq.v6, Rrl::kErrors, now1()) : Rrl::kPass;
    if (rv == Rrl::kDrop) {
      drop(m, Counter::drop_rrl_refused);
      return;
    }
    const size_t len = rv == Rrl::kSlip ? build_truncated(wf, mbuf_cap(m), qq, true, opts)
                                        : build_refused(wf, mbuf_cap(m), qq, opts);
    if (len == 0) {
      drop(m, Counter::drop_acl);  // never hand an outside client's query to the resolver
      return;
    }
    fit_mbuf(m, len, qq, opts.cksum_offload);
    w.count(rv == Rrl::kSlip ? Counter::answer_slipped : Counter::answer_refused);
    tx[out.n_tx++] = m;
  };
  w.count(Counter::rx_packets, n);

  // Stage 1: parse, ACL, punt budgets. The ACL applies to every UDP query for the resolver: what
  // the fast path answers and the shapes it punts (other opcodes, ECS, EDNS versions, IP options).
  // Everything else for Linux is classified and passes its class's budget (PuntBudgets).
  // A query frame spans two cache lines (Ethernet to the question is ~70-100 bytes): fetch both.
  auto prefetch_frame = [](const rte_mbuf* m) {
    const char* d = rte_pktmbuf_mtod(m, const char*);
    rte_prefetch0(d);
    rte_prefetch0(d + RTE_CACHE_LINE_SIZE);
  };
  // The mbuf headers first: a PMD that does not write them on RX (the ring PMD) leaves them cold,
  // and the frame address is computed from them.
  for (unsigned i = 0; i < n; ++i) rte_prefetch0(rx[i]);
  for (unsigned i = 0; i < n && i < kPrefetchAhead; ++i) prefetch_frame(rx[i]);
  for (unsigned i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) prefetch_frame(rx[i + kPrefetchAhead]);
    rte_mbuf* m = rx[i];
    if (m->nb_segs != 1) {
      // A query never needs a chain; Linux can have it (the headers are in the first segment).
      bool spoofed = false;
      const PuntClass cls =
          classify_punt({rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m)}, w.service, &spoofed);
      if (spoofed && src == Source::kNic) {
        drop(m, Counter::drop_spoofed_source);
        continue;
      }
      punt_budgeted(m, Counter::punt_no_room, cls);
      continue;
    }
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    const RxVerified hw{(m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD,
                        (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD};
    const Counter v = parse_query({f, rte_pktmbuf_data_len(m)}, w.service, q[i], hw,
                                  src == Source::kProbe ? Origin::kNode : Origin::kWire);
    if (v != Counter::query_ok) [[unlikely]] {
      if (kind_of(v) != CounterKind::kPunt) {
        drop(m, v);
        continue;
      }
      if (src == Source::kProbe) {
        punt(m, v, PuntClass::kQuery);
        continue;
      }
      const PuntClass cls =
          dns_shaped_punt(v) ? PuntClass::kQuery : classify_punt({f, rte_pktmbuf_data_len(m)}, w.service);
      if (cls == PuntClass::kQuery && !allowed(w, f, q[i])) {
        refuse(m, q[i]);  // a query for the resolver, from outside the allow list
        continue;
      }
      punt_budgeted(m, v, cls);
      continue;
    }
    w.count(Counter::query_ok);
    if (src == Source::kNic && !allowed(w, f, q[i])) {
      refuse(m, q[i]);
      continue;
    }
    todo[ntodo++] = static_cast<uint8_t>(i);
  }

  // Stage 2: keys and hashes for the whole burst.
  const cache::Cache& cache = *w.conf.cache;
  const cache::Key* keyp[kBurst];
  const unsigned nkeys = ntodo;  // every parsed query gets a key: parse_query checked its name
  for (unsigned t = 0; t < ntodo; ++t) {
    const unsigned i = todo[t];
    rte_mbuf* m = rx[i];
    const uint8_t* dns = rte_pktmbuf_mtod_offset(m, const uint8_t*, q[i].dns);
    const uint8_t flags = static_cast<uint8_t>((q[i].edns_do ? cache::kKeyDO : 0) |
                                               ((q[i].hdr_flags & wire::kFlagCD) ? cache::kKeyCD : 0));
    // parse_query has walked and checked the name's labels (RFC 1035 limits, no pointers):
    // the key skips that walk. parse_test checks the keys match make_key's.
    // The fold may read on past the message into the mbuf's tailroom (whole 16-byte blocks
    // keep the hash's loads store-forwarded); nothing past the name is used.
    const size_t readable = m->buf_len - m->data_off - q[i].dns - wire::kHeaderSize;
    cache::make_key_validated(cache.hasher(), dns + wire::kHeaderSize, q[i].qend - wire::kHeaderSize - 4u,
                              readable, q[i].qtype, q[i].qclass, flags, key[i]);
    keyp[t] = &key[i];
  }

  // Stage 3: the burst's lookups together (index lines, then candidate entries, then the full key
  // compare), so their cache misses overlap instead of queueing one after the other.
  cache::Lookup found[kBurst];
  if (nkeys) cache.lookup_burst(w.reader, {keyp, nkeys}, w.now_s, w.stale_on_limit, {found, nkeys});

  // Stage 4: answer in place; misses pass the rate limit on their way to the resolver.
  const uint64_t now_tsc = rte_rdtsc();
  for (unsigned t = 0; t < nkeys; ++t) {
    const unsigned i = todo[t];
    rte_mbuf* m = rx[i];
    const cache::Lookup& r = found[t];
    bool stale = false;
    if (r.kind != cache::Lookup::kHit) {
      // A miss, or an expired entry we could serve stale: the resolver gets it while the budget
      // lasts (it refreshes the entry); past the budget a stale entry is answered (RFC 8767 4),
      // anything else dropped, so a random-subdomain flood never reaches the kernel at line rate.
      if (src == Source::kProbe || w.miss_bucket.take(now_tsc)) {
        punt(m, Counter::miss_punted, PuntClass::kQuery);
        continue;
      }
      if (r.kind != cache::Lookup::kStale) {
        drop(m, Counter::drop_rate_limited);
        continue;
      }
      stale = true;
    }
    // RRL, response class (off by default: one predictable branch per answer).
    if (w.rrl_responses && src == Source::kNic) [[unlikely]] {
      const Rrl::Verdict rv = w.rrl.check(client_addr(rte_pktmbuf_mtod(m, const uint8_t*), q[i]), q[i].v6,
                                          Rrl::kResponses, now_tsc);
      if (rv == Rrl::kDrop) {
        drop(m, Counter::drop_rrl);
        continue;
      }
      if (rv == Rrl::kSlip) {
        const size_t len = build_truncated(rte_pktmbuf_mtod(m, uint8_t*), mbuf_cap(m), q[i], false, opts);
        if (len == 0) {
          drop(m, Counter::drop_rrl);
          continue;
        }
        fit_mbuf(m, len, q[i], opts.cksum_offload);
        w.count(Counter::answer_slipped);
        tx[out.n_tx++] = m;
        continue;
      }
    }
    bool truncated = false;
    const size_t len =
        build_answer(rte_pktmbuf_mtod(m, uint8_t*), mbuf_cap(m), q[i], *r.entry, w.now_s, stale, opts, &truncated);
    if (len == 0) {
      punt(m, Counter::punt_no_room, PuntClass::kQuery);  // the resolver answers it (the miss budget was not taken)
      continue;
    }
    fit_mbuf(m, len, q[i], opts.cksum_offload);
    w.count(stale ? Counter::answer_stale : Counter::answer_hit);
    if (truncated) w.count(Counter::answer_truncated);
    tx[out.n_tx++] = m;
  }
  return out;
}

}  // namespace

BurstOut process_burst(Worker& w, std::span<rte_mbuf* const> rx, rte_mbuf** tx, rte_mbuf** exc, Source src) {
  BurstOut out;
  for (size_t off = 0; off < rx.size(); off += kBurst) {  // the stages keep kBurst-sized arrays
    const BurstOut o = process_chunk(w, rx.subspan(off, std::min<size_t>(kBurst, rx.size() - off)),
                                     tx + out.n_tx, exc + out.n_exc, src);
    out.n_tx = static_cast<uint16_t>(out.n_tx + o.n_tx);
    out.n_exc = static_cast<uint16_t>(out.n_exc + o.n_exc);
  }
  return out;
}

namespace {

// Worker rings toward the service thread: a full ring is a counted drop, never a wait. The last
// ring_reserve slots are for ARP/ND, the resolver's replies and routing (PuntClass order): when the
// service thread falls behind, those still get through.
void to_exception_ring(Worker& w, rte_mbuf** exc, unsigned n) {
  rte_ring* r = w.conf.exception_ring;
  if (r && w.ring_reserve) {
    const unsigned free = rte_ring_free_count(r);
    if (free < n + w.ring_reserve) {
      unsigned keep = 0;
      for (unsigned i = 0; i < n; ++i) {
        const bool high = exc[i]->hash.usr <= static_cast<uint32_t>(PuntClass::kRouting);
        if (high || free > w.ring_reserve + keep) {
          exc[keep++] = exc[i];
        } else {
          w.count(Counter::drop_exception_reserve);
          rte_pktmbuf_free(exc[i]);
        }
      }
      n = keep;
    }
  }
  const unsigned q = r ? rte_ring_sp_enqueue_burst(r, reinterpret_cast<void**>(exc), n, nullptr) : 0;
  if (q < n) {
    w.count(Counter::drop_exception_full, n - q);
    rte_pktmbuf_free_bulk(exc + q, n - q);
  }
}

}  // namespace

void poll_probes(Worker& w) {
  rte_ring* in = w.conf.probe_in;
  if (!in) return;
  constexpr unsigned kMaxProbes = 4;  // one in flight is the norm; a few stale ones are possible
  rte_mbuf* rx[kMaxProbes];
  rte_mbuf* tx[kMaxProbes];
  rte_mbuf* exc[kMaxProbes];
  const unsigned n = rte_ring_sc_dequeue_burst(in, reinterpret_cast<void**>(rx), kMaxProbes, nullptr);
  if (!n) return;
  w.count(Counter::probe_in, n);
  const BurstOut o = process_burst(w, {rx, n}, tx, exc, Source::kProbe);
  if (o.n_tx) {
    rte_ring* out = w.conf.probe_out;
    const unsigned q = out ? rte_ring_mp_enqueue_burst(out, reinterpret_cast<void**>(tx), o.n_tx, nullptr) : 0;
    w.count(Counter::probe_answered, q);
    if (q < o.n_tx) {
      w.count(Counter::drop_probe_full, o.n_tx - q);
      rte_pktmbuf_free_bulk(tx + q, o.n_tx - q);
    }
  }
  if (o.n_exc) to_exception_ring(w, exc, o.n_exc);
}

void send_service_frames(Worker& w) {
  rte_ring* in = w.conf.service_tx_in;
  rte_mbuf* m[kBurst];
  const unsigned n = rte_ring_sc_dequeue_burst(in, reinterpret_cast<void**>(m), kBurst, nullptr);
  if (!n) return;
  const uint16_t sent = rte_eth_tx_burst(w.conf.port, w.conf.tx_queue, m, static_cast<uint16_t>(n));
  w.count(Counter::tx_packets, sent);
  if (sent < n) {
    w.count(Counter::drop_tx_full, n - sent);
    rte_pktmbuf_free_bulk(m + sent, n - sent);
  }
}

int worker_loop(Worker& w) {
  const WorkerConf& c = w.conf;
  rte_mbuf* rx[kBurst];
  rte_mbuf* tx[kBurst];
  rte_mbuf* exc[kBurst];
  unsigned turns = 0, idle = 0, sleep_us = kFirstSleepUs;
  c.cache->online(w.reader);
  worker_housekeeping(w);
  while (!c.stop->load(std::memory_order_relaxed)) {
    if (c.service_tx_in) send_service_frames(w);
    const uint16_t n = rte_eth_rx_burst(c.port, c.rx_queue, rx, kBurst);
    if (n) {
      const uint64_t t0 = rte_rdtsc();
      idle = 0;
      sleep_us = kFirstSleepUs;
      const BurstOut o = process_burst(w, {rx, n}, tx, exc);
      if (o.n_tx) {
        const uint16_t sent = rte_eth_tx_burst(c.port, c.tx_queue, tx, o.n_tx);
        w.count(Counter::tx_packets, sent);
        if (sent < o.n_tx) {
          w.count(Counter::drop_tx_full, o.n_tx - sent);
          rte_pktmbuf_free_bulk(tx + sent, o.n_tx - sent);
        }
      }
      if (o.n_exc) to_exception_ring(w, exc, o.n_exc);
      w.count(Counter::busy_cycles, rte_rdtsc() - t0);
    } else if (++idle >= kIdleSpinsBeforeSleep && c.idle == IdleMode::kSleep) {
      // Idle: publish, then sleep offline so reclamation never waits for a sleeping core.
      poll_probes(w);
      worker_housekeeping(w);
      turns = 0;
      c.cache->offline(w.reader);
      const timespec ts{0, static_cast<long>(sleep_us) * 1000};
      nanosleep(&ts, nullptr);
      c.cache->online(w.reader);
      w.count(Counter::idle_sleeps);
      sleep_us = std::min(sleep_us * 2, std::max(c.sleep_max_us, 1u));
      continue;
    } else {
      rte_pause();
    }
    if (++turns >= kHousekeepEvery) {
      turns = 0;
      poll_probes(w);
      worker_housekeeping(w);
    }
  }
  // Offline for good: a stopped worker must not hold back reclamation. No quiescent() after this
  // (it would mark the reader online again), only the final counters.
  c.cache->offline(w.reader);
  publish_stats(w);
  return 0;
}

int worker_launch(void* arg) { return worker_loop(*static_cast<Worker*>(arg)); }

}  // namespace tern::dp
