#include "plan.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cache/cache.h"
#include "dataplane/profile.h"

namespace tern::bench::plan {

namespace {

constexpr uint32_t kDnsHeader = 12;
constexpr uint32_t kQuestionFixed = 4;  // QTYPE + QCLASS after the name
// The smallest record the sections can hold per TTL: compressed owner (2) + type, class,
// TTL, RDLENGTH (10) + an A record's 4 bytes. Fewer bytes per record are possible (empty
// RDATA) but rare; the TTL offsets are 2 bytes each, so the error is small either way.
constexpr uint32_t kMinRecordBytes = 16;
constexpr uint64_t kHugepage2M = 2;  // MB

// ceil() that does not turn 3.0000000001 (floating-point noise) into 4.
unsigned ceil_count(double x) {
  if (x <= 0) return 0;
  return static_cast<unsigned>(std::ceil(x - 1e-9));
}

std::string si(double v, const char* unit) {
  char buf[64];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2f G%s", v / 1e9, unit);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M%s", v / 1e6, unit);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1f k%s", v / 1e3, unit);
  else std::snprintf(buf, sizeof buf, "%.0f %s", v, unit);
  return buf;
}

std::string mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool to_double(std::string_view s, double& out) {
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && std::isfinite(out);
}

}  // namespace

uint32_t frame_bytes(uint32_t dns_bytes, bool ipv6) {
  const uint32_t f = kEthHeader + (ipv6 ? kIpv6Header : kIpv4Header) + kUdpHeader + dns_bytes + kFcs;
  return std::max(f, kMinFrame);
}

uint32_t wire_bytes(uint32_t dns_bytes, bool ipv6) {
  return frame_bytes(dns_bytes, ipv6) + kPreambleSfd + kInterFrameGap;
}

CacheCost cache_cost(uint64_t names, uint32_t answer_bytes, uint32_t name_bytes) {
  CacheCost c;
  const uint32_t fixed = kDnsHeader + name_bytes + kQuestionFixed;
  const uint32_t sections = answer_bytes > fixed ? answer_bytes - fixed : 0;
  c.ttls = std::max<uint32_t>(1, (sections + kMinRecordBytes - 1) / kMinRecordBytes);
  c.entry_bytes = cache::Cache::entry_bytes(name_bytes, c.ttls, sections);
  // Index: 8-byte slots, rebuilt to 3/5 full (cache.cc rebuild_locked): 8 * 5 / 3 per entry.
  c.total = names * c.entry_bytes + (names * 8 * 5 + 2) / 3;
  return c;
}

bool parse_results(std::string_view text, std::string_view origin, Figures& out, std::string& error) {
  unsigned lineno = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++lineno;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    // "RESULT k=v k=v" (tern-bench dataplane's last line) or one "k=v" per line.
    const bool result_line = line.starts_with("RESULT ");
    if (result_line) line.remove_prefix(7);
    else if (const size_t eq = line.find('=');
             eq == std::string_view::npos || trim(line.substr(0, eq)).find(' ') != std::string_view::npos)
      continue;  // free text of a captured benchmark log
    while (!line.empty()) {
      line = trim(line);
      const size_t sp = result_line ? line.find(' ') : std::string_view::npos;
      const std::string_view tok = line.substr(0, sp);
      line.remove_prefix(sp == std::string_view::npos ? line.size() : sp);
      const size_t eq = tok.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        error = std::string(origin) + ":" + std::to_string(lineno) + ": '" + std::string(tok) +
                "' is not key=value";
        return false;
      }
      const std::string_view key = trim(tok.substr(0, eq)), val = trim(tok.substr(eq + 1));
      double v;
      if (!to_double(val, v)) {
        // Text figures (machine model, versions) are recorded for people, not planned with.
        if (!result_line) continue;
        error = std::string(origin) + ":" + std::to_string(lineno) + ": " + std::string(key) + "=" +
                std::string(val) + ": expected a number";
        return false;
      }
      out[std::string(key)] = Figure{v, std::string(origin) + ":" + std::to_string(lineno)};
    }
  }
  return true;
}

std::string_view resource_name(Resource r) {
  switch (r) {
    case Resource::kWorkerCores: return "worker cores";
    case Resource::kControlPlane: return "control plane (misses)";
    case Resource::kPortLineRate: return "port line rate";
  }
  return "?";
}

