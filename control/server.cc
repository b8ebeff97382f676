// Serving: UDP and TCP listeners (RFC 1035 §4.2, RFC 7766), ACL, limits, and the glue
// between client messages and the resolver. One Frontend and one Resolver per event loop
// ("worker"); a Frontend lives on its loop's thread only. The Server owns the workers:
// worker 0 runs on the caller's loop, the others on threads of their own.
#include "control/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <thread>
#include <unordered_map>

#include "control/resolver/message.h"
#include "control/resolver/msgcache.h"
#include "control/resolver/resolver.h"
#include "control/resolver/validator.h"

namespace tern::control {

using resolver::Answer;
using resolver::Query;
using resolver::Verdict;

#define TERN_SERVER_COUNTERS(X)                                                             \
  X(queries_udp) X(queries_tcp) X(queries_rd0) X(answers_noerror) X(answers_nxdomain)       \
  X(answers_servfail) X(answers_refused) X(answers_formerr) X(answers_notimp)               \
  X(answers_other) X(answers_badvers) X(answers_truncated) X(refused_acl) X(dropped_header) \
  X(dropped_per_client_limit) X(dropped_total_limit) X(tcp_accepted) X(tcp_rejected_limit) \
  X(tcp_closed_idle) X(tcp_closed_error) X(udp_send_errors) X(rd0_cache_miss)             \
  X(answers_msgcache) X(tcp_read_paused) X(tcp_rejected_acl) X(tcp_rejected_per_address)    \
  X(tcp_closed_message_timeout) X(dropped_pending_limit)

struct ServerStats {
#define X(n) uint64_t n = 0;
  TERN_SERVER_COUNTERS(X)
#undef X
};

namespace {

std::string errstr(int e) { return std::strerror(e); }

std::string client_key(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET)
    return std::string(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr), 4);
  return std::string(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr), 16);
}

// RAII socket.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

bool is_wildcard(const Endpoint& ep) {
  if (ep.addr.ss_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&ep.addr)->sin_addr.s_addr == htonl(INADDR_ANY);
  return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&ep.addr)->sin6_addr);
}

// The source-address control message for a reply, built from the query's PKTINFO.
struct ReplyCtl {
  alignas(cmsghdr) uint8_t buf[CMSG_SPACE(sizeof(in6_pktinfo))];
  size_t len = 0;
  void from(const msghdr& in) {
    len = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&in); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&in), c)) {
      msghdr out{};
      out.msg_control = buf;
      out.msg_controllen = sizeof buf;
      cmsghdr* o = CMSG_FIRSTHDR(&out);
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        in_pktinfo r{};
        r.ipi_spec_dst = pi.ipi_addr;  // the address the query was sent to
        o->cmsg_level = IPPROTO_IP;
        o->cmsg_type = IP_PKTINFO;
        o->cmsg_len = CMSG_LEN(sizeof r);
        std::memcpy(CMSG_DATA(o), &r, sizeof r);
        len = CMSG_SPACE(sizeof r);
        return;
      }
      if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);  // address and interface (link-local)
        o->cmsg_level = IPPROTO_IPV6;
        o->cmsg_type = IPV6_PKTINFO;
        o->cmsg_len = CMSG_LEN(sizeof pi);
        std::memcpy(CMSG_DATA(o), &pi, sizeof pi);
        len = CMSG_SPACE(sizeof pi);
        return;
      }
    }
  }
  void attach(msghdr& m) {
    m.msg_control = len ? buf : nullptr;
    m.msg_controllen = len;
  }
};

