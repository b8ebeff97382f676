// tern-control's management socket (ternctl talks to it) and the non-blocking client tern-control
// uses towards tern-dataplane (policy pushes, health checks, flushes, warm-up).
//
// Framing, reply types, the verb table and the blocking client are the contract's
// (proto/framing.h, proto/verbs.h); this file only puts them on the EventLoop.
//
// Contract: MgmtServer lives on the EventLoop thread; handlers run there, one at a time, and
// may take as long as a reload takes (the loop is the only thread, so a reload is naturally
// serialised against queries and other requests). Every connection is bounded: a request
// line of at most proto::kMaxRequest bytes within kRequestTimeout, and the reply must be taken
// by the peer within kWriteTimeout; at most kMaxConnections at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/loop.h"
#include "proto/framing.h"
#include "proto/verbs.h"

namespace tern::control {

using MgmtReply = proto::Reply;
using MgmtResult = proto::Result;

class MgmtServer {
 public:
  static constexpr size_t kMaxRequest = proto::kMaxRequest;
  static constexpr size_t kMaxConnections = 16;
  static constexpr std::chrono::milliseconds kRequestTimeout{5000};
  static constexpr std::chrono::milliseconds kWriteTimeout{10000};

  // args[0] is the verb; the rest are the request's whitespace-separated words.
  using Handler = std::function<void(const std::vector<std::string>& args, MgmtReply&)>;

  explicit MgmtServer(EventLoop&, std::span<const proto::VerbSpec> verbs = proto::kControlVerbs);
  ~MgmtServer();  // closes connections and the socket, unlinks the socket file
  MgmtServer(const MgmtServer&) = delete;
  MgmtServer& operator=(const MgmtServer&) = delete;

  // `verb` must be a row of the verb table (a programming error otherwise: throws).
  void on(std::string_view verb, Handler);

  // proto::listen_unix: creates the directory if missing (0755), refuses when another process
  // is serving `path`, replaces a stale socket file, mode 0600. On failure nothing is open and
  // the error says what to do.
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
  std::span<const proto::VerbSpec> verbs_;
  std::map<std::string, Handler, std::less<>> handlers_;
  std::map<int, std::unique_ptr<Conn>> conns_;
  uint64_t requests_ = 0, rejected_ = 0;
};

// Non-blocking one-shot request on the loop (tern-control -> tern-dataplane: policy pushes,
// health checks). The reply is complete when the server closes the connection; it is bounded
// by proto::kMaxReply bytes and by `timeout`. Unless the request is cancelled, `done` runs on
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
