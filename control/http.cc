#include "control/http.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tern::control {

struct HttpServer::Conn {
  int fd = -1;
  std::string addr;  // client address bytes: the per-address count
  std::string in;
  std::string out;
  size_t sent = 0;
  EventLoop::TimerId timer = 0;
  bool writing = false;
};

namespace {

std::string_view reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

}  // namespace

HeadParse parse_request_head(std::string_view buf, HttpRequestHead& out) {
  // RFC 9112 2.2: a recipient may accept a bare LF as a line terminator; find the empty line
  // that ends the head either way.
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) end = buf.find("\n\n");
  if (end == std::string_view::npos) return HeadParse::incomplete;
  size_t eol = buf.find('\n');
  std::string_view line = buf.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // RFC 9112 3: request-line = method SP request-target SP HTTP-version
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return HeadParse::bad;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return HeadParse::bad;
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  for (char c : method)
    if (!token_char(c)) return HeadParse::bad;
  for (char c : target)
    if (c <= ' ' || c == 0x7f) return HeadParse::bad;
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.')
    return HeadParse::bad;
  out.method = std::string(method);
  out.target = std::string(target);
  out.version = std::string(version);
  return HeadParse::ok;
}

HttpServer::HttpServer(EventLoop& loop, Handler h) : loop_(loop), handler_(std::move(h)) {}

HttpServer::~HttpServer() {
  while (!conns_.empty()) close_conn(conns_.begin()->first);
  for (auto& [text, fd] : listeners_) {
    loop_.remove(fd);
    ::close(fd);
  }
}

std::optional<std::string> HttpServer::listen(const std::vector<Endpoint>& endpoints) {
  std::unordered_map<std::string, int> next;
  std::vector<int> opened;
  auto fail = [&](const Endpoint& ep, const char* what) {
    std::string err = "http-listen " + ep.text + ": " + what + ": " + std::strerror(errno);
    for (int fd : opened) ::close(fd);
    return err;
  };
  for (const auto& ep : endpoints) {
    if (next.count(ep.text)) continue;
    if (auto it = listeners_.find(ep.text); it != listeners_.end()) {
      next.emplace(ep.text, it->second);
      continue;
    }
    int fd = ::socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(ep, "socket");
    opened.push_back(fd);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ep.addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) < 0)
      return fail(ep, "bind (is another process using the port, or the address not configured?)");
    if (::listen(fd, 64) < 0) return fail(ep, "listen");
    next.emplace(ep.text, fd);
  }
  // Commit: register the new sockets, close the ones no longer wanted.
  for (int fd : opened)
    loop_.add(fd, EPOLLIN, [this, fd](uint32_t) { accept_ready(fd); });
  for (auto& [text, fd] : listeners_) {
    if (!next.count(text)) {
      loop_.remove(fd);
      paused_.erase(fd);
      ::close(fd);
    }
  }
  listeners_ = std::move(next);
  return std::nullopt;
}

std::vector<std::string> HttpServer::listening() const {
  std::vector<std::string> out;
  for (auto& [text, fd] : listeners_) out.push_back(text);
  return out;
}

void HttpServer::accept_ready(int lfd) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: the pending connection stays queued and the level-triggered
        // listener would wake us again at once. Pause it for a moment instead of spinning.
        ++rejected_;
        loop_.remove(lfd);
        paused_.insert(lfd);
        loop_.after(std::chrono::milliseconds(100), [this, lfd] {
          // Still paused means still ours: listen() forgets a listener it closes.
          if (paused_.erase(lfd))
            loop_.add(lfd, EPOLLIN, [this, lfd](uint32_t) { accept_ready(lfd); });
        });
      }
      return;  // EAGAIN, or a transient error (ECONNABORTED): next wakeup
    }
    if (conns_.size() >= kMaxConnections) {
      ++rejected_;
      ::close(fd);
      continue;
    }
    std::string addr = peer.ss_family == AF_INET6
        ? std::string(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr), 16)
        : std::string(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in*>(&peer)->sin_addr), 4);
    size_t& from_addr = per_address_[addr];
    if (from_addr >= max_per_address_) {
      ++rejected_;
      ::close(fd);
      continue;
    }
    ++from_addr;
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->addr = std::move(addr);
    c->timer = loop_.after(kRequestTimeout, [this, fd] {
      auto it = conns_.find(fd);
      if (it == conns_.end()) return;
      it->second->timer = 0;
      ++rejected_;
      if (it->second->writing) close_conn(fd);  // peer stopped reading: give up
      else respond(*it->second, 408, "request head not received in time\n");
    });
    conns_.emplace(fd, std::move(c));
    loop_.add(fd, EPOLLIN | EPOLLRDHUP, [this, fd](uint32_t ev) {
      if (ev & (EPOLLERR | EPOLLHUP)) { close_conn(fd); return; }
      auto it = conns_.find(fd);
      if (it == conns_.end()) return;
      if (it->second->writing) writable(fd);
      else readable(fd);
    });
  }
}

