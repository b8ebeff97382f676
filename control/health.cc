#include "control/health.h"

#include <netinet/in.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "control/mgmt.h"
#include "proto/counters.h"
#include "proto/dns_names.h"

namespace tern::control {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// RFC 1035 3.1: labels of 1..63 octets, the whole name at most 255 octets on the wire.
bool name_to_wire(std::string_view name, std::vector<uint8_t>& out, std::string& err) {
  if (name.empty()) { err = "empty name"; return false; }
  if (name == ".") { out.push_back(0); return true; }
  if (name.back() == '.') name.remove_suffix(1);
  size_t start_size = out.size();
  while (!name.empty()) {
    size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63) {
      err = "label '" + std::string(label) + "' must be 1..63 characters";
      return false;
    }
    out.push_back(uint8_t(label.size()));
    for (char c : label) out.push_back(uint8_t(lower(c)));
    name = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
  }
  out.push_back(0);
  if (out.size() - start_size > 255) { err = "name longer than 255 octets"; return false; }
  return true;
}

void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}
uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }

uint64_t mono_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

std::string fmt_latency(uint64_t us) {
  char b[32];
  if (us < 10000) std::snprintf(b, sizeof b, "%llu us", (unsigned long long)us);
  else std::snprintf(b, sizeof b, "%llu ms", (unsigned long long)(us / 1000));
  return b;
}

// One request on the dataplane control socket (mgmt_request_async, control/mgmt.h), as the
// checks read it.
struct DpResult {
  bool ok = false;              // final line was OK
  std::vector<std::string> lines;
  std::string error;            // the ERR message as the dataplane sent it, or what went wrong
  uint64_t latency_us = 0;      // from sending the request to its outcome
};

