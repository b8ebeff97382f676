#include "control/mgmt.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace tern::control {
struct MgmtServer::Conn {
  int fd = -1;
  proto::RequestReader in;
  std::string out;
  size_t sent = 0;
  bool replying = false;
  EventLoop::TimerId timer = 0;
};

MgmtServer::MgmtServer(EventLoop& loop, std::span<const proto::VerbSpec> verbs) : loop_(loop), verbs_(verbs) {}

MgmtServer::~MgmtServer() {
  while (!conns_.empty()) close_conn(conns_.begin()->first);
  if (listen_fd_ >= 0) {
    loop_.remove(listen_fd_);
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
}

void MgmtServer::on(std::string_view verb, Handler h) {
  if (!proto::find_verb(verbs_, verb))
    throw std::logic_error("management socket: verb '" + std::string(verb) + "' is not in the verb table");
  handlers_[std::string(verb)] = std::move(h);
}

std::optional<std::string> MgmtServer::open(const std::string& path) {
  std::string err;
  const int fd = proto::listen_unix(path, "", "tern-control", &err);
  if (fd < 0) return "control socket: " + err + (err.find("serving") != std::string::npos ? " (see: ternctl status)" : "");
  listen_fd_ = fd;
  path_ = path;
  loop_.add(fd, EPOLLIN, [this](uint32_t) { accept_ready(); });
  return std::nullopt;
}

void MgmtServer::accept_ready() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE...): try again on next event
    if (conns_.size() >= kMaxConnections) {
      ++rejected_;
      static constexpr char busy[] = "ERR busy: too many management connections\n";
      [[maybe_unused]] ssize_t w = ::send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL);
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->timer = loop_.after(kRequestTimeout, [this, fd] {
      ++rejected_;
      if (auto it = conns_.find(fd); it != conns_.end()) it->second->timer = 0;
      close_conn(fd);
    });
    conns_[fd] = std::move(c);
    loop_.add(fd, EPOLLIN, [this, fd](uint32_t ev) { conn_event(fd, ev); });
  }
}

void MgmtServer::conn_event(int fd, uint32_t events) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (!c.replying) {
    char buf[16384];
    proto::RequestReader::State st = proto::RequestReader::State::more;
    while (st == proto::RequestReader::State::more) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        st = c.in.feed({buf, size_t(n)});
        continue;
      }
      if (n == 0) {
        // A client may half-close after its request; EOF ends the line.
        if (c.in.empty()) return close_conn(fd);
        st = c.in.eof();
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      return close_conn(fd);
    }
    if (st == proto::RequestReader::State::too_long) {
      ++rejected_;
      MgmtReply r;
      r.fail("request longer than " + std::to_string(kMaxRequest) + " bytes");
      c.out = proto::render_reply(r);
      c.replying = true;
    }
    if (!c.replying) dispatch(c);
    loop_.cancel(c.timer);
    c.timer = loop_.after(kWriteTimeout, [this, fd] {
      ++rejected_;
      if (auto i = conns_.find(fd); i != conns_.end()) i->second->timer = 0;
      close_conn(fd);
    });
    loop_.modify(fd, EPOLLOUT);
    events = EPOLLOUT;
  }
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
    while (c.sent < c.out.size()) {
      ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += size_t(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EINTR) continue;
      break;  // peer went away
    }
    close_conn(fd);
  }
}

void MgmtServer::dispatch(Conn& c) {
  ++requests_;
  c.replying = true;
  auto args = proto::split_words(c.in.line());
  MgmtReply reply;
  auto verbs = [&] {
    std::string v;
    for (const auto& spec : verbs_) v += (v.empty() ? "" : " ") + std::string(spec.name);
    return v;
  };
  if (args.empty()) {
    reply.fail("empty request; verbs: " + verbs());
  } else if (auto h = handlers_.find(args[0]); h == handlers_.end()) {
    reply.fail("unknown verb '" + args[0] + "'; verbs: " + verbs());
  } else {
    try {
      h->second(args, reply);
    } catch (const std::exception& e) {
      reply.fail(args[0] + " failed: " + e.what());
    }
  }
  c.out = proto::render_reply(reply);
}

