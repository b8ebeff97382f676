#include "control/resolver/upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tern::control::resolver {

Upstream::Upstream(EventLoop& loop, UpstreamStats& stats, std::vector<uint8_t> query,
                   Expected exp, bool tcp, uint32_t timeout_ms, Done done)
    : loop_(loop), stats_(stats), query_(std::move(query)), exp_(std::move(exp)), tcp_(tcp),
      done_(std::move(done)) {
  started_ = loop_.now_ms();
  timer_ = loop_.after(std::chrono::milliseconds(timeout_ms), [this] {
    timer_ = 0;
    ++stats_.timeouts;
    finish({UpstreamResult::timeout, nullptr, 0, "no reply"});
  });
  start();
}

Upstream::~Upstream() {
  if (timer_) loop_.cancel(timer_);
  close_fd();
}

void Upstream::close_fd() {
  if (fd_ >= 0) {
    loop_.forget(fd_);  // our own socket, never dup()ed: close() leaves the epoll set
    ::close(fd_);
    fd_ = -1;
  }
}

void Upstream::start() {
  auto fail_soon = [this](int err) {
    // Report through the loop, never from inside the constructor.
    ++stats_.net_errors;
    std::string what = std::strerror(err);
    close_fd();
    if (timer_) loop_.cancel(timer_);
    timer_ = loop_.after(std::chrono::milliseconds(0), [this, what] {
      timer_ = 0;
      finish({UpstreamResult::net_error, nullptr, 0, what});
    });
  };
  int type = (tcp_ ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  fd_ = ::socket(exp_.server.ss.ss_family, type, 0);
  if (fd_ < 0) return fail_soon(errno);
  // No explicit bind: connect() on an unbound socket picks a random ephemeral port
  // (net.ipv4.ip_local_port_range), a fresh one for every query.
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&exp_.server.ss), exp_.server.len) < 0 &&
      errno != EINPROGRESS)
    return fail_soon(errno);
  if (!tcp_) {
    if (::send(fd_, query_.data(), query_.size(), 0) < 0) return fail_soon(errno);
    ++stats_.udp_sent;
    loop_.add(fd_, EPOLLIN, [this](uint32_t ev) { on_udp(ev); });
  } else {
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // RFC 7766 §8: two-octet length prefix.
    std::vector<uint8_t> framed(2 + query_.size());
    framed[0] = uint8_t(query_.size() >> 8);
    framed[1] = uint8_t(query_.size());
    std::memcpy(framed.data() + 2, query_.data(), query_.size());
    query_ = std::move(framed);
    ++stats_.tcp_sent;
    loop_.add(fd_, EPOLLOUT, [this](uint32_t ev) { on_tcp(ev); });
  }
}

void Upstream::on_udp(uint32_t) {
  uint8_t buf[65535];
  for (;;) {
    sockaddr_storage from{};
    socklen_t fromlen = sizeof from;
    ssize_t n = ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fromlen);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      // ECONNREFUSED and friends: the server is unreachable, no need to wait.
      ++stats_.net_errors;
      return finish({UpstreamResult::net_error, nullptr, 0, std::strerror(errno)});
    }
    std::span<const uint8_t> w(buf, size_t(n));
    if (check_reply(w, reinterpret_cast<sockaddr*>(&from), fromlen, exp_) != Reject::none) {
      ++stats_.rejected;
      continue;
    }
    ldns_pkt* p = nullptr;
    if (ldns_wire2pkt(&p, buf, size_t(n)) != LDNS_STATUS_OK) {
      ++stats_.malformed;
      return finish({UpstreamResult::malformed, nullptr, 0, "unparseable reply"});
    }
    return finish({UpstreamResult::ok, dns::Pkt(p), 0, {}});
  }
}

void Upstream::on_tcp(uint32_t ev) {
  if (!connected_) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      ++stats_.net_errors;
      return finish({UpstreamResult::net_error, nullptr, 0, std::strerror(err)});
    }
    connected_ = true;
  }
  if (written_ < query_.size()) {
    ssize_t n = ::send(fd_, query_.data() + written_, query_.size() - written_, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) {
      ++stats_.net_errors;
      return finish({UpstreamResult::net_error, nullptr, 0, std::strerror(errno)});
    }
    if (n > 0) written_ += size_t(n);
    if (written_ == query_.size()) loop_.modify(fd_, EPOLLIN);
    return;
  }
  if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  uint8_t buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      ++stats_.net_errors;
      return finish({UpstreamResult::net_error, nullptr, 0, std::strerror(errno)});
    }
    if (n == 0) {
      ++stats_.net_errors;
      return finish({UpstreamResult::net_error, nullptr, 0, "connection closed before the reply"});
    }
    rbuf_.insert(rbuf_.end(), buf, buf + n);
    while (rbuf_.size() >= 2) {
      size_t len = size_t(rbuf_[0]) << 8 | rbuf_[1];
      if (rbuf_.size() < 2 + len) break;
      std::span<const uint8_t> w(rbuf_.data() + 2, len);
      // The connection is ours alone, so the source is the server by construction.
      if (check_reply(w, nullptr, 0, exp_) != Reject::none) {
        ++stats_.rejected;
        rbuf_.erase(rbuf_.begin(), rbuf_.begin() + 2 + long(len));
        continue;
      }
      ldns_pkt* p = nullptr;
      if (ldns_wire2pkt(&p, w.data(), w.size()) != LDNS_STATUS_OK) {
        ++stats_.malformed;
        return finish({UpstreamResult::malformed, nullptr, 0, "unparseable reply"});
      }
      return finish({UpstreamResult::ok, dns::Pkt(p), 0, {}});
    }
  }
}

void Upstream::finish(UpstreamResult r) {
  if (!done_) return;
  if (timer_) {
    loop_.cancel(timer_);
    timer_ = 0;
  }
  close_fd();
  r.rtt_ms = uint32_t(loop_.refresh_now() - started_);
  Done d = std::move(done_);
  done_ = nullptr;
  d(std::move(r));  // may destroy *this
}

}  // namespace tern::control::resolver