DpResult to_dp_result(const MgmtResult& m, const std::string& path, uint64_t start_us) {
  DpResult r;
  r.latency_us = mono_us() - start_us;
  r.ok = m.status == MgmtResult::Status::ok;
  if (m.status == MgmtResult::Status::err) r.error = m.message;  // e.g. unknown verb 'probe'
  else if (!r.ok) r.error = "dataplane socket " + path + ": " + m.message;
  std::string_view body(m.body);
  while (!body.empty()) {
    size_t nl = body.find('\n');
    std::string_view line = body.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    r.lines.emplace_back(line);
    body.remove_prefix(nl == std::string_view::npos ? body.size() : nl + 1);
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// The recursion canary: one UDP query to tern-control's own listener.
struct CanaryResult {
  bool ok = false;
  std::string detail;  // rcode/answers on success, the reason on failure
  uint64_t latency_us = 0;
};

class CanaryQuery {
 public:
  using Done = std::function<void(CanaryResult)>;
  CanaryQuery(EventLoop& loop, const Endpoint& server, const CheckQuery& q, std::string name,
              uint16_t id, unsigned deadline_ms, Done done)
      : loop_(loop), q_(q), name_(std::move(name)), id_(id), done_(std::move(done)),
        start_(mono_us()) {
    server_text_ = server.text;
    fd_ = ::socket(server.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) { fail(std::string("socket: ") + std::strerror(errno)); return; }
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&server.addr), server.len) < 0) {
      fail(std::string("connect: ") + std::strerror(errno));
      return;
    }
    auto msg = build_query(name_, q_.qtype, id_);
    if (::send(fd_, msg.data(), msg.size(), 0) < 0) {
      fail(std::string("send: ") + std::strerror(errno));
      return;
    }
    timer_ = loop_.after(std::chrono::milliseconds(deadline_ms), [this, deadline_ms] {
      timer_ = 0;
      fail("no answer within " + std::to_string(deadline_ms) + " ms");
    });
    loop_.add(fd_, EPOLLIN, [this](uint32_t) { on_read(); });
    registered_ = true;
  }
  ~CanaryQuery() { cleanup(); }

 private:
  void on_read() {
    uint8_t buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        // ECONNREFUSED: ICMP port unreachable, nobody listens there.
        fail(std::string("recv: ") + std::strerror(errno));
        return;
      }
      std::string err;
      auto a = check_answer(buf, size_t(n), name_, q_.qtype, id_, err);
      if (!a) continue;  // not our answer (stray or spoofed): keep waiting until the deadline
      CanaryResult r;
      bool good = a->rcode == 0 && (a->ancount > 0 || q_.nonce);
      if (q_.nonce && a->rcode == 3) good = true;  // NXDOMAIN from the authority: path works
      r.detail = std::string(rcode_name(a->rcode)) + ", " + std::to_string(a->ancount) + " answers";
      if (a->truncated && a->ancount == 0 && a->rcode == 0) {
        // TC=1 still proves the upstream path answered.
        good = true;
        r.detail += " (truncated)";
      }
      if (!good) {
        fail(a->rcode == 0 ? "no answer records (NODATA)" : "answered " + r.detail);
        return;
      }
      r.ok = true;
      finish(std::move(r));
      return;
    }
  }

  void fail(std::string why) {
    CanaryResult r;
    r.detail = why + " (asked " + server_text_ + ")";
    finish(std::move(r));
  }

  void finish(CanaryResult r) {
    if (finished_) return;
    finished_ = true;
    r.latency_us = mono_us() - start_;
    cleanup();
    loop_.post([done = std::move(done_), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void cleanup() {
    if (timer_) { loop_.cancel(timer_); timer_ = 0; }
    if (fd_ >= 0) {
      if (registered_) loop_.remove(fd_);
      ::close(fd_);
      fd_ = -1;
    }
  }

  EventLoop& loop_;
  CheckQuery q_;
  std::string name_, server_text_;
  uint16_t id_;
  Done done_;
  uint64_t start_;
  int fd_ = -1;
  bool registered_ = false, finished_ = false;
  EventLoop::TimerId timer_ = 0;
};

std::map<std::string, std::string> parse_kv(std::string_view line) {
  std::map<std::string, std::string> kv;
  std::istringstream in{std::string(line)};
  std::string word;
  while (in >> word) {
    size_t eq = word.find('=');
    if (eq != std::string::npos) kv[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return kv;
}

}  // namespace

// ---------------------------------------------------------------------------------------

std::optional<CheckQuery> parse_check_query(std::string_view text, std::string& err) {
  std::istringstream in{std::string(text)};
  std::string name, type, extra;
  if (!(in >> name >> type) || (in >> extra)) {
    err = "expected NAME TYPE (e.g. \"www.example.org A\"), got \"" + std::string(text) + "\"";
    return std::nullopt;
  }
  CheckQuery q;
  if (name.rfind("*.", 0) == 0) {
    q.nonce = true;
    name = name.substr(2);
    if (name.empty() || name == ".") {
      err = "\"*.\" needs a zone after it (e.g. \"*.canary.example.org\")";
      return std::nullopt;
    }
  }
  std::transform(name.begin(), name.end(), name.begin(), lower);
  if (name.back() != '.') name += '.';
  std::vector<uint8_t> wire;
  // Leave room for the 13-octet nonce label.
  if (!name_to_wire(q.nonce ? "x123456789abc." + name : name, wire, err)) {
    err = "name \"" + name + "\": " + err;
    return std::nullopt;
  }
  std::transform(type.begin(), type.end(), type.begin(),
                 [](char c) { return (c >= 'a' && c <= 'z') ? char(c - 'a' + 'A') : c; });
  const bool found = proto::parse_qtype(type, q.qtype);
  if (!found) {
    err = "unknown type \"" + type + "\" (use A, AAAA, NS, SOA, TXT, ... or TYPEnnn)";
    return std::nullopt;
  }
  q.name = name;
  q.type_text = type;
  return q;
}

std::optional<HealthSettings> health_settings(const Config& c, std::string& err) {
  HealthSettings s;
  s.dataplane_socket = c.dataplane_socket;
  s.interval_ms = c.health_interval_ms;
  s.probe_deadline_ms = c.health_probe_deadline_ms;
  s.canary_deadline_ms = c.health_canary_deadline_ms;
  if (!c.state_dir.empty()) s.drain_file = c.state_dir + "/drained";
  if (!c.health_probe.empty()) {
    std::string e;
    s.probe = parse_check_query(c.health_probe, e);
    if (!s.probe) { err = "[health] probe: " + e; return std::nullopt; }
    if (s.probe->nonce) {
      err = "[health] probe: a \"*.\" name would miss the cache on every run; give a fixed name";
      return std::nullopt;
    }
    if (c.dataplane_socket.empty()) {
      err = "[health] probe needs [server] dataplane-socket (the probe runs inside the dataplane)";
      return std::nullopt;
    }
  }
  if (!c.health_canary.empty()) {
    std::string e;
    s.canary = parse_check_query(c.health_canary, e);
    if (!s.canary) { err = "[health] canary: " + e; return std::nullopt; }
    // Ask a listener tern-control itself has; prefer loopback (always in the default allow
    // list), map a wildcard listener to the loopback of its family.
    for (const auto& ep : c.listen) {
      Endpoint t = ep;
      if (t.addr.ss_family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&t.addr);
        if (sin->sin_addr.s_addr == htonl(INADDR_ANY)) sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool loop = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
        if (!s.canary_server || loop) s.canary_server = t;
        if (loop) break;
      } else if (t.addr.ss_family == AF_INET6) {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&t.addr);
        if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)) sin6->sin6_addr = in6addr_loopback;
        if (!s.canary_server) s.canary_server = t;
      }
    }
    if (!s.canary_server) {
      err = "[health] canary needs a [server] listen address to ask";
      return std::nullopt;
    }
  }
  if (s.probe_deadline_ms >= s.interval_ms * 3 || s.canary_deadline_ms >= s.interval_ms * 3) {
    err = "[health] deadlines must be shorter than 3 x interval (" +
          std::to_string(s.interval_ms * 3) + " ms), or results would be stale before they arrive";
    return std::nullopt;
  }
  return s;
}