void HttpServer::readable(int fd) {
  Conn& c = *conns_.at(fd);
  char buf[2048];
  bool eof = false;
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, size_t(n));
      if (c.in.size() > kMaxRequest) break;
      continue;
    }
    // EOF: the client may have shut only its sending side after the request (RFC 9112
    // 9.6 lets a client half-close); answer what arrived, the other direction is open.
    if (n == 0) { eof = true; break; }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (errno == EINTR) continue;
    close_conn(fd);
    return;
  }
  HttpRequestHead head;
  HeadParse r = parse_request_head(c.in, head);
  if (r == HeadParse::incomplete && eof && c.in.size() <= kMaxRequest) {
    close_conn(fd);  // closed before a full request: nobody to answer
    return;
  }
  if (r == HeadParse::incomplete) {
    if (c.in.size() > kMaxRequest) {
      ++rejected_;
      respond(c, 431, "request head larger than 8192 bytes\n");
    }
    return;
  }
  if (r == HeadParse::bad) {
    ++rejected_;
    respond(c, 400, "malformed request line\n");
    return;
  }
  if (head.version != "HTTP/1.1" && head.version != "HTTP/1.0") {
    ++rejected_;
    respond(c, 505, "only HTTP/1.0 and HTTP/1.1\n");
    return;
  }
  bool is_head = head.method == "HEAD";
  if (head.method != "GET" && !is_head) {
    ++rejected_;
    respond(c, 405, "only GET and HEAD\n");
    return;
  }
  std::string_view path = head.target;
  if (size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  ++requests_;
  start_write(c, handler_(path), is_head);
}

void HttpServer::respond(Conn& c, int status, std::string_view body, bool head) {
  HttpResponse r;
  r.status = status;
  r.body = std::string(body);
  start_write(c, r, head);
}

void HttpServer::start_write(Conn& c, const HttpResponse& r, bool head) {
  c.out = "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(reason(r.status)) + "\r\n";
  c.out += "Content-Type: " + r.content_type + "\r\n";
  c.out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  c.out += "Cache-Control: no-store\r\n";
  if (r.status == 405) c.out += "Allow: GET, HEAD\r\n";
  c.out += "Connection: close\r\n\r\n";
  if (!head) c.out += r.body;
  c.in.clear();
  c.in.shrink_to_fit();
  c.writing = true;
  int fd = c.fd;
  if (c.timer) loop_.cancel(c.timer);
  c.timer = loop_.after(kWriteTimeout, [this, fd] {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    it->second->timer = 0;
    ++rejected_;
    close_conn(fd);
  });
  // Try at once: the common small response leaves in one send and the connection closes
  // without another loop turn.
  writable(fd);
}

void HttpServer::writable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      loop_.modify(fd, EPOLLOUT);  // not RDHUP: a half-closed peer would wake us in a loop
      return;
    }
    close_conn(fd);
    return;
  }
  // Everything sent: half-close so the client sees EOF after the body, then release.
  ::shutdown(fd, SHUT_WR);
  close_conn(fd);
}

void HttpServer::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  if (it->second->timer) loop_.cancel(it->second->timer);
  if (auto a = per_address_.find(it->second->addr); a != per_address_.end() && --a->second == 0)
    per_address_.erase(a);
  loop_.remove(fd);
  ::close(fd);
  conns_.erase(it);
}

}  // namespace tern::control