std::optional<double> line_rate_from_description(std::string_view d) {
  // "10 GbE", "100 GbE", "25GbE": the number right before "GbE".
  for (size_t at = d.find("GbE"); at != std::string_view::npos; at = d.find("GbE", at + 1)) {
    size_t end = at;
    while (end > 0 && d[end - 1] == ' ') --end;
    size_t begin = end;
    while (begin > 0 && (std::isdigit(static_cast<unsigned char>(d[begin - 1])) || d[begin - 1] == '.')) --begin;
    double v;
    if (begin < end && to_double(d.substr(begin, end - begin), v) && v > 0) return v;
  }
  return std::nullopt;
}

double control_capacity(const Inputs& in) {
  if (in.control_threads <= 1 || in.control_qps_threads2 <= 0) return in.control_qps;
  const double gain = std::max(0.0, in.control_qps_threads2 - in.control_qps);
  return in.control_qps + (in.control_threads - 1) * gain;
}

Plan compute(const Inputs& in) {
  Plan p;
  p.design_qps = in.peak_qps * (1 + in.headroom);
  p.hit_qps = p.design_qps * in.hit_ratio;
  p.miss_qps = p.design_qps - p.hit_qps;

  // A worker handles every query: hits are answered, misses parsed, looked up and punted to
  // the exception ring. A punt costs no more than an answer, so sizing on all queries at the
  // hit rate is the conservative bound.
  p.worker_cores = std::max(1u, ceil_count(p.design_qps / in.worker_qps_per_core));
  p.control_node_qps = control_capacity(in);
  // Cores: one per loop, loops per node from control_threads, per-loop rate from the node's.
  p.control_cores = p.miss_qps > 0
                        ? ceil_count(p.miss_qps / (p.control_node_qps / std::max(1u, in.control_threads)))
                        : 0;

  p.query_wire_bytes = wire_bytes(in.query_bytes, in.ipv6);
  p.answer_wire_bytes = wire_bytes(in.answer_bytes, in.ipv6);
  // Full duplex: queries fill the receive direction, answers (hits and recursed misses alike
  // leave through the port) the transmit direction; each is checked against the line rate.
  p.rx_gbps = p.design_qps * p.query_wire_bytes * 8 / 1e9;
  p.tx_gbps = p.design_qps * p.answer_wire_bytes * 8 / 1e9;
  p.ports = std::max(1u, ceil_count(std::max(p.rx_gbps, p.tx_gbps) / in.line_gbps));

  if (in.names) p.cache = cache_cost(in.names, in.answer_bytes, in.name_bytes);
  p.hugepages_mb = std::max(in.hugepages_mb_needed, in.hugepages_mb_profile);
  p.hugepages_2m = static_cast<unsigned>((p.hugepages_mb + kHugepage2M - 1) / kHugepage2M);

  p.node_limits.push_back({Resource::kWorkerCores, in.node_workers * in.worker_qps_per_core});
  if (in.hit_ratio < 1)
    p.node_limits.push_back({Resource::kControlPlane, p.control_node_qps / (1 - in.hit_ratio)});
  const uint32_t busier = std::max(p.query_wire_bytes, p.answer_wire_bytes);
  p.node_limits.push_back({Resource::kPortLineRate, in.line_gbps * 1e9 / (busier * 8.0)});
  std::stable_sort(p.node_limits.begin(), p.node_limits.end(),
                   [](const Plan::Limit& a, const Plan::Limit& b) { return a.qps < b.qps; });
  p.nodes = std::max(1u, ceil_count(p.design_qps / p.node_limits.front().qps));
  return p;
}

