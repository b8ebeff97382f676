// tern-dataplane: EAL and ports from a hardware profile, one worker per RX/TX
// queue pair, the service thread (exception path, cache fill, address watch)
// on the main lcore, and the control socket.
//
// Startup is a straight line; any failure prints what failed and what to do,
// undoes what was set up, and exits non-zero. SIGTERM/SIGINT set the stop flag;
// the service loop returns, workers are joined, ports stopped, memory freed.
#include <arpa/inet.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_random.h>
#include <rte_ring.h>

#include "cache/cache.h"
#include "control_socket.h"
#include "control_verbs.h"
#include "proto/counters.h"
#include "proto/policy.h"
#include "exception.h"
#include "port.h"
#include "probe.h"
#include "profile.h"
#include "tern_build_config.h"
#include "wire/wire.h"
#include "worker.h"

#ifdef TERN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace tern::dp {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

constexpr const char* kUsage =
    "usage: tern-dataplane [--profile FILE] [--control-socket PATH] [--allow PFX]...\n"
    "                      [--refuse | --drop-refused] [--miss-rate N] [--miss-burst N]\n"
    "                      [--cache-bytes N] [--exception-iface NAME] [--check-profile]\n"
    "                      [--probe-source4 ADDR] [--probe-source6 ADDR] [--probe-deadline MS]\n"
    "                      [--punt-budget CLASS=RATE/BURST]... [-- EAL args passed through]\n"
    "  The policy flags (--allow, --refuse, --drop-refused, --miss-rate, --miss-burst, --cache-bytes)\n"
    "  only hold until tern-control's first push: tern.conf's [server] allow, [dataplane] and [cache]\n"
    "  own them (tern-control pushes at its start, on every reload and whenever this process restarts).\n"
    "  --profile FILE         hardware profile (hw-profiles/*.conf); default: the built-in lab-tap\n"
    "  --control-socket PATH  unix socket for tern-control/ternctl (default /run/tern/dataplane.sock)\n"
    "  --allow PFX            clients allowed (repeatable, v4 or v6 prefix); none = nobody is answered\n"
    "  --refuse               answer REFUSED to other clients (default)\n"
    "  --drop-refused         silently drop other clients instead\n"
    "  --miss-rate N          per-worker cache misses per second sent to the resolver (default 2000)\n"
    "  --miss-burst N         token bucket depth for misses (default 500)\n"
    "  --cache-bytes N        cache memory bound in bytes (default 64 MiB)\n"
    "  --exception-iface NAME Linux interface for the exception path (default: the profile's)\n"
    "  --check-profile        validate the profile, print the EAL arguments, exit\n"
    "  --probe-source4 ADDR   source of the readiness probe (`probe` verb), an address no client\n"
    "                         uses (default 198.18.255.254); Linux gets a permanent neighbour for it\n"
    "  --probe-source6 ADDR   the same for IPv6 (default 2001:2::ffff:fffe)\n"
    "  --probe-deadline MS    how long `probe` waits for its answer (default 400; below\n"
    "                         tern-control's [health] probe-deadline, so this error is the one seen)\n"
    "  --punt-budget CLASS=RATE/BURST  per-worker exception path budget of one class of frames for\n"
    "                         Linux, frames/s and bucket depth; CLASS: arp-nd, resolver, routing,\n"
    "                         dns-tcp, other (defaults and meaning: proto/policy.h)\n"
    "  --control-socket-group NAME  make the control socket 0660 for this group (tern-control\n"
    "                         running unprivileged talks to it); default root only, 0600. Make the\n"
    "                         socket's directory sticky when it is group-writable (packaging does)\n";

struct Options {
  std::string profile_path, control_socket = "/run/tern/dataplane.sock", exception_iface;
  std::string control_socket_group;
  std::vector<std::string> allow, eal;
  bool refuse = true, check_only = false;
  uint32_t miss_rate = 2000, miss_burst = 500;
  uint64_t cache_bytes = 64u << 20;
  ProbeSource probe;
  unsigned probe_deadline_ms = 400;
  std::string policy_pairs;  // policy keys set by flags (--punt-budget), applied on top of the defaults
};

