// The dataplane's control socket: a unix stream socket that tern-control and
// ternctl talk to.
//
// Protocol: the client connects, sends one request line ("verb args...\n"), and
// reads reply lines until a final "OK" or "ERR <message>"; then the server
// closes. Every verb is a handler registered before start(); unknown verbs get
// "ERR unknown verb 'x'; verbs: ...".
//
// Concurrency contract: the server runs on its own thread, which sleeps in
// poll() when no client is connected (the service thread never waits on a slow
// client). Clients are served one at a time, each bounded by a receive/send
// timeout, so a stuck client delays others by at most that timeout. Handlers run
// on the server thread: they may only call thread-safe APIs (cache writers take
// the shard lock; policy is published through an atomic slot; counters are
// relaxed atomics).
//
// The socket file is created mode 0600 (root-owned when the daemon runs as root):
// whoever can write to it can flush the cache and change the allow list.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tern::dp {

class ControlServer {
 public:
  // Handler: append reply lines (each ending in '\n') to `out`; return an empty
  // string on success or the error message for the final "ERR" line.
  using Handler = std::function<std::string(std::string_view args, std::string& out)>;

  ControlServer() = default;
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void on(std::string verb, Handler h) { handlers_[std::move(verb)] = std::move(h); }

  // Binds and listens. Fails (with a message in *error) if the path is in use by
  // a live server; removes a stale socket file left by a crashed one.
  bool start(const std::string& path, std::string* error);
  void stop();  // joins the thread, removes the socket file
  const std::string& path() const { return path_; }

  // Executes one request line as if it came from the socket (tests, and the
  // service thread's own use). Returns the full reply including the final line.
  std::string execute(std::string_view line);

 private:
  void run();
  void serve_client(int fd);

  std::map<std::string, Handler, std::less<>> handlers_;
  std::string path_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop() wakes the poll
  std::thread thread_;
};

// Client side, for tools and tests: sends `request`, returns every reply line
// (final OK/ERR line included). Empty vector + *error on connection failure.
std::vector<std::string> control_request(const std::string& path, std::string_view request,
                                         std::string* error, int timeout_ms = 5000);

// "key=value key2=value2" -> map; rejects malformed or repeated keys.
bool parse_kv_args(std::string_view args, std::map<std::string, std::string, std::less<>>& out,
                   std::string* error);

}  // namespace tern::dp