std::string format(const Inputs& in, const Plan& p) {
  std::ostringstream o;
  char buf[512];
  auto line = [&](const char* fmt, auto... args) {
    if constexpr (sizeof...(args) == 0) {
      o << fmt << '\n';  // no arguments: never hand a non-literal to printf
    } else {
      std::snprintf(buf, sizeof buf, fmt, args...);
      o << buf << '\n';
    }
  };
  line("demand: peak %s + %.0f%% headroom = %s design load; hit ratio %.3f: %s hits, %s misses",
       si(in.peak_qps, "qps").c_str(), in.headroom * 100, si(p.design_qps, "qps").c_str(), in.hit_ratio,
       si(p.hit_qps, "qps").c_str(), si(p.miss_qps, "qps").c_str());
  o << '\n';
  line("worker cores   %5u   %s / %s per core (every query passes a worker: hits answered, misses punted)",
       p.worker_cores, si(p.design_qps, "qps").c_str(), si(in.worker_qps_per_core, "qps").c_str());
  if (p.miss_qps > 0 && in.control_threads > 1)
    line("control cores  %5u   %s misses / %s per tern-control thread (%u threads: %s per node)",
         p.control_cores, si(p.miss_qps, "qps").c_str(),
         si(p.control_node_qps / in.control_threads, "qps").c_str(), in.control_threads,
         si(p.control_node_qps, "qps").c_str());
  else if (p.miss_qps > 0)
    line("control cores  %5u   %s misses / %s per tern-control core", p.control_cores,
         si(p.miss_qps, "qps").c_str(), si(in.control_qps, "qps").c_str());
  else
    line("control cores  %5u   hit ratio 1: no misses to recurse (canaries and refreshes aside)", 0u);
  line("NIC ports      %5u   in:  %s x %u B on the wire (%u B DNS -> %u B frame) = %.2f Gb/s", p.ports,
       si(p.design_qps, "qps").c_str(), p.query_wire_bytes, in.query_bytes, frame_bytes(in.query_bytes, in.ipv6),
       p.rx_gbps);
  line("                       out: %s x %u B on the wire (%u B DNS -> %u B frame) = %.2f Gb/s; %.0f Gb/s per "
       "port and direction",
       si(p.design_qps, "qps").c_str(), p.answer_wire_bytes, in.answer_bytes,
       frame_bytes(in.answer_bytes, in.ipv6), p.tx_gbps, in.line_gbps);
  if (in.names)
    line("cache memory %9s   %lu names x (%lu B entry + 13.3 B index); %u B answer, %u B qname, %u records",
         mb(p.cache.total).c_str(), static_cast<unsigned long>(in.names),
         static_cast<unsigned long>(p.cache.entry_bytes), in.answer_bytes, in.name_bytes, p.cache.ttls);
  else
    line("cache memory        -    not sized: pass --names N (distinct answers the cache must hold)");
  line("hugepages    %6lu MB   per node = %u x 2 MB pages (mempool, rings, EAL: %lu MB needed; profile "
       "reserves %lu MB)",
       static_cast<unsigned long>(p.hugepages_mb), p.hugepages_2m,
       static_cast<unsigned long>(in.hugepages_mb_needed), static_cast<unsigned long>(in.hugepages_mb_profile));
  if (in.names)
    line("node memory  %9s   cache (process heap, max_bytes) + hugepages, per node: every node caches the "
         "whole name set",
         mb(p.cache.total + (p.hugepages_mb << 20)).c_str());
  o << '\n';
  line("one %s node (%u workers, one %.0f Gb/s port) is exhausted at, tightest first:", in.profile_name.c_str(),
       in.node_workers, in.line_gbps);
  for (const auto& l : p.node_limits) line("  %-24s %s design load", std::string(resource_name(l.resource)).c_str(),
                                           si(l.qps, "qps").c_str());
  const auto& first = p.node_limits.front();
  line("runs out first: %s -> %u node%s for %s", std::string(resource_name(first.resource)).c_str(), p.nodes,
       p.nodes == 1 ? "" : "s", si(p.design_qps, "qps").c_str());
  if (in.ram_mb && in.names) {
    const uint64_t need = p.cache.total + (p.hugepages_mb << 20);
    if (need > (in.ram_mb << 20))
      line("memory does not fit: %s needed, --ram-mb %lu: a larger node or fewer names, not more nodes (each "
           "node caches everything)",
           mb(need).c_str(), static_cast<unsigned long>(in.ram_mb));
    else
      line("memory fits: %s of %lu MB", mb(need).c_str(), static_cast<unsigned long>(in.ram_mb));
  }
  return o.str();
}

// ---- command line ---------------------------------------------------------------------

