// The dataplane's control socket: the unix stream socket tern-control and ternctl talk to.
//
// Framing and verbs are the contract's (proto/framing.h, proto/verbs.h): one request line per
// connection, reply lines, a final "OK" or "ERR <message>". Every handler is registered before
// start(), under a name from the verb table; an unknown verb's error lists the table.
//
// Concurrency contract: the server runs on its own thread, which sleeps in poll() when no
// client is connected (the service thread never waits on a slow client). Clients are served
// one at a time, each bounded by a receive/send timeout, so a stuck client delays others by at
// most that timeout. Handlers run on the server thread: they may only call thread-safe APIs
// (cache writers take the shard lock; policy is published through an atomic slot; counters
// are relaxed atomics).
//
// The socket is 0600 (root only) or, with a group, 0660 for it (proto::listen_unix: made in a
// private directory and renamed into place, never chmod-ed through a name): whoever can write
// to it can flush the cache and change the allow list.
#pragma once

#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "proto/verbs.h"

namespace tern::dp {

class ControlServer {
 public:
  // Handler: append reply lines (each ending in '\n') to `out`; return an empty
  // string on success or the error message for the final "ERR" line.
  using Handler = std::function<std::string(std::string_view args, std::string& out)>;

  explicit ControlServer(std::span<const proto::VerbSpec> verbs = proto::kDataplaneVerbs) : verbs_(verbs) {}
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // `verb` must be a row of the verb table (a programming error otherwise: throws).
  void on(std::string_view verb, Handler h);

  // Binds and listens (0600, or 0660 for `group`). Fails (with a message in *error) if the path
  // is in use by a live server; replaces a stale socket file left by a crashed one.
  bool start(const std::string& path, std::string* error, const std::string& group = {});
  void stop();  // joins the thread, removes the socket file
  const std::string& path() const { return path_; }

  // Executes one request line as if it came from the socket (tests, and the
  // service thread's own use). Returns the full reply including the final line.
  std::string execute(std::string_view line);

 private:
  void run();
  void serve_client(int fd);

  std::span<const proto::VerbSpec> verbs_;
  std::map<std::string, Handler, std::less<>> handlers_;
  std::string path_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop() wakes the poll
  std::thread thread_;
};

}  // namespace tern::dp