template <typename T>
bool to_num(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

int parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string& into) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tern-dataplane: %s needs a value\n%s", a.c_str(), kUsage);
        return false;
      }
      into = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--") {
      for (++i; i < argc; ++i) o.eal.push_back(argv[i]);
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("tern-dataplane %s\n", TERN_VERSION);
      return 0;
    } else if (a == "--profile") {
      if (!value(o.profile_path)) return 2;
    } else if (a == "--control-socket") {
      if (!value(o.control_socket)) return 2;
    } else if (a == "--control-socket-group") {
      if (!value(o.control_socket_group)) return 2;
    } else if (a == "--exception-iface") {
      if (!value(o.exception_iface)) return 2;
    } else if (a == "--allow") {
      if (!value(v)) return 2;
      o.allow.push_back(v);
    } else if (a == "--refuse") {
      o.refuse = true;
    } else if (a == "--drop-refused") {
      o.refuse = false;
    } else if (a == "--check-profile") {
      o.check_only = true;
    } else if (a == "--probe-source4" || a == "--probe-source6") {
      if (!value(v)) return 2;
      const bool v6 = a == "--probe-source6";
      if (inet_pton(v6 ? AF_INET6 : AF_INET, v.c_str(), v6 ? o.probe.v6.data() : o.probe.v4.data()) != 1) {
        std::fprintf(stderr, "tern-dataplane: %s '%s': expected an %s address\n", a.c_str(), v.c_str(),
                     v6 ? "IPv6" : "IPv4");
        return 2;
      }
    } else if (a == "--punt-budget") {
      // The policy codec owns the syntax: CLASS=RATE/BURST is its punt-CLASS key.
      if (!value(v)) return 2;
      proto::Policy scratch;
      std::string err;
      if (v.find('=') == std::string::npos || !proto::decode_policy("punt-" + v, scratch, &err)) {
        std::fprintf(stderr,
                     "tern-dataplane: --punt-budget '%s': expected CLASS=RATE/BURST with CLASS one of arp-nd, "
                     "resolver, routing, dns-tcp, other (e.g. other=1000/200)%s%s\n",
                     v.c_str(), err.empty() ? "" : ": ", err.c_str());
        return 2;
      }
      o.policy_pairs += " punt-" + v;
    } else if (a == "--probe-deadline") {
      if (!value(v)) return 2;
      if (!to_num(v, o.probe_deadline_ms) || o.probe_deadline_ms == 0 || o.probe_deadline_ms > 60000) {
        std::fprintf(stderr, "tern-dataplane: --probe-deadline '%s': expected milliseconds, 1..60000\n", v.c_str());
        return 2;
      }
    } else if (a == "--miss-rate" || a == "--miss-burst" || a == "--cache-bytes") {
      if (!value(v)) return 2;
      bool ok = a == "--miss-rate"    ? to_num(v, o.miss_rate)
                : a == "--miss-burst" ? to_num(v, o.miss_burst)
                                      : to_num(v, o.cache_bytes);
      if (!ok) {
        std::fprintf(stderr, "tern-dataplane: %s '%s': expected a non-negative integer\n", a.c_str(), v.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "tern-dataplane: unknown option '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  return -1;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "tern-dataplane: %s\n", msg.c_str());
  return 1;
}

struct Node {
  Profile profile;
  Options opt;
  std::unique_ptr<cache::Cache> cache;
  PolicySlot policy;
  ServiceAddrs service;
  ServiceCounters svc_counters;
  rte_mempool* pool = nullptr;
  NicPort nic;
  bool nic_up = false;
  ExceptionPort exc;
  bool exc_up = false;
  std::vector<rte_ring*> rings;
  std::vector<rte_ring*> probe_in;            // per worker, control thread -> worker
  rte_ring* probe_hits = nullptr;             // workers -> control thread
  rte_ring* probe_ctl = nullptr;              // service thread -> control thread
  rte_ring* service_tx = nullptr;             // service thread -> worker 0 (NicPort::service_via_worker)
  std::unique_ptr<Prober> prober;
  std::vector<Worker*> workers;  // workers[W] is the service thread's own (paired queues)
  bool launched = false;
  std::unique_ptr<AddrWatch> addrs;
  ControlServer control;
  DataplaneState state;

  ~Node() { teardown(); }

  void teardown() {
    // The control socket goes first, while the workers still answer: tern-control watches it and
    // fails readiness the moment it disappears, before a single query goes unanswered.
    control.stop();
    g_stop.store(true);
    if (launched) {
      rte_eal_mp_wait_lcore();
      launched = false;
    }
    drain_rings(rings);
    drain_rings(probe_in);
    if (service_tx) drain_rings({service_tx});
    drain_probe_rings(std::array<rte_ring*, 2>{probe_hits, probe_ctl});
    if (nic_up) port_close(nic.id), nic_up = false;
    if (exc_up) port_close(exc.id), exc_up = false;
    for (Worker* w : workers) worker_destroy(w);
    workers.clear();
    for (rte_ring* r : rings) rte_ring_free(r);
    rings.clear();
    for (rte_ring* r : probe_in) rte_ring_free(r);
    probe_in.clear();
    rte_ring_free(probe_hits), probe_hits = nullptr;
    rte_ring_free(probe_ctl), probe_ctl = nullptr;
    rte_ring_free(service_tx), service_tx = nullptr;
    if (pool) rte_mempool_free(pool), pool = nullptr;
  }
};

// systemd (Type=notify): READY once every worker runs, and the watchdog kicked only while
// every worker's heartbeat advances, so a stalled core gets the process restarted.
void notify([[maybe_unused]] const char* state) {
#ifdef TERN_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

std::thread start_watchdog([[maybe_unused]] const std::vector<Worker*>& workers) {
#ifdef TERN_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return {};
  return std::thread([&workers, period = std::chrono::microseconds(usec / 3)] {
    std::vector<uint64_t> last(workers.size(), UINT64_MAX);
    bool stalled_logged = false;
    while (!g_stop.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(period);
      if (g_stop.load(std::memory_order_relaxed)) break;
      int stalled = -1;
      for (size_t i = 0; i < workers.size(); ++i) {
        const uint64_t hb = workers[i]->heartbeat.load(std::memory_order_relaxed);
        if (hb == last[i]) stalled = static_cast<int>(i);
        last[i] = hb;
      }
      if (stalled < 0) {
        sd_notify(0, "WATCHDOG=1");
        stalled_logged = false;
      } else if (!stalled_logged) {
        std::fprintf(stderr, "tern-dataplane: worker %d heartbeat stalled; not feeding the watchdog\n", stalled);
        stalled_logged = true;
      }
    }
  });
#else
  return {};
#endif
}

int run(int argc, char** argv) {
  Node node;
  Options& o = node.opt;
  if (int rc = parse_args(argc, argv, o); rc >= 0) return rc;

  std::vector<ProfileError> perr;
  std::optional<Profile> prof = o.profile_path.empty()
                                    ? parse_profile(embedded_default_profile(), "<built-in lab-tap>", perr)
                                    : load_profile(o.profile_path, perr);
  if (prof) {
    auto v = validate_profile(*prof, o.profile_path.empty() ? "<built-in lab-tap>" : o.profile_path);
    perr.insert(perr.end(), v.begin(), v.end());
  }
  if (!perr.empty()) {
    for (const auto& e : perr) std::fprintf(stderr, "tern-dataplane: profile: %s\n", e.to_string().c_str());
    return 2;
  }
  Profile& p = node.profile = *prof;
  if (!o.exception_iface.empty()) {
    if (o.exception_iface.size() > 15) return fail("--exception-iface '" + o.exception_iface + "' longer than 15 characters");
    p.exception_name = o.exception_iface;
  }

  // The policy until tern-control's first push (generation 0): the flags, all or nothing.
  proto::Policy pol;
  for (const auto& a : o.allow) {
    std::string e;
    std::vector<Prefix> more;
    if (!proto::parse_prefix_list(a, more, &e)) {
      std::fprintf(stderr, "tern-dataplane: --allow %s: %s\n", a.c_str(), e.c_str());
      return 2;
    }
    pol.allow.insert(pol.allow.end(), more.begin(), more.end());
  }
  pol.refuse_outside = o.refuse;
  pol.miss_rate = o.miss_rate;
  pol.miss_burst = o.miss_burst;
  pol.cache.max_bytes = o.cache_bytes;
  if (std::string err; !proto::decode_policy(o.policy_pairs, pol, &err)) {  // checked one by one above
    std::fprintf(stderr, "tern-dataplane: %s\n", err.c_str());
    return 2;
  }
  if (pol.allow.empty())
    std::fprintf(stderr, "tern-dataplane: no --allow: every client is %s until a policy is pushed\n",
                 o.refuse ? "REFUSED" : "dropped");

  EalPlan plan = build_eal_args(p, hugepage_status(), p.exception_name, o.eal);
  for (const auto& n : plan.notes) std::fprintf(stderr, "tern-dataplane: %s\n", n.c_str());
  if (o.check_only) {
    std::printf("profile %s: ok (%u workers, %u mbufs, %u MB hugepages)\nEAL:", p.name.c_str(), p.workers(), p.mbufs,
                p.hugepages_mb);
    for (const auto& a : plan.args) std::printf(" %s", a.c_str());
    std::printf("\n");
    return 0;
  }

  std::string err;
  if (!preflight(p, &err)) return fail(err);
  if (!eal_init(plan, &err)) return fail(err);

  cache::Config cc;
  cc.max_bytes = pol.cache.max_bytes;
  cc.ttl_floor = pol.cache.ttl_floor;
  cc.ttl_cap = pol.cache.ttl_cap;
  cc.neg_ttl_cap = pol.cache.neg_ttl_cap;
  cc.servfail_ttl = pol.cache.servfail_ttl;
  cc.stale_window = pol.cache.stale_window;
  cc.stale_answer_ttl = pol.cache.stale_answer_ttl;
  cc.max_readers = p.workers() + 8;  // workers, the service thread's worker, dumps
  try {
    node.cache = std::make_unique<cache::Cache>(cc);
  } catch (const std::exception& e) {
    node.teardown();
    rte_eal_cleanup();
    return fail(std::string("cannot create the cache: ") + e.what() + " (lower --cache-bytes?)");
  }
  {
    Policy first = Policy::compile(pol);
    node.policy.publish(std::make_shared<const Policy>(std::move(first)));
  }

  auto abort_with = [&](const std::string& msg) {
    node.teardown();
    rte_eal_cleanup();
    return fail(msg);
  };
  if (!(node.pool = create_mempool(p, &err))) return abort_with(err);
  if (!nic_port_setup(p, node.pool, node.nic, &err)) return abort_with(err);
  node.nic_up = true;
  if (!exception_port_setup(p, p.exception_name, node.nic.node_mac, node.pool, node.exc, &err)) return abort_with(err);
  node.exc_up = true;

  node.addrs = std::make_unique<AddrWatch>(p.exception_name, &node.service);
  if (!node.addrs->open(&err)) return abort_with(err);

  const int socket = p.numa_socket >= 0 ? p.numa_socket : SOCKET_ID_ANY;
  const IdleMode idle = p.idle == IdlePolicy::kSleep ? IdleMode::kSleep : IdleMode::kBusyPoll;
  for (unsigned i = 0; i < p.workers(); ++i) {
    std::string name = "tern_exc_" + std::to_string(i);
    rte_ring* r = rte_ring_create(name.c_str(), p.exception_ring, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r) return abort_with("cannot create exception ring " + name + ": " + rte_strerror(rte_errno));
    node.rings.push_back(r);
  }
  // Readiness probe rings: a handful of slots is plenty for one probe in flight at a time.
  for (unsigned i = 0; i < p.workers(); ++i) {
    std::string name = "tern_probe_in_" + std::to_string(i);
    rte_ring* r = rte_ring_create(name.c_str(), 16, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r) return abort_with("cannot create probe ring " + name + ": " + rte_strerror(rte_errno));
    node.probe_in.push_back(r);
  }
  node.probe_hits = rte_ring_create("tern_probe_hit", 64, socket, RING_F_SC_DEQ);
  node.probe_ctl = rte_ring_create("tern_probe_ctl", 64, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!node.probe_hits || !node.probe_ctl)
    return abort_with(std::string("cannot create the probe reply rings: ") + rte_strerror(rte_errno));
  if (node.nic.service_via_worker) {
    node.service_tx = rte_ring_create("tern_svc_tx", p.exception_ring, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!node.service_tx) return abort_with(std::string("cannot create the service TX ring: ") + rte_strerror(rte_errno));
  }
  auto make_worker = [&](unsigned i, rte_ring* ring) -> Worker* {
    WorkerConf wc;
    wc.index = i;
    wc.port = node.nic.id;
    wc.rx_queue = wc.tx_queue = static_cast<uint16_t>(i);
    wc.exception_ring = ring;
    wc.cache = node.cache.get();
    wc.policy = &node.policy;
    wc.idle = idle;
    wc.sleep_max_us = p.sleep_max_us;
    wc.stop = &g_stop;
    wc.service = &node.service;
    wc.cksum_offload = node.nic.tx_cksum;
    wc.socket_id = socket;
    if (i < node.probe_in.size()) wc.probe_in = node.probe_in[i];
    wc.probe_out = node.probe_hits;
    if (i == 0) wc.service_tx_in = node.service_tx;
    wc.probe_source4 = o.probe.v4;
    wc.probe_source6 = o.probe.v6;
    Worker* w = worker_create(wc, &err);
    if (w) node.workers.push_back(w);
    return w;
  };
  for (unsigned i = 0; i < p.workers(); ++i)
    if (!make_worker(i, node.rings[i])) return abort_with("worker " + std::to_string(i) + ": " + err);
  Worker* own = nullptr;
  if (node.nic.service_rx >= 0 && !(own = make_worker(p.workers(), nullptr)))
    return abort_with("service thread's worker: " + err);

  ProberConf pc;
  pc.pool = node.pool;
  pc.inject = node.probe_in;
  pc.hits = node.probe_hits;
  pc.via_control = node.probe_ctl;
  pc.service = &node.service;
  pc.source = o.probe;
  std::memcpy(pc.node_mac.data(), node.nic.node_mac.addr_bytes, 6);
  pc.iface = p.exception_name;
  pc.deadline_ms = o.probe_deadline_ms;
  node.prober = std::make_unique<Prober>(std::move(pc));

  DataplaneState& st = node.state;
  st.cache = node.cache.get();
  st.policy = &node.policy;
  st.workers = &node.workers;
  st.service = &node.svc_counters;
  st.epoch = new_epoch();
  st.memory_bytes = physical_memory();
  st.nic_stats = [&node](std::string& out) {
    rte_eth_stats es;
    if (rte_eth_stats_get(node.nic.id, &es) != 0) return;
    out += proto::stat_line("tern_dp_nic_rx_missed_total", {}, es.imissed) + "\n";
    out += proto::stat_line("tern_dp_nic_rx_nombuf_total", {}, es.rx_nombuf) + "\n";
    out += proto::stat_line("tern_dp_nic_rx_errors_total", {}, es.ierrors) + "\n";
    for (size_t i = 0; i < kProbeCounterCount; ++i)
      out += proto::stat_line("tern_dp_probe_" + std::string(kProbeCounterNames[i]) + "_total", {},
                              node.prober->counters().get(static_cast<ProbeCounter>(i))) + "\n";
  };
  st.probe = [&node](std::string_view args, std::string& out) { return node.prober->run(args, out); };
  register_verbs(node.control, st);
  if (!node.control.start(o.control_socket, &err, o.control_socket_group)) return abort_with(err);

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  for (unsigned i = 0; i < p.workers(); ++i) {
    if (int rc = rte_eal_remote_launch(worker_launch, node.workers[i], p.worker_lcores[i]); rc != 0)
      return abort_with("cannot launch worker " + std::to_string(i) + " on lcore " +
                        std::to_string(p.worker_lcores[i]) + ": " + rte_strerror(-rc));
    node.launched = true;
  }

  ServiceConf sc;
  sc.nic_port = node.nic.id;
  sc.nic_tx_queue = node.nic.service_tx;
  sc.nic_tx_ring = node.service_tx;
  sc.nic_rx_queue = node.nic.service_rx;
  sc.own_worker = own;
  sc.exc_port = node.exc.id;
  sc.rings = node.rings;
  sc.cache = node.cache.get();
  sc.addrs = node.addrs.get();
  sc.service = &node.service;
  sc.idle = p.idle;
  sc.sleep_max_us = p.sleep_max_us;
  sc.burst = p.burst;
  sc.stop = &g_stop;
  sc.counters = &node.svc_counters;
  sc.probe_mac = o.probe.mac;
  sc.probe_replies = node.probe_ctl;
  PendingQueries pending(kPendingSlots, kPendingTimeoutMs, rte_rand());
  sc.pending = &pending;
  std::fprintf(stderr, "tern-dataplane: running: profile %s, %u workers, control socket %s, exception interface %s\n",
               p.name.c_str(), p.workers(), o.control_socket.c_str(), p.exception_name.c_str());
  std::thread watchdog = start_watchdog(node.workers);
  notify("READY=1");
  service_loop(sc);
  notify("STOPPING=1");
  if (watchdog.joinable()) watchdog.join();

  std::fprintf(stderr, "tern-dataplane: stopping\n");
  node.teardown();
  node.cache.reset();
  rte_eal_cleanup();
  return 0;
}

}  // namespace
}  // namespace tern::dp

int main(int argc, char** argv) { return tern::dp::run(argc, argv); }