void MgmtServer::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  if (it->second->timer) loop_.cancel(it->second->timer);
  loop_.remove(fd);
  ::close(fd);
  conns_.erase(it);
}

// ---------------------------------------------------------------------------------------
// The non-blocking client

// One request in flight. Who holds it: the loop, through the fd callback (or the posted
// report of an early failure), until finish() or abandon(); the timer and the caller's
// MgmtRequest only hold weak references, so a finished request is freed at once.
struct MgmtRequest::State : std::enable_shared_from_this<MgmtRequest::State> {
  EventLoop& loop;
  int fd = -1;  // registered with the loop while >= 0
  proto::Exchange ex;
  EventLoop::TimerId timer = 0;
  std::function<void(const MgmtResult&)> done;  // empty once called or abandoned

  explicit State(EventLoop& l) : loop(l) {}
  // Only reached with an open fd when loop.add() threw, or when the loop itself is destroyed
  // with the request in flight (the loop is going away): just close.
  ~State() {
    if (fd >= 0) ::close(fd);
  }

  void release() {
    if (fd >= 0) {
      loop.remove(fd);
      ::close(fd);
      fd = -1;
    }
    if (timer) loop.cancel(timer), timer = 0;
  }
  void abandon() {
    done = nullptr;
    release();
  }
  void finish(const MgmtResult& r) {
    if (fd < 0) return;
    release();
    if (auto cb = std::exchange(done, nullptr)) cb(r);
  }
  void fail(std::string msg) {
    MgmtResult r;
    r.status = MgmtResult::Status::io_error;
    r.message = std::move(msg);
    finish(r);
  }
  void event(uint32_t ev) {
    auto self = shared_from_this();  // finish() drops the loop's reference
    const bool was_writing = ex.want_write();
    if (auto r = ex.on_ready(fd, (ev & (EPOLLERR | EPOLLHUP)) != 0)) return finish(*r);
    if (was_writing && !ex.want_write()) loop.modify(fd, EPOLLIN);
  }
};

MgmtRequest& MgmtRequest::operator=(MgmtRequest&& o) noexcept {
  if (this != &o) {
    cancel();
    state_ = std::move(o.state_);
  }
  return *this;
}

void MgmtRequest::cancel() {
  if (auto s = std::exchange(state_, {}).lock()) s->abandon();
}

bool MgmtRequest::pending() const {
  auto s = state_.lock();
  return s && s->done;
}

MgmtRequest mgmt_request_async(EventLoop& loop, const std::string& path,
                               const std::string& request, std::chrono::milliseconds timeout,
                               std::function<void(const MgmtResult&)> done) {
  auto req = std::make_shared<MgmtRequest::State>(loop);
  req->done = std::move(done);
  const int fd = req->ex.start(path, request);
  if (fd < 0) {
    // Report on the next turn, so callers never see their callback run inside this call; the
    // posted task holds the request, and an abandoned one has no callback left to run.
    loop.post([req, r = *req->ex.failed] {
      if (auto cb = std::exchange(req->done, nullptr)) cb(r);
    });
    return MgmtRequest(req);
  }
  // The loop holds the request alive through the fd callback until finish() removes it.
  req->fd = fd;
  loop.add(fd, EPOLLOUT, [req](uint32_t ev) { req->event(ev); });
  req->timer = loop.after(timeout, [w = std::weak_ptr<MgmtRequest::State>(req), timeout] {
    if (auto r = w.lock()) {
      r->timer = 0;
      r->fail("no reply within " + std::to_string(timeout.count()) + " ms");
    }
  });
  return MgmtRequest(req);
}

}  // namespace tern::control