// ---------------------------------------------------------------------------------------

std::vector<uint8_t> build_query(std::string_view name, uint16_t qtype, uint16_t id) {
  std::vector<uint8_t> m;
  m.reserve(64);
  put16(m, id);
  put16(m, 0x0100);  // RD
  put16(m, 1);       // QDCOUNT
  put16(m, 0);
  put16(m, 0);
  put16(m, 1);  // ARCOUNT: OPT
  std::string err;
  if (!name_to_wire(name, m, err)) return {};
  put16(m, qtype);
  put16(m, 1);  // IN
  // RFC 6891 6.1.2: root owner, TYPE OPT, CLASS = UDP payload size, TTL = ext rcode/version/flags.
  m.push_back(0);
  put16(m, 41);
  put16(m, 1232);
  put16(m, 0);
  put16(m, 0);
  put16(m, 0);  // RDLEN
  return m;
}

std::optional<AnswerSummary> check_answer(const uint8_t* msg, size_t len, std::string_view name,
                                          uint16_t qtype, uint16_t id, std::string& err) {
  if (len < 12) { err = "shorter than a DNS header"; return std::nullopt; }
  if (get16(msg) != id) { err = "ID mismatch"; return std::nullopt; }
  uint16_t flags = get16(msg + 2);
  if (!(flags & 0x8000)) { err = "not a response"; return std::nullopt; }
  if (((flags >> 11) & 0xf) != 0) { err = "opcode is not QUERY"; return std::nullopt; }
  if (get16(msg + 4) != 1) { err = "QDCOUNT != 1"; return std::nullopt; }
  std::vector<uint8_t> want;
  if (!name_to_wire(name, want, err)) return std::nullopt;
  // RFC 1035 4.1.2: the question is echoed; compare the name case-insensitively (0x20).
  if (len < 12 + want.size() + 4) { err = "question truncated"; return std::nullopt; }
  for (size_t i = 0; i < want.size(); ++i)
    if (lower(char(msg[12 + i])) != char(want[i])) { err = "question name differs"; return std::nullopt; }
  if (get16(msg + 12 + want.size()) != qtype || get16(msg + 14 + want.size()) != 1) {
    err = "question type/class differs";
    return std::nullopt;
  }
  AnswerSummary a;
  a.rcode = uint8_t(flags & 0xf);
  a.truncated = flags & 0x0200;
  a.ancount = get16(msg + 6);
  return a;
}

std::string_view rcode_name(uint8_t rcode) { return proto::rcode_text(rcode); }

// ---------------------------------------------------------------------------------------

