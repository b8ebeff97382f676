// One query to one upstream server over UDP or TCP, on the EventLoop.
//
// Every UDP query gets a fresh socket bound to port 0 (a random source port from the
// kernel's ephemeral range, RFC 5452 §9.2) and connected to the server, so ICMP errors
// surface at once. Replies that fail check_reply() are counted and ignored; the query
// keeps waiting for the genuine answer until its timer fires.
//
// Lifetime: owned by its caller. Destroying it cancels the query (fd closed, timer
// cancelled). The completion callback runs at most once and is the last thing the object
// does, so the callback may destroy the Upstream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "control/loop.h"
#include "control/resolver/response.h"

namespace tern::control::resolver {

struct UpstreamStats {
  uint64_t udp_sent = 0, tcp_sent = 0, timeouts = 0, net_errors = 0, rejected = 0,
           malformed = 0;
};

struct UpstreamResult {
  enum Status { ok, timeout, net_error, malformed } status = timeout;
  dns::Pkt pkt;
  uint32_t rtt_ms = 0;
  std::string detail;  // errno text for net_error
};

class Upstream {
 public:
  using Done = std::function<void(UpstreamResult)>;
  Upstream(EventLoop& loop, UpstreamStats& stats, std::vector<uint8_t> query, Expected exp,
           bool tcp, uint32_t timeout_ms, Done done);
  ~Upstream();
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;

 private:
  void start();
  void on_udp(uint32_t ev);
  void on_tcp(uint32_t ev);
  void finish(UpstreamResult r);
  void close_fd();

  EventLoop& loop_;
  UpstreamStats& stats_;
  std::vector<uint8_t> query_;
  Expected exp_;
  bool tcp_;
  Done done_;
  int fd_ = -1;
  EventLoop::TimerId timer_ = 0;
  uint64_t started_ = 0;
  // TCP state: bytes of the length-prefixed query written, reply buffer.
  size_t written_ = 0;
  std::vector<uint8_t> rbuf_;
  bool connected_ = false;
};

}  // namespace tern::control::resolver
