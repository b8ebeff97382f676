// tern-control configuration: the parsed, validated form of one INI file.
//
// Contract: a Config is a plain value. It is built off to the side by parse_config_file()
// (start, reload and `ternctl check` share that one parser), handed to Server::apply(), and
// swapped in only when apply() succeeded. Nothing in it refers to running state, so a
// failed parse or apply leaves the running Config untouched.
#pragma once

#include "proto/policy.h"

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::control {

// An address and port, e.g. "198.18.0.53:53" or "[2001:2::53]:53" (text is canonical).
struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;
  bool operator==(const Endpoint& o) const { return text == o.text; }
};

// A network prefix, e.g. "198.18.0.0/15" or "2001:2::/48" (text is canonical, host bits zero).
struct Prefix {
  sockaddr_storage net{};
  unsigned len = 0;
  std::string text;
  // True when `a` (AF_INET or AF_INET6; v4-mapped v6 addresses match v4 prefixes) is inside.
  bool contains(const sockaddr* a) const;
  bool operator==(const Prefix& o) const { return text == o.text; }
};

struct ZoneRoute {
  std::string zone;  // canonical text, lowercase, trailing dot ("example.org.", "." for the root)
  std::vector<Endpoint> servers;
  bool operator==(const ZoneRoute& o) const { return zone == o.zone && servers == o.servers; }
};

// Every field here has one row in the options table (control/options.cc), which holds its
// default, range, version, reloadability and help text. Defaults below mirror that table;
// config_test checks that they agree.
struct Config {
  std::string file;         // path the config was read from
  uint64_t generation = 0;  // bumped by tern-control on every successful apply

  // [server]
  std::vector<Endpoint> listen;  // default 127.0.0.1:53 and [::1]:53
  std::vector<Prefix> allow;     // default: loopback only (never open)
  bool allow_any = false;        // must be set for allow = 0.0.0.0/0 or ::/0
  unsigned allow_max_share = 64;  // without allow_any: allow covers <= 1/N of each family
  std::string control_socket = "/run/tern/control.sock";
  std::string dataplane_socket;  // empty: no dataplane to talk to
  std::string state_dir = "/var/lib/tern";
  uint16_t edns_buffer_size = 1232;
  unsigned tcp_idle_timeout_ms = 10000, tcp_max_connections = 256;
  unsigned tcp_max_per_address = 32, tcp_message_timeout_ms = 2000;
  unsigned max_outstanding_per_client = 100, max_outstanding_total = 10000;
  unsigned max_pending_queries = 20000;  // client queries waiting for recursion, all loops
  unsigned threads = 1;                  // event loops; 0 = auto (one per CPU allowed)

  // [recursion]
  std::string root_hints;  // required; path; the file is parsed by the resolver
  bool qname_minimisation = true, use_0x20 = false;
  unsigned upstream_timeout_ms = 1500, max_upstream_queries = 64, max_chain = 12, retries = 3;
  std::vector<ZoneRoute> forward_zones;  // forward-zone = NAME ADDR[@PORT] ... (RD=1 to upstreams)
  std::vector<ZoneRoute> stub_zones;     // stub-zone = NAME ADDR[@PORT] ...   (RD=0, authoritative)
  bool forward_out_of_zone = false;      // use forwarders' records for any owner name
  size_t infra_max_bytes = 16u << 20;    // per-upstream-server state (RTT, EDNS, lameness)
  unsigned fetches_per_zone = 0, fetches_per_server = 0;  // upstream queries in flight; 0: no limit
  std::vector<Prefix> do_not_query;      // never query learned upstream addresses in these
  bool do_not_query_own = true;          // ... nor the listen and probe-source addresses