struct CheckState {
  bool configured = false;
  bool ok = false;
  bool unsupported = false;  // the dataplane does not know the probe verb
  std::string detail;
  uint64_t latency_us = 0;
  uint64_t runs = 0, failures = 0;
};

struct HealthMonitor::Impl {
  Impl(EventLoop& l, HealthMonitor& o) : loop(l), owner(o), rng(std::random_device{}()) {}
  ~Impl() {
    if (next_timer) loop.cancel(next_timer);
    unwatch_socket();
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  EventLoop& loop;
  HealthMonitor& owner;
  ChangeFn on_change;
  BeatFn on_beat;
  uint64_t dp_epoch = 0, dp_policy_gen = 0, dp_policy_rejects = 0;
  std::string policy_refusal;  // the dataplane's word on the latest refused push
  Health reported = Health::not_live;  // the verdict on_change last saw
  HealthSettings settings;
  bool configured = false;
  std::mt19937_64 rng;
  EventLoop::TimerId next_timer = 0;
  bool in_cycle = false;
  bool rerun = false;  // the dataplane's socket changed during a cycle: start the next at once
  int pending = 0;
  int watch_fd = -1;   // inotify on the dataplane socket's directory
  std::string watch_name;
  uint64_t cycle_start_ms = 0, last_finish_ms = 0, cycles = 0;

  // The dataplane request in flight. Starting the next one or destroying the monitor abandons
  // it, so its callback never runs into a destroyed monitor.
  MgmtRequest dp_req;
  std::unique_ptr<CanaryQuery> canary_q;
  std::shared_ptr<int> alive = std::make_shared<int>(0);  // guards the canary's posted callback

  // Latest results.
  bool dp_up = false;
  std::string dp_error;
  std::map<std::string, uint64_t> beats, prev_beats;  // core -> heartbeat
  std::vector<std::string> stalled;                   // cores whose heartbeat did not move
  bool beats_reset = false;                           // first sample, or the dataplane restarted
  uint64_t beat_interval_ms = 0;
  uint64_t prev_beat_ms = 0;
  std::vector<DataplaneStat> dp_stats;
  CheckState heartbeat_check, probe_check, canary_check;

  template <class F>
  auto guarded(F f) {
    return [w = std::weak_ptr<int>(alive), f = std::move(f)](auto r) mutable {
      if (w.lock()) f(std::move(r));
    };
  }

  // Sends `line` to the dataplane; `next` gets the outcome, with the latency measured here.
  void dp_request(const std::string& line, void (Impl::*next)(DpResult)) {
    uint64_t start = mono_us();
    dp_req = mgmt_request_async(
        loop, settings.dataplane_socket, line,
        std::chrono::milliseconds(settings.probe_deadline_ms),
        [this, next, path = settings.dataplane_socket, start](const MgmtResult& m) {
          (this->*next)(to_dp_result(m, path, start));
        });
  }

  void notify() {
    HealthStatus st = owner.status();
    if (st.state == reported) return;
    Health before = reported;
    reported = st.state;
    if (on_change) on_change(st, before);
  }

  void schedule(uint64_t delay_ms) {
    if (next_timer) loop.cancel(next_timer);
    next_timer = loop.after(std::chrono::milliseconds(delay_ms), [this] {
      next_timer = 0;
      start_cycle();
    });
  }

  void start_cycle() {
    if (in_cycle) return;
    in_cycle = true;
    cycle_start_ms = loop.now_ms();
    pending = 0;
    if (!settings.dataplane_socket.empty()) {
      ++pending;
      dp_chain_heartbeats();
    }
    if (settings.canary && settings.canary_server) {
      ++pending;
      run_canary();
    }
    if (pending == 0) finish_part();
  }

  void finish_part() {
    if (pending > 0) --pending;
    if (pending > 0) return;
    in_cycle = false;
    last_finish_ms = loop.refresh_now();
    ++cycles;
    notify();
    uint64_t elapsed = last_finish_ms - cycle_start_ms;
    schedule(rerun || elapsed >= settings.interval_ms ? 0 : settings.interval_ms - elapsed);
    rerun = false;
  }

  // A dataplane that stops removes its control socket first, and a new one renames its socket
  // into place: watching the directory turns a restart into a verdict at once instead of up to
  // one interval later (a polled check alone would say "ready" for a dataplane that is gone, or
  // that runs without tern.conf's policy). A crash leaves the file; the next cycle finds it dead.
  void watch_socket(const std::string& path) {
    unwatch_socket();
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    watch_name = path.substr(slash == std::string::npos ? 0 : slash + 1);
    watch_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (watch_fd < 0) return;  // polling alone still works
    if (::inotify_add_watch(watch_fd, dir.c_str(), IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) < 0) {
      ::close(watch_fd);
      watch_fd = -1;
      return;
    }
    loop.add(watch_fd, EPOLLIN, [this](uint32_t) { on_socket_event(); });
  }
  void unwatch_socket() {
    if (watch_fd < 0) return;
    loop.remove(watch_fd);
    ::close(watch_fd);
    watch_fd = -1;
  }
  void on_socket_event() {
    alignas(inotify_event) char buf[4096];
    bool gone = false, changed = false;
    for (;;) {
      const ssize_t n = ::read(watch_fd, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
        off += sizeof(inotify_event) + ev->len;
        if (!ev->len || watch_name != ev->name) continue;
        changed = true;
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) gone = true;
      }
    }
    if (!changed) return;
    if (gone) {
      dp_up = false;
      dp_error = "control socket " + settings.dataplane_socket + " removed: tern-dataplane stopped or is restarting";
      beats.clear();
      prev_beats.clear();
      dp_stats.clear();
      notify();
    }
    if (in_cycle) rerun = true;
    else schedule(0);
  }

