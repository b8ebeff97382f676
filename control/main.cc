// tern-control: the control-plane daemon. One event-loop thread runs the DNS listeners and
// the recursion engine (Server), the management socket (MgmtServer) and config reloads.
//
// The incident tern exists for: a removed option made a resolver refuse to restart, and it
// stayed down. So here:
//   - warnings (removed or renamed options) never block start or reload;
//   - a config that does not load at start falls back to the last-known-good copy
//     (<state-dir>/last-known-good.conf, written after every successful apply) and says so
//     in the log, in `ternctl status` and as the stat config_lkg_in_use 1;
//   - only with no usable good copy does tern-control refuse to start (exit 1);
//   - a reload is parse, validate, Server::apply() off to the side, then swap; any failure
//     keeps the running config, and is reported to ternctl, the log and a counter.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "control/config.h"
#include "control/health.h"
#include "control/http.h"
#include "control/loop.h"
#include "control/metrics.h"
#include "control/mgmt.h"
#include "proto/framing.h"
#include "proto/policy.h"
#include "control/options.h"
#include "control/server.h"
#include "tern_build_config.h"

#ifdef TERN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace po = boost::program_options;
using namespace tern::control;
namespace proto = tern::proto;

namespace {

// ---------------------------------------------------------------------------------------
// Logging: one line per event on stderr. Under systemd (JOURNAL_STREAM set) each line gets a
// sd-daemon(3) priority prefix so journald files it at the right level.

enum class Lvl { err = 3, warning = 4, info = 6 };
bool g_journal = false;

// `tagged`: the message already says "error:"/"warning:" (Diagnostic::str() does).
void log(Lvl l, const std::string& msg, bool tagged = false) {
  std::string line;
  if (g_journal) line = "<" + std::to_string(int(l)) + ">";
  line += "tern-control: ";
  if (!tagged) line += l == Lvl::err ? "error: " : l == Lvl::warning ? "warning: " : "";
  line += msg;
  line += '\n';
  [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, line.data(), line.size());
}

void log_diagnostics(const std::vector<Diagnostic>& ds) {
  for (const auto& d : ds)
    log(d.severity == Severity::error ? Lvl::err : Lvl::warning, d.str(), /*tagged=*/true);
}

void notify([[maybe_unused]] const char* state) {
#ifdef TERN_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

size_t count_errors(const std::vector<Diagnostic>& ds) {
  size_t n = 0;
  for (const auto& d : ds) n += d.severity == Severity::error;
  return n;
}

std::string lkg_path(const std::string& state_dir) { return state_dir + "/last-known-good.conf"; }

// Atomic replace: write a temporary file in the same directory, fsync, rename over the old
// copy, fsync the directory. A crash leaves either the old or the new copy, never half.
std::optional<std::string> write_atomic(const std::string& path, const std::string& data) {
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  std::filesystem::create_directories(dir, ec);
  if (ec) return "cannot create " + dir.string() + ": " + ec.message();
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot write " + tmp + ": " + std::strerror(errno);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return "cannot write " + tmp + ": " + std::strerror(e);
    }
    off += size_t(n);
  }
  if (::fsync(fd) < 0 || ::close(fd) < 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return "cannot write " + tmp + ": " + std::strerror(e);
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return "cannot rename " + tmp + " to " + path + ": " + std::strerror(e);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------

class Daemon {
 public:
  Daemon(std::string config_path) : config_path_(std::move(config_path)), server_(loop_),
                                     mgmt_(loop_) {}

  // Returns the process exit code when start-up fails, 0 when serving.
  int start();
  void run() { loop_.run(); }

 private:
  struct ReloadOutcome {
    bool ok = false;
    std::vector<Diagnostic> diagnostics;
    std::vector<std::string> restart_needed;
    std::string error;  // set when !ok
  };
  ReloadOutcome reload(const char* trigger);
  std::optional<std::string> activate(Config& c);  // apply + bookkeeping; c.generation set
  void after_apply(const Config& c);
  void push_policy(const Config& c);
  void dataplane_beat(uint64_t epoch, uint64_t generation);
  void warm_dataplane(uint64_t epoch);
  std::string flush_dataplane(const std::string& name, bool subtree);
  void register_verbs();
  void register_metrics();            // operations: /metrics collectors
  HttpResponse http_route(std::string_view path);
  void start_watchdog();
  void watchdog_tick(std::chrono::milliseconds period) {
    notify("WATCHDOG=1");
    loop_.after(period, [this, period] { watchdog_tick(period); });
  }

  std::string config_path_;
  EventLoop loop_;
  Server server_;
  MgmtServer mgmt_;
  MgmtRequest policy_push_;  // the latest policy push to tern-dataplane
  MgmtRequest warm_push_;    // the warm-up batch in flight to a restarted tern-dataplane
  uint64_t dp_epoch_ = 0;    // the dataplane run we last heard from (0: none yet)
  uint64_t warmed_epoch_ = 0;
  std::pair<uint64_t, uint64_t> refused_{0, 0};  // {epoch, generation} of the latest refused push
  std::vector<std::string> warm_batches_;        // `warm` requests still to send
  uint64_t warm_sent_ = 0, warm_stored_ = 0;
  // operations: end-to-end health, /metrics /healthz /readyz (control/health.h, http.h)
  HealthMonitor health_{loop_};
  HttpServer http_{loop_, [this](std::string_view p) { return http_route(p); }};
  MetricsRegistry metrics_;
  uint64_t http_listen_failures_ = 0;
  Config running_;
  bool lkg_in_use_ = false;
  std::string lkg_reason_;  // why the config file did not load at start
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::string last_reload_ = "never";  // "ok", "failed", "never"
  std::string last_reload_message_;
  std::chrono::system_clock::time_point last_reload_time_{};
  uint64_t reloads_ = 0, reload_failures_ = 0, policy_pushes_ = 0, policy_push_failures_ = 0;
  uint64_t policy_refusals_ = 0, dataplane_restarts_ = 0;
};

std::optional<std::string> Daemon::activate(Config& c) {
  c.generation = running_.generation + 1;
  std::string health_err;
  auto health = health_settings(c, health_err);
  if (!health) return health_err;
  health->policy_generation = c.dataplane_socket.empty() ? 0 : c.generation;
  // The dataplane's probe comes from its own reserved source; when it misses the cache it is
  // answered by this server, so that source is allowed while the probe is on (not pushed to
  // the dataplane: workers let the probe past their ACL themselves).
  Config served = c;
  if (!c.health_probe.empty())
    served.allow.insert(served.allow.end(), c.health_probe_source.begin(), c.health_probe_source.end());
  if (auto err = server_.apply(served)) return err;
  if (c.dnssec_validation && server_.trust_anchors() == 0)
    log(Lvl::warning, "[dnssec] validation is on but " + c.trust_anchor_file +
                          " is not installed: no trust anchor, answers carry no AD; install "
                          "the package's root anchor or set trust-anchor-file");
  health_.configure(*health);
  // After the swap: an HTTP port that does not bind is an error in the log and a metric, not
  // a failed reload (the resolver is already serving the new config). Health checkers then
  // see the node as not ready, which is the safe direction.
  http_.set_max_per_address(c.health_http_max_per_address);
  if (auto err = http_.listen(c.health_http_listen)) {
    ++http_listen_failures_;
    log(Lvl::err, "health HTTP endpoint: " + *err);
  }
  running_ = c;
  after_apply(running_);
  return std::nullopt;
}

void Daemon::after_apply(const Config& c) {
  if (!lkg_in_use_) {
    std::string text = "# tern-control last-known-good copy of " + c.file + ", generation " +
                       std::to_string(c.generation) + ", written " +
                       iso_time(std::chrono::system_clock::now()) +
                       ".\n# Loaded automatically when that file does not load at start; "
                       "do not edit.\n" +
                       render_config(c);
    if (auto err = write_atomic(lkg_path(c.state_dir), text))
      log(Lvl::warning, "could not save the last-known-good copy: " + *err +
                            "; a broken config at the next start will not have a fallback");
  }
  push_policy(c);
}

// The whole policy, every time: a restarted dataplane (command-line defaults) and one that
// missed a push are both brought to this config's generation by the same request.
void Daemon::push_policy(const Config& c) {
  if (c.dataplane_socket.empty()) return;
  const std::string line = "policy " + proto::encode_policy(dataplane_policy(c));
  // A newer push abandons one still in flight: the newest config is the one that counts.
  policy_push_ = mgmt_request_async(
      loop_, c.dataplane_socket, line, std::chrono::milliseconds(2000),
      [this, path = c.dataplane_socket, gen = c.generation, epoch = dp_epoch_](const MgmtResult& r) {
        if (r.status == MgmtResult::Status::ok) {
          ++policy_pushes_;
          refused_ = {0, 0};
          health_.note_policy(gen, {});
          if (epoch && warmed_epoch_ != epoch && running_.dp_warm_restart) warm_dataplane(epoch);
          return;
        }
        ++policy_push_failures_;
        if (r.status == MgmtResult::Status::err) {
          // The dataplane refused it (and keeps its policy): readiness says why; the same
          // generation is not pushed again to the same run, a reload or a restart retries.
          ++policy_refusals_;
          refused_ = {epoch, gen};
          health_.note_refusal(r.message);
        }
        log(Lvl::warning, "could not push policy generation " + std::to_string(gen) + " to the dataplane at " + path +
                              ": " + r.message + " (the dataplane keeps its previous policy; readiness fails until it runs this generation)");
      });
}

// Every heartbeat reply: a new epoch is a restarted dataplane; a generation other than the
// config's is a push to make (unless one is in flight, or this run refused this generation).
void Daemon::dataplane_beat(uint64_t epoch, uint64_t generation) {
  if (epoch != dp_epoch_) {
    if (dp_epoch_ != 0) {
      ++dataplane_restarts_;
      log(Lvl::warning, "tern-dataplane restarted (epoch " + std::to_string(epoch) + "): pushing policy generation " +
                            std::to_string(running_.generation) + " and warming its cache");
    }
    dp_epoch_ = epoch;
    // A dataplane on its command-line defaults (generation 0) started with an empty cache.
    if (generation != 0) warmed_epoch_ = epoch;
  }
  if (generation == running_.generation || policy_push_.pending()) return;
  if (refused_ == std::pair<uint64_t, uint64_t>{epoch, running_.generation}) return;
  push_policy(running_);
}

// A restarted dataplane starts cold: every miss would go through the miss limiter. Hand it the
// answers tern-control holds, in batches of about 256 KiB, one request at a time.
void Daemon::warm_dataplane(uint64_t epoch) {
  warmed_epoch_ = epoch;
  warm_batches_.clear();
  std::string batch;
  static constexpr char kHex[] = "0123456789abcdef";
  server_.export_answers([&](std::span<const uint8_t> msg) {
    if (batch.size() + 2 * msg.size() + 1 > (256u << 10) && !batch.empty()) warm_batches_.push_back(std::move(batch)), batch.clear();
    if (batch.empty()) batch = "warm";
    batch += ' ';
    for (uint8_t b : msg) batch += kHex[b >> 4], batch += kHex[b & 15];
    ++warm_sent_;
  });
  if (!batch.empty()) warm_batches_.push_back(std::move(batch));
  std::reverse(warm_batches_.begin(), warm_batches_.end());
  auto next = std::make_shared<std::function<void()>>();
  *next = [this, next] {
    if (warm_batches_.empty()) return;
    std::string req = std::move(warm_batches_.back());
    warm_batches_.pop_back();
    warm_push_ = mgmt_request_async(loop_, running_.dataplane_socket, req, std::chrono::milliseconds(5000),
                                    [this, next](const MgmtResult& r) {
                                      if (r.status != MgmtResult::Status::ok) {
                                        log(Lvl::warning, "warming the dataplane's cache: " + r.message);
                                        warm_batches_.clear();
                                        return;
                                      }
                                      for (auto l : r.lines())
                                        if (auto at = l.find("stored="); at != std::string_view::npos)
                                          warm_stored_ += std::strtoull(std::string(l.substr(at + 7)).c_str(), nullptr, 10);
                                      (*next)();
                                    });
  };
  (*next)();
}

// `ternctl cache flush` empties both caches: an answer left in the fast path would go on being
// served to every client. The dataplane is asked synchronously (its socket answers in
// milliseconds; the bound keeps the loop from waiting on a wedged one for long).
std::string Daemon::flush_dataplane(const std::string& name, bool subtree) {
  if (running_.dataplane_socket.empty()) return "no dataplane";
  const std::string req = name.empty() ? "flush" : (subtree ? "flush-subtree " : "flush ") + name;
  proto::Result r = proto::request(running_.dataplane_socket, req, std::chrono::milliseconds(1000));
  if (!r.ok()) return "error: " + r.message;
  for (auto l : r.lines())
    if (l.rfind("flushed ", 0) == 0) return std::string(l.substr(8));
  return "error: no count in the dataplane's reply";
}

Daemon::ReloadOutcome Daemon::reload(const char* trigger) {
  ReloadOutcome out;
  last_reload_time_ = std::chrono::system_clock::now();
  ParseResult pr = parse_config_file(config_path_);
  out.diagnostics = pr.diagnostics;
  log_diagnostics(pr.diagnostics);
  auto fail = [&](std::string why) {
    ++reload_failures_;
    last_reload_ = "failed";
    last_reload_message_ = why;
    out.error = std::move(why);
    log(Lvl::err, "reload (" + std::string(trigger) + ") failed: " + out.error);
    notify("READY=1");
    return out;
  };
  notify("RELOADING=1");
  if (!pr.config)
    return fail(std::to_string(count_errors(pr.diagnostics)) + " error(s) in " + config_path_ +
                "; still running generation " + std::to_string(running_.generation) + " from " +
                running_.file);
  Config next = std::move(*pr.config);
  out.restart_needed = keep_restart_only(running_, next);
  for (const auto& name : out.restart_needed)
    log(Lvl::warning, config_path_ + ": " + name +
                          ": changed, needs restart (systemctl restart tern-control); the "
                          "running value stays until then");
  bool was_lkg = lkg_in_use_;
  lkg_in_use_ = false;  // a config that applies from the real file ends the fallback
  if (auto err = activate(next)) {
    lkg_in_use_ = was_lkg;
    return fail("could not apply " + config_path_ + ": " + *err + "; still running generation " +
                std::to_string(running_.generation));
  }
  ++reloads_;
  last_reload_ = "ok";
  last_reload_message_ = "generation " + std::to_string(running_.generation) + " from " +
                         running_.file;
  log(Lvl::info, "reload (" + std::string(trigger) + ") applied " + last_reload_message_ +
                     (was_lkg ? "; last-known-good fallback ended" : ""));
  notify("READY=1");
  out.ok = true;
  return out;
}

void Daemon::register_verbs() {
  mgmt_.on("status", [this](const std::vector<std::string>&, MgmtReply& r) {
    auto up = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                               started_);
    r.line("version " TERN_VERSION);
    r.line("uptime_seconds " + std::to_string(up.count()));
    r.line("config_file " + config_path_);
    r.line("config_loaded_from " + running_.file);
    r.line("generation " + std::to_string(running_.generation));
    r.line(std::string("lkg_in_use ") + (lkg_in_use_ ? "1" : "0"));
    if (lkg_in_use_) r.line("lkg_reason " + lkg_reason_);
    r.line("last_reload " + last_reload_);
    if (last_reload_ != "never") {
      r.line("last_reload_time " + iso_time(last_reload_time_));
      r.line("last_reload_message " + last_reload_message_);
    }
    std::string listen;
    for (const auto& e : running_.listen) listen += (listen.empty() ? "" : " ") + e.text;
    r.line("listen " + listen);
  });
  mgmt_.on("reload", [this](const std::vector<std::string>&, MgmtReply& r) {
    auto out = reload("ternctl");
    for (const auto& d : out.diagnostics) r.line(d.str());
    for (const auto& n : out.restart_needed)
      r.line(config_path_ + ": warning: " + n + ": changed, needs restart; running value kept");
    if (!out.ok) return r.fail("reload failed: " + out.error);
    r.line("generation " + std::to_string(running_.generation));
  });
  mgmt_.on("stats", [this](const std::vector<std::string>&, MgmtReply& r) {
    std::vector<std::pair<std::string, uint64_t>> cs;
    server_.counters(cs);
    cs.emplace_back("config_generation", running_.generation);
    cs.emplace_back("config_lkg_in_use", lkg_in_use_ ? 1 : 0);
    cs.emplace_back("config_reloads_total", reloads_);
    cs.emplace_back("config_reload_failures_total", reload_failures_);
    cs.emplace_back("dataplane_policy_pushes_total", policy_pushes_);
    cs.emplace_back("dataplane_policy_push_failures_total", policy_push_failures_);
    cs.emplace_back("dataplane_policy_refusals_total", policy_refusals_);
    cs.emplace_back("dataplane_restarts_total", dataplane_restarts_);
    cs.emplace_back("dataplane_warm_answers_sent_total", warm_sent_);
    cs.emplace_back("dataplane_warm_answers_stored_total", warm_stored_);
    cs.emplace_back("mgmt_requests_total", mgmt_.requests());
    cs.emplace_back("mgmt_rejected_total", mgmt_.rejected());
    for (const auto& [k, v] : cs) r.line(k + " " + std::to_string(v));
    // Per upstream server, in exposition form so one token stays one key:
    // upstream_errors_total{server="198.18.1.1",kind="refused"} 3
    for (const auto& s : server_.upstream_servers()) {
      std::string sv = "{server=\"" + escape_label_value(s.server) + "\"";
      r.line("upstream_queries_total" + sv + "} " + std::to_string(s.queries));
      r.line("upstream_timeouts_total" + sv + "} " + std::to_string(s.timeouts));
      for (const auto& [kind, n] : s.errors)
        r.line("upstream_errors_total" + sv + ",kind=\"" + std::string(kind) + "\"} " +
               std::to_string(n));
      if (s.srtt_seconds) {
        std::ostringstream os;
        os << *s.srtt_seconds;
        r.line("upstream_srtt_seconds" + sv + "} " + os.str());
      }
    }
  });
  mgmt_.on("cache", [this](const std::vector<std::string>& a, MgmtReply& r) {
             if (a.size() >= 2 && a[1] == "dump") {
               std::ostringstream os;
               server_.cache_dump(os);
               r.body += os.str();
               if (!r.body.empty() && r.body.back() != '\n') r.body += '\n';
               return;
             }
             if (a.size() >= 2 && a[1] == "flush") {
               std::string name;
               bool subtree = false;
               for (size_t i = 2; i < a.size(); ++i) {
                 if (a[i] == "--subtree") subtree = true;
                 else if (name.empty()) name = a[i];
                 else return r.fail("cache flush takes one name, got '" + name + "' and '" +
                                    a[i] + "'");
               }
               if (subtree && name.empty())
                 return r.fail("cache flush --subtree needs a NAME (flush without one empties "
                               "the whole cache)");
               size_t n = server_.cache_flush(name, subtree);
               const std::string dp = flush_dataplane(name, subtree);
               r.line("flushed " + std::to_string(n) + " tern-control, " + dp + " dataplane");
               if (dp.rfind("error", 0) == 0)
                 return r.fail("the dataplane's cache was not flushed (" + dp.substr(7) +
                               "); it may still serve the old answer: retry, or ternctl --dataplane-socket ... flush");
               return;
             }
             r.fail("usage: cache flush [NAME] [--subtree] | cache dump");
           });
  mgmt_.on("nta", [this](const std::vector<std::string>& a, MgmtReply& r) {
    std::vector<std::string> rest(a.begin() + 1, a.end()), out;
    if (auto e = server_.nta(rest, out)) return r.fail(*e);
    for (auto& l : out) r.line(l);
    if (rest.size() == 2) {
      log(Lvl::info, "ternctl nta " + rest[0] + " " + rest[1]);
      // The fast path holds answers judged under the old anchors (AD set or not): drop them.
      const std::string dp = flush_dataplane(rest[1], true);
      if (dp.rfind("error", 0) == 0) r.line("warning: dataplane cache not flushed: " + dp.substr(7));
    }
  });
  // operations: `ternctl health [-v]` maps `state` to its exit code (0 ready, 1 not ready,
  // 2 not live); drain/undrain fail readiness on purpose while everything keeps answering.
  mgmt_.on("health", [this](const std::vector<std::string>& a, MgmtReply& r) {
    HealthStatus st = health_.status();
    r.line(std::string("state ") + (st.state == Health::ready       ? "ready"
                                    : st.state == Health::not_ready ? "not_ready"
                                                                    : "not_live"));
    r.line("reason " + st.reason);
    if (a.size() > 1 && a[1] == "-v") r.body += health_.detail();
  });
  mgmt_.on("drain", [this](const std::vector<std::string>&, MgmtReply& r) {
    auto err = health_.set_draining(true);
    log(Lvl::info, "drained by ternctl: readiness fails until ternctl undrain");
    if (err) r.line("warning: " + *err);
    r.line("draining: /readyz and ternctl health report not ready; queries are still answered");
  });
  mgmt_.on("undrain", [this](const std::vector<std::string>&, MgmtReply& r) {
    auto err = health_.set_draining(false);
    log(Lvl::info, "undrained by ternctl");
    if (err) r.line("warning: " + *err);
    r.line("undrained: ready again once the health checks pass");
  });
  mgmt_.on("metrics", [this](const std::vector<std::string>&, MgmtReply& r) {
    r.body += metrics_.render();
  });
}

void Daemon::register_metrics() {
  metrics_.add([this](MetricsWriter& w) {
    w.single("tern_config_generation", MetricType::gauge,
             "Generation of the running config (bumped by every successful load)",
             running_.generation);
    w.single("tern_config_lkg_in_use", MetricType::gauge,
             "1 when running on the last-known-good copy because the config file did not load",
             lkg_in_use_);
    w.single("tern_config_reloads_total", MetricType::counter, "Successful reloads", reloads_);
    w.single("tern_config_reload_failures_total", MetricType::counter,
             "Reloads that failed and kept the running config", reload_failures_);
    w.single("tern_config_last_reload_success", MetricType::gauge,
             "0 when the latest reload failed (1 after a successful one or none)",
             last_reload_ != "failed");
    w.single("tern_dataplane_policy_push_failures_total", MetricType::counter,
             "Policy pushes to tern-dataplane that failed (not reached, or refused)", policy_push_failures_);
    w.single("tern_dataplane_policy_refusals_total", MetricType::counter,
             "Policy pushes tern-dataplane refused; it kept its previous policy", policy_refusals_);
    w.single("tern_dataplane_restarts_total", MetricType::counter,
             "tern-dataplane restarts seen (a new epoch in its heartbeats)", dataplane_restarts_);
    w.single("tern_dataplane_warm_answers_stored_total", MetricType::counter,
             "Answers a restarted tern-dataplane stored from tern-control's warm-up", warm_stored_);
    w.single("tern_http_listen_failures_total", MetricType::counter,
             "[health] http-listen addresses that could not be bound", http_listen_failures_);
    w.single("tern_http_requests_total", MetricType::counter, "HTTP requests served",
             http_.requests());
    w.single("tern_mgmt_requests_total", MetricType::counter, "Management socket requests",
             mgmt_.requests());
  });
  metrics_.add([this](MetricsWriter& w) {
    // The resolver's counters, one family each: cumulative ones as tern_<name>_total, the
    // `<name>_current` levels (cache entries and bytes, connections) as gauges tern_<name>.
    std::vector<std::pair<std::string, uint64_t>> cs;
    server_.counters(cs);
    auto ends = [](const std::string& n, std::string_view suf) {
      return n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
    };
    // The all-servers timeout count cannot keep its natural name: tern_upstream_timeouts_total
    // is the per-server family (write_upstream_stats), and one family must not mix the sum
    // with its parts.
    constexpr std::pair<std::string_view, std::string_view> kRenamed[] = {
        {"upstream_timeouts", "tern_upstream_all_timeouts_total"}};
    for (const auto& [name, v] : cs) {
      if (auto it = std::find_if(std::begin(kRenamed), std::end(kRenamed),
                                 [&n = name](const auto& r) { return r.first == n; });
          it != std::end(kRenamed)) {
        w.single(it->second, MetricType::counter, "tern-control counter " + name, v);
        continue;
      }
      if (ends(name, "_current")) {
        std::string base = name.substr(0, name.size() - 8);
        w.single(metric_name("tern_", base, ""), MetricType::gauge, "tern-control level " + base, v);
        continue;
      }
      std::string metric = metric_name("tern_", name, ends(name, "_total") ? "" : "_total");
      w.single(metric, MetricType::counter, "tern-control counter " + name, v);
    }
  });
  metrics_.add([this](MetricsWriter& w) { write_upstream_stats(w, server_.upstream_servers()); });
  metrics_.add([this](MetricsWriter& w) { health_.collect(w); });
}

HttpResponse Daemon::http_route(std::string_view path) {
  HttpResponse r;
  if (path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.render();
    return r;
  }
  if (path == "/healthz" || path == "/readyz") {
    HealthStatus st = health_.status();
    bool pass = path == "/healthz" ? st.state != Health::not_live : st.state == Health::ready;
    r.status = pass ? 200 : 503;
    r.body = st.reason + "\n";
    return r;
  }
  r.status = 404;
  r.body = "tern-control serves /metrics, /healthz and /readyz\n";
  return r;
}

void Daemon::start_watchdog() {
#ifdef TERN_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  // Kicked from the loop itself: a stuck loop stops kicking, and systemd restarts us.
  watchdog_tick(std::chrono::milliseconds(std::max<uint64_t>(usec / 2000, 1)));
#endif
}

int Daemon::start() {
  ParseResult pr = parse_config_file(config_path_);
  log_diagnostics(pr.diagnostics);
  std::optional<Config> cfg = pr.config;
  std::string state_dir = pr.config ? pr.config->state_dir : pr.state_dir;
  std::string why_not_main;

  if (!cfg) {
    why_not_main = std::to_string(count_errors(pr.diagnostics)) + " error(s) in " + config_path_;
  } else if (auto err = mgmt_.open(cfg->control_socket)) {
    log(Lvl::err, "cannot open the management socket: " + *err);
    return 1;
  } else if (auto aerr = activate(*cfg)) {
    why_not_main = "could not apply " + config_path_ + ": " + *aerr;
  }

  if (!why_not_main.empty()) {
    std::string lkg = lkg_path(state_dir);
    log(Lvl::err, "CONFIG NOT LOADED: " + why_not_main + "; trying the last-known-good copy " +
                      lkg);
    std::error_code ec;
    if (!std::filesystem::exists(lkg, ec)) {
      log(Lvl::err, "no last-known-good copy at " + lkg +
                        ": refusing to start; fix the errors above (check with: ternctl check " +
                        config_path_ + ")");
      return 1;
    }
    ParseResult lp = parse_config_file(lkg);
    if (!lp.config) {
      log_diagnostics(lp.diagnostics);
      log(Lvl::err, "the last-known-good copy " + lkg +
                        " does not load either: refusing to start; fix " + config_path_);
      return 1;
    }
    lkg_in_use_ = true;
    if (mgmt_.path().empty()) {
      if (auto err = mgmt_.open(lp.config->control_socket)) {
        log(Lvl::err, "cannot open the management socket: " + *err);
        return 1;
      }
    }
    if (auto err = activate(*lp.config)) {
      log(Lvl::err, "the last-known-good copy " + lkg + " does not apply either: " + *err +
                        "; refusing to start");
      return 1;
    }
    log(Lvl::err, "RUNNING ON LAST-KNOWN-GOOD CONFIG " + lkg + " (config_lkg_in_use 1): fix " +
                      config_path_ + ", then run: ternctl reload");
    lkg_reason_ = why_not_main;
  }

  register_verbs();
  register_metrics();
  health_.on_dataplane([this](uint64_t epoch, uint64_t generation) { dataplane_beat(epoch, generation); });
  health_.on_change([](const HealthStatus& st, Health before) {
    auto name = [](Health h) {
      return h == Health::ready ? "ready" : h == Health::not_ready ? "not ready" : "not live";
    };
    log(st.state == Health::ready ? Lvl::info : Lvl::warning,
        std::string("health: ") + name(before) + " -> " + name(st.state) + ": " + st.reason);
  });
  loop_.on_signal(SIGHUP, [this](int) { reload("SIGHUP"); });
  loop_.on_signal(SIGTERM, [this](int) {
    log(Lvl::info, "SIGTERM: shutting down");
    notify("STOPPING=1");
    loop_.stop();
  });
  loop_.on_signal(SIGINT, [this](int) {
    log(Lvl::info, "SIGINT: shutting down");
    notify("STOPPING=1");
    loop_.stop();
  });
  start_watchdog();
  std::string listen;
  for (const auto& e : running_.listen) listen += (listen.empty() ? "" : " ") + e.text;
  log(Lvl::info, "serving generation " + std::to_string(running_.generation) + " from " +
                     running_.file + " on " + listen + "; control socket " + mgmt_.path());
  notify("READY=1");
  return 0;
}

// Classic detach for running without a supervisor: the parent waits until the child is
// serving (or failed) and exits with the child's start-up status, so `tern-control -c FILE`
// in a script still fails visibly on a bad start.
int detach(int& ready_fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    log(Lvl::err, std::string("pipe: ") + std::strerror(errno));
    return 1;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    log(Lvl::err, std::string("fork: ") + std::strerror(errno));
    return 1;
  }
  if (pid > 0) {
    ::close(p[1]);
    unsigned char status = 1;
    if (::read(p[0], &status, 1) != 1) status = 1;
    _exit(status);
  }
  ::close(p[0]);
  ::setsid();
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    ::dup2(devnull, STDIN_FILENO);
    ::dup2(devnull, STDOUT_FILENO);
    ::close(devnull);
  }
  ready_fd = p[1];
  return 0;
}

