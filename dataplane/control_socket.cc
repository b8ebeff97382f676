#include "control_socket.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proto/framing.h"

namespace tern::dp {

namespace {

constexpr int kClientTimeoutMs = 2000;

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

ControlServer::~ControlServer() { stop(); }

void ControlServer::on(std::string_view verb, Handler h) {
  if (!proto::find_verb(verbs_, verb))
    throw std::logic_error("control socket: verb '" + std::string(verb) + "' is not in the verb table");
  handlers_[std::string(verb)] = std::move(h);
}

bool ControlServer::start(const std::string& path, std::string* error, const std::string& group) {
  std::string err;
  const int fd = proto::listen_unix(path, group, "tern-dataplane", &err);
  if (fd < 0) {
    if (error) *error = "control socket: " + err + (err.find("serving") != std::string::npos ? " (in use; pass another --control-socket)" : "");
    return false;
  }
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    if (error) *error = "eventfd for " + path + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(path.c_str());
    return false;
  }
  path_ = path;
  listen_fd_ = fd;
  wake_fd_ = wake;
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
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        serve_client(c);
        ::close(c);
      }
    }
  }
}

void ControlServer::serve_client(int fd) {
  timeval tv{kClientTimeoutMs / 1000, (kClientTimeoutMs % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  proto::RequestReader rr;
  proto::RequestReader::State st = proto::RequestReader::State::more;
  char buf[16384];
  while (st == proto::RequestReader::State::more) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // timeout or error: nothing to answer
    st = n > 0 ? rr.feed({buf, static_cast<size_t>(n)}) : rr.eof();
  }
  if (st == proto::RequestReader::State::too_long) {
    proto::Reply r;
    r.fail("request longer than " + std::to_string(proto::kMaxRequest) + " bytes");
    write_all(fd, proto::render_reply(r));
    return;
  }
  if (rr.line().empty() && rr.empty()) return;
  write_all(fd, execute(rr.line()));
}

std::string ControlServer::execute(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  const size_t sp = line.find(' ');
  std::string_view verb = line.substr(0, sp);
  std::string_view args = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
  proto::Reply r;
  auto it = handlers_.find(verb);
  if (it == handlers_.end()) {
    std::string verbs;
    for (const auto& v : verbs_) verbs += (verbs.empty() ? "" : ", ") + std::string(v.usage);
    r.fail("unknown verb '" + std::string(verb) + "'; verbs: " + verbs);
    return proto::render_reply(r);
  }
  std::string err;
  try {
    err = it->second(args, r.body);
  } catch (const std::exception& e) {
    err = std::string(verb) + " failed: " + e.what();
  }
  if (!err.empty()) r.fail(std::move(err));
  return proto::render_reply(r);
}

}  // namespace tern::dp
