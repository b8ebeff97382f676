#include "control/mgmt.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <utility>

namespace tern::control {
namespace {

std::string errstr(int e) { return std::strerror(e); }

// Fills a sockaddr_un; false when the path does not fit sun_path.
bool make_addr(const std::string& path, sockaddr_un& sa) {
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return true;
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::istringstream in{std::string(s)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Splits a complete reply (everything the server sent before closing) into body and status.
MgmtResult parse_reply(const std::string& data) {
  MgmtResult r;
  std::string_view all(data);
  if (!all.empty() && all.back() == '\n') all.remove_suffix(1);
  size_t nl = all.rfind('\n');
  std::string_view last = nl == std::string_view::npos ? all : all.substr(nl + 1);
  r.body = nl == std::string_view::npos ? std::string() : std::string(all.substr(0, nl + 1));
  if (last == "OK") {
    r.status = MgmtResult::Status::ok;
  } else if (last.substr(0, 3) == "ERR") {
    r.status = MgmtResult::Status::err;
    r.message = std::string(last.size() > 4 ? last.substr(4) : std::string_view("(no message)"));
  } else {
    r.status = MgmtResult::Status::io_error;
    r.body = data;
    r.message = data.empty() ? "connection closed without a reply"
                             : "reply did not end with an OK or ERR status line";
  }
  return r;
}

}  // namespace

struct MgmtServer::Conn {
  int fd = -1;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool replying = false;
  EventLoop::TimerId timer = 0;
};

MgmtServer::MgmtServer(EventLoop& loop) : loop_(loop) {}

MgmtServer::~MgmtServer() {
  while (!conns_.empty()) close_conn(conns_.begin()->first);
  if (listen_fd_ >= 0) {
    loop_.remove(listen_fd_);
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
}

void MgmtServer::on(std::string verb, std::string usage, Handler h) {
  handlers_[std::move(verb)] = {std::move(usage), std::move(h)};
}

std::optional<std::string> MgmtServer::open(const std::string& path) {
  sockaddr_un sa;
  if (!make_addr(path, sa))
    return "control socket path " + path + " is too long for a unix socket";
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return "cannot create directory " + dir.string() + " for the control socket: " +
                   ec.message();
    ::chmod(dir.c_str(), 0755);
  }

  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return path + " exists and is not a socket; refusing to replace it (remove it by hand)";
    // A socket file is either a live tern-control (refuse: two daemons would fight over the
    // same addresses) or left over from a crash (remove it).
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
      ::close(probe);
      if (live)
        return "another process is already serving " + path +
               " (is tern-control already running? see: ternctl status)";
    }
    ::unlink(path.c_str());
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return "socket(AF_UNIX): " + errstr(errno);
  // The socket file's mode comes from the umask at bind(): 0600 from the start, so there is
  // no window in which another user could connect. chmod afterwards only makes it explicit.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int bind_errno = errno;
  ::umask(old);
  if (rc < 0) {
    ::close(fd);
    return "cannot bind control socket " + path + ": " + errstr(bind_errno);
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd, 16) < 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return "listen on control socket " + path + ": " + errstr(e);
  }
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
    char buf[1024];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, size_t(n));
        if (c.in.find('\n') != std::string::npos) break;
        if (c.in.size() > kMaxRequest) {
          ++rejected_;
          c.out = "ERR request longer than " + std::to_string(kMaxRequest) + " bytes\n";
          c.replying = true;
          break;
        }
        continue;
      }
      if (n == 0) {
        // A client may half-close after its request; treat EOF as the end of the line.
        if (c.in.empty()) return close_conn(fd);
        c.in.push_back('\n');
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      return close_conn(fd);
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
  std::string_view line(c.in);
  line = line.substr(0, line.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto args = words(line);
  MgmtReply reply;
  if (args.empty()) {
    reply.fail("empty request; verbs: " + [&] {
      std::string v;
      for (auto& [k, _] : handlers_) v += (v.empty() ? "" : " ") + k;
      return v;
    }());
  } else if (auto h = handlers_.find(args[0]); h == handlers_.end()) {
    std::string v;
    for (auto& [k, _] : handlers_) v += (v.empty() ? "" : " ") + k;
    reply.fail("unknown verb '" + args[0] + "'; verbs: " + v);
  } else {
    try {
      h->second.second(args, reply);
    } catch (const std::exception& e) {
      reply.fail(args[0] + " failed: " + e.what());
    }
  }
  c.out = std::move(reply.body);
  if (reply.ok) {
    c.out += "OK\n";
  } else {
    // The status line is one line whatever the handler wrote.
    for (auto& ch : reply.error)
      if (ch == '\n' || ch == '\r') ch = ' ';
    c.out += "ERR " + reply.error + "\n";
  }
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
// Clients

MgmtResult mgmt_request(const std::string& path, const std::string& request,
                        std::chrono::milliseconds timeout) {
  MgmtResult r;
  sockaddr_un sa;
  if (!make_addr(path, sa)) {
    r.message = "socket path " + path + " is too long";
    return r;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.message = "socket(AF_UNIX): " + errstr(errno);
    return r;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    ::close(fd);
    if (e == ENOENT || e == ECONNREFUSED) {
      r.status = MgmtResult::Status::not_running;
      r.message = e == ENOENT ? "no socket at " + path
                              : "nobody is listening on " + path + " (stale socket)";
    } else if (e == EACCES || e == EPERM) {
      r.message = "permission denied on " + path + ": the socket is root-only (mode 0600); "
                  "run ternctl as root";
    } else {
      r.message = "cannot connect to " + path + ": " + errstr(e);
    }
    return r;
  }
  std::string line = request + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.message = "sending the request to " + path + ": " + errstr(errno);
      ::close(fd);
      return r;
    }
    off += size_t(n);
  }
  std::string data;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::close(fd);
      r.message = "no complete reply from " + path + " within " +
                  std::to_string(timeout.count()) + " ms";
      return r;
    }
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, int(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;  // timeout is handled at the top
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      data.append(buf, size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.message = "reading the reply from " + path + ": " + errstr(errno);
      ::close(fd);
      return r;
    }
    break;  // EOF: the reply is complete
  }
  ::close(fd);
  return parse_reply(data);
}

