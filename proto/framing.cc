#include "proto/framing.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace tern::proto {
namespace {

std::string errstr(int e) { return std::strerror(e); }

bool make_addr(const std::string& path, sockaddr_un& sa) {
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return true;
}

std::string too_long(const std::string& path) {
  return "socket path '" + path + "' is empty or longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
         " bytes";
}

Result io_error(std::string msg, Result::Status st = Result::Status::io_error) {
  Result r;
  r.status = st;
  r.message = std::move(msg);
  return r;
}

}  // namespace

// ---- server side

RequestReader::State RequestReader::feed(std::string_view bytes) {
  if (end_ != std::string::npos) return State::line;
  const size_t old = buf_.size();
  buf_.append(bytes);
  if (size_t nl = buf_.find('\n', old); nl != std::string::npos) {
    end_ = nl;
    return end_ > kMaxRequest ? State::too_long : State::line;
  }
  return buf_.size() > kMaxRequest ? State::too_long : State::more;
}

RequestReader::State RequestReader::eof() {
  if (end_ == std::string::npos) end_ = buf_.size();
  return end_ > kMaxRequest ? State::too_long : State::line;
}

std::string_view RequestReader::line() const {
  std::string_view l(buf_);
  l = l.substr(0, end_ == std::string::npos ? 0 : end_);
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  return l;
}

std::string render_reply(const Reply& r) {
  std::string out = r.body;
  if (!out.empty() && out.back() != '\n') out += '\n';
  if (r.ok) return out + "OK\n";
  std::string e = r.error.empty() ? "(no message)" : r.error;
  for (char& c : e)
    if (c == '\n' || c == '\r') c = ' ';
  return out + "ERR " + e + "\n";
}

std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) out.emplace_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

int listen_unix(const std::string& path, const std::string& group, std::string_view who, std::string* error) {
  auto fail = [&](std::string msg) {
    if (error) *error = std::move(msg);
    return -1;
  };
  sockaddr_un sa;
  if (!make_addr(path, sa)) return fail(too_long(path));
  gid_t gid = static_cast<gid_t>(-1);
  if (!group.empty()) {
    const ::group* g = ::getgrnam(group.c_str());
    if (!g) return fail("socket group '" + group + "' does not exist (create it, or leave the group unset)");
    gid = g->gr_gid;
  }
  namespace fs = std::filesystem;
  const fs::path final_path(path);
  fs::path dir = final_path.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return fail("cannot create directory " + dir.string() + " for " + path + ": " + ec.message());
    ::chmod(dir.c_str(), 0755);  // we just made it; nobody else can have swapped it yet
  }
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(path + " exists and is not a socket; refusing to replace it (remove it by hand)");
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
      ::close(probe);
      if (live) return fail("another process is serving " + path + " (is " + std::string(who) + " already running?)");
    }
  }
  // Bind in a private directory: mkdtemp makes it 0700, so chown/chmod by name inside it
  // cannot be redirected; rename() then puts the finished socket in place.
  std::string tmpl = (dir / ".tern-sock-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return fail("cannot make a private directory in " + dir.string() + ": " + errstr(errno));
  const std::string tmp_sock = tmpl + "/s";
  auto cleanup = [&] {
    ::unlink(tmp_sock.c_str());
    ::rmdir(tmpl.c_str());
  };
  sockaddr_un tsa;
  if (!make_addr(tmp_sock, tsa)) {
    cleanup();
    return fail(too_long(tmp_sock));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    cleanup();
    return fail("socket(AF_UNIX): " + errstr(errno));
  }
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&tsa), sizeof tsa);
  const int bind_errno = errno;
  ::umask(old);
  std::string err;
  if (rc != 0) err = "cannot bind " + path + ": " + errstr(bind_errno);
  else if (gid != static_cast<gid_t>(-1) && (::chown(tmp_sock.c_str(), static_cast<uid_t>(-1), gid) != 0 ||
                                             ::chmod(tmp_sock.c_str(), 0660) != 0))
    err = "cannot give " + path + " to group " + group + ": " + errstr(errno);
  else if (::listen(fd, 16) != 0) err = "listen on " + path + ": " + errstr(errno);
  else if (::rename(tmp_sock.c_str(), path.c_str()) != 0) err = "cannot move the socket to " + path + ": " + errstr(errno);
  cleanup();
  if (!err.empty()) {
    ::close(fd);
    return fail(err);
  }
  return fd;
}

