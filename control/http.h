// A deliberately small HTTP/1.1 server on tern-control's event loop: GET (and HEAD) of a few
// fixed paths (/metrics, /healthz, /readyz) for Prometheus, keepalived, BIRD scripts and load
// balancers. Not a general web server.
//
// Contract: everything runs on the EventLoop thread; the handler is called there and must not
// block (the health endpoints answer from the health monitor's latest result, /metrics from
// in-process counters). Every connection is bounded: the request head may be at most
// kMaxRequest bytes and must arrive within kRequestTimeout; the whole response must be taken
// by the peer within kWriteTimeout; at most kMaxConnections at once (a connection over the
// limit is accepted and closed at once, so the backlog never fills with clients that wait),
// and at most max_per_address() from one client address, so slow clients on one address
// cannot take the slots a health checker needs. A request followed by a half-close (the
// client shut its sending side) is answered.
// One request per connection (`Connection: close`): scrapers and health checkers open a
// connection per request anyway, and it keeps a stuck client from holding a slot.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "control/config.h"
#include "control/loop.h"

namespace tern::control {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  static constexpr size_t kMaxRequest = 8192;
  static constexpr size_t kMaxConnections = 64;
  static constexpr size_t kDefaultMaxPerAddress = 8;  // [health] http-max-per-address
  static constexpr std::chrono::milliseconds kRequestTimeout{5000};
  static constexpr std::chrono::milliseconds kWriteTimeout{10000};

  // path: the request target without its query string. Unknown paths should get 404.
  using Handler = std::function<HttpResponse(std::string_view path)>;

  HttpServer(EventLoop&, Handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Listens on exactly `endpoints` (sockets already open on an endpoint that stays are kept,
  // so a reload never drops the port). On failure nothing changes and the error names the
  // address and the reason.
  std::optional<std::string> listen(const std::vector<Endpoint>& endpoints);
  std::vector<std::string> listening() const;
  // Connections one client address may hold; applies to new connections.
  void set_max_per_address(size_t n) { max_per_address_ = n ? n : 1; }
  size_t max_per_address() const { return max_per_address_; }

  uint64_t requests() const { return requests_; }
  uint64_t rejected() const { return rejected_; }  // malformed, too large, timed out, over limit

 private:
  struct Conn;
  void accept_ready(int lfd);
  void readable(int fd);
  void writable(int fd);
  void respond(Conn&, int status, std::string_view reason_body, bool head = false);
  void start_write(Conn&, const HttpResponse&, bool head);
  void close_conn(int fd);

  EventLoop& loop_;
  Handler handler_;
  std::unordered_map<std::string, int> listeners_;  // endpoint text -> fd
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
  std::unordered_set<int> paused_;  // listeners taken off epoll while out of descriptors
  std::unordered_map<std::string, size_t> per_address_;  // client address -> connections
  size_t max_per_address_ = kDefaultMaxPerAddress;
  uint64_t requests_ = 0, rejected_ = 0;
};

// Parses an HTTP/1.x request head (through the empty line). Exposed for the unit test.
struct HttpRequestHead {
  std::string method, target, version;
};
enum class HeadParse { incomplete, ok, bad };
HeadParse parse_request_head(std::string_view buf, HttpRequestHead& out);

}  // namespace tern::control