  // Heartbeats -> stats -> probe, one after the other on fresh connections: the dataplane's
  // control socket serves one request per connection and need not handle them in parallel.
  void dp_chain_heartbeats() {
    dp_request("heartbeats", &Impl::on_heartbeats);
  }

  void on_heartbeats(DpResult r) {
    heartbeat_check.configured = true;
    ++heartbeat_check.runs;
    heartbeat_check.latency_us = r.latency_us;
    uint64_t now = loop.refresh_now();
    if (!r.ok) {
      dp_up = false;
      dp_error = r.error;
      heartbeat_check.ok = false;
      heartbeat_check.detail = r.error;
      ++heartbeat_check.failures;
      beats.clear();
      prev_beats.clear();
      dp_stats.clear();
      dp_req.cancel();
      finish_part();
      return;
    }
    dp_up = true;
    dp_error.clear();
    std::map<std::string, uint64_t> next;
    for (const auto& line : r.lines) {
      auto s = proto::parse_stat_line(line);
      if (!s) continue;
      if (s->name == "tern_dp_heartbeat_total") next[proto::label_value(s->labels, "core")] = s->value;
      else if (s->name == "tern_dp_epoch") dp_epoch = s->value;
      else if (s->name == "tern_dp_policy_generation") dp_policy_gen = s->value;
      else if (s->name == "tern_dp_policy_rejects_total") dp_policy_rejects = s->value;
    }
    if (on_beat) on_beat(dp_epoch, dp_policy_gen);
    prev_beats = std::move(beats);
    beats = std::move(next);
    beat_interval_ms = prev_beat_ms ? now - prev_beat_ms : 0;
    prev_beat_ms = now;
    stalled.clear();
    beats_reset = prev_beats.empty();
    for (const auto& [core, v] : beats) {
      auto it = prev_beats.find(core);
      if (it == prev_beats.end()) continue;
      if (v < it->second) beats_reset = true;  // counter went back: the dataplane restarted
      else if (v == it->second) stalled.push_back(core);
    }
    if (beats.empty()) {
      heartbeat_check.ok = false;
      heartbeat_check.detail = "the dataplane reported no worker heartbeats";
    } else if (beats_reset) {
      heartbeat_check.ok = false;
      heartbeat_check.detail = "first heartbeat sample from this dataplane; waiting for a second";
    } else if (!stalled.empty()) {
      heartbeat_check.ok = false;
      std::string cores;
      for (const auto& c : stalled) cores += (cores.empty() ? "" : ",") + c;
      heartbeat_check.detail = "worker core " + cores + " heartbeat did not advance in " +
                               std::to_string(beat_interval_ms) + " ms (stalled)";
    } else {
      heartbeat_check.ok = true;
      heartbeat_check.detail = std::to_string(beats.size()) + " workers beating";
    }
    if (!heartbeat_check.ok && !beats_reset) ++heartbeat_check.failures;
    dp_request("stats", &Impl::on_stats);
  }