// `reuseport`: several loops each bind their own socket to the endpoint and the kernel
// spreads clients over them (by 4-tuple hash: one client's flow stays on one loop).
std::optional<std::string> open_socket(const Endpoint& ep, int type, bool reuseport, Fd& out) {
  const char* what = type == SOCK_DGRAM ? "udp" : "tcp";
  Fd s(::socket(ep.addr.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (s.fd < 0) return "[server] listen " + ep.text + ": " + what + " socket: " + errstr(errno);
  int one = 1;
  setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && setsockopt(s.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    return "[server] listen " + ep.text + ": " + what + " SO_REUSEPORT: " + errstr(errno);
  if (ep.addr.ss_family == AF_INET6) setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (type == SOCK_DGRAM) {
    int sz = 4 << 20;  // absorb bursts; the kernel caps this at rmem_max
    setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    // A wildcard listener must answer from the address each query was sent to, or
    // clients (which check the source) drop the reply: learn it per datagram.
    if (is_wildcard(ep)) {
      if (ep.addr.ss_family == AF_INET)
        setsockopt(s.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
      else
        setsockopt(s.fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    }
  }
  if (::bind(s.fd, reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) < 0) {
    int e = errno;
    std::string hint = e == EADDRINUSE      ? " (another process holds it: stop it or change listen)"
                       : e == EADDRNOTAVAIL ? " (address not configured on any interface)"
                       : e == EACCES        ? " (ports below 1024 need CAP_NET_BIND_SERVICE)"
                                            : "";
    return "[server] listen " + ep.text + ": cannot bind " + what + ": " + errstr(e) + hint;
  }
  if (type == SOCK_STREAM && ::listen(s.fd, 128) < 0)
    return "[server] listen " + ep.text + ": listen: " + errstr(errno);
  out = std::move(s);
  return std::nullopt;
}

}  // namespace

struct Listener {
  Endpoint ep;
  Fd udp, tcp;
  bool registered = false;
};

// RFC 1035 §4.2.2: a two-octet length, then at most 65535 octets of message.
constexpr size_t kMaxTcpMessage = 2 + 65535;

struct TcpConn {
  Fd fd;
  sockaddr_storage peer{};
  std::string addr;  // client_key(peer): the per-address connection count
  // Bytes received and not yet parsed. Never more than kMaxTcpMessage: reading stops while
  // it holds a whole message that cannot be started yet (the client is at its limit), so
  // the kernel's window, not our memory, absorbs a client that keeps sending.
  std::vector<uint8_t> rbuf;
  std::deque<std::vector<uint8_t>> wq;
  size_t woff = 0, wbytes = 0;
  unsigned pending = 0;
  bool eof = false, want_in = true, want_out = false;
  bool parsing = false;  // inside parse(): an answer sent synchronously must not re-enter
  EventLoop::TimerId idle = 0;
  EventLoop::TimerId deadline = 0;  // armed while a partial message waits for its bytes
};

class Frontend {
 public:
  Frontend(EventLoop& loop, resolver::Resolver& r, resolver::Validator& v)
      : loop_(loop), res_(r), val_(v), shared_(r.shared()) {}
  ~Frontend() {
    for (auto& [fd, c] : conns_) {
      if (c->idle) loop_.cancel(c->idle);
      if (c->deadline) loop_.cancel(c->deadline);
      loop_.remove(fd);
    }
    for (auto& [k, l] : listeners_) unregister(*l);
  }

  struct Settings {
    std::vector<Prefix> allow;
    uint16_t edns_size = 1232;
    unsigned tcp_idle_ms = 10000, tcp_max = 256, per_client = 100;
    unsigned tcp_per_address = 32, tcp_message_ms = 2000;
    size_t max_pending = 20000;
  };

  // Runs on any thread while this loop's thread is not inside commit(): it only reads
  // listeners_, which only commit() writes.
  std::optional<std::string> prepare(const Config& c, bool reuseport,
                                     std::map<std::string, std::shared_ptr<Listener>>& next) {
    for (const auto& ep : c.listen) {
      if (auto it = listeners_.find(ep.text); it != listeners_.end()) {
        next[ep.text] = it->second;  // stays: keeps its sockets
        continue;
      }
      auto l = std::make_shared<Listener>();
      l->ep = ep;
      if (auto e = open_socket(ep, SOCK_DGRAM, reuseport, l->udp)) return e;
      if (auto e = open_socket(ep, SOCK_STREAM, reuseport, l->tcp)) return e;
      next[ep.text] = std::move(l);
    }
    return std::nullopt;
  }

  void commit(const Config& c, size_t loops, std::map<std::string, std::shared_ptr<Listener>> next) {
    set_.allow = c.allow;
    set_.edns_size = c.edns_buffer_size;
    set_.tcp_idle_ms = c.tcp_idle_timeout_ms;
    set_.tcp_max = c.tcp_max_connections;
    set_.tcp_per_address = c.tcp_max_per_address;
    set_.tcp_message_ms = c.tcp_message_timeout_ms;
    set_.per_client = c.max_outstanding_per_client;
    set_.max_pending = c.max_pending_queries;
    // Memoised answers follow the TTL limits, routes and resolution rules they were built under:
    // when a reload changes any of those, they are rebuilt from the RRsets. A reload that changes
    // nothing they depend on keeps them (they are what warms a restarted dataplane).
    if (std::string rules = render_config_sections(c, {"cache", "recursion", "dnssec"}); rules != answer_rules_) {
      msgcache_.clear();
      answer_rules_ = std::move(rules);
    }
    // Each loop memoises its own clients' answers: an eighth of the cache, split.
    msgcache_.set_max_bytes(std::max<size_t>(c.max_bytes / 8 / std::max<size_t>(loops, 1), 1u << 20));
    for (auto& [k, l] : listeners_)
      if (!next.count(k)) unregister(*l);  // closes when the last reference goes
    listeners_ = std::move(next);
    for (auto& [k, l] : listeners_) {
      if (l->registered) continue;
      std::weak_ptr<Listener> wl = l;
      loop_.add(l->udp.fd, EPOLLIN, [this, wl](uint32_t) {
        if (auto sl = wl.lock()) on_udp(sl);
      });
      loop_.add(l->tcp.fd, EPOLLIN, [this, wl](uint32_t) {
        if (auto sl = wl.lock()) on_accept(*sl);
      });
      l->registered = true;
    }
  }

  void flush_answers() { msgcache_.clear(); }
  void export_answers(const std::function<void(std::span<const uint8_t>)>& fn) const {
    msgcache_.export_answers(loop_.now_ms(), 2, fn);
  }

  void counters(std::vector<std::pair<std::string, uint64_t>>& out) const {
#define X(n) out.emplace_back(#n, st_.n);
    TERN_SERVER_COUNTERS(X)
#undef X
    out.emplace_back("tcp_connections_current", conns_.size());
    size_t buffered = 0;
    for (const auto& [fd, c] : conns_) buffered += c->rbuf.size();
    out.emplace_back("tcp_buffered_bytes_current", buffered);
    out.emplace_back("listeners_current", listeners_.size());
    out.emplace_back("msgcache_entries_current", msgcache_.entries());
    out.emplace_back("msgcache_bytes_current", msgcache_.bytes());
    out.emplace_back("msgcache_evictions", msgcache_.evictions());
  }

 private:
  void unregister(Listener& l) {
    if (!l.registered) return;
    loop_.remove(l.udp.fd);
    loop_.remove(l.tcp.fd);
    l.registered = false;
  }

  bool allowed(const sockaddr_storage& ss) const {
    for (const auto& p : set_.allow)
      if (p.contains(reinterpret_cast<const sockaddr*>(&ss))) return true;
    return false;
  }

  void count_rcode(unsigned rcode) {
    switch (rcode) {
      case LDNS_RCODE_NOERROR: ++st_.answers_noerror; break;
      case LDNS_RCODE_NXDOMAIN: ++st_.answers_nxdomain; break;
      case LDNS_RCODE_SERVFAIL: ++st_.answers_servfail; break;
      case LDNS_RCODE_REFUSED: ++st_.answers_refused; break;
      case LDNS_RCODE_FORMERR: ++st_.answers_formerr; break;
      case LDNS_RCODE_NOTIMPL: ++st_.answers_notimp; break;
      default: ++st_.answers_other; break;
    }
  }

  using Sink = std::function<void(std::vector<uint8_t>)>;

  // One client message, from either transport. Returns false when the message is
  // dropped (sink will never run); otherwise sink runs exactly once, maybe later.
  bool handle(std::span<const uint8_t> wire, const sockaddr_storage& peer, bool tcp, Sink sink) {
    Query q;
    Verdict v = resolver::parse_query(wire, q);
    if (v == Verdict::drop) {
      ++st_.dropped_header;
      return false;
    }
    if (!allowed(peer)) {
      ++st_.refused_acl;
      ++st_.answers_refused;
      sink(resolver::error_reply(q, LDNS_RCODE_REFUSED, set_.edns_size));
      return true;
    }
    switch (v) {
      case Verdict::ok: break;
      case Verdict::badvers:
        ++st_.answers_badvers;
        sink(resolver::error_reply(q, 0, set_.edns_size, true));
        return true;
      default: {
        unsigned rc = v == Verdict::formerr  ? unsigned(LDNS_RCODE_FORMERR)
                      : v == Verdict::notimp ? unsigned(LDNS_RCODE_NOTIMPL)
                                             : unsigned(LDNS_RCODE_REFUSED);
        count_rcode(rc);
        sink(resolver::error_reply(q, rc, set_.edns_size));
        return true;
      }
    }
    resolver::Question question;
    dns::Name::from_wire(q.qname_wire, question.name);
    question.type = q.qtype;
    question.cls = q.qclass;
    size_t limit = tcp ? 65535 : resolver::udp_limit(q, set_.edns_size);

    auto reply = [this, q, limit, sink](Answer& a) {
      bool tc = false;
      auto out = resolver::answer_reply(q, a, set_.edns_size, limit, tc);
      if (tc) ++st_.answers_truncated;
      else if (!a.stale) msgcache_.store(q, out, loop_.now_ms(), a.sec == resolver::Security::secure);
      count_rcode(a.rcode);
      sink(std::move(out));
    };
    if (!q.rd) {
      // RD=0: the cache only, never recursion (RFC 1034 §4.3.1).
      ++st_.queries_rd0;
      Answer a;
      if (!val_.lookup(question, q.cd, a)) {
        ++st_.rd0_cache_miss;
        ++st_.answers_refused;
        sink(resolver::error_reply(q, LDNS_RCODE_REFUSED, set_.edns_size));
        return true;
      }
      reply(a);
      return true;
    }
    std::string ck = client_key(peer);
    unsigned& n = per_client_[ck];
    if (n >= set_.per_client) {
      ++st_.dropped_per_client_limit;
      return false;
    }
    // The pending-query queue, all loops together (max-pending-queries): past its bound a
    // query is dropped and counted, like a full ring; the client retries.
    if (shared_.pending.fetch_add(1, std::memory_order_relaxed) >= set_.max_pending) {
      shared_.pending.fetch_sub(1, std::memory_order_relaxed);
      ++st_.dropped_pending_limit;
      if (n == 0) per_client_.erase(ck);
      return false;
    }
    ++n;
    auto release = [this, ck] {
      shared_.pending.fetch_sub(1, std::memory_order_relaxed);
      if (auto it = per_client_.find(ck); it != per_client_.end() && --it->second == 0)
        per_client_.erase(it);
    };
    bool started = val_.resolve(question, q.cd, [release, reply](Answer& a) {
      release();
      reply(a);
    });
    if (!started) {
      ++st_.dropped_total_limit;
      release();
    }
    return started;
  }

  // The cache-hit fast path: a memoised answer patched in place into `out`, no
  // callbacks. False sends the message down the full path.
  bool fast_udp(std::span<const uint8_t> wire, const sockaddr_storage& peer,
                std::vector<uint8_t>& out) {
    Query& q = fast_q_;
    if (resolver::parse_query(wire, q) != Verdict::ok || !allowed(peer)) return false;
    if (!msgcache_.answer(q, set_.edns_size, resolver::udp_limit(q, set_.edns_size),
                          loop_.now_ms(), out))
      return false;
    ++st_.answers_msgcache;
    if (!q.rd) ++st_.queries_rd0;
    count_rcode(out[3] & 0x0f);
    return true;
  }

  // Batches: one recvmmsg for up to kBatch queries, cache hits answered with one
  // sendmmsg; misses go to the resolver and answer on their own when done.
  static constexpr unsigned kBatch = 32;
  struct UdpBatch {
    uint8_t in[kBatch][4096];  // EDNS queries are small; longer datagrams are truncated -> FORMERR
    alignas(cmsghdr) uint8_t ctl[kBatch][CMSG_SPACE(sizeof(in6_pktinfo)) + 64];
    ReplyCtl reply_ctl[kBatch];
    sockaddr_storage peer[kBatch];
    iovec iov[kBatch], out_iov[kBatch];
    mmsghdr msgs[kBatch], out_msgs[kBatch];
    std::vector<uint8_t> out[kBatch];
  };

  void on_udp(const std::shared_ptr<Listener>& l) {
    if (!batch_) batch_ = std::make_unique<UdpBatch>();
    UdpBatch& b = *batch_;
    std::weak_ptr<Listener> wl = l;
    // Bounded per wakeup so TCP and upstream replies get their turn.
    for (int round = 0; round < 4; ++round) {
      for (unsigned i = 0; i < kBatch; ++i) {
        b.iov[i] = {b.in[i], sizeof b.in[i]};
        b.msgs[i].msg_hdr = {};
        b.msgs[i].msg_hdr.msg_name = &b.peer[i];
        b.msgs[i].msg_hdr.msg_namelen = sizeof b.peer[i];
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i];
        b.msgs[i].msg_hdr.msg_iovlen = 1;
        b.msgs[i].msg_hdr.msg_control = b.ctl[i];
        b.msgs[i].msg_hdr.msg_controllen = sizeof b.ctl[i];
      }
      int n = ::recvmmsg(l->udp.fd, b.msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (n <= 0) return;
      unsigned nout = 0;
      for (int i = 0; i < n; ++i) {
        ++st_.queries_udp;
        std::span<const uint8_t> wire(b.in[i], b.msgs[i].msg_len);
        const sockaddr_storage& peer = b.peer[i];
        socklen_t plen = b.msgs[i].msg_hdr.msg_namelen;
        b.reply_ctl[i].from(b.msgs[i].msg_hdr);  // empty unless a wildcard listener
        if (fast_udp(wire, peer, b.out[nout])) {
          b.out_iov[nout] = {b.out[nout].data(), b.out[nout].size()};
          b.out_msgs[nout].msg_hdr = {};
          b.out_msgs[nout].msg_hdr.msg_name = const_cast<sockaddr_storage*>(&peer);
          b.out_msgs[nout].msg_hdr.msg_namelen = plen;
          b.out_msgs[nout].msg_hdr.msg_iov = &b.out_iov[nout];
          b.out_msgs[nout].msg_hdr.msg_iovlen = 1;
          b.reply_ctl[i].attach(b.out_msgs[nout].msg_hdr);
          ++nout;
          continue;
        }
        ReplyCtl ctl = b.reply_ctl[i];
        handle(wire, peer, false, [this, wl, peer, plen, ctl](std::vector<uint8_t> out) mutable {
          auto sl = wl.lock();
          if (!sl || !sl->registered) return;  // listener removed by a reload meanwhile
          iovec iov{out.data(), out.size()};
          msghdr m{};
          m.msg_name = const_cast<sockaddr_storage*>(&peer);
          m.msg_namelen = plen;
          m.msg_iov = &iov;
          m.msg_iovlen = 1;
          ctl.attach(m);
          if (::sendmsg(sl->udp.fd, &m, 0) < 0) ++st_.udp_send_errors;
        });
      }
      for (unsigned done = 0; done < nout;) {
        int m = ::sendmmsg(l->udp.fd, b.out_msgs + done, nout - done, MSG_DONTWAIT);
        if (m <= 0) {
          st_.udp_send_errors += nout - done;  // full socket buffer: dropped, counted
          break;
        }
        done += unsigned(m);
      }
      if (n < int(kBatch)) return;
    }
  }

  void on_accept(Listener& l) {
    for (int i = 0; i < 16; ++i) {
      sockaddr_storage peer{};
      socklen_t plen = sizeof peer;
      int fd = ::accept4(l.tcp.fd, reinterpret_cast<sockaddr*>(&peer), &plen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      // Refused before a slot is taken: a client that may not query gets no connection
      // (it would only get REFUSED), and no address may hold more than its share.
      if (!allowed(peer)) {
        ++st_.tcp_rejected_acl;
        ::close(fd);
        continue;
      }
      if (conns_.size() >= set_.tcp_max) {
        ++st_.tcp_rejected_limit;
        ::close(fd);
        continue;
      }
      std::string addr = client_key(peer);
      unsigned& from_addr = tcp_per_addr_[addr];
      if (from_addr >= set_.tcp_per_address) {
        ++st_.tcp_rejected_per_address;
        ::close(fd);
        continue;
      }
      ++from_addr;
      ++st_.tcp_accepted;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_shared<TcpConn>();
      c->fd = Fd(fd);
      c->peer = peer;
      c->addr = std::move(addr);
      conns_[fd] = c;
      std::weak_ptr<TcpConn> wc = c;
      loop_.add(fd, EPOLLIN, [this, wc](uint32_t ev) {
        if (auto sc = wc.lock()) on_tcp(sc, ev);
      });
      arm_idle(c);
    }
  }

  void arm_idle(const std::shared_ptr<TcpConn>& c) {
    if (c->idle) loop_.cancel(c->idle);
    std::weak_ptr<TcpConn> wc = c;
    c->idle = loop_.after(std::chrono::milliseconds(set_.tcp_idle_ms), [this, wc] {
      auto sc = wc.lock();
      if (!sc) return;
      sc->idle = 0;
      if (sc->pending > 0) return arm_idle(sc);  // RFC 7766 §6.2.3: idle means no work
      ++st_.tcp_closed_idle;
      close_conn(sc);
    });
  }

  // RFC 7766 §6.2.3 leaves the limits to the server: a message that started must be
  // complete within tcp-message-timeout, whatever trickle of bytes keeps it alive.
  void arm_deadline(const std::shared_ptr<TcpConn>& c) {
    if (c->deadline) return;  // one deadline per message, from its first byte
    std::weak_ptr<TcpConn> wc = c;
    c->deadline = loop_.after(std::chrono::milliseconds(set_.tcp_message_ms), [this, wc] {
      auto sc = wc.lock();
      if (!sc) return;
      sc->deadline = 0;
      ++st_.tcp_closed_message_timeout;
      close_conn(sc);
    });
  }

  void close_conn(const std::shared_ptr<TcpConn>& c) {
    if (c->idle) loop_.cancel(c->idle);
    c->idle = 0;
    if (c->deadline) loop_.cancel(c->deadline);
    c->deadline = 0;
    if (c->fd.fd >= 0) {
      if (auto it = tcp_per_addr_.find(c->addr); it != tcp_per_addr_.end() && --it->second == 0)
        tcp_per_addr_.erase(it);
      loop_.remove(c->fd.fd);
      conns_.erase(c->fd.fd);
      c->fd.reset();  // pending answers find a closed connection and are dropped
    }
  }

  // Reading is allowed while the client has room for another query and the buffer room
  // for another message; otherwise the bytes wait in the kernel (TCP flow control).
  bool may_read(const TcpConn& c) const {
    return !c.eof && c.pending < set_.per_client && c.rbuf.size() < kMaxTcpMessage;
  }

  void set_interest(const std::shared_ptr<TcpConn>& c) {
    if (c->fd.fd < 0) return;
    bool in = may_read(*c), out = !c->wq.empty();
    if (in == c->want_in && out == c->want_out) return;
    if (!in && c->want_in && !c->eof) ++st_.tcp_read_paused;
    loop_.modify(c->fd.fd, (in ? uint32_t(EPOLLIN) : 0u) | (out ? uint32_t(EPOLLOUT) : 0u));
    c->want_in = in;
    c->want_out = out;
  }

  void on_tcp(const std::shared_ptr<TcpConn>& c, uint32_t ev) {
    if (ev & EPOLLOUT) flush(c);
    if (c->fd.fd < 0) return;
    if ((ev & (EPOLLHUP | EPOLLERR)) && !may_read(*c)) {
      // Not reading (client at its limit) and the connection is gone: nothing to answer.
      ++st_.tcp_closed_error;
      return close_conn(c);
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      uint8_t buf[16384];
      while (may_read(*c)) {
        size_t room = std::min(sizeof buf, kMaxTcpMessage - c->rbuf.size());
        ssize_t n = ::recv(c->fd.fd, buf, room, 0);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          ++st_.tcp_closed_error;
          return close_conn(c);
        }
        if (n == 0) {
          c->eof = true;
          break;
        }
        c->rbuf.insert(c->rbuf.end(), buf, buf + n);
        // Start what is complete before reading on: it may free room for more.
        parse(c);
        if (c->fd.fd < 0) return;
      }
      parse(c);
    }
    if (c->fd.fd >= 0 && c->eof && c->pending == 0 && c->wq.empty()) close_conn(c);
  }

  // Starts every complete message in rbuf the client's limit allows, then sets what the
  // connection waits for.
  void parse(const std::shared_ptr<TcpConn>& c) {
    if (c->parsing || c->fd.fd < 0) return;
    c->parsing = true;
    // RFC 7766 §6.2.1.1: pipelined queries, each answered as soon as it is ready.
    size_t off = 0;
    std::weak_ptr<TcpConn> wc = c;
    while (c->rbuf.size() - off >= 2 && c->fd.fd >= 0) {
      size_t len = size_t(c->rbuf[off]) << 8 | c->rbuf[off + 1];
      if (c->rbuf.size() - off - 2 < len) break;
      if (c->pending >= set_.per_client) break;  // back-pressure: wait for answers
      std::vector<uint8_t> msg(c->rbuf.begin() + long(off) + 2, c->rbuf.begin() + long(off + 2 + len));
      off += 2 + len;
      ++st_.queries_tcp;
      ++c->pending;
      arm_idle(c);  // a whole message, not any byte, is activity
      bool answers = handle(msg, c->peer, true, [this, wc](std::vector<uint8_t> out) {
        auto sc = wc.lock();
        if (!sc) return;
        --sc->pending;
        if (sc->fd.fd < 0) return;
        std::vector<uint8_t> framed(2 + out.size());
        framed[0] = uint8_t(out.size() >> 8);
        framed[1] = uint8_t(out.size());
        std::memcpy(framed.data() + 2, out.data(), out.size());
        sc->wbytes += framed.size();
        sc->wq.push_back(std::move(framed));
        arm_idle(sc);
        flush(sc);
        parse(sc);  // room again: start what waits in rbuf, resume reading
      });
      if (!answers) --c->pending;  // dropped: no answer will come
    }
    c->rbuf.erase(c->rbuf.begin(), c->rbuf.begin() + long(off));
    c->parsing = false;
    if (c->fd.fd < 0) return;
    // The clock runs while the next message is incomplete: we wait for the client. A
    // complete message that waits for room (back-pressure) waits for us, not the client.
    bool incomplete = !c->rbuf.empty() &&
                      (c->rbuf.size() < 2 || c->rbuf.size() - 2 < (size_t(c->rbuf[0]) << 8 | c->rbuf[1]));
    if (incomplete && may_read(*c)) {
      arm_deadline(c);
    } else if (c->deadline) {
      loop_.cancel(c->deadline);
      c->deadline = 0;
    }
    set_interest(c);
    if (c->eof && c->pending == 0 && c->wq.empty()) close_conn(c);
  }

  void flush(const std::shared_ptr<TcpConn>& c) {
    while (!c->wq.empty() && c->fd.fd >= 0) {
      auto& b = c->wq.front();
      ssize_t n = ::send(c->fd.fd, b.data() + c->woff, b.size() - c->woff, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN) break;
        ++st_.tcp_closed_error;
        return close_conn(c);
      }
      c->woff += size_t(n);
      if (c->woff == b.size()) {
        c->wbytes -= b.size();
        c->wq.pop_front();
        c->woff = 0;
      }
    }
    if (c->fd.fd < 0) return;
    if (c->wbytes > (1u << 20)) {  // a client that does not read its answers
      ++st_.tcp_closed_error;
      return close_conn(c);
    }
    set_interest(c);
    if (c->eof && c->pending == 0 && c->wq.empty()) close_conn(c);
  }

  EventLoop& loop_;
  resolver::Resolver& res_;
  resolver::Validator& val_;
  resolver::Shared& shared_;
  Settings set_;
  resolver::MsgCache msgcache_;
  std::string answer_rules_;  // render of [cache], [recursion], [dnssec] the memoised answers were built under
  Query fast_q_;                    // reused by fast_udp: keeps its string capacity
  std::unique_ptr<UdpBatch> batch_;  // receive/send buffers, reused every wakeup
  ServerStats st_;
  std::map<std::string, std::shared_ptr<Listener>> listeners_;
  std::unordered_map<int, std::shared_ptr<TcpConn>> conns_;
  std::unordered_map<std::string, unsigned> per_client_;
  std::unordered_map<std::string, unsigned> tcp_per_addr_;  // client_key -> open connections
};

// One event loop's share of the server. Worker 0 runs on the caller's loop; the others own
// their loop and the thread running it. Each loop validates with its own Validator (its key
// and signature memos are per loop); verdicts recorded on the shared cache's entries serve
// every loop.
struct Worker {
  EventLoop* loop = nullptr;
  std::unique_ptr<EventLoop> own_loop;
  std::unique_ptr<resolver::Resolver> resolver;
  std::unique_ptr<resolver::Validator> validator;
  std::unique_ptr<Frontend> frontend;
  std::thread thread;
};

namespace {

unsigned resolve_threads(unsigned configured) {
  if (configured) return configured;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

Server::Server(EventLoop& loop)
    : loop_(loop),
      shared_(std::make_shared<resolver::Shared>()),
      nsecs_(std::make_shared<resolver::NsecStore>()) {
  auto w = std::make_unique<Worker>();
  w->loop = &loop;
  w->resolver = std::make_unique<resolver::Resolver>(loop, shared_);
  w->validator = std::make_unique<resolver::Validator>(loop, *w->resolver, nsecs_);
  w->frontend = std::make_unique<Frontend>(loop, *w->resolver, *w->validator);
  workers_.push_back(std::move(w));
}

Server::~Server() {
  for (size_t i = 1; i < workers_.size(); ++i) workers_[i]->loop->stop();
  for (size_t i = 1; i < workers_.size(); ++i)
    if (workers_[i]->thread.joinable()) workers_[i]->thread.join();
  // Every loop is still; answers queued for other loops are dropped with those loops.
  for (auto& w : workers_) w->frontend.reset();
  for (auto& w : workers_) w->validator.reset();
  for (auto& w : workers_) w->resolver.reset();
}

void Server::on_worker(size_t i, const std::function<void()>& fn) const {
  if (i == 0) return fn();  // the caller's loop: we are on it
  std::promise<void> done;
  workers_[i]->loop->post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

void Server::start_workers(unsigned n) {
  // Worker threads take no signals: they arrive on the caller's loop (signalfd).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  while (workers_.size() < n) {
    auto w = std::make_unique<Worker>();
    w->own_loop = std::make_unique<EventLoop>();
    w->loop = w->own_loop.get();
    w->resolver = std::make_unique<resolver::Resolver>(*w->loop, shared_);
    w->validator = std::make_unique<resolver::Validator>(*w->loop, *w->resolver, nsecs_);
    w->frontend = std::make_unique<Frontend>(*w->loop, *w->resolver, *w->validator);
    EventLoop* loop = w->loop;
    w->thread = std::thread([loop] { loop->run(); });
    pthread_setname_np(w->thread.native_handle(),
                       ("tern-loop" + std::to_string(workers_.size())).c_str());
    workers_.push_back(std::move(w));
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  shared_->loops.store(unsigned(workers_.size()), std::memory_order_relaxed);
}

std::optional<std::string> Server::apply(const Config& c) {
  // Build everything off to the side; nothing running is touched until all succeeded.
  resolver::ResolverConfig rc;
  resolver::Hints hints;
  if (auto e = resolver::prepare(c, rc, hints)) return e;
  rc.dnssec_ok = true;
  if (c.listen.empty()) return std::string("[server] listen: no endpoint configured; add listen = ADDR:PORT");
  // The loop count is fixed at the first apply ([server] threads is restart-only: the
  // daemon keeps the running value on reload and says a restart is needed).
  if (!started_) {
    unsigned n = resolve_threads(c.threads);
    if (n > 1) start_workers(n);
    started_ = true;
  }
  // Each loop validates with its own copy of the DNSSEC settings (ldns objects are not shared
  // across threads); only the first loop's copy writes the RFC 5011 managed file.
  std::vector<resolver::DnssecConfig> dcs(workers_.size());
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (auto e = resolver::prepare_dnssec(c, dcs[i])) return e;
    if (i) dcs[i].anchors.stop_persisting();
  }
  bool reuseport = workers_.size() > 1;
  std::vector<std::map<std::string, std::shared_ptr<Listener>>> next(workers_.size());
  for (size_t i = 0; i < workers_.size(); ++i)
    if (auto e = workers_[i]->frontend->prepare(c, reuseport, next[i]))
      return e;  // new sockets close with `next`
  for (size_t i = 0; i < workers_.size(); ++i) {
    resolver::Hints h;  // each loop its own copy: ldns lists are not shared across threads
    if (hints.ns) h.ns.reset(ldns_rr_list_clone(hints.ns.get()));
    h.servers = hints.servers;
    on_worker(i, [&] {
      workers_[i]->resolver->configure(rc, std::move(h));
      workers_[i]->validator->configure(std::move(dcs[i]));
      workers_[i]->frontend->commit(c, workers_.size(), std::move(next[i]));
    });
  }
  return std::nullopt;
}

void Server::counters(std::vector<std::pair<std::string, uint64_t>>& out) const {
  // Every loop's counters, each read on its own loop, summed by name (first loop's order).
  std::vector<std::pair<std::string, uint64_t>> sum;
  for (size_t i = 0; i < workers_.size(); ++i) {
    std::vector<std::pair<std::string, uint64_t>> mine;
    on_worker(i, [&] {
      const Worker& w = *workers_[i];
      w.frontend->counters(mine);
      const auto& s = w.resolver->stats();
#define X(n) mine.emplace_back("resolver_" #n, s.n);
      TERN_RESOLVER_COUNTERS(X)
#undef X
      const auto& v = w.validator->stats();
#define X(n) mine.emplace_back("dnssec_" #n, v.n);
      TERN_DNSSEC_COUNTERS(X)
#undef X
      const auto& u = w.resolver->upstream_stats();
      mine.emplace_back("upstream_udp_sent", u.udp_sent);
      mine.emplace_back("upstream_tcp_sent", u.tcp_sent);
      mine.emplace_back("upstream_timeouts", u.timeouts);
      mine.emplace_back("upstream_net_errors", u.net_errors);
      mine.emplace_back("upstream_rejected_replies", u.rejected);
      mine.emplace_back("upstream_malformed_replies", u.malformed);
    });
    if (i == 0) {
      sum = std::move(mine);
    } else {
      for (size_t k = 0; k < sum.size() && k < mine.size(); ++k) sum[k].second += mine[k].second;
    }
  }
  out.insert(out.end(), sum.begin(), sum.end());
  // Per-loop memos: the first loop's (every loop builds the same ones).
  out.emplace_back("dnssec_zones_current", workers_[0]->validator->zones_memoised());
  out.emplace_back("dnssec_trust_anchors_current", workers_[0]->validator->trust_anchors());
  // Shared state: one value, not a sum.
  const resolver::Cache& cache = shared_->cache;
  const resolver::Infra& infra = shared_->infra;
  out.emplace_back("cache_evictions", cache.evictions());
  out.emplace_back("cache_entries_current", cache.entries());
  out.emplace_back("cache_bytes_current", cache.bytes());
  out.emplace_back("resolutions_current", shared_->resolutions.load(std::memory_order_relaxed));
  out.emplace_back("pending_queries_current", shared_->pending.load(std::memory_order_relaxed));
  out.emplace_back("joins_cross_loop_current", shared_->joins.owned());
  out.emplace_back("fetches_zone_peak_current", shared_->fetches.zone_peak());
  out.emplace_back("threads_current", workers_.size());
  out.emplace_back("infra_servers_current", infra.size());
  out.emplace_back("infra_lame_current", infra.lame_entries());
  out.emplace_back("infra_bytes_current", infra.bytes());
  out.emplace_back("infra_evictions", infra.evictions());
}

std::vector<UpstreamServerStat> Server::upstream_servers(size_t n) const {
  const resolver::Infra& inf = shared_->infra;
  std::vector<UpstreamServerStat> out;
  for (const resolver::Infra::Tally& t : inf.top(n)) {
    UpstreamServerStat s;
    s.server = t.addr.text();
    if (s.server.ends_with("@53")) s.server.resize(s.server.size() - 3);
    s.queries = t.queries;
    s.timeouts = t.timeouts;
    for (size_t k = 0; k < resolver::kUpstreamErrorKinds; ++k)
      s.errors.emplace_back(resolver::kUpstreamErrorNames[k], t.errors[k]);
    if (auto is = inf.find(t.addr); is && is->srtt >= 0) s.srtt_seconds = is->srtt / 1000.0;
    out.push_back(std::move(s));
  }
  return out;
}

size_t Server::cache_flush(std::string_view name, bool subtree) {
  // Memoised answers are rebuilt from what remains.
  for (size_t i = 0; i < workers_.size(); ++i) on_worker(i, [&] { workers_[i]->frontend->flush_answers(); });
  resolver::Cache& cache = shared_->cache;
  if (name.empty()) return cache.flush_all();
  dns::Name n;
  if (!dns::Name::from_text(name, n)) return 0;
  if (n.is_root() && subtree) return cache.flush_all();
  return cache.flush(n, subtree);
}

size_t Server::trust_anchors() const { return workers_[0]->validator->trust_anchors(); }

std::optional<std::string> Server::nta(const std::vector<std::string>& args,
                                       std::vector<std::string>& out) {
  if (args.size() == 1 && args[0] == "list") {
    out = workers_[0]->validator->nta_list();
    return std::nullopt;
  }
  if (args.size() != 2 || (args[0] != "add" && args[0] != "remove"))
    return std::string("usage: nta add NAME | nta remove NAME | nta list");
  dns::Name n;
  if (!dns::Name::from_text(args[1], n)) return "'" + args[1] + "' is not a domain name";
  bool changed = false;
  for (size_t i = 0; i < workers_.size(); ++i)
    on_worker(i, [&] {
      Worker& w = *workers_[i];
      bool c = args[0] == "add" ? w.validator->nta_add(n) : w.validator->nta_remove(n);
      if (i == 0) changed = c;
      // Answers already judged under the old anchors must be judged again (RFC 7646 §2).
      w.frontend->flush_answers();
    });
  shared_->cache.flush(n, true);
  out.push_back(args[0] == "add" ? (changed ? "added " : "already present: ") + n.text()
                                 : (changed ? "removed " : "not present: ") + n.text());
  return std::nullopt;
}

void Server::cache_dump(std::ostream& os) const { shared_->cache.dump(os, loop_.now_ms()); }

void Server::export_answers(const std::function<void(std::span<const uint8_t>)>& fn) const {
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (i == 0) {
      workers_[0]->frontend->export_answers(fn);
      continue;
    }
    std::vector<std::vector<uint8_t>> msgs;  // copied on that loop, handed over here
    on_worker(i, [&] {
      workers_[i]->frontend->export_answers(
          [&](std::span<const uint8_t> m) { msgs.emplace_back(m.begin(), m.end()); });
    });
    for (const auto& m : msgs) fn(m);
  }
}

}  // namespace tern::control