// One request in flight. Who holds it: the loop, through the fd callback (or the posted
// report of an early failure), until finish() or abandon(); the timer and the caller's
// MgmtRequest only hold weak references, so a finished request is freed at once.
struct MgmtRequest::State : std::enable_shared_from_this<MgmtRequest::State> {
  EventLoop& loop;
  int fd = -1;  // registered with the loop while >= 0
  std::string out, in;
  size_t sent = 0;
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
    if (sent < out.size()) {
      if (ev & (EPOLLERR | EPOLLHUP) && !(ev & EPOLLOUT)) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        return fail("cannot connect: " + errstr(err ? err : ECONNRESET));
      }
      while (sent < out.size()) {
        ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
          sent += size_t(n);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        return fail("sending the request: " + errstr(errno));
      }
      loop.modify(fd, EPOLLIN);
      return;
    }
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        in.append(buf, size_t(n));
        if (in.size() > kMaxAsyncReply)
          return fail("reply larger than " + std::to_string(kMaxAsyncReply >> 20) + " MiB");
        continue;
      }
      if (n == 0) return finish(parse_reply(in));
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      return fail("reading the reply: " + errstr(errno));
    }
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
  req->out = request + "\n";
  // Report on the next turn, so callers never see their callback run inside this call; the
  // posted task holds the request, and an abandoned one has no callback left to run.
  auto fail_now = [&](std::string msg, MgmtResult::Status st) {
    MgmtResult r;
    r.status = st;
    r.message = std::move(msg);
    loop.post([req, r] {
      if (auto cb = std::exchange(req->done, nullptr)) cb(r);
    });
    return MgmtRequest(req);
  };
  sockaddr_un sa;
  if (!make_addr(path, sa))
    return fail_now("path longer than " + std::to_string(sizeof sa.sun_path - 1) +
                        " bytes, too long for a unix socket",
                    MgmtResult::Status::io_error);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail_now("socket(AF_UNIX): " + errstr(errno), MgmtResult::Status::io_error);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 && errno != EINPROGRESS &&
      errno != EAGAIN) {
    int e = errno;
    ::close(fd);
    return fail_now("cannot connect: " + errstr(e),
                    e == ENOENT || e == ECONNREFUSED ? MgmtResult::Status::not_running
                                                     : MgmtResult::Status::io_error);
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