  void on_stats(DpResult r) {
    if (r.ok) {
      std::vector<DataplaneStat> st;
      for (const auto& line : r.lines)
        if (auto s = proto::parse_stat_line(line)) st.push_back(std::move(*s));
      dp_stats = std::move(st);
    }
    if (!settings.probe) {
      probe_check = CheckState{};
      dp_req.cancel();
      finish_part();
      return;
    }
    const CheckQuery& q = *settings.probe;
    dp_request("probe " + q.name + " " + q.type_text, &Impl::on_probe);
  }

  void on_probe(DpResult r) {
    probe_check.configured = true;
    ++probe_check.runs;
    probe_check.latency_us = r.latency_us;
    probe_check.unsupported = false;
    if (!r.ok) {
      if (r.error.find("unknown") != std::string::npos && r.error.find("probe") != std::string::npos) {
        // An older dataplane without the probe verb: say so, don't fail the node for it.
        probe_check.unsupported = true;
        probe_check.ok = true;
        probe_check.detail = "not supported by this tern-dataplane (" + r.error + ")";
      } else {
        probe_check.ok = false;
        probe_check.detail = r.error;
        ++probe_check.failures;
      }
    } else {
      // `result=hit|miss rcode=NOERROR answers=N latency_us=N core=N`
      auto kv = parse_kv(r.lines.empty() ? "" : r.lines.front());
      std::string result = kv.count("result") ? kv["result"] : "?";
      std::string rcode = kv.count("rcode") ? kv["rcode"] : "?";
      if (kv.count("latency_us")) {
        uint64_t v = 0;
        std::from_chars(kv["latency_us"].data(), kv["latency_us"].data() + kv["latency_us"].size(), v);
        probe_check.latency_us = v;
      }
      bool good = (result == "hit" || result == "miss") && rcode != "SERVFAIL" && rcode != "REFUSED";
      probe_check.ok = good;
      probe_check.detail = result + " " + rcode + " in " + fmt_latency(probe_check.latency_us);
      if (!good) ++probe_check.failures;
    }
    dp_req.cancel();
    finish_part();
  }

  void run_canary() {
    const CheckQuery& q = *settings.canary;
    std::string name = q.name;
    if (q.nonce) {
      char label[16];
      std::snprintf(label, sizeof label, "tc%010llx.", (unsigned long long)(rng() & 0xffffffffffull));
      name = label + q.name;
    }
    canary_q = std::make_unique<CanaryQuery>(
        loop, *settings.canary_server, q, name, uint16_t(rng()), settings.canary_deadline_ms,
        guarded([this](CanaryResult r) { on_canary(std::move(r)); }));
  }

  void on_canary(CanaryResult r) {
    canary_check.configured = true;
    ++canary_check.runs;
    canary_check.ok = r.ok;
    canary_check.latency_us = r.latency_us;
    canary_check.detail = r.ok ? r.detail + " in " + fmt_latency(r.latency_us) : r.detail;
    if (!r.ok) ++canary_check.failures;
    canary_q.reset();
    finish_part();
  }
};

HealthMonitor::HealthMonitor(EventLoop& loop) : impl_(std::make_unique<Impl>(loop, *this)) {}

void HealthMonitor::on_change(ChangeFn fn) { impl_->on_change = std::move(fn); }
void HealthMonitor::on_dataplane(BeatFn fn) { impl_->on_beat = std::move(fn); }

void HealthMonitor::note_policy(uint64_t generation_in_force, std::string refusal) {
  impl_->dp_policy_gen = generation_in_force;
  impl_->policy_refusal = std::move(refusal);
  impl_->notify();
}

void HealthMonitor::note_refusal(std::string refusal) {
  impl_->policy_refusal = std::move(refusal);
  impl_->notify();
}
HealthMonitor::~HealthMonitor() = default;