void report_ready(int& fd, unsigned char status) {
  if (fd < 0) return;
  [[maybe_unused]] ssize_t w = ::write(fd, &status, 1);
  ::close(fd);
  fd = -1;
}

}  // namespace

int main(int argc, char** argv) {
  g_journal = std::getenv("JOURNAL_STREAM") != nullptr;
  po::options_description desc(
      "tern-control " TERN_VERSION ": the tern resolver's control plane\n"
      "usage: tern-control [--config FILE] [--foreground]\n"
      "       tern-control --check FILE | --version | --dump-options-markdown\n\noptions");
  desc.add_options()("help,h", "this help")(
      "config,c", po::value<std::string>()->default_value("/etc/tern/tern.conf"),
      "configuration file")("foreground,f", "stay in the foreground (systemd, tests)")(
      "check", po::value<std::string>(),
      "validate FILE like `ternctl check` and exit: 0 clean, 1 errors, 2 warnings only")(
      "version", "print the version and exit")(
      "dump-options-markdown", "print the configuration reference (docs/config-reference.md)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "tern-control: " << e.what() << "\n" << desc << "\n";
    return 64;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "tern-control " TERN_VERSION "\n";
    return 0;
  }
  if (vm.count("dump-options-markdown")) {
    write_options_markdown(std::cout);
    return 0;
  }
  if (vm.count("check")) {
    ParseResult r = parse_config_file(vm["check"].as<std::string>());
    for (const auto& d : r.diagnostics) std::cerr << d.str() << "\n";
    if (!r.has_errors() && !r.has_warnings())
      std::cerr << vm["check"].as<std::string>() << ": ok\n";
    return r.check_exit_code();
  }

  ::signal(SIGPIPE, SIG_IGN);
  int ready_fd = -1;
  if (!vm.count("foreground"))
    if (int rc = detach(ready_fd)) return rc;

  try {
    // Absolute, so status, logs and the last-known-good header name the file unambiguously.
    std::error_code ec;
    auto config = std::filesystem::absolute(vm["config"].as<std::string>(), ec);
    Daemon d(ec ? vm["config"].as<std::string>() : config.lexically_normal().string());
    if (int rc = d.start()) {
      report_ready(ready_fd, static_cast<unsigned char>(rc));
      return rc;
    }
    report_ready(ready_fd, 0);
    d.run();
  } catch (const std::exception& e) {
    log(Lvl::err, std::string("fatal: ") + e.what());
    report_ready(ready_fd, 1);
    return 1;
  }
  log(Lvl::info, "stopped");
  return 0;
}
