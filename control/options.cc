#include "control/options.h"

#include <array>

namespace tern::control {
namespace {

using T = OptType;
constexpr uint64_t kU32 = 0xffffffffu;
constexpr uint64_t kDay = 86400;

// Keep rows grouped by section, in the order the reference doc should list them.
// Defaults are in file syntax and must parse to the Config member initialisers
// (config_test checks both agree).
const std::array kOptions = {
    // [server]
    OptionSpec{"server", "listen", T::endpoint_list, "127.0.0.1:53 [::1]:53", 0, 0, "0.1", true,
               false,
               "Address and port to answer DNS on (UDP and TCP). Repeatable; several per line "
               "allowed. A port-less address gets port 53. Listeners that stay across a reload "
               "keep their sockets.",
               &Config::listen},
    OptionSpec{"server", "allow", T::prefix_list, "127.0.0.0/8 ::1/128", 0, 0, "0.1", true, false,
               "Client prefixes allowed to query. Repeatable. Queries from elsewhere are "
               "refused. 0.0.0.0/0 or ::/0 also needs allow-any = yes, so an open resolver "
               "never happens by accident.",
               &Config::allow},
    OptionSpec{"server", "allow-any", T::boolean, "no", 0, 0, "0.1", true, false,
               "Permit allow = 0.0.0.0/0 or ::/0 (an open resolver).", &Config::allow_any},
    OptionSpec{"server", "allow-max-share", T::uint, "64", 1, 1u << 30, "0.1", true, false,
               "Without allow-any, the allow prefixes of one address family together may "
               "cover at most 1/N of that family's address space (64: 10.0.0.0/8, "
               "172.16.0.0/12, 192.168.0.0/16 and 100.64.0.0/10 fit; 0.0.0.0/1 128.0.0.0/1 "
               "does not). Catches an open resolver assembled from pieces.",
               &Config::allow_max_share},
    OptionSpec{"server", "control-socket", T::path, "/run/tern/control.sock", 0, 0, "0.1", false,
               false,
               "Unix socket for ternctl (mode 0600, root only). Its directory is created if "
               "missing.",
               &Config::control_socket},
    OptionSpec{"server", "dataplane-socket", T::path, "", 0, 0, "0.1", true, false,
               "Control socket of tern-dataplane. When set, tern-control owns the dataplane's "
               "policy: [server] allow, [dataplane] and [cache] are pushed at start, after every "
               "successful reload and whenever the dataplane restarts, and readiness fails until "
               "the dataplane runs this config's generation. Empty: no dataplane.",
               &Config::dataplane_socket},
    OptionSpec{"server", "state-dir", T::path, "/var/lib/tern", 0, 0, "0.1", false, false,
               "Directory for state that must survive restarts: last-known-good.conf, the "
               "config used when the configured file does not load.",
               &Config::state_dir},
    OptionSpec{"server", "edns-buffer-size", T::uint, "1232", 512, 4096, "0.1", true, false,
               "EDNS UDP payload size advertised to clients and upstreams (1232 avoids IP "
               "fragmentation, DNS flag day 2020).",
               &Config::edns_buffer_size},
    OptionSpec{"server", "tcp-idle-timeout", T::duration_ms, "10s", 100, 3600000, "0.1", true,
               false, "Close a client TCP connection after this long without a query.",
               &Config::tcp_idle_timeout_ms},
    OptionSpec{"server", "tcp-max-connections", T::uint, "256", 1, 65535, "0.1", true, false,
               "Concurrent client TCP connections; beyond it new connections are refused.",
               &Config::tcp_max_connections},
    OptionSpec{"server", "tcp-max-per-address", T::uint, "32", 1, 65535, "0.1", true, false,
               "Concurrent client TCP connections from one address; beyond it new "
               "connections from that address are closed at once, so one address cannot "
               "take every tcp-max-connections slot. Connections from addresses outside "
               "allow are closed at accept.",
               &Config::tcp_max_per_address},
    OptionSpec{"server", "tcp-message-timeout", T::duration_ms, "2s", 100, 60000, "0.1", true,
               false,
               "Time a client has to complete a TCP message once its first byte arrived; "
               "a connection that trickles a message slower is closed. The idle timeout "
               "restarts only on complete messages.",
               &Config::tcp_message_timeout_ms},
    OptionSpec{"server", "max-outstanding-per-client", T::uint, "100", 1, 1000000, "0.1", true,
               false, "Queries one client address may have in recursion at once.",
               &Config::max_outstanding_per_client},
    OptionSpec{"server", "max-outstanding-total", T::uint, "10000", 1, 10000000, "0.1", true,
               false,
               "Resolutions running at once, all clients and all threads together; a query "
               "that would start one more is dropped (tern_dropped_total_limit_total).",
               &Config::max_outstanding_total},
    OptionSpec{"server", "max-pending-queries", T::uint, "20000", 1, 10000000, "0.2", true,
               false,
               "Client queries waiting for recursion at once, all threads together, including "
               "those joined to another query's resolution. The bound on the pending-query "
               "queue: a query beyond it is dropped and counted "
               "(tern_dropped_pending_limit_total); the client's retry finds room.",
               &Config::max_pending_queries},
    OptionSpec{"server", "threads", T::count_auto, "1", 1, 256, "0.2", false, false,
               "Event loops serving DNS, each on its own thread with its own UDP and TCP "
               "sockets on every listen address (SO_REUSEPORT: the kernel spreads clients). "
               "They share one cache and one upstream-server table, and identical questions "
               "are fetched once. auto: one per CPU this process may run on. Not changed by "
               "reload: a changed value is reported and needs a restart.",
               &Config::threads},

    // [dnssec]
    OptionSpec{"dnssec", "validation", T::boolean, "yes", 0, 0, "0.2", true, false,
               "Validate answers (RFC 4033-4035): DO=1 upstream, AD on secure answers for "
               "clients that set DO or AD, SERVFAIL with an Extended DNS Error for bogus ones. "
               "CD=1 queries get the data unchecked. no: answers never carry AD.",
               &Config::dnssec_validation},
    OptionSpec{"dnssec", "trust-anchor-file", T::path, "/usr/share/tern/root.key", 0, 0, "0.2",
               true, false,
               "DS or DNSKEY records (presentation format, one per line) to start chains of "
               "trust from; the package ships the IANA root KSK-2017 (key tag 20326). Copied "
               "on first use to <state-dir>/trust-anchors/, which RFC 5011 keeps current; "
               "the copy wins while it exists.",
               &Config::trust_anchor_file},
    OptionSpec{"dnssec", "negative-trust-anchors", T::string, "", 0, 0, "0.2", true, false,
               "Domain names, space-separated, below which answers are not validated (RFC "
               "7646): a signed zone known to be broken answers insecure instead of SERVFAIL. "
               "ternctl nta add|remove adds runtime ones.",
               &Config::negative_trust_anchors},
    OptionSpec{"dnssec", "bogus-ttl", T::duration_s, "60s", 1, 86400, "0.2", true, false,
               "How long data that failed validation stays cached (answered SERVFAIL, or "
               "unchecked to CD=1 clients) before it is fetched and checked again.",
               &Config::bogus_ttl},
    OptionSpec{"dnssec", "nsec3-max-iterations", T::uint, "150", 0, 2500, "0.2", true, false,
               "NSEC3 records with more hash iterations than this prove nothing: the answer "
               "is insecure (RFC 9276 §3.2), with EDE 27.",
               &Config::nsec3_max_iterations},
    OptionSpec{"dnssec", "rfc5011-hold-down", T::duration_s, "30d", 1, 365 * kDay, "0.2", true,
               false,
               "RFC 5011 add hold-down: a new trust anchor key seen signed by a trusted one "
               "becomes trusted after this long. Shorten only in tests.",
               &Config::rfc5011_hold_down},

    // [recursion]
    OptionSpec{"recursion", "root-hints", T::path, "", 0, 0, "0.1", true, true,
               "Root hints file (zone file syntax: NS and A/AAAA records of the root servers). "
               "Must exist and be readable.",
               &Config::root_hints},
    OptionSpec{"recursion", "qname-minimisation", T::boolean, "yes", 0, 0, "0.1", true, false,
               "Send upstreams only as much of the name as they need (RFC 9156).",
               &Config::qname_minimisation},
    OptionSpec{"recursion", "use-0x20", T::boolean, "no", 0, 0, "0.1", true, false,
               "Randomise the case of query names to upstreams and check the echo "
               "(draft-vixie-dnsext-dns0x20).",
               &Config::use_0x20},
    OptionSpec{"recursion", "upstream-timeout", T::duration_ms, "1500ms", 50, 60000, "0.1", true,
               false, "Time to wait for one upstream answer before trying another server.",
               &Config::upstream_timeout_ms},
    OptionSpec{"recursion", "max-upstream-queries", T::uint, "64", 1, 1024, "0.1", true, false,
               "Upstream queries one client query may cause in total (bounds amplification).",
               &Config::max_upstream_queries},
    OptionSpec{"recursion", "max-chain", T::uint, "12", 1, 64, "0.1", true, false,
               "CNAME/DNAME links followed for one query.", &Config::max_chain},
    OptionSpec{"recursion", "retries", T::uint, "3", 0, 10, "0.1", true, false,
               "Retries of one upstream question after a timeout, across servers.",
               &Config::retries},
    OptionSpec{"recursion", "forward-zone", T::zone_list, "", 0, 0, "0.1", true, false,
               "NAME ADDR[@PORT] ...: send queries at or below NAME to these recursive "
               "servers with RD=1. Repeatable, one zone per line.",
               &Config::forward_zones},
    OptionSpec{"recursion", "stub-zone", T::zone_list, "", 0, 0, "0.1", true, false,
               "NAME ADDR[@PORT] ...: ask these authoritative servers for NAME and below "
               "(RD=0) instead of following referrals from the root. Repeatable.",
               &Config::stub_zones},
    OptionSpec{"recursion", "infra-max-bytes", T::size, "16M", 64u << 10, 1ull << 32, "0.1", true,
               false,
               "Memory for per-upstream-server state (RTT estimates, EDNS support, lameness). "
               "Past it the least recently used servers are forgotten "
               "(tern_infra_bytes, tern_infra_evictions_total).",
               &Config::infra_max_bytes},
    OptionSpec{"recursion", "fetches-per-zone", T::uint, "0", 0, 1000000, "0.2", true, false,
               "Upstream queries in flight at once to the servers of one zone, all threads "
               "together (like BIND's fetches-per-zone). A resolution that would exceed it "
               "fails with SERVFAIL, or a stale answer (tern_resolver_fetches_zone_dropped_total): "
               "a random-subdomain flood against one zone cannot take every upstream slot. "
               "0: no limit.",
               &Config::fetches_per_zone},
    OptionSpec{"recursion", "fetches-per-server", T::uint, "0", 0, 1000000, "0.2", true, false,
               "Upstream queries in flight at once to one server address, all threads "
               "together. Servers with room are preferred; when every candidate is full the "
               "resolution fails with SERVFAIL (tern_resolver_fetches_server_dropped_total). "
               "0: no limit.",
               &Config::fetches_per_server},
    OptionSpec{"recursion", "forward-out-of-zone", T::boolean, "no", 0, 0, "0.1", true, false,
               "Use records a forward-zone server sends for names outside its zone. No: "
               "only names at or below the forwarded zone are taken from it, and a CNAME "
               "that leaves the zone is resolved on its own, so a forwarder for one zone "
               "cannot fill the cache for others. Yes for a forward-zone of . or a fully "
               "trusted forwarder.",
               &Config::forward_out_of_zone},
    OptionSpec{"recursion", "do-not-query", T::prefix_list,
               "0.0.0.0/8 127.0.0.0/8 169.254.0.0/16 224.0.0.0/3 ::/128 ::1/128 fe80::/10 "
               "ff00::/8",
               0, 0, "0.1", true, false,
               "Upstream addresses never queried when they come from the network (glue, "
               "NS addresses): glue must not point tern-control at this host, link-local "
               "services (169.254.169.254), unspecified, multicast or reserved addresses "
               "(IPv4-mapped IPv6 addresses count as IPv4). Servers named in root-hints, "
               "forward-zone and stub-zone are exempt. Repeatable; a list in the file "
               "replaces the default. Refusals are counted (tern_resolver_do_not_query_total).",
               &Config::do_not_query},
    OptionSpec{"recursion", "do-not-query-own", T::boolean, "yes", 0, 0, "0.1", true, false,
               "Also never query the node's own listen addresses and health probe-source "
               "addresses when glue names them.",
               &Config::do_not_query_own},

    // [cache]
    OptionSpec{"cache", "max-bytes", T::size, "256M", 1u << 20, 1ull << 40, "0.1", true, false,
               "Memory for cached answers (K/M/G/T suffixes are powers of 1024).",
               &Config::max_bytes},
    OptionSpec{"cache", "ttl-floor", T::duration_s, "0", 0, kDay, "0.1", true, false,
               "Cache answers at least this long, whatever their TTL.", &Config::ttl_floor},
    OptionSpec{"cache", "ttl-cap", T::duration_s, "1d", 1, 7 * kDay, "0.1", true, false,
               "Cache answers at most this long.", &Config::ttl_cap},
    OptionSpec{"cache", "neg-ttl-cap", T::duration_s, "1h", 0, kDay, "0.1", true, false,
               "Cache NXDOMAIN/NODATA at most this long (RFC 2308 section 5).",
               &Config::neg_ttl_cap},
    OptionSpec{"cache", "servfail-ttl", T::duration_s, "5s", 0, 300, "0.1", true, false,
               "Cache a SERVFAIL this long (RFC 2308 section 7.1 limits it to 5 minutes).",
               &Config::servfail_ttl},
    OptionSpec{"cache", "serve-stale", T::boolean, "yes", 0, 0, "0.1", true, false,
               "Answer from expired entries when upstreams fail (RFC 8767).",
               &Config::serve_stale},
    OptionSpec{"cache", "stale-window", T::duration_s, "1d", 0, 7 * kDay, "0.1", true, false,
               "How long past expiry an entry may still be served stale.",
               &Config::stale_window},
    OptionSpec{"cache", "stale-answer-ttl", T::duration_s, "30s", 1, kU32, "0.1", true, false,
               "TTL put on stale answers (RFC 8767 section 4 recommends 30 seconds).",
               &Config::stale_answer_ttl},
    OptionSpec{"cache", "prefetch", T::boolean, "yes", 0, 0, "0.1", true, false,
               "Refresh popular entries shortly before they expire.", &Config::prefetch},

    // [dataplane] (pushed to tern-dataplane; its command-line flags only hold until then)
    OptionSpec{"dataplane", "refuse-outside", T::boolean, "yes", 0, 0, "0.2", true, false,
               "Clients outside [server] allow get REFUSED from the fast path; no: their queries "
               "are dropped without an answer.",
               &Config::dp_refuse_outside},
    OptionSpec{"dataplane", "miss-rate", T::uint, "2000", 0, 100000000, "0.2", true, false,
               "Cache misses per second each dataplane worker sends to tern-control; the rest are "
               "answered stale (stale-on-limit) or dropped, so a random-subdomain flood cannot "
               "slow the cache hits.",
               &Config::dp_miss_rate},
    OptionSpec{"dataplane", "miss-burst", T::uint, "500", 1, 100000000, "0.2", true, false,
               "Misses a worker may send at once above miss-rate (token bucket depth).",
               &Config::dp_miss_burst},
    OptionSpec{"dataplane", "stale-on-limit", T::boolean, "yes", 0, 0, "0.2", true, false,
               "A miss over miss-rate whose entry has expired is answered stale (RFC 8767) "
               "instead of dropped. Needs [cache] serve-stale.",
               &Config::dp_stale_on_limit},
    OptionSpec{"dataplane", "cache-bytes", T::size, "64M", 1u << 20, 1ull << 40, "0.2", true, false,
               "Memory for the fast-path cache (tern-dataplane refuses more than half of the "
               "machine's memory). [cache] TTL and stale options apply to it as to "
               "tern-control's cache.",
               &Config::dp_cache_bytes},
    OptionSpec{"dataplane", "warm-restart", T::boolean, "yes", 0, 0, "0.2", true, false,
               "When tern-dataplane restarts, tern-control hands it the answers it holds, so the "
               "new process starts warm instead of sending every query through the miss limiter.",
               &Config::dp_warm_restart},

    OptionSpec{"dataplane", "rrl-responses-per-second", T::uint, "0", 0, 100000000, "0.2", true, false,
               "Response rate limiting (RRL, as BIND's and Knot's): answers from the fast-path cache "
               "per second to one client prefix, per worker; over it, answers are dropped or sent "
               "truncated (rrl-slip). 0: no limit (right when every client is the platform's own; "
               "set it where sources can be spoofed).",
               &Config::dp_rrl_responses},
    OptionSpec{"dataplane", "rrl-errors-per-second", T::uint, "20", 0, 100000000, "0.2", true, false,
               "REFUSED answers per second to one prefix outside [server] allow, per worker: the "
               "reflection an outsider can aim at a spoofed victim. 0: no limit.",
               &Config::dp_rrl_errors},
    OptionSpec{"dataplane", "rrl-burst", T::duration_s, "2s", 1, 60, "0.2", true, false,
               "Seconds of rate a quiet client prefix may use at once (token bucket depth = rate x "
               "this).",
               &Config::dp_rrl_burst_s},
    OptionSpec{"dataplane", "rrl-slip", T::uint, "2", 0, 10, "0.2", true, false,
               "Every N-th rate-limited response is sent truncated (TC=1, no records) instead of "
               "dropped, so a real client behind a spoofed prefix retries over TCP. 0: drop all; "
               "1: truncate all.",
               &Config::dp_rrl_slip},
    OptionSpec{"dataplane", "rrl-ipv4-prefix-length", T::uint, "24", 0, 32, "0.2", true, false,
               "Bits of an IPv4 source address that name one client for RRL.",
               &Config::dp_rrl_ipv4_prefix},
    OptionSpec{"dataplane", "rrl-ipv6-prefix-length", T::uint, "56", 0, 128, "0.2", true, false,
               "Bits of an IPv6 source address that name one client for RRL.",
               &Config::dp_rrl_ipv6_prefix},
    OptionSpec{"dataplane", "punt-arp-nd", T::rate_burst, "2000/500", 0, 0, "0.2", true, false,
               "Exception path budget, per worker, for ARP and IPv6 neighbour/router discovery: "
               "frames per second / bucket depth. Highest priority: losing it loses the node's "
               "neighbours.",
               &Config::dp_punt_arp_nd},
    OptionSpec{"dataplane", "punt-resolver-replies", T::rate_burst, "20000/4000", 0, 0, "0.2", true,
               false,
               "Exception path budget, per worker, for answers to tern-control's own upstream "
               "queries (UDP from port 53 to an ephemeral port of a service address, TCP from port "
               "53): frames per second / bucket depth.",
               &Config::dp_punt_resolver},
    OptionSpec{"dataplane", "punt-routing", T::rate_burst, "2000/500", 0, 0, "0.2", true, false,
               "Exception path budget, per worker, for routing and failover peers (VRRP, BGP on "
               "TCP 179, BFD on UDP 3784/3785/4784): frames per second / bucket depth.",
               &Config::dp_punt_routing},
    OptionSpec{"dataplane", "punt-dns-tcp", T::rate_burst, "5000/1000", 0, 0, "0.2", true, false,
               "Exception path budget, per worker, for DNS over TCP to a service address (SYNs "
               "included): frames per second / bucket depth.",
               &Config::dp_punt_dns_tcp},
    OptionSpec{"dataplane", "punt-other", T::rate_burst, "1000/200", 0, 0, "0.2", true, false,
               "Exception path budget, per worker, for everything else sent to Linux (ICMP, UDP and "
               "TCP to other ports, fragments, IPv6 extension headers): frames per second / bucket "
               "depth. Client queries the cache cannot answer use miss-rate instead.",
               &Config::dp_punt_other},
    OptionSpec{"dataplane", "punt-ring-reserve", T::uint, "25", 0, 90, "0.2", true, false,
               "Percent of the exception ring kept for ARP/ND, resolver replies and routing peers: "
               "once less than this is free, DNS over TCP, client queries and other frames are "
               "dropped (counted as drop_exception_reserve).",
               &Config::dp_punt_ring_reserve},

    // [health]
    OptionSpec{"health", "http-listen", T::endpoint_list, "", 0, 0, "0.1", true, false,
               "ADDR:PORT for the HTTP endpoints /metrics (Prometheus), /healthz (liveness) "
               "and /readyz (readiness), e.g. 127.0.0.1:9153. Give the port: a port-less "
               "address gets 53. Repeatable. Empty: no HTTP server.",
               &Config::health_http_listen},
    OptionSpec{"health", "http-max-per-address", T::uint, "8", 1, 64, "0.1", true, false,
               "HTTP connections one client address may hold at once (64 in all), so slow "
               "clients on one address cannot starve the health checker's /readyz.",
               &Config::health_http_max_per_address},
    OptionSpec{"health", "probe", T::string, "", 0, 0, "0.1", true, false,
               "NAME TYPE of the query injected into the dataplane's own path every interval "
               "(answered from the cache, or through the exception path and tern-control). "
               "Empty: the dataplane is checked by its heartbeats only.",
               &Config::health_probe},
    OptionSpec{"health", "probe-source", T::prefix_list, "198.18.255.254/32 2001:2::ffff:fffe/128",
               0, 0, "0.1", true, false,
               "Source addresses of the dataplane's probe (tern-dataplane --probe-source4/6). "
               "While probe is set they may query tern-control, so a probe that misses the "
               "cache is answered through the exception path.",
               &Config::health_probe_source},
    OptionSpec{"health", "canary", T::string, "", 0, 0, "0.1", true, false,
               "NAME TYPE resolved through the real upstream path every interval; readiness "
               "fails when it does not resolve. A name starting with `*.` gets a fresh random "
               "label each time, so the cache cannot hide a broken upstream (NXDOMAIN counts "
               "as success then). Empty: no recursion canary.",
               &Config::health_canary},
    OptionSpec{"health", "interval", T::duration_ms, "1s", 100, 60000, "0.1", true, false,
               "Time between health check cycles. A worker whose heartbeat did not advance "
               "over one interval is stalled.",
               &Config::health_interval_ms},
    OptionSpec{"health", "probe-deadline", T::duration_ms, "500ms", 10, 60000, "0.1", true,
               false, "Time the dataplane (heartbeats, probe) has to answer one check.",
               &Config::health_probe_deadline_ms},
    OptionSpec{"health", "canary-deadline", T::duration_ms, "1500ms", 10, 60000, "0.1", true,
               false, "Time the recursion canary has to resolve.",
               &Config::health_canary_deadline_ms},
};

const std::array kRemoved = {
    RemovedOption{"server", "dnssec-enable", "0.1",
                  "DNSSEC records are always requested and passed on; delete the line "
                  "(validation is [dnssec] validation)"},
};

const std::array kRenamed = {
    RenamedOption{"server", "dnssec-validation", "dnssec", "validation", "0.2"},
    RenamedOption{"cache", "max-cache-size", "cache", "max-bytes", "0.1"},
    RenamedOption{"recursion", "hints-file", "recursion", "root-hints", "0.1"},
    RenamedOption{"server", "interface", "server", "listen", "0.1"},
};

}  // namespace

std::string OptionSpec::key() const {
  std::string k(section);
  k += '.';
  k += name;
  return k;
}

std::string OptionSpec::display() const {
  std::string d = "[";
  d += section;
  d += "] ";
  d += name;
  return d;
}

bool OptionSpec::repeatable() const {
  return type == T::endpoint_list || type == T::prefix_list || type == T::zone_list;
}

std::span<const OptionSpec> options() { return kOptions; }
std::span<const RemovedOption> removed_options() { return kRemoved; }
std::span<const RenamedOption> renamed_options() { return kRenamed; }

const OptionSpec* find_option(std::string_view section, std::string_view name) {
  for (const auto& o : kOptions)
    if (o.section == section && o.name == name) return &o;
  return nullptr;
}

std::string_view type_name(OptType t) {
  switch (t) {
    case T::boolean: return "boolean";
    case T::uint: return "integer";
    case T::count_auto: return "integer or auto";
    case T::size: return "size";
    case T::duration_ms:
    case T::duration_s: return "duration";
    case T::string: return "string";
    case T::path: return "path";
    case T::endpoint_list: return "endpoint list";
    case T::prefix_list: return "prefix list";
    case T::zone_list: return "zone route";
    case T::rate_burst: return "rate/burst";
  }
  return "?";
}

std::string_view type_syntax(OptType t) {
  switch (t) {
    case T::boolean: return "yes or no (also true/false, on/off, 1/0)";
    case T::uint: return "a decimal integer";
    case T::count_auto: return "a decimal integer, or auto";
    case T::size: return "a byte count with optional K, M, G or T suffix (e.g. 512M)";
    case T::duration_ms: return "a duration: a number with ms, s, m, h or d (a bare number is ms)";
    case T::duration_s: return "a duration: a number with s, m, h or d (a bare number is seconds)";
    case T::string: return "text";
    case T::path: return "a filesystem path";
    case T::endpoint_list:
      return "addresses with optional port: 198.18.0.53, 198.18.0.53:53, [2001:2::53]:53";
    case T::prefix_list: return "prefixes: 198.18.0.0/15, 2001:2::/48 (a bare address is a host)";
    case T::zone_list: return "a zone name then servers: example.org. 198.18.0.1 2001:2::1@5353";
    case T::rate_burst: return "RATE/BURST: per second, then bucket depth (at least 1), e.g. 1000/200";
  }
  return "?";
}

namespace {

std::string range_text(const OptionSpec& o) {
  auto n = [](uint64_t v) { return std::to_string(v); };
  switch (o.type) {
    case T::uint: return n(o.min) + " to " + n(o.max);
    case T::count_auto: return n(o.min) + " to " + n(o.max) + ", or auto";
    case T::size: return n(o.min) + " to " + n(o.max) + " bytes";
    case T::duration_ms: return n(o.min) + " ms to " + n(o.max) + " ms";
    case T::duration_s: return n(o.min) + " s to " + n(o.max) + " s";
    default: return "";
  }
}

}  // namespace

void write_options_markdown(std::ostream& out) {
  out << "# tern-control configuration reference\n\n"
         "<!-- Generated from the options table in control/options.cc. Do not edit: change the\n"
         "     table and regenerate with\n"
         "     build/control/ternctl --dump-options-markdown > docs/config-reference.md\n"
         "     (tern-control --dump-options-markdown prints the same). -->\n\n"
         "The file is INI style: `[section]` headers, `name = value` lines, `#` starts a comment.\n"
         "Options marked repeatable may be given on several lines; their values add up.\n"
         "Check a file before installing it with `ternctl check FILE` (exit 0 clean, 1 errors,\n"
         "2 warnings only). Options marked *restart* keep their running value on reload and log\n"
         "that a restart is needed.\n";
  std::string_view section;
  for (const auto& o : kOptions) {
    if (o.section != section) {
      section = o.section;
      out << "\n## [" << section << "]\n\n"
          << "| option | type | default | range | since | on reload | description |\n"
          << "|---|---|---|---|---|---|---|\n";
    }
    out << "| `" << o.name << "` | " << type_name(o.type) << (o.repeatable() ? ", repeatable" : "")
        << " | ";
    if (o.required) out << "*required*";
    else if (o.default_value.empty()) out << "*(empty)*";
    else out << "`" << o.default_value << "`";
    out << " | " << range_text(o) << " | " << o.since << " | "
        << (o.reloadable ? "applies" : "restart") << " | " << o.help << " |\n";
  }
  out << "\n## Removed options\n\n"
         "Accepted with a warning and otherwise ignored; never fatal.\n\n"
         "| option | removed in | what to do |\n|---|---|---|\n";
  for (const auto& r : kRemoved)
    out << "| `[" << r.section << "] " << r.name << "` | " << r.version << " | " << r.hint
        << " |\n";
  out << "\n## Renamed options\n\n"
         "Accepted with a warning; the value is applied to the new name.\n\n"
         "| old | new | renamed in |\n|---|---|---|\n";
  for (const auto& r : kRenamed)
    out << "| `[" << r.section << "] " << r.name << "` | `[" << r.new_section << "] "
        << r.new_name << "` | " << r.version << " |\n";
}

}  // namespace tern::control