void HealthMonitor::configure(const HealthSettings& s) {
  bool first = !impl_->configured;
  bool socket_changed = impl_->settings.dataplane_socket != s.dataplane_socket;
  impl_->settings = s;
  impl_->configured = true;
  if (socket_changed) {
    impl_->prev_beats.clear();
    impl_->beats.clear();
    if (s.dataplane_socket.empty()) impl_->unwatch_socket();
    else impl_->watch_socket(s.dataplane_socket);
  }
  if (!s.probe) impl_->probe_check = CheckState{};
  if (!s.canary) impl_->canary_check = CheckState{};
  if (first) {
    if (!s.drain_file.empty() && ::access(s.drain_file.c_str(), F_OK) == 0) draining_ = true;
    impl_->schedule(0);
  } else if (!impl_->in_cycle) {
    impl_->schedule(0);  // retuned: run now so status reflects the new checks at once
  }
}

HealthStatus HealthMonitor::status() const {
  const Impl& m = *impl_;
  HealthStatus st;
  if (!m.configured || m.cycles == 0) {
    st.state = Health::not_live;
    st.reason = "starting: first health check not complete";
    return st;
  }
  uint64_t now = m.loop.now_ms();
  uint64_t limit = 3ull * m.settings.interval_ms +
                   std::max(m.settings.probe_deadline_ms, m.settings.canary_deadline_ms);
  if (now > m.last_finish_ms + limit) {
    st.state = Health::not_live;
    st.reason = "health checks have not completed for " + std::to_string(now - m.last_finish_ms) +
                " ms";
    return st;
  }
  if (!m.settings.dataplane_socket.empty()) {
    if (!m.dp_up) {
      st.state = Health::not_live;
      st.reason = "dataplane not answering: " + m.dp_error;
      return st;
    }
    if (!m.heartbeat_check.ok) {
      st.state = Health::not_live;
      st.reason = m.heartbeat_check.detail;
      return st;
    }
  }
  st.state = Health::not_ready;
  // A dataplane on another generation's policy may refuse clients this config allows (a
  // restarted one runs its command-line defaults): the incident's own failure, so not ready.
  if (!m.settings.dataplane_socket.empty() && m.settings.policy_generation &&
      m.dp_policy_gen != m.settings.policy_generation) {
    st.reason = "dataplane runs policy generation " + std::to_string(m.dp_policy_gen) + ", config is generation " +
                std::to_string(m.settings.policy_generation) +
                (m.policy_refusal.empty() ? std::string("; pushing") : "; it refused the push: " + m.policy_refusal);
    return st;
  }
  if (draining_) {
    st.reason = "draining (ternctl drain); `ternctl undrain` to serve again";
    return st;
  }
  if (m.probe_check.configured && !m.probe_check.ok) {
    st.reason = "probe " + m.settings.probe->name + " " + m.settings.probe->type_text + ": " +
                m.probe_check.detail;
    return st;
  }
  if (m.canary_check.configured && !m.canary_check.ok) {
    std::string n = (m.settings.canary->nonce ? "*." : "") + m.settings.canary->name;
    st.reason = "canary " + n + " " + m.settings.canary->type_text + ": " + m.canary_check.detail;
    return st;
  }
  if (m.settings.canary && !m.canary_check.configured) {
    st.reason = "canary has not completed yet";
    return st;
  }
  st.state = Health::ready;
  std::string r = "ready";
  if (!m.settings.dataplane_socket.empty()) r += ": " + m.heartbeat_check.detail;
  if (m.probe_check.configured) r += "; probe " + m.probe_check.detail;
  if (m.canary_check.configured) r += "; canary " + m.canary_check.detail;
  st.reason = r;
  return st;
}

std::string HealthMonitor::detail() const {
  const Impl& m = *impl_;
  std::string out;
  auto line = [&](std::string_view name, const CheckState& c, bool configured) {
    out += name;
    out += ": ";
    if (!configured) out += "not configured";
    else if (!c.configured) out += "pending";
    else out += std::string(c.ok ? "ok" : "FAIL") + " (" + c.detail + ")";
    out += '\n';
  };
  line("heartbeats", m.heartbeat_check, !m.settings.dataplane_socket.empty());
  line("probe", m.probe_check, m.settings.probe.has_value());
  line("canary", m.canary_check, m.settings.canary.has_value());
  out += std::string("draining: ") + (draining_ ? "yes" : "no") + "\n";
  return out;
}

