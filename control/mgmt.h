// tern-control's management socket (ternctl talks to it) and the client side of the same
// framing, used by ternctl and for pushing policy to tern-dataplane.
//
// Framing (shared with tern-dataplane's control socket): the client sends one request line
// terminated by '\n'; the server answers with zero or more reply lines and a final status
// line, `OK` or `ERR <message>`, then closes the connection. One request per connection.
//
// Contract: MgmtServer lives on the EventLoop thread; handlers run there, one at a time, and
// may take as long as a reload takes (the loop is the only thread, so a reload is naturally
// serialised against queries and other requests). Every connection is bounded: a request
// line of at most kMaxRequest bytes within kRequestTimeout, and the reply must be taken by
// the peer within kWriteTimeout; at most kMaxConnections at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/loop.h"

namespace tern::control {

struct MgmtReply {
  std::string body;    // reply lines, each ending in '\n'
  bool ok = true;
  std::string error;   // for ERR; single line
  void line(std::string_view l) { body.append(l).push_back('\n'); }
  void fail(std::string e) { ok = false, error = std::move(e); }
};

class MgmtServer {
 public:
  static constexpr size_t kMaxRequest = 4096;
  static constexpr size_t kMaxConnections = 16;
  static constexpr std::chrono::milliseconds kRequestTimeout{5000};
  static constexpr std::chrono::milliseconds kWriteTimeout{10000};

  // args[0] is the verb; the rest are the request's whitespace-separated words.
  using Handler = std::function<void(const std::vector<std::string>& args, MgmtReply&)>;

  explicit MgmtServer(EventLoop&);
  ~MgmtServer();  // closes connections and the socket, unlinks the socket file
  MgmtServer(const MgmtServer&) = delete;
  MgmtServer& operator=(const MgmtServer&) = delete;

  void on(std::string verb, std::string usage, Handler);

  // Creates the directory if missing (0755), refuses when another process is serving `path`,
  // removes a stale socket file, binds with mode 0600 and listens. On failure nothing is
  // open and the error says what to do.
  std::optional<std::string> open(const std::string& path);
  const std::string& path() const { return path_; }

  uint64_t requests() const { return requests_; }
  uint64_t rejected() const { return rejected_; }

 private:
  struct Conn;
  void accept_ready();
  void conn_event(int fd, uint32_t events);
  void dispatch(Conn&);
  void close_conn(int fd);

  EventLoop& loop_;
  int listen_fd_ = -1;
  std::string path_;
  std::map<std::string, std::pair<std::string, Handler>> handlers_;  // verb -> usage, handler
  std::map<int, std::unique_ptr<Conn>> conns_;
  uint64_t requests_ = 0, rejected_ = 0;
};

// Blocking client for ternctl: sends `request`, returns the reply. Exit-code-relevant failures
// are distinguished so ternctl can tell "not running" from "talked but failed".
struct MgmtResult {
  enum class Status { ok, err, not_running, io_error } status = Status::io_error;
  std::string body;     // reply lines before the status line
  std::string message;  // ERR message, or what went wrong talking to the socket
};
MgmtResult mgmt_request(const std::string& path, const std::string& request,
                        std::chrono::milliseconds timeout);

// Non-blocking one-shot request on the loop (tern-control -> tern-dataplane: policy pushes,
// health checks). The reply is complete when the server closes the connection; it is bounded
// by kMaxAsyncReply bytes and by `timeout`. Unless the request is cancelled, `done` runs on
// the loop thread exactly once, with the result, after the reply or on failure/timeout, and
// never inside the mgmt_request_async call itself. MgmtResult::message does not repeat
// `path`: the caller knows which socket it asked and says so in its own words.
//
// The returned handle owns the request: destroying it, assigning over it or cancel() abandons
// a request still in flight (socket closed, timer cancelled, `done` and its captures released
// at once and never called), so an owner that holds the handle as a member is never called
// back after its destruction. Cancelling a finished request, from inside `done` too, does
// nothing. The handle must not outlive the EventLoop, and is used on the loop thread only.
class MgmtRequest;
inline constexpr size_t kMaxAsyncReply = size_t(4) << 20;
[[nodiscard]] MgmtRequest mgmt_request_async(EventLoop&, const std::string& path,
                                             const std::string& request,
                                             std::chrono::milliseconds timeout,
                                             std::function<void(const MgmtResult&)> done);

class MgmtRequest {
 public:
  MgmtRequest() = default;
  ~MgmtRequest() { cancel(); }
  MgmtRequest(MgmtRequest&&) noexcept = default;
  MgmtRequest& operator=(MgmtRequest&&) noexcept;
  MgmtRequest(const MgmtRequest&) = delete;
  MgmtRequest& operator=(const MgmtRequest&) = delete;

  void cancel();
  bool pending() const;  // started, and neither finished nor cancelled

 private:
  struct State;
  explicit MgmtRequest(std::weak_ptr<State> s) : state_(std::move(s)) {}
  friend MgmtRequest mgmt_request_async(EventLoop&, const std::string&, const std::string&,
                                        std::chrono::milliseconds,
                                        std::function<void(const MgmtResult&)>);
  std::weak_ptr<State> state_;  // the loop keeps the request alive, not the handle
};

}  // namespace tern::control