// ---- client side

std::vector<std::string_view> Result::lines() const {
  std::vector<std::string_view> out;
  std::string_view b(body);
  while (!b.empty()) {
    size_t nl = b.find('\n');
    out.push_back(b.substr(0, nl));
    if (nl == std::string_view::npos) break;
    b.remove_prefix(nl + 1);
  }
  return out;
}

Result parse_reply(std::string_view all) {
  Result r;
  if (!all.empty() && all.back() == '\n') all.remove_suffix(1);
  const size_t nl = all.rfind('\n');
  std::string_view last = nl == std::string_view::npos ? all : all.substr(nl + 1);
  r.body = nl == std::string_view::npos ? std::string() : std::string(all.substr(0, nl + 1));
  if (last == "OK") {
    r.status = Result::Status::ok;
  } else if (last.substr(0, 3) == "ERR") {
    r.status = Result::Status::err;
    r.message = std::string(last.size() > 4 ? last.substr(4) : std::string_view("(no message)"));
  } else {
    r.status = Result::Status::io_error;
    r.body = std::string(all);
    r.message = all.empty() ? "connection closed without a reply" : "reply did not end with an OK or ERR status line";
  }
  return r;
}

Result request(const std::string& path, std::string_view line, std::chrono::milliseconds timeout) {
  Exchange ex;
  const int fd = ex.start(path, line);
  if (fd < 0) return *ex.failed;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::close(fd);
      return io_error("no complete reply from " + path + " within " + std::to_string(timeout.count()) + " ms");
    }
    pollfd p{fd, static_cast<short>(ex.want_write() ? POLLOUT : POLLIN), 0};
    const int pr = ::poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    if (auto r = ex.on_ready(fd, (p.revents & (POLLERR | POLLHUP)) != 0)) {
      ::close(fd);
      return *r;
    }
  }
}

int Exchange::start(const std::string& path, std::string_view line) {
  out_.assign(line);
  out_ += '\n';
  sockaddr_un sa;
  if (!make_addr(path, sa)) {
    failed = io_error(too_long(path));
    return -1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    failed = io_error("socket(AF_UNIX): " + errstr(errno));
    return -1;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
    const int e = errno;
    ::close(fd);
    if (e == ENOENT) failed = io_error("no socket at " + path, Result::Status::not_running);
    else if (e == ECONNREFUSED) failed = io_error("nobody is listening on " + path + " (stale socket)", Result::Status::not_running);
    else if (e == EACCES || e == EPERM)
      failed = io_error("permission denied on " + path + ": the socket is for root (or its group) only");
    else failed = io_error("cannot connect to " + path + ": " + errstr(e));
    return -1;
  }
  return fd;
}

std::optional<Result> Exchange::on_ready(int fd, bool error_event) {
  if (sent_ < out_.size()) {
    while (sent_ < out_.size()) {
      const ssize_t n = ::send(fd, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
      if (n > 0) {
        sent_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!error_event) return std::nullopt;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        return io_error("cannot connect: " + errstr(err ? err : ECONNRESET));
      }
      if (n < 0 && errno == EINTR) continue;
      return io_error("sending the request: " + errstr(errno));
    }
    return std::nullopt;  // now wait for the reply
  }
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      if (in_.size() > kMaxReply) return io_error("reply larger than " + std::to_string(kMaxReply >> 20) + " MiB");
      continue;
    }
    if (n == 0) return parse_reply(in_);
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    if (errno == EINTR) continue;
    return io_error("reading the reply: " + errstr(errno));
  }
}

}  // namespace tern::proto