std::optional<std::string> HealthMonitor::set_draining(bool on) {
  draining_ = on;
  if (impl_->cycles > 0) impl_->notify();
  const std::string& f = impl_->settings.drain_file;
  if (f.empty()) return std::nullopt;
  if (on) {
    std::ofstream out(f, std::ios::trunc);
    out << "drained by ternctl drain; remove with ternctl undrain\n";
    if (!out) return "cannot write " + f + ": " + std::strerror(errno) +
                     " (draining now, but a restart would forget it)";
  } else if (::unlink(f.c_str()) < 0 && errno != ENOENT) {
    return "cannot remove " + f + ": " + std::strerror(errno) +
           " (serving now, but a restart would drain again)";
  }
  return std::nullopt;
}

void HealthMonitor::collect(MetricsWriter& w) const {
  const Impl& m = *impl_;
  HealthStatus st = status();
  w.single("tern_health_live", MetricType::gauge,
           "1 when the node is live: checks on time, dataplane answering, every worker beating",
           st.state != Health::not_live);
  w.single("tern_health_ready", MetricType::gauge,
           "1 when the node is ready to hold the service address (what /readyz says)",
           st.state == Health::ready);
  w.single("tern_health_draining", MetricType::gauge, "1 while drained by ternctl drain",
           draining_);
  w.single("tern_health_cycles_total", MetricType::counter, "Health check cycles completed",
           m.cycles);

  struct Row {
    std::string_view name;
    const CheckState* c;
  };
  const Row rows[] = {{"heartbeats", &m.heartbeat_check}, {"probe", &m.probe_check},
                      {"canary", &m.canary_check}};
  w.family("tern_health_check_success", MetricType::gauge,
           "1 when the latest run of the check succeeded (check: heartbeats, probe, canary)");
  for (const auto& r : rows)
    if (r.c->configured) w.sample("tern_health_check_success", {{"check", r.name}}, r.c->ok);
  w.family("tern_health_check_latency_seconds", MetricType::gauge,
           "Latency of the latest run of the check (for probe: inside the dataplane)");
  for (const auto& r : rows)
    if (r.c->configured)
      w.sample("tern_health_check_latency_seconds", {{"check", r.name}}, double(r.c->latency_us) / 1e6);
  w.family("tern_health_check_runs_total", MetricType::counter, "Runs of each health check");
  for (const auto& r : rows)
    if (r.c->configured) w.sample("tern_health_check_runs_total", {{"check", r.name}}, r.c->runs);
  w.family("tern_health_check_failures_total", MetricType::counter,
           "Failed runs of each health check");
  for (const auto& r : rows)
    if (r.c->configured)
      w.sample("tern_health_check_failures_total", {{"check", r.name}}, r.c->failures);

  if (m.settings.dataplane_socket.empty()) return;
  w.single("tern_dp_up", MetricType::gauge,
           "1 when tern-dataplane's control socket answered the latest health check", m.dp_up);
  w.family("tern_dp_heartbeat_total", MetricType::counter,
           "Housekeeping passes of each worker; a worker whose heartbeat stops increasing is stalled");
  for (const auto& [core, v] : m.beats) w.sample("tern_dp_heartbeat_total", {{"core", core}}, v);
  w.family("tern_dp_worker_stalled", MetricType::gauge,
           "1 when the worker's heartbeat did not advance over the latest health interval");
  for (const auto& [core, v] : m.beats) {
    bool stalled = std::find(m.stalled.begin(), m.stalled.end(), core) != m.stalled.end();
    w.sample("tern_dp_worker_stalled", {{"core", core}}, stalled);
  }
  for (auto [name, v] : {std::pair<const char*, uint64_t>{"tern_dp_epoch", m.dp_epoch},
                         {"tern_dp_policy_generation", m.dp_policy_gen},
                         {"tern_dp_policy_rejects_total", m.dp_policy_rejects}}) {
    const proto::MetricInfo* info = proto::find_dataplane_metric(name);
    w.single(name, info->counter ? MetricType::counter : MetricType::gauge, info->help, v);
  }
  write_dataplane_stats(w, m.dp_stats);
}

}  // namespace tern::control