  // [cache]
  size_t max_bytes = 256u << 20;
  uint32_t ttl_floor = 0, ttl_cap = 86400, neg_ttl_cap = 3600, servfail_ttl = 5;
  bool serve_stale = true;
  uint32_t stale_window = 86400, stale_answer_ttl = 30;
  bool prefetch = true;
  // [dnssec] (control/resolver/validator.h)
  bool dnssec_validation = true;
  std::string trust_anchor_file = "/usr/share/tern/root.key";  // parsed by the resolver
  std::string negative_trust_anchors;  // names, space-separated
  uint32_t bogus_ttl = 60;
  unsigned nsec3_max_iterations = 150;
  uint32_t rfc5011_hold_down = 30 * 86400;  // RFC 5011 §2.4.1 add hold-down, seconds
  // [dataplane] (dataplane_policy() turns these, [server] allow and [cache] into the push)
  bool dp_refuse_outside = true;
  unsigned dp_miss_rate = 2000, dp_miss_burst = 500;
  bool dp_stale_on_limit = true;
  size_t dp_cache_bytes = 64u << 20;
  bool dp_warm_restart = true;
  // Response rate limiting and the exception path's budgets: per dataplane worker (proto/policy.h).
  unsigned dp_rrl_responses = 0, dp_rrl_errors = 20, dp_rrl_burst_s = 2, dp_rrl_slip = 2;
  unsigned dp_rrl_ipv4_prefix = 24, dp_rrl_ipv6_prefix = 56;
  proto::PuntBudget dp_punt_arp_nd{}, dp_punt_resolver{}, dp_punt_routing{}, dp_punt_dns_tcp{}, dp_punt_other{};
  unsigned dp_punt_ring_reserve = 25;
  // [health] (control/health.h: what each check means)
  std::vector<Endpoint> health_http_listen;  // /metrics /healthz /readyz; empty: no HTTP
  unsigned health_http_max_per_address = 8;  // HTTP connections from one client address
  std::string health_probe;                  // "NAME TYPE" injected into the dataplane; empty: off
  std::vector<Prefix> health_probe_source;   // the probe's source addresses; allowed while probe is on
  std::string health_canary;                 // "NAME TYPE" resolved upstream; empty: off
  unsigned health_interval_ms = 1000, health_probe_deadline_ms = 500,
           health_canary_deadline_ms = 1500;
};

enum class Severity { warning, error };

// One finding about a config file. str() renders the single line a person reads:
//   FILE:LINE: error: [section] name: what is wrong; hint
struct Diagnostic {
  Severity severity = Severity::error;
  std::string file;
  unsigned line = 0;   // 0: the finding is about the file as a whole
  std::string option;  // "[section] name", empty when not about one option
  std::string message;
  std::string hint;
  std::string str() const;
};

struct ParseResult {
  std::vector<Diagnostic> diagnostics;
  std::optional<Config> config;  // set when there are no errors (warnings never block)
  // The state-dir the file asks for (the default when it does not say): where tern-control
  // looks for the last-known-good copy when `config` is empty.
  std::string state_dir = Config{}.state_dir;
  bool has_errors() const;
  bool has_warnings() const;
  // The `ternctl check` contract: 0 clean, 1 errors, 2 warnings only.
  int check_exit_code() const;
};

// Reads and validates `path`. Filesystem cross-checks (root-hints readable, socket and state
// directories usable) run here, so the result is what the running daemon would see.
ParseResult parse_config_file(const std::string& path);
// The same, from text already in memory; `name` is used as FILE in diagnostics and as
// Config::file, and relative paths are taken relative to the working directory.
ParseResult parse_config_text(std::string_view text, const std::string& name);

// The config as a file in canonical syntax, every option explicit (the last-known-good copy):
// parse_config_text(render_config(c)) yields a Config equal to `c` except for `file`.
std::string render_config(const Config&);
// The same for the given sections only (every section when `only` is empty): compares parts of two
// configs, e.g. whether a reload changed anything an answer depends on.
std::string render_config_sections(const Config&, std::initializer_list<std::string_view> only);

// Names ("[section] name") of restart-only options whose value differs between `running` and
// `next`. Those fields in `next` are reset to the running values, so a reload applies the rest
// and the daemon keeps behaving as its sockets and files say until the next restart.
std::vector<std::string> keep_restart_only(const Config& running, Config& next);

// The policy tern-control pushes to tern-dataplane for this config: [server] allow,
// [dataplane], and [cache]'s TTL and stale rules (serve-stale = no pushes a zero stale window).
proto::Policy dataplane_policy(const Config&);

// Parsers shared with ternctl and tests; nullopt with `err` set when the text is invalid.
// An endpoint without a port gets `default_port`. Accepted: 198.18.0.1, 198.18.0.1:53,
// 198.18.0.1@53, 2001:2::1, [2001:2::1]:53, 2001:2::1@53.
std::optional<Endpoint> parse_endpoint(std::string_view text, uint16_t default_port,
                                       std::string& err);
std::optional<Prefix> parse_prefix(std::string_view text, std::string& err);

}  // namespace tern::control
