// The request framing tern-control's management socket and tern-dataplane's control socket
// share, with both of their clients (ternctl, tern-control -> tern-dataplane).
//
// One request per connection: the client sends one line ("verb args...\n"; a half-close ends
// the line too); the server answers zero or more reply lines and a final status line, "OK" or
// "ERR <message>", and closes. A request is at most kMaxRequest bytes (a policy push with a
// 2,000-prefix allow list is ~40 KB); a reply at most kMaxReply.
//
// Servers: RequestReader collects the line, render_reply() frames the answer; the socket is
// made by listen_unix(). Clients: request() blocks; Exchange drives a non-blocking socket from
// the caller's event loop. Everything here is the standard library and POSIX only.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::proto {

inline constexpr size_t kMaxRequest = size_t(1) << 20;
inline constexpr size_t kMaxReply = size_t(16) << 20;

// ---- server side

class RequestReader {
 public:
  enum class State { more, line, too_long };
  State feed(std::string_view bytes);  // received bytes; `line` once a '\n' has come
  State eof();                         // peer half-closed: whatever came is the line
  std::string_view line() const;       // the request without '\n' and a trailing '\r'
  bool empty() const { return buf_.empty(); }

 private:
  std::string buf_;
  size_t end_ = std::string::npos;
};

struct Reply {
  std::string body;   // reply lines, each ending in '\n'
  bool ok = true;
  std::string error;  // for ERR; folded to one line when rendered
  void line(std::string_view l) { body.append(l).push_back('\n'); }
  void fail(std::string e) { ok = false, error = std::move(e); }
};
std::string render_reply(const Reply&);

// "verb  a b" -> {"verb", "a", "b"}.
std::vector<std::string> split_words(std::string_view line);

// Makes the listening unix socket at `path`, mode 0600 (owner only) or, with `group`, 0660 for
// that group. Refuses when a live server answers at `path` ("is <who> already running?").
// The socket is bound inside a private 0700 directory made next to `path`, given its group
// and mode there, then renamed over `path`: no chown or chmod ever follows a name another
// user could have swapped (a group-writable /run/tern), and a stale socket left by a crash is
// replaced atomically. The parent directory is created when missing (0755).
// Returns the listening fd (non-blocking, close-on-exec) or -1 with *error.
int listen_unix(const std::string& path, const std::string& group, std::string_view who, std::string* error);

// ---- client side

struct Result {
  enum class Status { ok, err, not_running, io_error } status = Status::io_error;
  std::string body;     // reply lines before the status line
  std::string message;  // the ERR message, or what went wrong talking to the socket
  bool ok() const { return status == Status::ok; }
  std::vector<std::string_view> lines() const;  // body split into lines
};

// A complete reply (everything before the server closed) -> Result.
Result parse_reply(std::string_view data);

// Blocking: connect, send, read until the server closes or `timeout` passes.
Result request(const std::string& path, std::string_view line, std::chrono::milliseconds timeout);

// Non-blocking, for an event loop: start() connects and returns the fd to watch (EPOLLOUT
// first); call on_ready() whenever it is ready; once it returns a Result the exchange is over
// and the caller removes and closes the fd. `want_write()` says which event to wait for next.
class Exchange {
 public:
  // -1 and `failed` set when the socket cannot even be started.
  int start(const std::string& path, std::string_view line);
  std::optional<Result> failed;  // set by start() on failure
  bool want_write() const { return sent_ < out_.size(); }
  std::optional<Result> on_ready(int fd, bool error_event);

 private:
  std::string out_, in_;
  size_t sent_ = 0;
};

}  // namespace tern::proto
