#include "control_socket.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tern::dp {

namespace {

constexpr size_t kMaxRequest = 4096;
constexpr int kClientTimeoutMs = 2000;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

bool fill_addr(const std::string& path, sockaddr_un& sa, std::string* error) {
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) {
    if (error) *error = "control socket path '" + path + "' is empty or longer than " + std::to_string(sizeof sa.sun_path - 1) + " bytes";
    return false;
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  return true;
}

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string errno_text(const char* what, const std::string& path) {
  return std::string(what) + " " + path + ": " + std::strerror(errno);
}

}  // namespace

ControlServer::~ControlServer() { stop(); }

bool ControlServer::start(const std::string& path, std::string* error) {
  sockaddr_un sa;
  if (!fill_addr(path, sa, error)) return false;
  // A live server answers a connect; a stale file left by a crash does not.
  {
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.get() >= 0 && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      if (error) *error = "control socket " + path + " is in use by a running tern-dataplane; stop it or pass another --control-socket";
      return false;
    }
  }
  ::unlink(path.c_str());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    if (error) *error = errno_text("socket(AF_UNIX) for", path);
    return false;
  }
  // Created 0600 from the start: no window where another user could connect.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::umask(old);
  if (rc != 0) {
    if (error) *error = errno_text("cannot bind control socket", path) + " (does the directory exist and is it writable?)";
    return false;
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), 16) != 0) {
    if (error) *error = errno_text("listen on", path);
    ::unlink(path.c_str());
    return false;
  }
  Fd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake.get() < 0) {
    if (error) *error = errno_text("eventfd for", path);
    ::unlink(path.c_str());
    return false;
  }
  path_ = path;
  listen_fd_ = fd.release();
  wake_fd_ = wake.release();
  thread_ = std::thread([this] { run(); });
  return true;
}

void ControlServer::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(path_.c_str());
    listen_fd_ = -1;
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
}

void ControlServer::run() {
  pollfd pfd[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    int n = ::poll(pfd, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (pfd[1].revents & POLLIN)) return;
    if (pfd[0].revents & POLLIN) {
      Fd c(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
      if (c.get() >= 0) serve_client(c.get());
    }
  }
}

void ControlServer::serve_client(int fd) {
  set_timeouts(fd, kClientTimeoutMs);
  std::string req;
  char buf[512];
  while (req.find('\n') == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF without newline: take what came; timeout: give up below
    req.append(buf, static_cast<size_t>(n));
    if (req.size() > kMaxRequest) {
      write_all(fd, "ERR request longer than " + std::to_string(kMaxRequest) + " bytes\n");
      return;
    }
  }
  if (req.empty()) return;
  if (size_t nl = req.find('\n'); nl != std::string::npos) req.resize(nl);
  write_all(fd, execute(req));
}

std::string ControlServer::execute(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  size_t sp = line.find(' ');
  std::string_view verb = line.substr(0, sp);
  std::string_view args = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
  auto it = handlers_.find(verb);
  if (it == handlers_.end()) {
    std::string verbs;
    for (const auto& [v, h] : handlers_) verbs += (verbs.empty() ? "" : ", ") + v;
    return "ERR unknown verb '" + std::string(verb) + "'; verbs: " + verbs + "\n";
  }
  std::string out;
  std::string err = it->second(args, out);
  if (!out.empty() && out.back() != '\n') out += '\n';
  if (!err.empty()) {
    for (char& c : err)
      if (c == '\n') c = ' ';
    return out + "ERR " + err + "\n";
  }
  return out + "OK\n";
}

std::vector<std::string> control_request(const std::string& path, std::string_view request, std::string* error,
                                         int timeout_ms) {
  std::vector<std::string> lines;
  sockaddr_un sa;
  if (!fill_addr(path, sa, error)) return lines;
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0 || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (error) *error = errno_text("cannot connect to control socket", path) + " (is tern-dataplane running?)";
    return lines;
  }
  set_timeouts(fd.get(), timeout_ms);
  std::string req(request);
  req += '\n';
  if (!write_all(fd.get(), req)) {
    if (error) *error = errno_text("cannot send to", path);
    return lines;
  }
  std::string acc;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    acc.append(buf, static_cast<size_t>(n));
  }
  size_t pos = 0;
  while (pos < acc.size()) {
    size_t nl = acc.find('\n', pos);
    if (nl == std::string::npos) nl = acc.size();
    lines.emplace_back(acc, pos, nl - pos);
    pos = nl + 1;
  }
  if (lines.empty() || (lines.back() != "OK" && lines.back().rfind("ERR", 0) != 0)) {
    if (error) *error = "reply from " + path + " ended without OK/ERR (server stopped or timed out)";
  }
  return lines;
}

bool parse_kv_args(std::string_view args, std::map<std::string, std::string, std::less<>>& out, std::string* error) {
  out.clear();
  while (!args.empty()) {
    size_t sp = args.find(' ');
    std::string_view tok = args.substr(0, sp);
    args.remove_prefix(sp == std::string_view::npos ? args.size() : sp + 1);
    if (tok.empty()) continue;
    size_t eq = tok.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      if (error) *error = "expected key=value, got '" + std::string(tok) + "'";
      return false;
    }
    std::string key(tok.substr(0, eq));
    if (!out.emplace(key, std::string(tok.substr(eq + 1))).second) {
      if (error) *error = "'" + key + "' given twice";
      return false;
    }
  }
  return true;
}

}  // namespace tern::dp