namespace {

void usage(FILE* out) {
  std::fprintf(
      out,
      "usage: tern-bench plan --profile FILE --peak-qps N --hit-ratio R --headroom H --results FILE [options]\n"
      "  --profile FILE     hardware profile of one node (hw-profiles/*.conf)\n"
      "  --peak-qps N       the region's busiest second, queries per second\n"
      "  --hit-ratio R      share of queries answered from cache, 0..1\n"
      "  --headroom H       spare capacity on top of the peak: plan for peak x (1 + H); 0.3 = 30%%\n"
      "  --results FILE     measured figures (repeatable; later files win):\n"
      "                       worker_mqps   from tern-bench dataplane (its RESULT line; save its output)\n"
      "                       control_qps   from bench/compare/run.sh (results/compare-*/results.kv)\n"
      "  --query-bytes B    mean DNS query message, UDP payload (default 64)\n"
      "  --answer-bytes B   mean DNS answer message, UDP payload (default 120)\n"
      "  --ipv6             size frames for IPv6 (default IPv4)\n"
      "  --names N          distinct answers the cache must hold (sizes the cache)\n"
      "  --name-bytes B     mean qname length in wire form (default 24)\n"
      "  --line-gbps G      port speed, when the profile's description does not say \"<N> GbE\"\n"
      "  --ram-mb M         memory a node can give the cache and hugepages (checks it fits)\n"
      "  --control-threads N  tern-control's [server] threads on each node (default 1); above 1\n"
      "                     needs control_qps_threads2 from bench/control_vs_unbound.sh\n");
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

}  // namespace

int plan_main(int argc, char** argv) {
  Inputs in;
  std::string profile_path;
  std::vector<std::string> results;
  std::optional<double> peak, hit, headroom, line_gbps;

  auto value = [&](int& i) -> const char* {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "tern-bench plan: %s needs a value\n", argv[i]);
      return nullptr;
    }
    return argv[++i];
  };
  auto number = [&](int& i, double lo, double hi, double& out) {
    const char* v = value(i);
    if (!v) return false;
    if (!to_double(v, out) || out < lo || out > hi) {
      std::fprintf(stderr, "tern-bench plan: %s %s: expected a number in %g..%g\n", argv[i - 1], v, lo, hi);
      return false;
    }
    return true;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    double v;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--profile") {
      const char* s = value(i);
      if (!s) return 2;
      profile_path = s;
    } else if (a == "--results") {
      const char* s = value(i);
      if (!s) return 2;
      results.emplace_back(s);
    } else if (a == "--peak-qps") {
      if (!number(i, 1, 1e12, v)) return 2;
      peak = v;
    } else if (a == "--hit-ratio") {
      if (!number(i, 0, 1, v)) return 2;
      hit = v;
    } else if (a == "--headroom") {
      if (!number(i, 0, 10, v)) return 2;
      headroom = v;
    } else if (a == "--query-bytes") {
      if (!number(i, 17, 65535, v)) return 2;  // header + root question + 0
      in.query_bytes = static_cast<uint32_t>(v);
    } else if (a == "--answer-bytes") {
      if (!number(i, 17, 65535, v)) return 2;
      in.answer_bytes = static_cast<uint32_t>(v);
    } else if (a == "--ipv6") {
      in.ipv6 = true;
    } else if (a == "--names") {
      if (!number(i, 1, 1e10, v)) return 2;
      in.names = static_cast<uint64_t>(v);
    } else if (a == "--name-bytes") {
      if (!number(i, 1, 255, v)) return 2;  // RFC 1035 2.3.4: names are 255 octets or less
      in.name_bytes = static_cast<uint32_t>(v);
    } else if (a == "--line-gbps") {
      if (!number(i, 0.001, 1e4, v)) return 2;
      line_gbps = v;
    } else if (a == "--ram-mb") {
      if (!number(i, 1, 1e9, v)) return 2;
      in.ram_mb = static_cast<uint64_t>(v);
    } else if (a == "--control-threads") {
      if (!number(i, 1, 256, v)) return 2;  // tern.conf's [server] threads range
      in.control_threads = static_cast<unsigned>(v);
    } else {
      std::fprintf(stderr, "tern-bench plan: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  std::string missing;
  if (profile_path.empty()) missing += " --profile";
  if (!peak) missing += " --peak-qps";
  if (!hit) missing += " --hit-ratio";
  if (!headroom) missing += " --headroom";
  if (results.empty()) missing += " --results";
  if (!missing.empty()) {
    std::fprintf(stderr, "tern-bench plan: missing%s (tern-bench plan --help)\n", missing.c_str());
    return 2;
  }
  in.peak_qps = *peak;
  in.hit_ratio = *hit;
  in.headroom = *headroom;
  if (in.answer_bytes < kDnsHeader + in.name_bytes + kQuestionFixed) {
    std::fprintf(stderr,
                 "tern-bench plan: --answer-bytes %u cannot hold a %u-byte header and a question for a %u-byte "
                 "qname; raise --answer-bytes or lower --name-bytes\n",
                 in.answer_bytes, kDnsHeader, in.name_bytes);
    return 2;
  }

  std::vector<dp::ProfileError> errs;
  const auto prof = dp::load_profile(profile_path, errs);
  if (!prof) {
    for (const auto& e : errs) std::fprintf(stderr, "tern-bench plan: %s\n", e.to_string().c_str());
    return 1;
  }
  in.profile_name = prof->name;
  in.node_workers = prof->workers();
  in.hugepages_mb_profile = prof->hugepages_mb;
  in.hugepages_mb_needed = dp::hugepages_needed_mb(*prof);
  std::string line_source;
  if (line_gbps) {
    in.line_gbps = *line_gbps;
    line_source = "--line-gbps";
  } else if (const auto d = line_rate_from_description(prof->description)) {
    in.line_gbps = *d;
    line_source = "profile description \"" + prof->description + "\"";
  } else {
    std::fprintf(stderr,
                 "tern-bench plan: %s: the profile does not state its port speed (no \"<N> GbE\" in its "
                 "description \"%s\"); pass --line-gbps with the speed of the port as cabled\n",
                 profile_path.c_str(), prof->description.c_str());
    return 1;
  }

  Figures fig;
  for (const auto& path : results) {
    std::string text, error;
    if (!read_file(path, text)) {
      std::fprintf(stderr, "tern-bench plan: cannot read results file %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
    if (!parse_results(text, path, fig, error)) {
      std::fprintf(stderr, "tern-bench plan: %s\n", error.c_str());
      return 1;
    }
  }
  const auto wq = fig.find("worker_mqps");
  if (wq == fig.end() || wq->second.value <= 0) {
    std::fprintf(stderr,
                 "tern-bench plan: no worker_mqps in the results (%zu file%s): measure it on the node's hardware "
                 "with\n  tern-bench dataplane | tee dataplane.txt\nand pass --results dataplane.txt; "
                 "the planner never guesses a per-core rate\n",
                 results.size(), results.size() == 1 ? "" : "s");
    return 1;
  }
  in.worker_qps_per_core = wq->second.value * 1e6;
  const auto cq = fig.find("control_qps");
  if (in.hit_ratio < 1 && (cq == fig.end() || cq->second.value <= 0)) {
    std::fprintf(stderr,
                 "tern-bench plan: hit ratio %.3f leaves misses for tern-control, but no control_qps is in the "
                 "results: measure it with\n  bench/compare/run.sh\nand pass --results "
                 "results/compare-<date>/results.kv as well\n",
                 in.hit_ratio);
    return 1;
  }
  if (cq != fig.end()) in.control_qps = cq->second.value;
  const auto cq2 = fig.find("control_qps_threads2");
  if (in.hit_ratio < 1 && in.control_threads > 1) {
    if (cq2 == fig.end() || cq2->second.value <= 0) {
      std::fprintf(stderr,
                   "tern-bench plan: --control-threads %u needs the rate tern-control reaches with two threads, "
                   "but no control_qps_threads2 is in the results: measure it with\n  "
                   "bench/control_vs_unbound.sh\nand pass its results.kv; the planner never assumes threads scale\n",
                   in.control_threads);
      return 1;
    }
    in.control_qps_threads2 = cq2->second.value;
  }

  std::printf("tern-bench plan: profile %s (%s): %u worker%s, %.0f Gb/s port (%s)\n", in.profile_name.c_str(),
              profile_path.c_str(), in.node_workers, in.node_workers == 1 ? "" : "s", in.line_gbps,
              line_source.c_str());
  std::printf("measured: worker %s per core (worker_mqps=%g, %s)", si(in.worker_qps_per_core, "qps").c_str(),
              wq->second.value, wq->second.source.c_str());
  if (cq != fig.end())
    std::printf("; control %s (control_qps=%g, %s)", si(in.control_qps, "qps").c_str(), cq->second.value,
                cq->second.source.c_str());
  if (in.control_qps_threads2 > 0)
    std::printf("; 2 threads %s (control_qps_threads2=%g, %s)", si(in.control_qps_threads2, "qps").c_str(),
                cq2->second.value, cq2->second.source.c_str());
  std::printf("\n");
  std::fputs(format(in, compute(in)).c_str(), stdout);
  return 0;
}

}  // namespace tern::bench::plan
